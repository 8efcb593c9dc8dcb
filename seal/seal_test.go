package seal

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func established(t *testing.T, n *net, a, b string) {
	t.Helper()
	if !n.send(a, b, []byte("ping "+a)) || !n.send(b, a, []byte("ping "+b)) {
		t.Fatalf("%s and %s: no session to send with", a, b)
	}
	before := len(n.got[a]) + len(n.got[b])
	n.pump()
	if len(n.got[a])+len(n.got[b]) != before+2 {
		t.Fatalf("%s and %s: sent 2, delivered %d (results %v)", a, b, len(n.got[a])+len(n.got[b])-before, n.res)
	}
}

func TestHandshakeEstablishesSessions(t *testing.T) {
	for _, c := range []Cipher{AES256GCM, ChaCha20Poly1305} {
		t.Run(c.String(), func(t *testing.T) {
			n := newNet(t, Config{Cipher: c}, "a", "b")
			if n.send("a", "b", []byte("x")) {
				t.Fatal("sealed before any handshake")
			}
			n.ms["a"].tick() // a initiates
			n.pump()
			pa, pb := n.peers["a"]["b"], n.peers["b"]["a"]
			if pa.current.Load() == nil || !pa.current.Load().initiator {
				t.Fatal("a has no session as initiator")
			}
			// b got a's keepalive under the new session: it is current.
			if s := pb.current.Load(); s == nil || !s.confirmed.Load() || s.local != pa.current.Load().remote {
				t.Fatalf("b: current %v, want a's session confirmed", s)
			}
			established(t, n, "a", "b")
			if string(n.got["b"][0]) != "ping a" || string(n.got["a"][0]) != "ping b" {
				t.Fatalf("delivered %q", n.got)
			}
			hs := n.ms["a"].Handshakes()
			if hs[HSInitiated.String()] != 1 || hs[HSCompleted.String()] != 1 || n.ms["b"].Handshakes()[HSResponded.String()] != 1 {
				t.Errorf("handshake counters a %v b %v", hs, n.ms["b"].Handshakes())
			}
			if st := n.ms["a"].PeerStatus("b"); st == nil || st.Session != "established" || st.Handshakes != 1 {
				t.Errorf("status %+v", st)
			}
		})
	}
}

func TestSimultaneousInitiation(t *testing.T) {
	n := newNet(t, Config{}, "a", "b")
	n.tick() // both initiate at once
	n.pump()
	established(t, n, "a", "b")
	// Whatever slots they ended in, a second round keeps working.
	n.clk.add(DefaultRekeyAfter + time.Second)
	n.tick()
	n.pump()
	established(t, n, "a", "b")
	if n.res[NoSession]+n.res[BadAuth]+n.res[Replay] != 0 {
		t.Fatalf("results %v", n.res)
	}
}

func TestRekeyLosesNothing(t *testing.T) {
	n := newNet(t, Config{RekeyAfter: 10 * time.Second}, "a", "b")
	n.ms["a"].tick()
	n.pump()
	old := n.peers["a"]["b"].current.Load()
	// Datagrams sealed under the old session are still in flight when the
	// rekey happens in both directions.
	n.clk.add(10 * time.Second)
	var inflight []wireMsg
	for i := range 5 {
		n.send("a", "b", fmt.Appendf(nil, "a%d", i))
		n.send("b", "a", fmt.Appendf(nil, "b%d", i))
	}
	inflight, n.queue = n.queue, nil
	n.tick()
	n.pump()
	if n.peers["a"]["b"].current.Load() == old {
		t.Fatal("a did not rekey")
	}
	for _, w := range inflight {
		n.deliver(w)
	}
	established(t, n, "a", "b")
	if len(n.got["a"]) != 6 || len(n.got["b"]) != 6 || n.res[NoSession] != 0 {
		t.Fatalf("delivered a %d b %d, results %v", len(n.got["a"]), len(n.got["b"]), n.res)
	}
	// Sessions expire: after RejectAfter nothing old is accepted.
	n.clk.add(16 * time.Second)
	for i := range 3 {
		if !n.send("a", "b", fmt.Appendf(nil, "late%d", i)) {
			// a rekeyed again on the tick below; fine either way
			break
		}
	}
	n.tick()
	n.pump()
	established(t, n, "a", "b")
}

func TestResponderRekeysWhenInitiatorDoesNot(t *testing.T) {
	n := newNet(t, Config{RekeyAfter: 10 * time.Second}, "a", "b")
	n.ms["a"].tick()
	n.pump()
	n.clk.add(11 * time.Second)
	n.ms["b"].tick() // b is the responder: not yet
	if len(n.queue) != 0 {
		t.Fatal("responder rekeyed before halfway to RejectAfter")
	}
	n.clk.add(2 * time.Second)
	n.ms["b"].tick()
	if len(n.queue) != 1 || n.queue[0].b[0] != TypeInitiation {
		t.Fatalf("responder did not rekey: queue %d", len(n.queue))
	}
	n.pump()
	established(t, n, "a", "b")
}

func TestRetryAfterLostResponse(t *testing.T) {
	n := newNet(t, Config{}, "a", "b")
	lose := 2
	n.drop = func(from string, b []byte) bool {
		if b[0] == TypeResponse && lose > 0 {
			lose--
			return true
		}
		return false
	}
	n.ms["a"].tick()
	n.pump()
	n.ms["a"].tick() // too early for a retry
	if len(n.queue) != 0 {
		t.Fatal("retried before RetryAfter")
	}
	for range 3 {
		n.clk.add(DefaultRetryAfter)
		n.ms["a"].tick()
		n.pump()
	}
	established(t, n, "a", "b")
	if hs := n.ms["a"].Handshakes(); hs[HSInitiated.String()] != 3 {
		t.Errorf("initiations %d, want 3", hs[HSInitiated.String()])
	}
}

func TestRestartedPeerHandshakesAgain(t *testing.T) {
	n := newNet(t, Config{}, "a", "b")
	n.ms["a"].tick()
	n.pump()
	established(t, n, "a", "b")
	// b restarts (kill -9): same key, no sessions. a still sends under the
	// old session, which b no longer knows.
	n.clk.add(3 * time.Second)
	n.start("b", Config{})
	n.setPeers("b")
	n.send("a", "b", []byte("lost"))
	n.pump()
	if n.res[NoSession] != 1 {
		t.Fatalf("results %v, want one no_session", n.res)
	}
	n.ms["b"].tick() // b handshakes with every peer at start
	n.pump()
	established(t, n, "a", "b")
}

func TestReplayedInitiationIsIgnored(t *testing.T) {
	n := newNet(t, Config{}, "a", "b")
	n.ms["a"].tick()
	init := n.queue[0]
	n.pump()
	established(t, n, "a", "b")
	n.clk.add(time.Second)
	n.queue = append(n.queue, init)
	n.pump()
	if hs := n.ms["b"].Handshakes(); hs[HSReplayed.String()] != 1 || hs[HSResponded.String()] != 1 {
		t.Fatalf("b %v", hs)
	}
	established(t, n, "a", "b")
}

func TestForgeriesAreDroppedSilently(t *testing.T) {
	n := newNet(t, Config{}, "a", "b")
	n.ms["a"].tick()
	n.pump()
	established(t, n, "a", "b")
	pb := n.peers["b"]["a"]
	now := n.clk.ns()

	f := frame([]byte("hello"))
	n.peers["a"]["b"].Seal([][]byte{f}, now)
	for i := range f {
		g := bytes.Clone(f)
		g[i] ^= 0x01
		_, r := pb.Open(g, now)
		if r == Deliver {
			t.Fatalf("flipped byte %d: delivered", i)
		}
	}
	if _, r := pb.Open(bytes.Clone(f), now); r != Deliver {
		t.Fatalf("the original: %v", r)
	}
	if _, r := pb.Open(bytes.Clone(f), now); r != Replay {
		t.Fatalf("sent again: %v, want Replay", r)
	}
	// A forged initiation (right size, garbage, no valid mac1): dropped
	// by the worker, counted bad_mac. One from a host that has the wrong
	// static key for a (but b's public key, so its mac1 passes): no
	// answer, counted invalid.
	forged := make([]byte, InitiationLen)
	forged[0] = TypeInitiation
	if _, r := pb.Open(forged, now); r != BadMAC {
		t.Fatal(r)
	}
	n.drain()
	mallory, _ := GenerateKey()
	n.keys["a"] = mallory
	n.start("a", Config{})
	n.setPeers("a")
	n.ms["a"].tick()
	n.pump()
	if hs := n.ms["b"].Handshakes(); hs[HSInvalid.String()] != 1 || hs[HSBadMAC.String()] != 1 || hs[HSResponded.String()] != 1 {
		t.Fatalf("b %v", hs)
	}
	if n.ms["a"].Handshakes()[HSCompleted.String()] != 0 {
		t.Fatal("a handshake with the wrong key completed")
	}
}

func TestHandshakeRateLimit(t *testing.T) {
	n := newNet(t, Config{}, "a", "b")
	pb := n.peers["b"]["a"]
	for range 20 {
		n.ms["a"].initiate(n.peers["a"]["b"], n.clk.now())
	}
	for _, w := range n.queue {
		pb.Open(w.b, n.clk.ns())
	}
	n.queue = nil
	n.drain()
	hs := n.ms["b"].Handshakes()
	if hs[HSResponded.String()] != DefaultHandshakeBurst || hs[HSRateLimited.String()] != 20-DefaultHandshakeBurst {
		t.Fatalf("b %v", hs)
	}
	n.clk.add(time.Second) // the bucket refills
	n.queue = nil
	n.ms["a"].initiate(n.peers["a"]["b"], n.clk.now())
	n.pump()
	established(t, n, "a", "b")
}

func TestCounterExhaustion(t *testing.T) {
	n := newNet(t, Config{RekeyAfterMessages: 50, RejectAfterMessages: 100}, "a", "b")
	n.ms["a"].tick()
	n.pump()
	pa := n.peers["a"]["b"]
	s := pa.current.Load()
	frames := make([][]byte, 10)
	for i := range frames {
		frames[i] = frame([]byte("x"))
	}
	sent := 1 // the keepalive
	for pa.Seal(frames[:9], n.clk.ns()) {
		sent += 9
		if sent > 100 {
			t.Fatal("sealed past RejectAfterMessages")
		}
	}
	if sent != 100 || s.sendCtr.Load() != 100 {
		t.Fatalf("sent %d (counter %d), want 100: counters 0-99", sent, s.sendCtr.Load())
	}
	pa.kicked.Store(false)
	if pa.Seal(frames[:1], n.clk.ns()) || !pa.kicked.Load() {
		t.Fatal("sealed with counter 100, or no handshake asked for")
	}
	if m := n.ms["a"]; !m.due(pa, n.clk.now()) {
		t.Fatal("a session past RekeyAfterMessages is not due for a rekey")
	}
	// The counter never wraps, whatever is asked for.
	if _, ok := s.reserve(1<<63, 100); ok {
		t.Fatal("reserved past the limit")
	}
	n.ms["a"].tick()
	n.pump()
	if pa.current.Load() == s {
		t.Fatal("no new session")
	}
	established(t, n, "a", "b")
}

func TestReplayWindow(t *testing.T) {
	const limit = 1 << 62
	type step struct {
		ctr  uint64
		want bool
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{0, true}, {1, true}, {2, true}, {3, true}}},
		{"duplicate", []step{{0, true}, {0, false}, {5, true}, {5, false}, {4, true}, {4, false}}},
		{"reordered within the window", []step{{100, true}, {50, true}, {99, true}, {1, true}, {50, false}}},
		{"too old", []step{{WindowSize + 10, true}, {10, true}, {9, false}, {0, false}}},
		{"edge of the window", []step{{WindowSize, true}, {0, true}, {0, false}}},
		{"far ahead", []step{{1, true}, {1 << 40, true}, {1<<40 - 1, true}, {1, false}, {1<<40 - WindowSize - 1, false}, {1<<40 + 1, true}}},
		{"far ahead clears the ring", []step{{5, true}, {5 + ringBlocks*blockBits, true}, {5 + ringBlocks*blockBits - 64, true}}},
		{"limit", []step{{limit - 1, true}, {limit, false}, {limit + 1, false}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var w window
			for i, s := range c.steps {
				if got := w.accept(s.ctr, limit); got != s.want {
					t.Fatalf("step %d: accept(%d) = %v, want %v", i, s.ctr, got, s.want)
				}
			}
		})
	}
	// Every counter of a long run, shuffled within less than the window,
	// is accepted exactly once.
	var w window
	for base := uint64(0); base < 100_000; base += 1000 {
		for i := uint64(999); i < 1000; i-- {
			if !w.accept(base+i, limit) {
				t.Fatalf("%d refused", base+i)
			}
		}
	}
	for c := uint64(100_000 - WindowSize); c < 100_000; c++ {
		if w.accept(c, limit) {
			t.Fatalf("%d accepted twice", c)
		}
	}
}

func TestSealOpenInPlace(t *testing.T) {
	for _, c := range []Cipher{AES256GCM, ChaCha20Poly1305} {
		t.Run(c.String(), func(t *testing.T) {
			n := newNet(t, Config{Cipher: c}, "a", "b")
			n.ms["a"].tick()
			n.pump()
			pa, pb := n.peers["a"]["b"], n.peers["b"]["a"]
			for _, size := range []int{0, 1, 15, 16, 17, 1400, 8972, 65000} {
				buf := make([]byte, 32+HeaderLen+size+TagLen+32) // head- and tailroom around the frame
				payload := buf[32+HeaderLen : 32+HeaderLen+size]
				for i := range payload {
					payload[i] = byte(i * 7)
				}
				want := bytes.Clone(payload)
				f := buf[32 : 32+HeaderLen+size+TagLen]
				if !pa.Seal([][]byte{f}, n.clk.ns()) {
					t.Fatal("no session")
				}
				if len(f) != Overhead+size || (size >= 16 && bytes.Equal(f[HeaderLen:HeaderLen+16], want[:16])) {
					t.Fatalf("size %d: not sealed in place", size)
				}
				pt, r := pb.Open(f, n.clk.ns())
				if r != Deliver || !bytes.Equal(pt, want) {
					t.Fatalf("size %d: %v", size, r)
				}
				if &pt[:1][0] != &buf[32+HeaderLen] && size > 0 {
					t.Fatalf("size %d: plaintext not where it was", size)
				}
			}
		})
	}
}

func TestSealAndOpenAllocateNothing(t *testing.T) {
	n := newNet(t, Config{}, "a", "b")
	n.ms["a"].tick()
	n.pump()
	pa, pb := n.peers["a"]["b"], n.peers["b"]["a"]
	const batch = 64
	frames := make([][]byte, batch)
	sealed := make([][]byte, batch)
	for i := range frames {
		frames[i] = make([]byte, HeaderLen+1400+TagLen)
		sealed[i] = make([]byte, len(frames[i]))
	}
	now := n.clk.ns()
	if a := testing.AllocsPerRun(100, func() {
		if !pa.Seal(frames, now) {
			t.Fatal("no session")
		}
	}); a != 0 {
		t.Errorf("Seal: %v allocations per batch", a)
	}
	bad := frame(make([]byte, 100))
	bad[0] = TypeData
	if a := testing.AllocsPerRun(100, func() {
		pa.Seal(frames, now)
		for i := range frames {
			copy(sealed[i], frames[i])
			if _, r := pb.Open(sealed[i], now); r != Deliver {
				t.Fatal(r)
			}
			if _, r := pb.Open(sealed[i], now); r == Deliver { // garbage now: bad_auth or replay
				t.Fatal("delivered twice")
			}
		}
		pb.Open(bad, now)
	}); a != 0 {
		t.Errorf("Open: %v allocations per batch", a)
	}
	init := make([]byte, InitiationLen)
	init[0] = TypeInitiation
	if a := testing.AllocsPerRun(100, func() {
		if _, r := pb.Open(init, now); r != BadMAC {
			t.Fatal(r)
		}
	}); a != 0 {
		t.Errorf("Open of a handshake message with a wrong mac1: %v allocations", a)
	}
	okMAC := appendMAC1(init[:InitiationLen-MACLen:InitiationLen-MACLen], &pa.mac1)
	if a := testing.AllocsPerRun(100, func() {
		pb.Open(okMAC, now) // queued or dropped (backlog full): both without allocating
	}); a != 0 {
		t.Errorf("Open of a handshake message: %v allocations", a)
	}
}

func TestKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	kp, path, created, err := LoadOrCreateKey(dir)
	if err != nil || !created {
		t.Fatal(created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v", path, fi.Mode(), err)
	}
	again, _, created, err := LoadOrCreateKey(dir)
	if err != nil || created || again != kp {
		t.Fatalf("reload: created %v err %v same %v", created, err, again == kp)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("mode 0644: %v", err)
	}
	if err := os.WriteFile(path, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("garbage: %v", err)
	}
	if os.Geteuid() != 0 { // root reads anything
		if err := os.Chmod(path, 0o000); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("unreadable: %v", err)
		}
	}
}

func TestCipherChoice(t *testing.T) {
	if c := DefaultCipher(); !c.Valid() {
		t.Fatal(c)
	}
	for in, want := range map[string]Cipher{"aes-256-gcm": AES256GCM, "chacha20-poly1305": ChaCha20Poly1305, "auto": DefaultCipher()} {
		if c, err := ParseCipher(in); err != nil || c != want {
			t.Errorf("%s: %v %v", in, c, err)
		}
	}
	if _, err := ParseCipher("rot13"); err == nil {
		t.Error("rot13 accepted")
	}
}

func TestCipherMismatchNeverHandshakes(t *testing.T) {
	n := newNet(t, Config{Cipher: AES256GCM}, "a", "b")
	n.start("b", Config{Cipher: ChaCha20Poly1305})
	n.setPeers("b")
	n.ms["a"].tick()
	n.pump()
	if n.ms["b"].Handshakes()[HSInvalid.String()] != 1 || n.peers["a"]["b"].current.Load() != nil {
		t.Fatal("handshake across ciphers")
	}
}
