package gossipscale

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/membership"
)

// Knobs, from the environment so that `go test -bench` needs no custom flags.
const (
	envNodes = "GOSSIP_NODES" // instances to start (default 200)
	envSeeds = "GOSSIP_SEEDS" // random earlier instances each one joins (default 3); 0 = all join instance 0
	envLog   = "GOSSIP_LOG"   // if set, a file for every instance's log (info and up, memberlist's included); default: discarded

	defaultNodes = 200
	defaultSeeds = 3
	maxNodes     = (256 - 244) * 256 // subnets 10.244.0.0/24 … 10.255.255.0/24
)

const (
	loopback = "127.0.0.1"

	// pollEvery is how often the instances' views are read. It does not
	// limit the precision of the figures, which come from Member.Since (the
	// moment each instance recorded the state change); it only decides how
	// soon the next phase starts. Reading views costs CPU the 200 instances
	// need, so it is not frequent, and views already complete are not
	// re-read until the end of the phase.
	pollEvery = 500 * time.Millisecond
	// settle is the pause after convergence (and after the failure) so that
	// the next phase starts from a quiet cluster, not amid retransmissions.
	settle = 5 * time.Second

	convergeTimeout = 5 * time.Minute
	detectTimeout   = 3 * time.Minute
	leaveTimeout    = 2 * time.Minute
	// leaveBound is what weft's daemon passes to Leave (cmd/weft/run.go).
	leaveBound = 2 * time.Second

	// msgFailed is what membership logs (at warn) when a member is declared
	// dead without a leave; counting it counts failure detections.
	msgFailed = "gossip member failed"
	// memberlist warnings that show an instance falling behind. membership
	// rate-limits memberlist's warnings (20 per instance per 10 s), so
	// these counts are lower bounds.
	msgRefute    = "Refuting a suspect message" // it was suspected while up
	msgQueueFull = "handler queue full"         // it dropped incoming gossip
)

type node struct {
	name   string
	subnet netip.Prefix
	c      *membership.Cluster
}

// subnetFor returns 10.244.i.0/24 for i < 256, then 10.245.0.0/24 and on.
func subnetFor(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(244 + i/256), byte(i % 256), 0}), 24)
}

func envInt(b *testing.B, name string, def, lo, hi int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		b.Fatalf("%s=%q: want an integer in [%d, %d]", name, s, lo, hi)
	}
	return v
}

// BenchmarkGossipScale starts GOSSIP_NODES membership instances with
// production timings and measures (1) convergence, (2) detection of a
// crashed instance (Shutdown without Leave) and (3) of a graceful Leave.
// It runs the scenario once per call whatever b.N is; use -benchtime 1x
// (and -count for repeated runs).
func BenchmarkGossipScale(b *testing.B) {
	n := envInt(b, envNodes, defaultNodes, 3, maxNodes)
	k := envInt(b, envSeeds, defaultSeeds, 0, maxNodes)
	r := runScenario(b, n, k)

	b.ReportMetric(r.converge.Seconds(), "converge_s")
	b.ReportMetric(r.convergeAfterLast.Seconds(), "converge_after_last_start_s")
	b.ReportMetric(r.detectDead.Seconds(), "detect_dead_s")
	b.ReportMetric(r.detectLeft.Seconds(), "detect_left_s")
	b.Logf("gossipscale: nodes=%d seeds=%s start_all=%.2fs converge=%.2fs (after last start %.2fs; per-node p50 %.2fs) "+
		"dead: first=%.2fs p50=%.2fs all=%.2fs left: first=%.2fs p50=%.2fs all=%.2fs (Leave call %.2fs) "+
		"false_dead_events=%d/%d/%d refutes>=%d/%d/%d queue_full>=%d/%d/%d cpu_cores=%.2f/%.2f/%.2f health_max=%d goroutines=%d heap=%dMiB cpus=%d %s",
		n, seedDesc(k), r.startAll.Seconds(), r.converge.Seconds(), r.convergeAfterLast.Seconds(), r.convergeP50.Seconds(),
		r.deadFirst.Seconds(), r.deadP50.Seconds(), r.detectDead.Seconds(),
		r.leftFirst.Seconds(), r.leftP50.Seconds(), r.detectLeft.Seconds(), r.leaveCall.Seconds(),
		r.falseConverge, r.falseDead, r.falseLeft, r.refutes[0], r.refutes[1], r.refutes[2],
		r.queueFull[0], r.queueFull[1], r.queueFull[2], r.cores[0], r.cores[1], r.cores[2],
		r.healthMax, r.goroutines, r.heapMiB, runtime.NumCPU(), runtime.Version())
}

func seedDesc(k int) string {
	if k == 0 {
		return "all-join-node-000"
	}
	return fmt.Sprintf("%d-random-earlier", k)
}

type result struct {
	startAll, converge, convergeAfterLast, convergeP50 time.Duration
	detectDead, deadFirst, deadP50                     time.Duration
	detectLeft, leftFirst, leftP50, leaveCall          time.Duration
	// false failure detections ("member failed" events about instances
	// that were up) during convergence, the crash phase and the leave phase
	falseConverge, falseDead, falseLeft int64
	// per phase (convergence, crash, leave): memberlist refutations and
	// dropped-gossip warnings (lower bounds), and the CPU this process used
	// (user+system, in cores: 2 means both of a 2-core box)
	refutes, queueFull [3]int64
	cores              [3]float64
	healthMax          int
	goroutines         int
	heapMiB            uint64
}

// phaseMeter measures one phase: CPU used by the process and warnings.
type phaseMeter struct {
	wall          time.Time
	cpu           time.Duration
	refute, qfull int64
	counts        *logCounts
}

func startPhase(counts *logCounts) phaseMeter {
	return phaseMeter{wall: time.Now(), cpu: processCPU(), refute: counts.refute.Load(), qfull: counts.queueFull.Load(), counts: counts}
}

// end returns the phase's CPU use in cores and its warning counts.
func (p phaseMeter) end() (cores float64, refutes, queueFull int64) {
	cores = (processCPU() - p.cpu).Seconds() / time.Since(p.wall).Seconds()
	return cores, p.counts.refute.Load() - p.refute, p.counts.queueFull.Load() - p.qfull
}

// processCPU returns the user+system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func runScenario(b *testing.B, n, k int) result {
	var r result
	counts := &logCounts{}
	var out slog.Handler
	if path := os.Getenv(envLog); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatalf("%s: %v", envLog, err)
		}
		defer f.Close()
		out = slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo})
	}
	logger := slog.New(&countingHandler{counts: counts, next: out})

	ctx, cancel := context.WithCancel(context.Background())
	nodes := make([]*node, 0, n)
	defer func() {
		cancel()
		shutdownAll(b, nodes)
	}()

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	load, _ := os.ReadFile("/proc/loadavg")
	b.Logf("gossipscale: %d instances on %s, seeds %s, DefaultLANConfig timings, rng seed %d, load average before: %s",
		n, loopback, seedDesc(k), seed, strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "))

	// 1. Start every instance back to back, like a fast rollout. BindPort 0
	// makes memberlist bind TCP :0 and then UDP on the same number, retrying
	// up to 10 times if that UDP port is taken: no release-and-rebind race.
	want := make(map[string]netip.Prefix, n)
	phase := startPhase(counts)
	t0 := time.Now()
	var tLast time.Time
	for i := range n {
		nd := &node{name: fmt.Sprintf("node-%03d", i), subnet: subnetFor(i)}
		want[nd.name] = nd.subnet
		var seeds []string
		switch {
		case i == 0:
		case k == 0:
			seeds = []string{nodes[0].c.LocalAddr().String()}
		default:
			for _, j := range rng.Perm(i)[:min(k, i)] {
				seeds = append(seeds, nodes[j].c.LocalAddr().String())
			}
		}
		tLast = time.Now()
		c, err := membership.Start(ctx, membership.Config{
			Name:          nd.name,
			BindAddr:      netip.MustParseAddr(loopback),
			AdvertiseAddr: netip.MustParseAddr(loopback),
			Seeds:         seeds,
			Meta: membership.Meta{
				Subnets:  []netip.Prefix{nd.subnet},
				Underlay: netip.MustParseAddr(loopback),
				Port:     51820,
				Encap:    encap.UDP,
				Claimed:  t0.UnixMilli(),
			},
			Logger: logger.With("node", nd.name),
			// All tuning fields zero: memberlist.DefaultLANConfig and
			// membership's defaults, as in production.
		})
		if err != nil {
			b.Fatalf("start %s: %v", nd.name, err)
		}
		nd.c = c
		nodes = append(nodes, nd)
	}
	r.startAll = time.Since(t0)

	// Converged when every instance lists all others alive with the right
	// subnet. The moment is the latest Since among those entries: from then
	// on every entry was alive (Since is the last transition to alive).
	// A view found complete is not re-read until all are, then all are
	// checked again in one pass.
	viewDone := func(o *node) (bool, int, time.Time) {
		ok, last := 0, time.Time{}
		for _, m := range o.c.Members() {
			if s, known := want[m.Name]; known && m.State == membership.StateAlive && m.MetaErr == nil && family.First(m.Meta.Subnets) == s {
				ok++
				if m.Since.After(last) {
					last = m.Since
				}
			}
		}
		return ok == n-1, ok, last
	}
	// missing names up to 3 instances o does not list alive with the right subnet.
	missing := func(o *node) string {
		have := map[string]bool{o.name: true}
		for _, m := range o.c.Members() {
			if s := want[m.Name]; m.State == membership.StateAlive && m.MetaErr == nil && family.First(m.Meta.Subnets) == s {
				have[m.Name] = true
			}
		}
		var miss []string
		for _, nd := range nodes {
			if !have[nd.name] && len(miss) < 3 {
				miss = append(miss, nd.name)
			}
		}
		return strings.Join(miss, ",")
	}
	complete := make([]bool, n)
	perNode := make([]time.Duration, n)
	// Progress every 10 s, gathered in one line: go test keeps only the
	// first 10 lines a benchmark logs.
	var progress []string
	nextProgress := t0.Add(10 * time.Second)
	err := waitFor(convergeTimeout, func() (bool, string) {
		doneViews, worst, worstNode := 0, n, (*node)(nil)
		for i, o := range nodes {
			if !complete[i] {
				var ok int
				complete[i], ok, _ = viewDone(o)
				if ok < worst {
					worst, worstNode = ok, o
				}
			}
			if complete[i] {
				doneViews++
			}
		}
		if doneViews < n {
			status := fmt.Sprintf("%d/%d instances see all others; %s sees %d/%d, not %s",
				doneViews, n, worstNode.name, worst, n-1, missing(worstNode))
			if time.Now().After(nextProgress) {
				nextProgress = nextProgress.Add(10 * time.Second)
				progress = append(progress, fmt.Sprintf("%.0fs: %s", time.Since(t0).Seconds(), status))
			}
			return false, status
		}
		status := fmt.Sprintf("%d/%d instances saw all others", n, n)
		var last time.Time
		for i, o := range nodes {
			var nodeLast time.Time
			complete[i], _, nodeLast = viewDone(o)
			if !complete[i] {
				return false, status + " (then lost some)"
			}
			perNode[i] = nodeLast.Sub(t0)
			if nodeLast.After(last) {
				last = nodeLast
			}
		}
		r.converge, r.convergeAfterLast = last.Sub(t0), last.Sub(tLast)
		return true, ""
	})
	if len(progress) > 0 {
		b.Logf("convergence progress: %s", strings.Join(progress, " | "))
	}
	if err != nil {
		b.Fatalf("convergence: %v", err)
	}
	r.falseConverge = counts.failed.Load()
	r.cores[0], r.refutes[0], r.queueFull[0] = phase.end()
	r.convergeP50 = median(perNode)
	r.healthMax = maxHealth(nodes)
	r.goroutines = runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.heapMiB = ms.HeapInuse >> 20
	b.Logf("converged: %.2fs after the first Start, %.2fs after the last (starting took %.2fs); %d false failure detections on the way; health max %d; %d goroutines; heap %d MiB; %.2f cores",
		r.converge.Seconds(), r.convergeAfterLast.Seconds(), r.startAll.Seconds(), r.falseConverge, r.healthMax, r.goroutines, r.heapMiB, r.cores[0])
	time.Sleep(settle)

	// 2. A crash: Shutdown without Leave.
	perm := rng.Perm(n - 1) // never node-000, the seed of the all-join-0 mode
	dead, leaver := nodes[1+perm[0]], nodes[1+perm[1]]
	survivors := slices.DeleteFunc(slices.Clone(nodes), func(x *node) bool { return x == dead })
	before := counts.failed.Load()
	phase = startPhase(counts)
	tKill := time.Now()
	if err := dead.c.Shutdown(); err != nil {
		b.Fatalf("shutdown %s: %v", dead.name, err)
	}
	times, err := waitState(survivors, dead.name, membership.StateDead, tKill, detectTimeout)
	if err != nil {
		b.Fatalf("failure detection of %s: %v", dead.name, err)
	}
	r.deadFirst, r.deadP50, r.detectDead = slices.Min(times), median(times), slices.Max(times)
	r.falseDead = counts.failed.Load() - before - int64(len(survivors))
	r.cores[1], r.refutes[1], r.queueFull[1] = phase.end()
	b.Logf("crash of %s: first survivor saw it dead after %.2fs, half after %.2fs, all %d after %.2fs; %d false failure detections; health max %d; %.2f cores",
		dead.name, r.deadFirst.Seconds(), r.deadP50.Seconds(), len(survivors), r.detectDead.Seconds(), r.falseDead, maxHealth(survivors), r.cores[1])
	time.Sleep(settle)

	// 3. A graceful leave, as weft's daemon does it on SIGTERM: Leave with
	// a 2 s bound, then Shutdown.
	survivors = slices.DeleteFunc(survivors, func(x *node) bool { return x == leaver })
	before = counts.failed.Load()
	phase = startPhase(counts)
	tLeave := time.Now()
	if err := leaver.c.Leave(leaveBound); err != nil {
		b.Logf("leave %s: %v (continuing)", leaver.name, err)
	}
	r.leaveCall = time.Since(tLeave)
	if err := leaver.c.Shutdown(); err != nil {
		b.Fatalf("shutdown %s: %v", leaver.name, err)
	}
	times, err = waitState(survivors, leaver.name, membership.StateLeft, tLeave, leaveTimeout)
	if err != nil {
		b.Fatalf("leave detection of %s: %v", leaver.name, err)
	}
	r.leftFirst, r.leftP50, r.detectLeft = slices.Min(times), median(times), slices.Max(times)
	// A leave is logged as "member failed" when the dead message arrives
	// before the leave intent, and then corrected; those are not counted
	// as false detections of instances that are up, so this is an upper
	// bound.
	r.falseLeft = counts.failed.Load() - before
	r.cores[2], r.refutes[2], r.queueFull[2] = phase.end()
	b.Logf("leave of %s (Leave returned after %.2fs): first survivor saw it left after %.2fs, half after %.2fs, all %d after %.2fs; %d member-failed events; %.2f cores",
		leaver.name, r.leaveCall.Seconds(), r.leftFirst.Seconds(), r.leftP50.Seconds(), len(survivors), r.detectLeft.Seconds(), r.falseLeft, r.cores[2])
	return r
}

// waitState waits until every observer lists target in state want and
// returns, per observer, how long after t0 it recorded that state. An
// observer that has it is not read again: nothing in this benchmark can
// bring a stopped instance back.
func waitState(observers []*node, target string, want membership.State, t0 time.Time, timeout time.Duration) ([]time.Duration, error) {
	times := make([]time.Duration, len(observers))
	seen := make([]bool, len(observers))
	err := waitFor(timeout, func() (bool, string) {
		done := 0
		states := map[string]int{}
		for i, o := range observers {
			if !seen[i] {
				st := "unknown"
				for _, m := range o.c.Members() {
					if m.Name == target {
						st = m.State.String()
						if m.State == want {
							seen[i], times[i] = true, m.Since.Sub(t0)
						}
					}
				}
				states[st]++
			}
			if seen[i] {
				done++
			}
		}
		return done == len(observers), fmt.Sprintf("%d/%d observers see %s %v; the others: %v", done, len(observers), target, want, states)
	})
	return times, err
}

// waitFor polls check every pollEvery until it reports done or timeout
// passes; the error carries check's last status.
func waitFor(timeout time.Duration, check func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, status := check()
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %v: %s", timeout, status)
		}
		time.Sleep(pollEvery)
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func maxHealth(nodes []*node) int {
	h := 0
	for _, nd := range nodes {
		h = max(h, nd.c.Health())
	}
	return h
}

// shutdownAll stops every instance, a few at a time (Shutdown waits for a
// join in flight, bounded by memberlist's TCPTimeout).
func shutdownAll(b *testing.B, nodes []*node) {
	start := time.Now()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, nd := range nodes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := nd.c.Shutdown(); err != nil {
				b.Errorf("shutdown %s: %v", nd.name, err)
			}
		})
	}
	wg.Wait()
	b.Logf("shut down %d instances in %.2fs", len(nodes), time.Since(start).Seconds())
}

// logCounts counts, across all instances, the log records the benchmark
// reports on.
type logCounts struct {
	failed, refute, queueFull atomic.Int64 // msgFailed, msgRefute, msgQueueFull records
}

// countingHandler counts records into counts and passes them on to next
// (nil: drop them, the default, which keeps the 200 instances quiet). It
// only asks for warnings and up unless next wants more.
type countingHandler struct {
	counts *logCounts
	next   slog.Handler
}

func (h *countingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || (h.next != nil && h.next.Enabled(ctx, l))
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	switch {
	case r.Message == msgFailed:
		h.counts.failed.Add(1)
	case strings.HasPrefix(r.Message, msgRefute):
		h.counts.refute.Add(1)
	case strings.HasPrefix(r.Message, msgQueueFull):
		h.counts.queueFull.Add(1)
	}
	if h.next != nil && h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	if c.next != nil {
		c.next = c.next.WithAttrs(as)
	}
	return &c
}

func (h *countingHandler) WithGroup(name string) slog.Handler {
	c := *h
	if c.next != nil {
		c.next = c.next.WithGroup(name)
	}
	return &c
}
