package seal

import (
	"bytes"
	"testing"
	"time"
)

// FuzzOpen feeds arbitrary datagrams from an established peer to Open: it
// never panics, and nothing but the one genuine datagram is delivered.
func FuzzOpen(f *testing.F) {
	n := newNet(&testing.T{}, Config{}, "a", "b")
	n.ms["a"].tick()
	n.pump()
	pa, pb := n.peers["a"]["b"], n.peers["b"]["a"]
	genuine := frame([]byte("the one genuine datagram"))
	pa.Seal([][]byte{genuine}, n.clk.ns())
	f.Add(bytes.Clone(genuine))
	f.Add([]byte{TypeData, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add(make([]byte, ResponseLen))
	f.Add([]byte{0x45, 0, 0, 20})
	f.Fuzz(func(t *testing.T, d []byte) {
		in := bytes.Clone(d)
		pt, r := pb.Open(d, n.clk.ns())
		if r == Deliver && !bytes.Equal(in, genuine) {
			t.Fatalf("delivered %q from a forged datagram", pt)
		}
		n.drain() // handshake messages: handled, and never answered unless genuine
		for _, w := range n.queue {
			if w.b[0] == TypeResponse {
				t.Fatalf("answered a forged handshake message %x", in)
			}
		}
		n.queue = nil
	})
}

// FuzzHandshake feeds arbitrary handshake messages to both hosts the way
// the workers do (Peer.Open): it never panics; a message with a wrong mac1
// is counted bad_mac and never reaches the Manager (no token spent); and
// only a genuine initiation is answered. Each input is also given a valid
// mac1 and fed again, so that the Manager's decoding and the Noise
// handshake behind the mac1 check are fuzzed too.
func FuzzHandshake(f *testing.F) {
	n := newNet(&testing.T{}, Config{}, "a", "b")
	pa, pb := n.peers["a"]["b"], n.peers["b"]["a"]
	n.ms["a"].initiate(pa, n.clk.now())
	genuine := n.queue[0].b
	n.queue = nil
	f.Add(bytes.Clone(genuine))
	bad := bytes.Clone(genuine)
	bad[len(bad)-1] ^= 1
	f.Add(bad)
	resp := make([]byte, ResponseLen)
	resp[0] = TypeResponse
	f.Add(resp)
	f.Add(appendMAC1(resp[:ResponseLen-MACLen:ResponseLen-MACLen], &pa.mac1))
	f.Add([]byte{TypeInitiation})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		in := bytes.Clone(b)
		// Made for b (its mac1 keyed with b's public key), and the same
		// made for a.
		var remac [2][]byte
		if l := handshakeLen(b[0]); len(b) == l {
			remac[0] = appendMAC1(bytes.Clone(b[:l-MACLen]), &pa.mac1)
			remac[1] = appendMAC1(bytes.Clone(b[:l-MACLen]), &pb.mac1)
		}
		for _, c := range []struct {
			m   *Manager
			p   *Peer
			msg []byte
		}{{n.ms["b"], pb, in}, {n.ms["a"], pa, in}, {n.ms["b"], pb, remac[0]}, {n.ms["a"], pa, remac[1]}} {
			if c.msg == nil {
				continue
			}
			n.clk.add(time.Second) // refill the rate limit
			before := c.m.Handshakes()
			tokensAt := c.p.tokensAt
			_, r := c.p.Open(bytes.Clone(c.msg), n.clk.ns())
			n.drain()
			after := c.m.Handshakes()
			if r == BadMAC {
				if after[HSBadMAC.String()] != before[HSBadMAC.String()]+1 || c.p.tokensAt != tokensAt {
					t.Fatalf("a wrong mac1: bad_mac %d -> %d, token bucket touched %v", before[HSBadMAC.String()], after[HSBadMAC.String()], c.p.tokensAt != tokensAt)
				}
				after[HSBadMAC.String()] = before[HSBadMAC.String()]
				for k, v := range after {
					if before[k] != v {
						t.Fatalf("a wrong mac1 reached the Manager: %s %d -> %d", k, before[k], v)
					}
				}
			}
			for _, w := range n.queue {
				if w.b[0] == TypeResponse && !bytes.Equal(c.msg, genuine) {
					t.Fatalf("answered a forged initiation %x", c.msg)
				}
			}
			n.queue = nil
		}
	})
}
