package seal

import (
	"crypto/subtle"
	"hash"
	"sync"

	"golang.org/x/crypto/blake2s"
)

// mac1, as WireGuard's: every handshake message ends in a 16-byte MAC over
// all its bytes before it, keyed with a hash of the receiver's static public
// key. Only a holder of that public key (a host that got it from gossip) can
// make a message that passes, and checking one costs one BLAKE2s block or
// two: the forwarding worker checks it before the message reaches the
// Manager, its rate limit or its backlog, and before any Diffie-Hellman. A
// forger who does not know the key (anyone off the cluster's gossip) cannot
// spend a peer's handshake tokens any more.

// MACLen is the length of a handshake message's mac1.
const MACLen = 16

// mac1Label is hashed in front of the receiver's public key to make the
// mac1 key (WireGuard's LABEL_MAC1, with our own name and version).
var mac1Label = []byte("weft mac1 v1")

// macKey is the key of the mac1 of messages to one receiver.
type macKey [blake2s.Size]byte

// mac1KeyOf returns the mac1 key of messages to the holder of pub:
// BLAKE2s-256(label || pub).
func mac1KeyOf(pub PublicKey) macKey {
	b := make([]byte, 0, len(mac1Label)+KeyLen)
	b = append(append(b, mac1Label...), pub[:]...)
	return blake2s.Sum256(b)
}

// mac1 returns the keyed BLAKE2s-128 of msg under key (allocates: the
// Manager's side).
func mac1(key *macKey, msg []byte) [MACLen]byte {
	h, err := blake2s.New128(key[:])
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	h.Write(msg)
	var out [MACLen]byte
	copy(out[:], h.Sum(nil))
	return out
}

// appendMAC1 appends msg's mac1 for the receiver whose mac1 key is key.
func appendMAC1(msg []byte, key *macKey) []byte {
	m := mac1(key, msg)
	return append(msg, m[:]...)
}

// mac1Checker checks the mac1 of messages to us, from any number of
// goroutines at once, without allocating: each borrows a keyed hash from a
// pool.
type mac1Checker struct {
	key  macKey
	pool sync.Pool // of *macState
}

type macState struct {
	h   hash.Hash
	sum [blake2s.Size]byte
}

func newMAC1Checker(pub PublicKey) *mac1Checker {
	c := &mac1Checker{key: mac1KeyOf(pub)}
	c.pool.New = func() any {
		h, err := blake2s.New128(c.key[:])
		if err != nil {
			panic(err)
		}
		return &macState{h: h}
	}
	return c
}

// check reports whether msg (a whole handshake message, at least MACLen
// bytes) ends in the right mac1. It compares in constant time.
func (c *mac1Checker) check(msg []byte) bool {
	n := len(msg) - MACLen
	if n < 0 {
		return false
	}
	st := c.pool.Get().(*macState)
	st.h.Reset()
	st.h.Write(msg[:n])
	sum := st.h.Sum(st.sum[:0])
	ok := subtle.ConstantTimeCompare(sum, msg[n:]) == 1
	c.pool.Put(st)
	return ok
}
