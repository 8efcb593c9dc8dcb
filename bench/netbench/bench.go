package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/netlab"
	weftnode "github.com/weftnet/weft/node"
)

// bench is one run of the benchmark.
type bench struct {
	opts   options
	root   string
	start  time.Time
	stamp  string // UTC timestamp naming the result files
	goTool string

	weftBin string
	lab     *netlab.Lab
	a, b    *netlab.Host
	ifA     string
	ifB     string
	portSeq int
}

func (b *bench) logf(format string, args ...any) {
	fmt.Printf(format+"\n", args...)
}

// rel shows a path relative to the repository root when it is inside it.
func (b *bench) rel(p string) string {
	if r, err := filepath.Rel(b.root, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

func (b *bench) hasWeft() bool {
	for _, n := range b.opts.Paths {
		if p, _ := pathByName(n); p.Kind == kindWeft {
			return true
		}
	}
	return false
}

// hasV6 says whether a selected path runs over the IPv6 underlay.
func (b *bench) hasV6() bool {
	for _, n := range b.opts.Paths {
		if p, _ := pathByName(n); p.V6 {
			return true
		}
	}
	return false
}

// addUnderlay6 gives both veth ends their IPv6 underlay address, without
// duplicate address detection (as netlab does for IPv6 addresses), and
// checks that a reaches b over it.
func (b *bench) addUnderlay6(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, setupCmdTimeout)
	defer cancel()
	for _, x := range []struct {
		h    *netlab.Host
		dev  string
		addr netip.Addr
	}{{b.a, b.ifA, underlay6A}, {b.b, b.ifB, underlay6B}} {
		if _, err := x.h.IP(ctx, "addr", "add", netip.PrefixFrom(x.addr, 64).String(), "dev", x.dev, "nodad"); err != nil {
			return err
		}
	}
	res, err := b.a.Ping(ctx, underlay6B, 1)
	if err != nil {
		return fmt.Errorf("IPv6 underlay a -> b: %w", err)
	}
	if res.Received != 1 {
		return fmt.Errorf("IPv6 underlay a -> b: %v", res)
	}
	return nil
}

// estimate is the expected wall time of the measurements (setup included,
// weft build excluded), from the options and this machine's typical
// start-up costs.
func (b *bench) estimate() time.Duration {
	o := b.opts
	d := time.Duration(o.Duration) * time.Second
	const iperfOverhead = 400 * time.Millisecond // server start, connect, teardown
	var total time.Duration = 2 * time.Second    // lab
	udpTests := 1
	if o.UDPRcvbuf != "" {
		udpTests = 2
	}
	for _, n := range o.Paths {
		p, _ := pathByName(n)
		t := time.Duration(3*o.Reps)*(d+iperfOverhead) +
			time.Duration(udpTests*o.UDPReps)*(time.Duration(o.UDPDur)*time.Second+iperfOverhead) +
			2*time.Duration(float64(o.Pings)*o.PingIntvl*float64(time.Second)) + 2*time.Second // warm-up, ping, echo
		switch p.Kind {
		case kindKVXLAN:
			t += time.Second
		case kindWeft:
			t += 3 * time.Second // start, gossip join, graceful leave on stop
			if o.Profile {
				t += time.Duration(o.ProfileSec+4) * time.Second
			}
		}
		total += t
	}
	return total
}

func (b *bench) run(ctx context.Context) int {
	o := b.opts
	b.stamp = b.start.Format("20060102T150405Z")
	b.goTool = goTool()

	fmt.Printf("weft netbench %s: paths %s; TCP %d reps x %d s, UDP %d-byte %d rep(s) x %d s, %d pings\n",
		b.stamp, strings.Join(o.Paths, ","), o.Reps, o.Duration, o.UDPLen, o.UDPReps, o.UDPDur, o.Pings)
	est := b.estimate()
	fmt.Printf("estimated run time: ~%s (plus building weft)\n", fmtDur(est))
	if est > 5*time.Minute {
		fmt.Printf("  (longer than 5 minutes: reduce -reps, -duration or -paths for a quick look)\n")
	}

	res := &results{Timestamp: b.stamp, Started: b.start, Options: o}
	failed := false
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		fmt.Fprintln(os.Stderr, "netbench: "+msg)
		res.Errors = append(res.Errors, msg)
		failed = true
	}

	tmp, err := os.MkdirTemp("", "weft-netbench-")
	if err != nil {
		fail("%v", err)
		return exitFailed
	}
	defer os.RemoveAll(tmp)

	if b.hasWeft() {
		if o.WeftBin != "" {
			b.weftBin, err = filepath.Abs(o.WeftBin)
		} else {
			b.weftBin = filepath.Join(tmp, "weft")
			fmt.Printf("building weft (go build -o %s ./cmd/weft)...\n", b.weftBin)
			t0 := time.Now()
			err = b.buildWeft(ctx)
			if err == nil {
				fmt.Printf("  built in %s\n", fmtDur(time.Since(t0)))
			}
		}
		if err != nil {
			fail("%v", err)
			return exitFailed
		}
	}
	res.Machine = b.machineInfo(ctx)

	// The lab: two namespaces and a veth pair, nothing else.
	b.lab, err = netlab.New("wbench")
	if err != nil {
		fail("%v", err)
		return exitFailed
	}
	defer func() {
		if err := b.lab.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "netbench: lab cleanup:", err)
		}
	}()
	if b.a, err = b.lab.Host("a"); err == nil {
		if b.b, err = b.lab.Host("b"); err == nil {
			b.ifA, b.ifB, err = b.lab.Link(b.a, b.b, netip.PrefixFrom(underlayA, 24), netip.PrefixFrom(underlayB, 24))
		}
	}
	if err != nil {
		fail("building the lab: %v", err)
		return exitFailed
	}
	if b.hasV6() {
		if err := b.addUnderlay6(ctx); err != nil {
			fail("building the lab: %v", err)
			return exitFailed
		}
		fmt.Printf("lab %s: a=%s (%s %s %s) <-veth-> b=%s (%s %s %s)\n\n", b.lab.ID(), b.a.NS(), b.ifA, underlayA, underlay6A, b.b.NS(), b.ifB, underlayB, underlay6B)
	} else {
		fmt.Printf("lab %s: a=%s (%s %s) <-veth-> b=%s (%s %s)\n\n", b.lab.ID(), b.a.NS(), b.ifA, underlayA, b.b.NS(), b.ifB, underlayB)
	}

	for _, n := range o.Paths {
		if ctx.Err() != nil {
			break
		}
		p, _ := pathByName(n)
		pr := b.runPath(ctx, p)
		res.Paths = append(res.Paths, pr)
		if !pr.OK && ctx.Err() == nil {
			failed = true
		}
	}
	if ctx.Err() != nil {
		fmt.Println("\ninterrupted: partial results follow")
		res.Interrupted = true
	}

	res.Finished = time.Now().UTC()
	res.DurationS = res.Finished.Sub(res.Started).Seconds()
	res.Machine.LoadAvgEnd = loadAvg()
	res.computeRatios()
	res.Targets = res.evalTargets()
	res.Comparisons = res.comparisons()
	res.Failed = failed

	fmt.Println()
	fmt.Print(res.table())
	fmt.Println()
	res.printNotes()
	res.printTargets()
	fmt.Printf("\nwall time %s (estimated %s); load average %s at start, %s at end\n",
		fmtDur(time.Duration(res.DurationS*float64(time.Second))), fmtDur(est), res.Machine.LoadAvgStart, res.Machine.LoadAvgEnd)

	if !o.NoJSON {
		file := filepath.Join(o.OutDir, b.stamp+".json")
		if err := res.writeJSON(file); err != nil {
			fail("writing %s: %v", file, err)
		} else {
			fmt.Printf("results: %s\n", b.rel(file))
		}
	}
	if failed || res.Failed {
		fmt.Println("some measurements FAILED (see above); exit status 1")
		return exitFailed
	}
	return exitOK
}

// runPath sets the path up, measures it and tears it down.
func (b *bench) runPath(ctx context.Context, p pathDef) *pathResult {
	o := b.opts
	pr := &pathResult{Name: p.Name, Desc: p.Desc, LoadAvg: loadAvg()}
	t0 := time.Now()
	fmt.Printf("== %s: %s (load average %s)\n", p.Name, p.Desc, pr.LoadAvg)
	errf := func(format string, args ...any) {
		if ctx.Err() != nil {
			// Failures caused by the interrupt are not measurements.
			if len(pr.Errors) == 0 || pr.Errors[len(pr.Errors)-1] != "interrupted" {
				pr.Errors = append(pr.Errors, "interrupted")
			}
			return
		}
		msg := fmt.Sprintf(format, args...)
		pr.Errors = append(pr.Errors, msg)
		fmt.Printf("   FAILED: %s\n", msg)
	}
	defer func() {
		pr.OK = len(pr.Errors) == 0
		pr.Seconds = time.Since(t0).Seconds()
		fmt.Printf("   (%s)\n\n", fmtDur(time.Since(t0)))
	}()

	var dst netip.Addr
	var ds []*daemon
	switch p.Kind {
	case kindVeth:
		dst = underlayB
	case kindKVXLAN:
		dst = overlayB
		err := b.setupKVXLAN(ctx, p)
		defer func() {
			if err := b.teardownKVXLAN(); err != nil {
				errf("kernel VXLAN teardown: %v", err)
			}
		}()
		if err != nil {
			errf("kernel VXLAN setup: %v", err)
			return pr
		}
	case kindWireguardGo:
		dst = overlayB
		procs, err := b.setupWireguardGo(ctx)
		defer func() {
			if err := b.stopWireguardGo(procs); err != nil {
				errf("wireguard-go teardown: %v", err)
			}
		}()
		if err != nil {
			errf("wireguard-go setup: %v", err)
			return pr
		}
	case kindWeft:
		dst = overlayB
		var stop func()
		var ok bool
		ds, stop, ok = b.upWeft(ctx, p, pr, errf)
		if stop != nil {
			defer stop()
		}
		if !ok {
			return pr
		}
	}

	if err := b.waitReachable(ctx, dst, 10*time.Second); err != nil {
		errf("%v", err)
		return pr
	}

	// Daemon CPU time and syscall counters over the measurement window.
	snaps := make([]daemonSnap, len(ds))
	takeCPU := func() []float64 {
		v := make([]float64, len(ds))
		for i, d := range ds {
			v[i], _ = cpuSeconds(d.proc.PID())
		}
		return v
	}
	for i, d := range ds {
		snaps[i].sys = d.syscalls(ctx)
		snaps[i].tots, _ = d.status(ctx)
		snaps[i].cpu, _ = cpuSeconds(d.proc.PID())
	}
	lastCPU := takeCPU()
	account := func(test string) {
		if len(ds) == 0 {
			return
		}
		now := takeCPU()
		for i := range ds {
			if pr.Daemons[i].CPUByTest == nil {
				pr.Daemons[i].CPUByTest = map[string]float64{}
			}
			pr.Daemons[i].CPUByTest[test] = round3(now[i] - lastCPU[i])
		}
		lastCPU = now
	}
	alive := func() bool {
		for _, d := range ds {
			if d.proc.Exited() {
				errf("%v", daemonExitError(d))
				return false
			}
		}
		return true
	}

	// TCP, 1, 4 and 8 streams, with the machine's busy cores per run.
	for _, streams := range []int{1, 4, 8} {
		ts := b.tcpTest(ctx, dst, streams, errf)
		switch streams {
		case 1:
			pr.TCP1 = ts
		case 4:
			pr.TCP4 = ts
		default:
			pr.TCP8 = ts
		}
		account(fmt.Sprintf("tcp%d", streams))
		if !alive() {
			return pr
		}
	}

	// UDP, small datagrams, as fast as the sender goes: with iperf3's
	// default receive buffer, then (-udp-rcvbuf) with a large one.
	pr.UDP = b.udpTest(ctx, dst, "", errf)
	account("udp")
	if !alive() {
		return pr
	}
	if o.UDPRcvbuf != "" {
		pr.UDPBigBuf = b.udpTest(ctx, dst, o.UDPRcvbuf, errf)
		account("udp-rcvbuf")
	}
	if !alive() {
		return pr
	}

	// Latency.
	if ctx.Err() == nil {
		ps, err := b.pingRTT(ctx, dst)
		if err != nil {
			errf("ping: %v", err)
		} else {
			pr.Ping = ps
			fmt.Printf("   ping: avg %.3f ms (min %.3f, max %.3f, mdev %.3f; %d/%d replies)\n", ps.AvgMs, ps.MinMs, ps.MaxMs, ps.MdevMs, ps.Received, ps.Sent)
		}
		account("ping")
		if es, err := b.echoFloor(ctx, p); err != nil {
			errf("user-space echo: %v", err)
		} else {
			pr.Echo = es
			fmt.Printf("   user-space echo floor (UDP echo between a's and b's underlay addresses, same interval): avg %.3f ms (min %.3f, max %.3f; %d/%d)\n",
				es.AvgMs, es.MinMs, es.MaxMs, es.Received, es.Sent)
		}
		account("echo")
	}

	// Daemon totals over the window.
	b.daemonTotals(ctx, pr, ds, snaps, errf)
	if len(ds) == 2 {
		a, bb := pr.Daemons[0], pr.Daemons[1]
		fmt.Printf("   daemons: CPU %.2f/%.2f s, peak RSS %.1f/%.1f MiB (a/b)\n", a.CPUSeconds, bb.CPUSeconds, a.PeakRSSMiB, bb.PeakRSSMiB)
	}

	if !alive() {
		return pr
	}

	// Profile last, outside the CPU accounting window.
	if o.Profile && p.Kind == kindWeft && ctx.Err() == nil {
		infos, err := b.profile(ctx, p, dst, ds)
		pr.Profiles = infos
		if err != nil {
			errf("profile: %v", err)
		}
		for _, in := range infos {
			fmt.Printf("   CPU profile of %s (%s): %s\n", in.Host, in.Role, in.File)
			if in.Role == "tx" && in.Top != "" {
				for _, l := range strings.Split(in.Top, "\n") {
					fmt.Printf("     %s\n", l)
				}
			}
		}
	}
	return pr
}

// upWeft starts path p's two weft daemons and records their setup in pr.
// stop, if not nil, stops them and records their logs; ok is false if they
// did not come up.
func (b *bench) upWeft(ctx context.Context, p pathDef, pr *pathResult, errf func(string, ...any)) (ds []*daemon, stop func(), ok bool) {
	ds, err := b.newDaemons(p)
	if err != nil {
		errf("%v", err)
		return nil, nil, false
	}
	pr.Command = "weft " + strings.Join(ds[0].args, " ")
	ts := time.Now()
	err = b.startWeft(ctx, p, ds)
	stop = func() {
		issues, mark := b.stopWeft(ds)
		pr.DaemonIssues = append(pr.DaemonIssues, issues...)
		for i, d := range ds {
			if d.proc == nil {
				continue
			}
			logs := d.proc.Logs()
			if mark[i] > len(logs) {
				mark[i] = len(logs)
			}
			if run := strings.TrimSpace(logs[:mark[i]]); run != "" {
				pr.Daemons[i].Log = tailLines(run, 30)
			}
			if stop := strings.TrimSpace(logs[mark[i]:]); stop != "" {
				pr.Daemons[i].StopLog = tailLines(stop, 30)
			}
		}
		for _, s := range pr.DaemonIssues {
			fmt.Printf("   daemon: %s\n", s)
		}
		for _, d := range pr.Daemons {
			for _, l := range d.Log {
				fmt.Printf("   log %s: %s\n", d.Host, l)
			}
			for _, l := range d.StopLog {
				fmt.Printf("   log %s (shutdown): %s\n", d.Host, l)
			}
		}
	}
	for _, d := range ds {
		pr.Daemons = append(pr.Daemons, &daemonStat{Host: d.name})
	}
	if err != nil {
		errf("starting weft: %v", err)
		return ds, stop, false
	}
	pr.SetupSeconds = time.Since(ts).Seconds()
	for i, d := range ds {
		pr.Daemons[i].PID = d.proc.PID()
		if st, err := d.status(ctx); err == nil {
			pr.Daemons[i].MTU = st.Node.MTU
			pr.Daemons[i].Offloads = st.Node.Offloads
			pr.Daemons[i].Workers = st.Node.Workers
			want := p.Workers
			switch {
			case p.KernelPath:
				want = 0 // the kernel forwards
			case want == 0:
				want = min(runtime.NumCPU(), 256)
			}
			if st.Node.Workers != want {
				pr.DaemonIssues = append(pr.DaemonIssues, fmt.Sprintf("weft on %s runs %d workers, want %d (a refused multi-queue TUN?)", d.name, st.Node.Workers, want))
			}
		}
	}
	fmt.Printf("   weft up in %s (pids a=%d b=%d, %d/%d workers, MTU %d, offloads %s)\n", fmtDur(time.Since(ts)),
		ds[0].proc.PID(), ds[1].proc.PID(), pr.Daemons[0].Workers, pr.Daemons[1].Workers, pr.Daemons[0].MTU, fmtOffloads(pr.Daemons[0].Offloads))
	return ds, stop, true
}

// daemonSnap is a daemon's CPU time, syscall counters and totals at the
// start of a path's measurement window.
type daemonSnap struct {
	cpu  float64
	sys  map[string]float64
	tots weftnode.Status
}

// daemonTotals records each daemon's CPU time, peak RSS, syscalls, packets
// and drops over the window that began with snaps.
func (b *bench) daemonTotals(ctx context.Context, pr *pathResult, ds []*daemon, snaps []daemonSnap, errf func(string, ...any)) {
	for i, d := range ds {
		ds := pr.Daemons[i]
		now, err := cpuSeconds(d.proc.PID())
		if err != nil {
			errf("CPU time of weft on %s: %v", d.name, err)
			continue
		}
		ds.CPUSeconds = round3(now - snaps[i].cpu)
		if hwm, err := memKiB(d.proc.PID(), "VmHWM"); err == nil {
			ds.PeakRSSMiB = round3(hwm / 1024)
		} else {
			errf("peak RSS of weft on %s: %v", d.name, err)
		}
		if rss, err := memKiB(d.proc.PID(), "VmRSS"); err == nil {
			ds.RSSMiB = round3(rss / 1024)
		}
		if after := d.syscalls(ctx); after != nil && snaps[i].sys != nil {
			ds.Syscalls = map[string]float64{}
			for k, v := range after {
				ds.Syscalls[k] = v - snaps[i].sys[k]
			}
		}
		if st, err := d.status(ctx); err == nil {
			t0 := snaps[i].tots.Totals
			ds.TxPackets = st.Totals.TxPackets - t0.TxPackets
			ds.RxPackets = st.Totals.RxPackets - t0.RxPackets
			ds.Drops = nonZero(st.Drops)
		}
	}
}

// tcpTest runs o.Reps iperf3 TCP transfers of streams streams to dst and
// returns their medians, with the machine's busy cores.
func (b *bench) tcpTest(ctx context.Context, dst netip.Addr, streams int, errf func(string, ...any)) *tcpStat {
	o := b.opts
	ts := &tcpStat{Streams: streams}
	for rep := 1; rep <= o.Reps && ctx.Err() == nil; rep++ {
		r, mc, err := b.iperf3CPU(ctx, dst, netlab.IPerf3Options{Seconds: o.Duration, Streams: streams})
		if err != nil {
			errf("TCP %d stream(s), rep %d: %v", streams, rep, err)
			continue
		}
		tr := tcpRep{ReceivedBPS: r.ReceivedBPS, SentBPS: r.SentBPS, Retransmits: r.Retransmits, Seconds: r.Seconds, CPU: mc}
		if mc != nil {
			tr.BusyCores = mc.BusyCores
			if mc.BusyCores > 0 {
				tr.GbpsPerBusyCore = round3(r.ReceivedBPS / 1e9 / mc.BusyCores)
			}
		}
		ts.Reps = append(ts.Reps, tr)
		if o.Verbose {
			fmt.Printf("   tcp%d rep %d: %s; machine: %s\n", streams, rep, r, mc)
		}
	}
	if len(ts.Reps) > 0 {
		var v []float64
		for _, r := range ts.Reps {
			v = append(v, r.ReceivedBPS)
		}
		ts.MedianBPS = median(v)
		ts.MinBPS, ts.MaxBPS = minMax(v)
		var busy, per []float64
		var mcs []*machineCPU
		for _, r := range ts.Reps {
			if r.CPU != nil && r.BusyCores > 0 {
				busy = append(busy, r.BusyCores)
				per = append(per, r.GbpsPerBusyCore)
				mcs = append(mcs, r.CPU)
			}
		}
		ts.BusyCores, ts.GbpsPerBusyCore, ts.CPU = round3(median(busy)), round3(median(per)), meanCPU(mcs)
		fmt.Printf("   TCP %d stream(s): median %s Gbit/s of %d (min %s, max %s); machine %.2f busy cores, %.2f Gbit/s per busy core\n",
			streams, gbps(ts.MedianBPS), len(v), gbps(ts.MinBPS), gbps(ts.MaxBPS), ts.BusyCores, ts.GbpsPerBusyCore)
		if ts.CPU != nil {
			fmt.Printf("     machine over the runs: %s\n", ts.CPU)
		}
	}
	return ts
}

func (b *bench) buildWeft(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	args := []string{"build", "-o", b.weftBin}
	if rev := gitRevision(ctx, b.root); rev != "" {
		// As the Makefile does, so that `weft version` names the revision.
		args = append(args, "-ldflags", "-X main.buildRevision="+rev)
	}
	cmd := exec.CommandContext(ctx, b.goTool, append(args, "./cmd/weft")...)
	cmd.Dir = b.root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("building weft (go build -o %s ./cmd/weft in %s): %v\n%s", b.weftBin, b.root, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func gitRevision(ctx context.Context, dir string) string {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "git", "rev-parse", "HEAD")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go"
	}
	return "go"
}

func (b *bench) machineInfo(ctx context.Context) machineInfo {
	cmdOut := func(dir, name string, args ...string) string {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, name, args...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	firstLine := func(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }
	m := machineInfo{NumCPU: runtime.NumCPU(), GoVersion: cmdOut(b.root, b.goTool, "version"), LoadAvgStart: loadAvg()}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(firstLine(string(data)), "MemTotal: %f kB", &kb); err == nil {
			m.MemMiB = int(kb / 1024)
		}
	}
	m.Hostname, _ = os.Hostname()
	m.IPerf3 = firstLine(cmdOut("", "iperf3", "--version"))
	m.WeftRevision = cmdOut(b.root, "git", "rev-parse", "HEAD")
	// Untracked files count: much of the tree may not be committed yet.
	if m.WeftRevision != "" && cmdOut(b.root, "git", "status", "--porcelain") != "" {
		m.WeftRevision += "-dirty"
	}
	if b.weftBin != "" {
		m.WeftVersion = cmdOut("", b.weftBin, "version")
		if data, err := os.ReadFile(b.weftBin); err == nil {
			m.WeftSHA256 = fmt.Sprintf("%x", sha256.Sum256(data))
		}
		if b.opts.WeftBin != "" {
			m.WeftRevision += " (prebuilt binary given with -weft; revision of the working tree, not necessarily of the binary)"
		}
	}
	return m
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func fmtDur(d time.Duration) string {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	d = d.Round(time.Second)
	if d < time.Minute {
		return d.String()
	}
	return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
}

func fmtOffloads(m map[string]bool) string {
	if len(m) == 0 {
		return "n/a"
	}
	var on []string
	for k, v := range m {
		if v {
			on = append(on, k)
		}
	}
	if len(on) == 0 {
		return "none"
	}
	sort.Strings(on)
	return strings.Join(on, ",")
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v > 0 {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func tailLines(s string, n int) []string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return lines
}

// udpTest measures small UDP datagrams as fast as the sender goes, iperf3's
// socket buffers at their defaults (window "") or set with iperf3 -w window
// (on both ends; the receiver's is the one that overflows).
func (b *bench) udpTest(ctx context.Context, dst netip.Addr, window string, errf func(string, ...any)) *udpStat {
	o := b.opts
	var extra []string
	label := ""
	if window != "" {
		extra = []string{"-w", window}
		label = ", receive buffer " + window
	}
	us := &udpStat{Len: o.UDPLen, Rate: o.UDPRate, Rcvbuf: window}
	kcA, kcB := kernelCounters(ctx, b.a), kernelCounters(ctx, b.b)
	for rep := 1; rep <= o.UDPReps && ctx.Err() == nil; rep++ {
		r, err := b.iperf3(ctx, dst, netlab.IPerf3Options{Seconds: o.UDPDur, UDP: true, Len: o.UDPLen, Bitrate: o.UDPRate, Extra: extra})
		if err != nil {
			errf("UDP %d-byte, rep %d: %v", o.UDPLen, rep, err)
			continue
		}
		secs := r.Seconds
		if secs <= 0 {
			secs = float64(o.UDPDur)
		}
		lost := max(r.LostPackets, 0)
		delivered := max(r.Packets-lost, 0)
		ur := udpRep{SentPPS: float64(r.Packets) / secs, DeliveredPPS: float64(delivered) / secs, LossPercent: r.LostPercent,
			Packets: r.Packets, Lost: lost, SentBPS: r.SentBPS, ReceivedBPS: r.ReceivedBPS}
		us.Reps = append(us.Reps, ur)
		if o.Verbose {
			fmt.Printf("   udp rep %d: %s\n", rep, r)
		}
	}
	if len(us.Reps) > 0 {
		sorted := append([]udpRep(nil), us.Reps...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].DeliveredPPS < sorted[j].DeliveredPPS })
		m := sorted[(len(sorted)-1)/2] // lower median: a real rep, with its own loss
		if len(sorted)%2 == 0 {
			m.DeliveredPPS = (sorted[len(sorted)/2-1].DeliveredPPS + sorted[len(sorted)/2].DeliveredPPS) / 2
		}
		us.DeliveredPPS, us.SentPPS, us.LossPercent = m.DeliveredPPS, m.SentPPS, m.LossPercent
		var v []float64
		for _, r := range us.Reps {
			v = append(v, r.DeliveredPPS)
		}
		lo, hi := minMax(v)
		fmt.Printf("   UDP %d-byte%s: median %.1f kpps delivered of %.1f kpps sent (%.1f%% lost); %d reps, min %.1f, max %.1f\n",
			o.UDPLen, label, us.DeliveredPPS/1e3, us.SentPPS/1e3, us.LossPercent, len(v), lo/1e3, hi/1e3)
	}
	us.KernelDrops = map[string]map[string]uint64{}
	if d := counterDelta(kcA, kernelCounters(ctx, b.a)); d != nil {
		us.KernelDrops["a"] = d
	}
	if d := counterDelta(kcB, kernelCounters(ctx, b.b)); d != nil {
		us.KernelDrops["b"] = d
	}
	if len(us.Reps) > 0 {
		fmt.Printf("   kernel drops during UDP%s: a: %s; b: %s\n", label, fmtCounters(us.KernelDrops["a"]), fmtCounters(us.KernelDrops["b"]))
	}
	return us
}
