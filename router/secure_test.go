package router

import (
	"bytes"
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/fakes"
	"github.com/weftnet/weft/seal"
)

// securePair is host a (the router under test) and its peer b, each with
// a seal.Manager, and a session established between them.
type securePair struct {
	aForB, bForA *seal.Peer // each side's Peer for the other
}

func newSecurePair(t testing.TB) securePair {
	t.Helper()
	ka, _ := seal.GenerateKey()
	kb, _ := seal.GenerateKey()
	var mu sync.Mutex
	var pair securePair
	deliver := func(to **seal.Peer) func([]byte, netip.AddrPort) error {
		return func(b []byte, _ netip.AddrPort) error {
			mu.Lock()
			p := *to
			mu.Unlock()
			if p != nil {
				p.Open(append([]byte(nil), b...), time.Now().UnixNano())
			}
			return nil
		}
	}
	ma, err := seal.New(seal.Config{Static: ka, Cipher: seal.AES256GCM, Send: deliver(&pair.bForA)})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := seal.New(seal.Config{Static: kb, Cipher: seal.AES256GCM, Send: deliver(&pair.aForB)})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	pair.aForB = ma.SetPeers([]seal.PeerConfig{{Name: "b", Key: kb.Public, Addr: addrB}})["b"]
	pair.bForA = mb.SetPeers([]seal.PeerConfig{{Name: "a", Key: ka.Public, Addr: netip.MustParseAddrPort("192.0.2.1:8285")}})["a"]
	mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { ma.Run(ctx) })
	wg.Go(func() { mb.Run(ctx) })
	defer wg.Wait()
	defer cancel()
	deadline := time.Now().Add(5 * time.Second)
	for ma.PeerStatus("b").Session != "established" || mb.PeerStatus("a").Session != "established" {
		if time.Now().After(deadline) {
			t.Fatal("no session within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
	return pair
}

func newSecureRouter(t testing.TB, kind encap.Kind, record bool) (*Router, *fakes.Device, *fakes.Socket, securePair) {
	pair := newSecurePair(t)
	dev, conn := fakes.NewDevice(record), fakes.NewSocket(record)
	r := New(testConfig(kind), Worker{Dev: dev, In: conn, Out: conn})
	peers := testPeers()
	peers[0].Secure = pair.aForB // b is encrypted, c is a plaintext static peer
	r.SetPeers(peers)
	return r, dev, conn, pair
}

// sealedFrom loads datagrams into s as b would send them: pkts sealed
// under b's session, in place in the receive buffers.
func sealedFrom(t testing.TB, pair securePair, s *inboundState, hdr int, pkts ...[]byte) {
	frames := make([][]byte, len(pkts))
	for i, p := range pkts {
		n := copy(s.bufs[i][encap.Headroom+seal.HeaderLen:], p)
		frames[i] = s.bufs[i][encap.Headroom : encap.Headroom+seal.Overhead+n]
		s.views[i] = frames[i]
		s.srcs[i] = addrB
	}
	_ = hdr
	if !pair.bForA.Seal(frames, time.Now().UnixNano()) {
		t.Fatal("b has no session")
	}
}

func TestForwardEncrypted(t *testing.T) {
	for _, kind := range []encap.Kind{encap.UDP, encap.VXLAN} {
		t.Run(kind.String(), func(t *testing.T) {
			r, dev, conn, pair := newSecureRouter(t, kind, true)
			toB := ipv4("10.244.1.0", "10.244.2.7", 300)
			toC := ipv4("10.244.1.0", "10.244.3.1", 200)
			r.w(0).forwardOut(loadOut(r, toB, toB, toC), 3)
			got := conn.Groups()
			if len(got) != 2 || len(got[0].Pkts) != 2 || len(got[1].Pkts) != 1 {
				t.Fatalf("sent %+v", got)
			}
			hdr := kind.HeaderLen()
			for _, d := range got[0].Pkts {
				if len(d) != seal.Overhead+hdr+len(toB) || d[0] != seal.TypeData || bytes.Contains(d, toB[20:]) {
					t.Fatalf("to b: %d bytes, type %d: not sealed", len(d), d[0])
				}
				pt, res := pair.bForA.Open(d, time.Now().UnixNano())
				if res != seal.Deliver || !bytes.Equal(pt[hdr:], toB) {
					t.Fatalf("b cannot open it: %v", res)
				}
			}
			if !bytes.Equal(got[1].Pkts[0][hdr:], toC) {
				t.Fatal("the plaintext static peer c got something else")
			}
			if tot := r.Totals(); tot.TxBytes != 800 {
				t.Errorf("tx bytes %d, want the inner 800", tot.TxBytes)
			}

			// Inbound: a sealed datagram is delivered; the same again is a
			// replay, a flipped bit fails authentication, plaintext from an
			// encrypted peer is malformed.
			fromB := ipv4("10.244.2.7", "10.244.1.0", 300)
			payload := fromB
			if kind == encap.VXLAN {
				payload = vxlanDatagram(1, macA, macB, encap.EtherTypeIPv4, fromB)
			}
			in := r.w(0).newInbound()
			sealedFrom(t, pair, in, hdr, payload, payload)
			captured := bytes.Clone(in.views[0])
			forged := bytes.Clone(in.views[1])
			forged[len(forged)-1] ^= 1
			r.w(0).forwardIn(in, 2)
			if w := dev.Packets(); len(w) != 2 || !bytes.Equal(w[0], fromB) {
				t.Fatalf("written to the TUN: %d packets", len(w))
			}
			for _, d := range [][]byte{captured, forged, payload} {
				in.load(0, d)
				in.srcs[0] = addrB
				r.w(0).forwardIn(in, 1)
			}
			if w := dev.Packets(); len(w) != 2 {
				t.Fatalf("a replayed, forged or plaintext datagram reached the TUN (%d packets)", len(w))
			}
			d := r.Drops()
			if d["replay"] != 1 || d["bad_auth"] != 1 || d["malformed"] != 1 {
				t.Errorf("drops %v, want replay, bad_auth, malformed 1 each", d)
			}
			// An unknown session index.
			in.load(0, captured)
			in.views[0][4] ^= 0xff
			r.w(0).forwardIn(in, 1)
			if r.Drops()["no_session"] != 1 {
				t.Errorf("drops %v, want no_session 1", r.Drops())
			}
		})
	}
}

// TestForwardEncryptedWithoutSessionHolds: before the first handshake a
// peer's packets are handed to its stage (sent when the session is there),
// up to seal.StageFrames; the rest are dropped as no_session. Nothing goes
// out in plaintext.
func TestForwardEncryptedWithoutSessionHolds(t *testing.T) {
	ka, _ := seal.GenerateKey()
	kb, _ := seal.GenerateKey()
	m, err := seal.New(seal.Config{Static: ka, Cipher: seal.AES256GCM, Send: func([]byte, netip.AddrPort) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	dev, conn := fakes.NewDevice(true), fakes.NewSocket(true)
	r := New(testConfig(encap.UDP), Worker{Dev: dev, In: conn, Out: conn})
	peers := testPeers()
	p := m.SetPeers([]seal.PeerConfig{{Name: "b", Key: kb.Public, Addr: addrB}})["b"]
	peers[0].Secure = p
	r.SetPeers(peers)
	r.w(0).forwardOut(loadOut(r, ipv4("10.244.1.0", "10.244.2.7", 300)), 1)
	if len(conn.Groups()) != 0 || r.Drops()["no_session"] != 0 {
		t.Fatalf("sent %d groups, drops %v: want nothing sent, nothing dropped", len(conn.Groups()), r.Drops())
	}
	for range seal.StageFrames {
		r.w(0).forwardOut(loadOut(r, ipv4("10.244.1.0", "10.244.2.7", 300)), 1)
	}
	if len(conn.Groups()) != 0 || r.Drops()["no_session"] != 1 {
		t.Fatalf("sent %d groups, drops %v: want nothing sent, one no_session past the %d held", len(conn.Groups()), r.Drops(), seal.StageFrames)
	}
	if got := p.Stage([][]byte{make([]byte, seal.Overhead+1)}, 0); got != 0 {
		t.Fatalf("the stage took %d more frames: it should be full", got)
	}
}

func TestForwardEncryptedAllocateNothing(t *testing.T) {
	for _, kind := range []encap.Kind{encap.UDP, encap.VXLAN} {
		r, _, _, pair := newSecureRouter(t, kind, false)
		const n = 64
		pkts := make([][]byte, n)
		for i := range pkts {
			pkts[i] = ipv4("10.244.1.0", "10.244.2.1", 1400)
		}
		out := loadOut(r, pkts...)
		if a := testing.AllocsPerRun(100, func() {
			for i, p := range pkts { // sealed in place: the plaintext again
				copy(out.bufs[i][encap.Headroom:], p)
			}
			r.w(0).forwardOut(out, n)
		}); a != 0 {
			t.Errorf("%s: encrypted forwardOut allocates %.1f times per batch of %d, want 0", kind, a, n)
		}
		p := ipv4("10.244.2.1", "10.244.1.0", 1400)
		if kind == encap.VXLAN {
			p = vxlanDatagram(1, macA, macB, encap.EtherTypeIPv4, p)
		}
		in := r.w(0).newInbound()
		frames := make([][]byte, n)
		if a := testing.AllocsPerRun(100, func() {
			for i := range n {
				copy(in.bufs[i][encap.Headroom+seal.HeaderLen:], p)
				frames[i] = in.bufs[i][encap.Headroom : encap.Headroom+seal.Overhead+len(p)]
				in.views[i], in.srcs[i] = frames[i], addrB
			}
			pair.bForA.Seal(frames, time.Now().UnixNano())
			r.w(0).forwardIn(in, n)
		}); a != 0 {
			t.Errorf("%s: encrypted forwardIn allocates %.1f times per batch of %d, want 0", kind, a, n)
		}
		if d := r.Drops(); d["malformed"]+d["spoofed"]+d["bad_auth"]+d["replay"]+d["no_session"] != 0 {
			t.Errorf("%s: unexpected drops %v", kind, d)
		}
	}
}

func BenchmarkForwardOutUDPEncrypted(b *testing.B) {
	r, _, _, _ := newSecureRouter(b, encap.UDP, false)
	const n = 64
	pkts := make([][]byte, n)
	for i := range pkts {
		pkts[i] = ipv4("10.244.1.0", "10.244.2.1", 1400)
	}
	s := loadOut(r, pkts...)
	b.SetBytes(int64(n * 1400))
	b.ReportAllocs()
	for b.Loop() {
		for i, p := range pkts {
			copy(s.bufs[i][encap.Headroom:], p)
		}
		r.w(0).forwardOut(s, n)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/packet")
}
