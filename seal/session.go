package seal

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// session is one handshake's keys: immutable but for the send counter and
// the receive window, both safe for concurrent use (the AEADs keep no state
// between calls).
type session struct {
	local, remote uint32 // our index (in data we receive), the peer's (in data we send)
	send, recv    cipher.AEAD
	initiator     bool
	created       int64 // unix ns
	sendCtr       atomic.Uint64
	confirmed     atomic.Bool // the peer has it (we initiated, or it sent under it)
	win           window
}

func newSession(c Cipher, local, remote uint32, sendKey, recvKey [32]byte, initiator bool, now int64) (*session, error) {
	send, err := c.newAEAD(sendKey)
	if err != nil {
		return nil, err
	}
	recv, err := c.newAEAD(recvKey)
	if err != nil {
		return nil, err
	}
	return &session{local: local, remote: remote, send: send, recv: recv, initiator: initiator, created: now}, nil
}

// reserve takes n consecutive counters, all below limit, or reports that
// the session has too few left. A counter is never handed out twice, and
// the counter never wraps.
func (s *session) reserve(n, limit uint64) (uint64, bool) {
	for {
		base := s.sendCtr.Load()
		if n > limit || base > limit-n {
			return 0, false
		}
		if s.sendCtr.CompareAndSwap(base, base+n) {
			return base, true
		}
	}
}

// sealFrame seals f in place under counter ctr: f is the header's room,
// the plaintext, and the tag's room.
func (s *session) sealFrame(f []byte, ctr uint64) {
	PutDataHeader(f, DataHeader{Receiver: s.remote, Counter: ctr})
	end := len(f) - TagLen
	s.send.Seal(f[HeaderLen:HeaderLen], f[4:HeaderLen], f[HeaderLen:end], f[:HeaderLen])
}

// openFrame authenticates and decrypts d (a data message for this session)
// in place and returns the plaintext.
func (s *session) openFrame(d []byte) ([]byte, bool) {
	pt, err := s.recv.Open(d[HeaderLen:HeaderLen], d[4:HeaderLen], d[HeaderLen:], d[:HeaderLen])
	return pt, err == nil
}

// dataHeader decodes a data message's header without allocating.
func dataHeader(d []byte) (DataHeader, bool) {
	if len(d) < HeaderLen+TagLen || d[0] != TypeData || d[1]|d[2]|d[3] != 0 {
		return DataHeader{}, false
	}
	return DataHeader{Receiver: binary.BigEndian.Uint32(d[4:8]), Counter: binary.BigEndian.Uint64(d[8:16])}, true
}

func (s *session) String() string {
	return fmt.Sprintf("session %08x->%08x", s.local, s.remote)
}
