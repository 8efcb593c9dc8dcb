package seal

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRunRekeysUnderConcurrentTraffic runs two Managers' goroutines for
// real, rekeying every 100 ms, while two senders per side seal and the
// other side opens concurrently (as workers do): nothing is lost to
// no_session once the first session is up, and no datagram fails
// authentication.
func TestRunRekeysUnderConcurrentTraffic(t *testing.T) {
	ka, _ := GenerateKey()
	kb, _ := GenerateKey()
	var mu sync.Mutex
	peerOf := map[string]*Peer{} // receiver's Peer for the sender, by receiver
	var results [BadMAC + 1]atomic.Uint64
	deliver := func(to string, b []byte) {
		mu.Lock()
		p := peerOf[to]
		mu.Unlock()
		if p != nil {
			_, r := p.Open(append([]byte(nil), b...), time.Now().UnixNano())
			results[r].Add(1)
		}
	}
	mk := func(self KeyPair, to string) *Manager {
		m, err := New(Config{Static: self, Cipher: AES256GCM, RekeyAfter: 100 * time.Millisecond, RejectAfter: time.Second, RetryAfter: 20 * time.Millisecond, HandshakeRate: 1000, HandshakeBurst: 100,
			Send: func(b []byte, _ netip.AddrPort) error { deliver(to, b); return nil }})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	ma, mb := mk(ka, "b"), mk(kb, "a")
	pa := ma.SetPeers([]PeerConfig{{Name: "b", Key: kb.Public}})["b"]
	pb := mb.SetPeers([]PeerConfig{{Name: "a", Key: ka.Public}})["a"]
	mu.Lock()
	peerOf["a"], peerOf["b"] = pa, pb
	mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { ma.Run(ctx) })
	wg.Go(func() { mb.Run(ctx) })
	deadline := time.Now().Add(2 * time.Second)
	for pa.current.Load() == nil || pb.current.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no session within 2 s: a %v b %v, results %v %v", ma.Handshakes(), mb.Handshakes(), results[Handshake].Load(), results[Malformed].Load())
		}
		time.Sleep(time.Millisecond)
	}
	stop := time.Now().Add(700 * time.Millisecond)
	var sent, refused atomic.Uint64
	for _, dir := range []struct {
		p  *Peer
		to string
	}{{pa, "b"}, {pa, "b"}, {pb, "a"}, {pb, "a"}} {
		wg.Go(func() {
			frames := make([][]byte, 8)
			for i := range frames {
				frames[i] = make([]byte, Overhead+100)
			}
			for time.Now().Before(stop) {
				if !dir.p.Seal(frames, time.Now().UnixNano()) {
					refused.Add(1)
					continue
				}
				for _, f := range frames {
					deliver(dir.to, f)
				}
				sent.Add(uint64(len(frames)))
				time.Sleep(20 * time.Microsecond) // leave the Managers some CPU
			}
		})
	}
	time.Sleep(time.Until(stop) + 50*time.Millisecond)
	cancel()
	wg.Wait()
	if n := ma.Handshakes()[HSCompleted.String()] + mb.Handshakes()[HSCompleted.String()]; n < 4 {
		t.Errorf("%d handshakes in 700 ms with a 100 ms rekey", n)
	}
	t.Logf("a %v b %v", ma.Handshakes(), mb.Handshakes())
	// A sender descheduled between taking its counters and sending them
	// can fall behind the window (replay): not checked here.
	if results[NoSession].Load()+results[BadAuth].Load() != 0 || refused.Load() != 0 {
		t.Errorf("sent %d: no_session %d bad_auth %d replay %d, seal refused %d", sent.Load(),
			results[NoSession].Load(), results[BadAuth].Load(), results[Replay].Load(), refused.Load())
	}
	if results[Deliver].Load() < sent.Load() {
		t.Errorf("delivered %d of %d", results[Deliver].Load(), sent.Load())
	}
}
