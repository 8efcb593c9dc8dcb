package seal

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Message types: the first byte of every datagram between encrypted hosts.
const (
	TypeInitiation = 1
	TypeResponse   = 2
	TypeData       = 4
)

// Sizes on the wire.
const (
	// HeaderLen is a data message's header in front of the ciphertext.
	HeaderLen = 16
	// TagLen is the AEAD tag behind it.
	TagLen = 16
	// Overhead is what sealing adds to a datagram.
	Overhead = HeaderLen + TagLen

	noiseMsg1Len = 32 + timestampLen + 16 // e, and the encrypted timestamp
	noiseMsg2Len = 32 + 16                // e, and the encrypted empty payload
	timestampLen = 8
	// InitiationLen and ResponseLen are the handshake messages' lengths,
	// mac1 included.
	InitiationLen = 8 + noiseMsg1Len + MACLen  // 80
	ResponseLen   = 12 + noiseMsg2Len + MACLen // 76
)

// ErrMalformed is wrapped by every decoding error caused by the message.
var ErrMalformed = errors.New("malformed encrypted datagram")

// DataHeader is a data message's header.
type DataHeader struct {
	Receiver uint32 // the receiving session's index
	Counter  uint64
}

// PutDataHeader writes h into b[:HeaderLen].
func PutDataHeader(b []byte, h DataHeader) {
	_ = b[HeaderLen-1]
	b[0], b[1], b[2], b[3] = TypeData, 0, 0, 0
	binary.BigEndian.PutUint32(b[4:8], h.Receiver)
	binary.BigEndian.PutUint64(b[8:16], h.Counter)
}

// initiation is a decoded initiation message (its mac1 was checked by
// whoever received it: Peer.Open).
type initiation struct {
	sender uint32
	noise  []byte // Noise KK message 1
}

// response is a decoded response message.
type response struct {
	sender, receiver uint32
	noise            []byte // Noise KK message 2
}

func parseInitiation(b []byte) (initiation, error) {
	if len(b) != InitiationLen || b[0] != TypeInitiation || b[1]|b[2]|b[3] != 0 {
		return initiation{}, fmt.Errorf("%w: not an initiation (%d bytes, type %d)", ErrMalformed, len(b), first(b))
	}
	return initiation{sender: binary.BigEndian.Uint32(b[4:8]), noise: b[8 : InitiationLen-MACLen]}, nil
}

func parseResponse(b []byte) (response, error) {
	if len(b) != ResponseLen || b[0] != TypeResponse || b[1]|b[2]|b[3] != 0 {
		return response{}, fmt.Errorf("%w: not a response (%d bytes, type %d)", ErrMalformed, len(b), first(b))
	}
	return response{sender: binary.BigEndian.Uint32(b[4:8]), receiver: binary.BigEndian.Uint32(b[8:12]), noise: b[12 : ResponseLen-MACLen]}, nil
}

func appendInitiation(b []byte, sender uint32) []byte {
	b = append(b, TypeInitiation, 0, 0, 0)
	return binary.BigEndian.AppendUint32(b, sender)
}

func appendResponse(b []byte, sender, receiver uint32) []byte {
	b = append(b, TypeResponse, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, sender)
	return binary.BigEndian.AppendUint32(b, receiver)
}

// handshakeLen is the length of a handshake message of type t (0: not a
// handshake type).
func handshakeLen(t byte) int {
	switch t {
	case TypeInitiation:
		return InitiationLen
	case TypeResponse:
		return ResponseLen
	}
	return 0
}

func first(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}
