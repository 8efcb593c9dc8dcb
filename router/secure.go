package router

import (
	"github.com/weftnet/weft/seal"
)

// The encrypted data plane's hooks in the forwarding loops (package seal
// does the work). A peer with a seal.Peer gets every datagram sealed in
// place, in the room that the buffers keep around the encapsulated packet
// (encap.Headroom in front, the rest of the 64 KiB buffer behind); a peer
// without one (no --encrypt, or a static peer with encrypt=false) gets
// plaintext.

// dropNone: a datagram not delivered that is no drop (a handshake message
// or a keepalive).
const dropNone = numDropReasons

// sealRoom is the room a frame for e needs in front of the encapsulation
// header and behind the packet.
func sealRoom(e *entry) (head, tail int) {
	if e.peer.Secure == nil {
		return 0, 0
	}
	return seal.HeaderLen, seal.TagLen
}

// sealOverhead is what sealing adds to each of e's frames.
func sealOverhead(e *entry) int {
	h, t := sealRoom(e)
	return h + t
}

// sealGroup seals e's frames in place; false if e has no session yet (the
// caller hands them to the peer's Stage while the handshake runs).
func sealGroup(e *entry, g [][]byte, now int64) bool {
	if e.peer.Secure == nil {
		return true
	}
	return e.peer.Secure.Seal(g, now)
}

// openDatagram authenticates and decrypts d from e in place. ok is false
// for anything that is not a data datagram to deliver, with the drop
// reason (dropNone for a handshake message or a keepalive).
func openDatagram(e *entry, d []byte, now int64) (pt []byte, reason DropReason, ok bool) {
	pt, res := e.peer.Secure.Open(d, now)
	switch res {
	case seal.Deliver:
		if len(pt) == 0 {
			return nil, dropNone, false // keepalive
		}
		return pt, 0, true
	case seal.Handshake, seal.Backlog, seal.BadMAC: // counted in weft_handshakes_total (rate_limited, bad_mac)
		return nil, dropNone, false
	case seal.NoSession:
		return nil, DropNoSession, false
	case seal.BadAuth:
		return nil, DropBadAuth, false
	case seal.Replay:
		return nil, DropReplay, false
	}
	return nil, DropMalformed, false
}
