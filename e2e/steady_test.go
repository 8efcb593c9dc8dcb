package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// steady is traffic through a change (a key rotation, a certificate
// renewal): TCP a -> b capped at 200 Mbit/s (so that the daemons and the
// watchers keep their CPU on a shared 2-core machine) and a ping b -> a,
// both for secs, while a and b are watched every 300 ms: each must pass
// look for the other at every look.
type steady struct {
	t       *testing.T
	a, b    *node
	secs    int
	started time.Time
	iperf   <-chan iperfOut
	ping    chan pingOut

	stopWatch context.CancelFunc
	watchWG   sync.WaitGroup
	mu        sync.Mutex
	lapses    []string
	looks     int
}

type pingOut struct {
	res netlab.PingResult
	err error
}

// startSteady starts the traffic (an iperf3 server on b, port 5201) and the
// watchers, and returns once a steady transfer has run for 2 s.
func startSteady(ctx context.Context, t *testing.T, a, b *node, secs int, look func(st *statusDoc, names ...string) error) *steady {
	t.Helper()
	if _, err := b.host.IPerf3Server(5201); err != nil {
		t.Fatal(err)
	}
	s := &steady{t: t, a: a, b: b, secs: secs, started: time.Now(), ping: make(chan pingOut, 1)}
	s.iperf = iperfInBackground(ctx, a, b.overlay, netlab.IPerf3Options{Port: 5201, Seconds: secs, Bitrate: "200M"})
	go func() {
		res, err := b.host.Ping(ctx, a.overlay, int(time.Duration(secs)*time.Second/netlab.PingInterval))
		s.ping <- pingOut{res, err}
	}()
	time.Sleep(2 * time.Second)
	watchCtx, stop := context.WithCancel(ctx)
	s.stopWatch = stop
	for _, n := range []*node{a, b} {
		other := otherNames([]*node{a, b}, n)
		s.watchWG.Go(func() {
			for watchCtx.Err() == nil {
				v, err := status(n)
				if err == nil {
					err = look(v, other...)
				}
				s.mu.Lock()
				s.looks++
				if err != nil {
					s.lapses = append(s.lapses, time.Now().Format("15:04:05.000")+" "+err.Error())
				}
				s.mu.Unlock()
				select {
				case <-watchCtx.Done():
				case <-time.After(300 * time.Millisecond):
				}
			}
		})
	}
	t.Cleanup(func() { stop(); s.watchWG.Wait() })
	return s
}

// stopWatching ends the watch and fails the test if a look lapsed, or if
// the traffic ended before the change did.
func (s *steady) stopWatching(what string) {
	s.t.Helper()
	s.stopWatch()
	s.watchWG.Wait()
	took := time.Since(s.started)
	if len(s.lapses) > 0 {
		s.t.Errorf("a or b did not see the other as it should at %d of %d looks during %s:\n%s", len(s.lapses), s.looks, what, strings.Join(s.lapses[:min(len(s.lapses), 10)], "\n"))
	} else {
		s.t.Logf("a and b saw each other as they should at all %d looks during %s", s.looks, what)
	}
	if len(s.iperf) > 0 || len(s.ping) > 0 {
		s.t.Fatalf("the traffic ended before %s did (%v after it started): raise its seconds", what, took.Round(time.Millisecond))
	}
}

// finish waits for the traffic and requires that TCP never stalled (no
// second under 20 Mbit/s of the 200 capped) and that no ping was lost.
func (s *steady) finish(what string) {
	s.t.Helper()
	limit := time.Until(s.started.Add(time.Duration(s.secs)*time.Second + 30*time.Second))
	out := awaitIperf(s.t, s.iperf, limit, "iperf3 a -> b")
	if out.err != nil {
		s.t.Fatalf("iperf3 a -> b across %s: %v", what, out.err)
	}
	ivs, low := iperfIntervals(out.res.Raw)
	s.t.Logf("iperf3 TCP a -> b across %s: %v; lowest 1 s interval %.1f Mbit/s", what, out.res, low/1e6)
	s.t.Logf("iperf3 intervals: %s", ivs)
	// Capped at 200 Mbit/s: a second under 20 is a stall (a lost
	// retransmission timeout or longer), not the machine being slow.
	if out.res.ReceivedBPS <= 0 || low < 20e6 {
		s.t.Errorf("the transfer stalled during %s: %v, lowest 1 s interval %.1f Mbit/s", what, out.res, low/1e6)
	}
	var po pingOut
	select {
	case po = <-s.ping:
	case <-time.After(limit):
		s.t.Fatal("the ping b -> a did not end")
	}
	if po.err != nil || po.res.Sent < s.secs*4 || po.res.Received != po.res.Sent {
		s.t.Errorf("ping b -> a across %s: %v, %v (want none lost)\n%s", what, po.res, po.err, po.res.Output)
	} else {
		s.t.Logf("ping b -> a across %s: %v", what, po.res)
	}
}
