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

// FuzzHandshake feeds arbitrary handshake messages to the Manager: it never
// panics and answers only a genuine initiation.
func FuzzHandshake(f *testing.F) {
	n := newNet(&testing.T{}, Config{}, "a", "b")
	pa, pb := n.peers["a"]["b"], n.peers["b"]["a"]
	n.ms["a"].initiate(pa, n.clk.now())
	genuine := n.queue[0].b
	n.queue = nil
	f.Add(bytes.Clone(genuine))
	resp := make([]byte, ResponseLen)
	resp[0] = TypeResponse
	f.Add(resp)
	f.Add([]byte{TypeInitiation})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		n.clk.add(time.Second) // refill the rate limit
		in := bytes.Clone(b)
		n.ms["b"].handle(pb, b)
		n.ms["a"].handle(pa, bytes.Clone(in))
		for _, w := range n.queue {
			if w.b[0] == TypeResponse && !bytes.Equal(in, genuine) {
				t.Fatalf("answered a forged initiation %x", in)
			}
		}
		n.queue = nil
	})
}
