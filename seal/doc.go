// Package seal is weft's encrypted, authenticated data plane: a static
// X25519 key per host, session keys from a Noise KK handshake
// (github.com/flynn/noise), and every datagram between weft hosts sealed in
// place with AES-256-GCM (or ChaCha20-Poly1305 on CPUs without AES
// instructions) under a 64-bit counter nonce, checked against a sliding
// replay window.
//
// # Wire formats
//
// Every message is the whole UDP payload on the data port. Its first byte is
// the message type; none of the types is a valid first byte of an IP packet
// (0x4?, 0x6?) or a VXLAN header (0x08), so a plaintext datagram can never be
// mistaken for one. All integers are big endian.
//
//	initiation (80 bytes)       response (76 bytes)          data (32 + n bytes)
//	0  1  type = 1              0  1  type = 2               0  1  type = 4
//	1  3  zero                  1  3  zero                   1  3  zero
//	4  4  sender index          4  4  sender index           4  4  receiver index
//	8  56 Noise KK message 1    8  4  receiver index         8  8  counter
//	      (e, es, ss; payload:  12 48 Noise KK message 2     16 n  ciphertext (the encap payload)
//	      8-byte timestamp)           (e, ee, se; empty)     .  16 tag
//	64 16 mac1                  60 16 mac1
//
// A handshake message's mac1 is the keyed BLAKE2s-128 of all its bytes
// before it, under the key BLAKE2s-256("weft mac1 v1" || the receiver's
// static public key), as WireGuard's mac1: the receiving worker checks it,
// in constant time, before the message reaches the Manager (its per-peer
// rate limit, its backlog, any Diffie-Hellman), so that nobody who lacks
// the receiver's public key can spend a peer's handshake budget. The Noise
// prologue names the wire version ("weft data plane v2"), so a weft of
// another version fails the length check or the handshake, never half
// of it.
//
// A data message's AEAD nonce is bytes 4-16 of its header: the receiver's
// session index (fixed for the session's key) followed by the counter, the
// "fixed field || counter" nonce of RFC 5116 section 3.2. The whole 16-byte
// header is the additional data. Each session key is used in one direction
// only, and a counter is never used twice under it.
//
// # Sessions
//
// A Manager owns one Peer per encrypted peer, and each Peer up to three
// sessions, as WireGuard keeps its keypairs: current (sending and
// receiving), previous (receiving only, while the peer switches) and next
// (a responder's new session, used once the initiator's first datagram
// under it arrives). The forwarding workers read the slots through atomic
// pointers; the Manager's goroutine (Run) does every handshake.
package seal
