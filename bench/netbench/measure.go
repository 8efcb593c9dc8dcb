package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

const (
	iperfBasePort = 5301
	iperfPorts    = 400
	serverWait    = 10 * time.Second
)

// nextPort gives every iperf3 server its own port, so a server that has
// not let go of its port yet can never answer the next test.
func (b *bench) nextPort() int {
	p := iperfBasePort + b.portSeq%iperfPorts
	b.portSeq++
	return p
}

// startIPerf3Server starts a one-shot "iperf3 -s -1" on b and waits until
// it listens.
func (b *bench) startIPerf3Server(ctx context.Context, port int) (*netlab.Proc, error) {
	h := b.b
	p, err := h.Start("iperf3", "-s", "-1", "-p", strconv.Itoa(port))
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(serverWait)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := h.Run(cctx, "ss", "-Hltn", "sport = :"+strconv.Itoa(port))
		cancel()
		if err == nil && strings.Contains(string(out), "LISTEN") {
			return p, nil
		}
		if p.Exited() {
			return nil, fmt.Errorf("iperf3 server on port %d exited: %s", port, lastLines(p.Logs(), 3))
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			_ = p.Kill()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("iperf3 server not listening on port %d after %v: %s", port, serverWait, lastLines(p.Logs(), 3))
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// iperf3 runs one client test from a to dst against a fresh server on b.
// A failed test (iperf3's "the server is busy", a refused or timed-out
// connection, a broken control connection) is retried once with a new
// server; the first error is printed.
func (b *bench) iperf3(ctx context.Context, dst netip.Addr, o netlab.IPerf3Options) (netlab.IPerf3Result, error) {
	res, _, err := b.iperf3CPU(ctx, dst, o)
	return res, err
}

// iperf3CPU is iperf3, and also returns the machine's CPU use (/proc/stat)
// over the successful client run (server start-up excluded).
func (b *bench) iperf3CPU(ctx context.Context, dst netip.Addr, o netlab.IPerf3Options) (netlab.IPerf3Result, *machineCPU, error) {
	var res netlab.IPerf3Result
	var mc *machineCPU
	var lastErr error
	for attempt := 1; attempt <= 2; attempt++ {
		if err := ctx.Err(); err != nil {
			return res, nil, err
		}
		port := b.nextPort()
		srv, err := b.startIPerf3Server(ctx, port)
		if err == nil {
			o.Port = port
			before, serr := readProcStat()
			res, err = b.a.IPerf3Client(ctx, dst, o)
			if after, aerr := readProcStat(); serr == nil && aerr == nil {
				mc = cpuDelta(before, after)
			}
			// A one-shot server exits by itself after the test.
			if werr := srv.Wait(2 * time.Second); errors.Is(werr, netlab.ErrNotExited) {
				_ = srv.Stop(time.Second)
			}
			if err != nil {
				err = fmt.Errorf("%v (server: %s)", err, lastLines(srv.Logs(), 2))
			}
		}
		if err == nil {
			return res, mc, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
		if attempt == 1 {
			b.logf("    ! iperf3 failed, retrying once: %v", err)
			time.Sleep(500 * time.Millisecond)
		}
	}
	return res, nil, lastErr
}

// ping sends warm-up echo requests until one is answered (at most
// `patience`), then three more (neighbour caches, routes, flows settle).
func (b *bench) waitReachable(ctx context.Context, dst netip.Addr, patience time.Duration) error {
	deadline := time.Now().Add(patience)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, _ := b.a.Run(cctx, "ping", "-n", "-c", "1", "-W", "1", dst.String())
		cancel()
		if r, err := netlab.ParsePing(out); err == nil && r.Received > 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not answer ping from a after %v: %s", dst, patience, lastLines(string(out), 2))
		}
		time.Sleep(200 * time.Millisecond)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, _ = b.a.Run(cctx, "ping", "-n", "-q", "-c", "3", "-i", "0.05", "-W", "1", dst.String())
	return nil
}

// pingRTT measures the round-trip time with count echo requests.
func (b *bench) pingRTT(ctx context.Context, dst netip.Addr) (*pingStat, error) {
	o := b.opts
	deadline := int(float64(o.Pings)*o.PingIntvl) + 5
	cctx, cancel := context.WithTimeout(ctx, time.Duration(deadline+10)*time.Second)
	defer cancel()
	// ping exits 1 when a reply is missing: the summary is what counts.
	out, runErr := b.a.Run(cctx, "ping", "-n", "-q", "-c", strconv.Itoa(o.Pings), "-i", strconv.FormatFloat(o.PingIntvl, 'f', -1, 64),
		"-W", "1", "-w", strconv.Itoa(deadline), dst.String())
	r, err := netlab.ParsePing(out)
	if err != nil {
		if runErr != nil {
			return nil, runErr
		}
		return nil, err
	}
	if r.Received == 0 {
		return nil, fmt.Errorf("ping %s: no reply to %d echo requests", dst, r.Sent)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return &pingStat{Sent: r.Sent, Received: r.Received, AvgMs: ms(r.RTTAvg), MinMs: ms(r.RTTMin), MaxMs: ms(r.RTTMax), MdevMs: ms(r.RTTMDev)}, nil
}

// echoPort is the UDP port of the echo server on b's underlay address.
const echoPort = 7007

// echoFloor measures the round trip of a UDP echo between a's and b's
// underlay addresses with ping's count and interval: the floor of any
// user-space forwarder's ping on this machine, two thread wakeups after an
// idle interval with nothing else on the path (the overlay's ping has four
// such wakeups and the kernel's has none: its echo reply is made in the
// sender's own softirq).
func (b *bench) echoFloor(ctx context.Context, p pathDef) (*pingStat, error) {
	o := b.opts
	_, ub := p.underlays()
	dst := netip.AddrPortFrom(ub, echoPort)
	srv, err := b.b.StartUDPEcho(dst)
	if err != nil {
		return nil, err
	}
	defer func() { _ = srv.Stop(2 * time.Second) }()
	interval := time.Duration(o.PingIntvl * float64(time.Second))
	cctx, cancel := context.WithTimeout(ctx, time.Duration(o.Pings)*(interval+time.Second)+10*time.Second)
	defer cancel()
	// Wait for the server to listen (an echo comes back), as ping's warm-up does.
	for i := 0; ; i++ {
		if _, err := b.a.UDPEchoRTT(cctx, dst, 1, 0); err == nil {
			break
		} else if i == 20 || cctx.Err() != nil {
			return nil, fmt.Errorf("echo server on b (%s) never answered: %w; log: %s", dst, err, lastLines(srv.Logs(), 2))
		}
		time.Sleep(50 * time.Millisecond)
	}
	r, err := b.a.UDPEchoRTT(cctx, dst, o.Pings, interval)
	if err != nil {
		return nil, err
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return &pingStat{Sent: r.Sent, Received: r.Received, AvgMs: ms(r.RTTAvg), MinMs: ms(r.RTTMin), MaxMs: ms(r.RTTMax)}, nil
}

// ---- /proc --------------------------------------------------------------

var clkTck = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && v > 0 {
			return float64(v)
		}
	}
	return 100
}()

// cpuSeconds is utime+stime of pid (all threads).
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return float64(ut+st) / clkTck, nil
}

// memKiB reads a "VmXXX: N kB" line of /proc/pid/status.
func memKiB(pid int, key string) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			fs := strings.Fields(rest)
			if len(fs) >= 1 {
				return strconv.ParseFloat(fs[0], 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, key)
}

// ---- metrics ------------------------------------------------------------

var syscallRe = regexp.MustCompile(`(?m)^weft_syscalls_total\{op="([a-z_]+)"\} ([0-9.e+]+)$`)

// syscalls reads weft_syscalls_total from a daemon's /metrics (nil if the
// daemon does not export it).
func (d *daemon) syscalls(ctx context.Context) map[string]float64 {
	code, body, err := httpGetWithin(ctx, d.host, "http://"+d.metricsAddr()+"/metrics", 5*time.Second)
	if err != nil || code != 200 {
		return nil
	}
	m := map[string]float64{}
	for _, s := range syscallRe.FindAllStringSubmatch(string(body), -1) {
		if v, err := strconv.ParseFloat(s[2], 64); err == nil {
			m[s[1]] = v
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// ---- profiles -----------------------------------------------------------

// profile runs an extra TCP 1-stream test (not part of the figures) and
// captures a CPU profile of both daemons while it runs.
func (b *bench) profile(ctx context.Context, p pathDef, dst netip.Addr, ds []*daemon) ([]profileInfo, error) {
	secs := b.opts.ProfileSec
	type got struct {
		d    *daemon
		data []byte
		err  error
	}
	iperfDone := make(chan error, 1)
	go func() {
		load := netlab.IPerf3Options{Seconds: secs + 3, Streams: 1}
		if b.opts.ProfileTest == "udp" {
			load = netlab.IPerf3Options{Seconds: secs + 3, UDP: true, Len: b.opts.UDPLen, Bitrate: b.opts.UDPRate}
		}
		_, err := b.iperf3(ctx, dst, load)
		iperfDone <- err
	}()
	// Let the stream ramp up (the server start takes a moment too).
	select {
	case <-ctx.Done():
	case <-time.After(1500 * time.Millisecond):
	}
	ch := make(chan got, len(ds))
	for _, d := range ds {
		go func(d *daemon) {
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", d.pprofAddr(), secs)
			code, body, err := httpGetWithin(ctx, d.host, url, time.Duration(secs+15)*time.Second)
			if err == nil && code != 200 {
				err = fmt.Errorf("GET %s: status %d: %.200s (does this weft have --pprof-addr?)", url, code, body)
			}
			ch <- got{d, body, err}
		}(d)
	}
	var infos []profileInfo
	var errs []error
	for range ds {
		g := <-ch
		if g.err != nil {
			errs = append(errs, g.err)
			continue
		}
		role := "tx"
		suffix := "-cpu.pprof"
		if g.d.name != "a" {
			role = "rx"
			suffix = "-rx-cpu.pprof"
		}
		if b.opts.ProfileTest == "udp" {
			suffix = "-udp" + suffix
		}
		file := filepath.Join(b.opts.OutDir, b.stamp+"-"+p.Name+suffix)
		if err := os.MkdirAll(b.opts.OutDir, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.WriteFile(file, g.data, 0o644); err != nil {
			errs = append(errs, err)
			continue
		}
		info := profileInfo{Host: g.d.name, Role: role, File: b.rel(file)}
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		out, err := exec.CommandContext(cctx, b.goTool, "tool", "pprof", "-top", "-nodecount=15", b.weftBin, file).CombinedOutput()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("go tool pprof -top %s: %v: %s", file, err, lastLines(string(out), 3)))
		} else {
			info.Top = strings.TrimRight(string(out), "\n")
		}
		infos = append(infos, info)
	}
	if err := <-iperfDone; err != nil {
		errs = append(errs, fmt.Errorf("iperf3 during the profile: %w", err))
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Host < infos[j].Host })
	return infos, errors.Join(errs...)
}

// ---- kernel drop counters -----------------------------------------------

// kernelCounters reads a host's per-interface drop counters and its UDP
// error counters (/proc/net/snmp of the namespace): where small-packet loss
// happens (a TUN queue, a UDP socket buffer) shows up here.
func kernelCounters(ctx context.Context, h *netlab.Host) map[string]uint64 {
	m := map[string]uint64{}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := h.IP(cctx, "-s", "-j", "link", "show"); err == nil {
		var links []struct {
			Name  string `json:"ifname"`
			Stats struct {
				RX struct {
					Dropped uint64 `json:"dropped"`
					Errors  uint64 `json:"errors"`
				} `json:"rx"`
				TX struct {
					Dropped uint64 `json:"dropped"`
					Errors  uint64 `json:"errors"`
				} `json:"tx"`
			} `json:"stats64"`
		}
		if json.Unmarshal(out, &links) == nil {
			for _, l := range links {
				if l.Name == "lo" {
					continue
				}
				m[l.Name+".rx_dropped"] = l.Stats.RX.Dropped
				m[l.Name+".rx_errors"] = l.Stats.RX.Errors
				m[l.Name+".tx_dropped"] = l.Stats.TX.Dropped
				m[l.Name+".tx_errors"] = l.Stats.TX.Errors
			}
		}
	}
	if out, err := h.Run(cctx, "cat", "/proc/net/snmp"); err == nil {
		var names []string
		for _, line := range strings.Split(string(out), "\n") {
			rest, ok := strings.CutPrefix(line, "Udp: ")
			if !ok {
				continue
			}
			f := strings.Fields(rest)
			if names == nil {
				names = f
				continue
			}
			for i, v := range f {
				if i < len(names) && (strings.HasSuffix(names[i], "Errors") || names[i] == "NoPorts") {
					if n, err := strconv.ParseUint(v, 10, 64); err == nil {
						m["udp."+names[i]] = n
					}
				}
			}
		}
	}
	// Per socket: which UDP socket overflowed, weft's underlay sockets or
	// the application's (only sockets open at both readings show a delta,
	// so iperf3's per-test sockets do not; what udp.RcvbufErrors has beyond
	// weft's is theirs).
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		if out, err := h.Run(cctx, "cat", f); err == nil {
			for port, drops := range udpSocketDrops(string(out)) {
				m[fmt.Sprintf("udp:%d.drops", port)] += drops
			}
		}
	}
	return m
}

// udpSocketDrops sums the drops column of /proc/net/udp{,6} by local port.
func udpSocketDrops(table string) map[uint16]uint64 {
	d := map[uint16]uint64{}
	for i, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 13 {
			continue // the header, or a short line
		}
		_, portHex, ok := strings.Cut(f[1], ":")
		port, err1 := strconv.ParseUint(portHex, 16, 16)
		drops, err2 := strconv.ParseUint(f[12], 10, 64)
		if ok && err1 == nil && err2 == nil {
			d[uint16(port)] += drops
		}
	}
	return d
}

// counterDelta returns the counters that grew between before and after.
func counterDelta(before, after map[string]uint64) map[string]uint64 {
	d := map[string]uint64{}
	for k, v := range after {
		if b, ok := before[k]; ok && v > b {
			d[k] = v - b
		}
	}
	if len(d) == 0 {
		return nil
	}
	return d
}

func fmtCounters(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	var ks []string
	for k, v := range m {
		ks = append(ks, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(ks)
	return strings.Join(ks, " ")
}
