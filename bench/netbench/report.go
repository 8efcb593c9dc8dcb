package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// results is everything one run measured; it is written as JSON.
type results struct {
	Timestamp   string        `json:"timestamp"`
	Started     time.Time     `json:"started"`
	Finished    time.Time     `json:"finished"`
	DurationS   float64       `json:"duration_s"`
	Machine     machineInfo   `json:"machine"`
	Options     options       `json:"options"`
	Paths       []*pathResult `json:"paths"`
	Targets     []target      `json:"targets"`
	Comparisons []string      `json:"comparisons,omitempty"`
	Errors      []string      `json:"errors,omitempty"`
	Failed      bool          `json:"failed"`
	Interrupted bool          `json:"interrupted,omitempty"`
}

type machineInfo struct {
	Hostname     string `json:"hostname"`
	Kernel       string `json:"kernel"`
	NumCPU       int    `json:"nproc"`
	CPU          string `json:"cpu"`
	MemMiB       int    `json:"mem_mib"`
	GoVersion    string `json:"go_version"`
	WeftRevision string `json:"weft_revision"`
	WeftVersion  string `json:"weft_version,omitempty"`
	WeftSHA256   string `json:"weft_binary_sha256,omitempty"`
	IPerf3       string `json:"iperf3_version"`
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
}

type pathResult struct {
	Name         string   `json:"name"`
	Desc         string   `json:"description"`
	Command      string   `json:"command,omitempty"`
	OK           bool     `json:"ok"`
	Errors       []string `json:"errors,omitempty"`
	Seconds      float64  `json:"seconds"`
	LoadAvg      string   `json:"loadavg_start"` // the machine is shared: a high load means noisy figures
	SetupSeconds float64  `json:"setup_seconds,omitempty"`
	TCP1         *tcpStat `json:"tcp1,omitempty"`
	TCP4         *tcpStat `json:"tcp4,omitempty"`
	TCP8         *tcpStat `json:"tcp8,omitempty"`
	UDP          *udpStat `json:"udp,omitempty"`
	// UDPBigBuf is the same test with a large receive buffer for iperf3
	// (-udp-rcvbuf): what the path delivers when the receiving
	// application's socket does not overflow between its reads.
	UDPBigBuf *udpStat  `json:"udp_big_rcvbuf,omitempty"`
	Ping      *pingStat `json:"ping,omitempty"`
	// Echo is the user-space floor beside Ping: a UDP echo between the
	// hosts' underlay addresses (two Go processes that sleep between
	// datagrams), same count and interval, no overlay.
	Echo         *pingStat     `json:"udp_echo,omitempty"`
	Daemons      []*daemonStat `json:"daemons,omitempty"`
	DaemonIssues []string      `json:"daemon_issues,omitempty"`
	Ratio        *ratios       `json:"ratio_to_kvxlan,omitempty"`
	Profiles     []profileInfo `json:"profiles,omitempty"`
}

type tcpStat struct {
	Streams   int     `json:"streams"`
	MedianBPS float64 `json:"median_bps"`
	MinBPS    float64 `json:"min_bps"`
	MaxBPS    float64 `json:"max_bps"`
	// The machine's busy cores (all CPUs, /proc/stat) during the runs:
	// the median over the reps, and the median of each rep's throughput
	// divided by its busy cores.
	BusyCores       float64     `json:"busy_cores"`
	GbpsPerBusyCore float64     `json:"gbps_per_busy_core"`
	CPU             *machineCPU `json:"machine_cpu,omitempty"` // mean over the reps
	Reps            []tcpRep    `json:"reps"`
}

type tcpRep struct {
	ReceivedBPS float64 `json:"received_bps"`
	SentBPS     float64 `json:"sent_bps"`
	Retransmits int     `json:"retransmits"`
	Seconds     float64 `json:"seconds"`
	// Machine-wide, over this client run.
	BusyCores       float64     `json:"busy_cores"`
	GbpsPerBusyCore float64     `json:"gbps_per_busy_core"`
	CPU             *machineCPU `json:"machine_cpu,omitempty"`
}

type udpStat struct {
	Len          int      `json:"len"`
	Rate         string   `json:"rate"`
	Rcvbuf       string   `json:"rcvbuf,omitempty"` // iperf3 -w, both ends ("": the defaults)
	DeliveredPPS float64  `json:"delivered_pps"`    // median
	SentPPS      float64  `json:"sent_pps"`
	LossPercent  float64  `json:"loss_percent"`
	Reps         []udpRep `json:"reps"`
	// Kernel counters that grew during the UDP test(s), per host.
	KernelDrops map[string]map[string]uint64 `json:"kernel_drops,omitempty"`
}

type udpRep struct {
	SentPPS      float64 `json:"sent_pps"`
	DeliveredPPS float64 `json:"delivered_pps"`
	LossPercent  float64 `json:"loss_percent"`
	Packets      int     `json:"packets"`
	Lost         int     `json:"lost"`
	SentBPS      float64 `json:"sent_bps"`
	ReceivedBPS  float64 `json:"received_bps"`
}

type pingStat struct {
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	AvgMs    float64 `json:"avg_ms"`
	MinMs    float64 `json:"min_ms"`
	MaxMs    float64 `json:"max_ms"`
	MdevMs   float64 `json:"mdev_ms"`
}

type daemonStat struct {
	Host       string             `json:"host"`
	PID        int                `json:"pid"`
	MTU        int                `json:"mtu,omitempty"`
	Workers    int                `json:"workers,omitempty"`
	Offloads   map[string]bool    `json:"offloads,omitempty"`
	CPUSeconds float64            `json:"cpu_seconds"`
	CPUByTest  map[string]float64 `json:"cpu_seconds_by_test,omitempty"`
	PeakRSSMiB float64            `json:"peak_rss_mib"`
	RSSMiB     float64            `json:"rss_mib_end"`
	TxPackets  uint64             `json:"tx_packets"`
	RxPackets  uint64             `json:"rx_packets"`
	Syscalls   map[string]float64 `json:"syscalls,omitempty"`
	Drops      map[string]uint64  `json:"drops,omitempty"`
	Log        []string           `json:"log,omitempty"`          // logged while measuring (--log-level warn)
	StopLog    []string           `json:"shutdown_log,omitempty"` // logged after SIGTERM
}

type ratios struct {
	TCP1    *float64 `json:"tcp1,omitempty"`
	TCP4    *float64 `json:"tcp4,omitempty"`
	TCP8    *float64 `json:"tcp8,omitempty"`
	UDP64   *float64 `json:"udp,omitempty"`
	PerCore *float64 `json:"tcp1_gbps_per_busy_core,omitempty"`
}

type profileInfo struct {
	Host string `json:"host"`
	Role string `json:"role"` // tx (sender) or rx
	File string `json:"file"`
	Top  string `json:"top,omitempty"`
}

type target struct {
	Name   string `json:"name"`
	Status string `json:"status"` // PASS, FAIL, n/a
	Detail string `json:"detail"`
}

func (r *results) path(name string) *pathResult {
	for _, p := range r.Paths {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func tcpMedian(t *tcpStat) float64 {
	if t == nil || len(t.Reps) == 0 {
		return 0
	}
	return t.MedianBPS
}

func udpPPS(u *udpStat) float64 {
	if u == nil || len(u.Reps) == 0 {
		return 0
	}
	return u.DeliveredPPS
}

func ratio(x, base float64) *float64 {
	if x <= 0 || base <= 0 {
		return nil
	}
	v := round3(x / base)
	return &v
}

func perCore(t *tcpStat) float64 {
	if t == nil || len(t.Reps) == 0 {
		return 0
	}
	return t.GbpsPerBusyCore
}

func (r *results) computeRatios() {
	// Each path against the kernel VXLAN of its underlay's family: the *6
	// paths against kvxlan6 (when it ran), the others against kvxlan.
	k4, k6 := r.path("kvxlan"), r.path("kvxlan6")
	for _, p := range r.Paths {
		k := k4
		if def, ok := pathByName(p.Name); ok && def.V6 {
			k = k6
		}
		if k == nil {
			continue
		}
		p.Ratio = &ratios{
			TCP1:    ratio(tcpMedian(p.TCP1), tcpMedian(k.TCP1)),
			TCP4:    ratio(tcpMedian(p.TCP4), tcpMedian(k.TCP4)),
			TCP8:    ratio(tcpMedian(p.TCP8), tcpMedian(k.TCP8)),
			UDP64:   ratio(udpPPS(p.UDP), udpPPS(k.UDP)),
			PerCore: ratio(perCore(p.TCP1), perCore(k.TCP1)),
		}
	}
}

// The issue's targets (issue 11), all judged within this one run.
const (
	targetTCP1     = 0.75 // weft-udp TCP 1 stream, x kvxlan
	targetTCP4     = 0.6  // weft-udp TCP 4 streams, x kvxlan
	targetUDP      = 0.8  // weft-udp 64-byte UDP delivered, x kvxlan
	targetPingMs   = 0.15 // weft-udp ping, kvxlan + this
	targetPerCore  = 0.5  // weft-udp Gbit/s per busy core (TCP 1 stream), x kvxlan's
	targetVXLAN    = 0.9  // weft-vxlan, x weft-udp (within 10%)
	targetNoOff    = 3    // weft-udp TCP 1 stream, x weft-udp-nooff
	targetRSSLimit = 64   // MiB, every daemon at the default worker count
	targetEncWG    = 2.0  // weft-udp-encrypt TCP 1 stream and UDP, x wireguard-go (issue 13)
	targetEncPlain = 0.6  // weft-udp-encrypt TCP 1 stream, x weft-udp (issue 13)
	// Issue 25: the kernel data path against the kernel VXLAN it programs.
	targetKernelTCP1    = 0.95 // weft-kernel TCP 1 stream, x kvxlan
	targetKernelPingMs  = 0.02 // weft-kernel ping, kvxlan + this
	targetKernelPerCore = 0.9  // weft-kernel Gbit/s per busy core, x kvxlan's (the filter's cost)
)

// evalTargets checks the issue's targets.
func (r *results) evalTargets() []target {
	var ts []target
	w, k, n, x := r.path("weft-udp"), r.path("kvxlan"), r.path("weft-udp-nooff"), r.path("weft-vxlan")
	cmp := func(name string, v, base, factor float64, unit string, scale float64, need string) {
		t := target{Name: name}
		if v <= 0 || base <= 0 {
			t.Status, t.Detail = "n/a", "not measured in this run (needs "+need+")"
		} else {
			t.Status = passFail(v >= factor*base)
			t.Detail = fmt.Sprintf("%.2f vs %.2f %s = %.2fx (need %.2gx)", v/scale, base/scale, unit, v/base, factor)
		}
		ts = append(ts, t)
	}
	get := func(p *pathResult) (t1, t4, u, pc float64) {
		if p == nil {
			return
		}
		return tcpMedian(p.TCP1), tcpMedian(p.TCP4), udpPPS(p.UDP), perCore(p.TCP1)
	}
	wt1, wt4, wu, wpc := get(w)
	kt1, kt4, ku, kpc := get(k)
	nt1, _, _, _ := get(n)
	xt1, xt4, xu, _ := get(x)
	cmp(fmt.Sprintf("weft-udp TCP 1 stream >= %.2gx kernel VXLAN", targetTCP1), wt1, kt1, targetTCP1, "Gbit/s", 1e9, "weft-udp and kvxlan")
	cmp(fmt.Sprintf("weft-udp TCP 4 streams >= %.2gx kernel VXLAN", targetTCP4), wt4, kt4, targetTCP4, "Gbit/s", 1e9, "weft-udp and kvxlan")
	cmp(fmt.Sprintf("weft-udp UDP %d-byte delivered >= %.2gx kernel VXLAN", r.Options.UDPLen, targetUDP), wu, ku, targetUDP, "kpps", 1e3, "weft-udp and kvxlan")

	t := target{Name: fmt.Sprintf("weft-udp ping RTT <= kernel VXLAN + %.2g ms", targetPingMs)}
	if w == nil || k == nil || w.Ping == nil || k.Ping == nil {
		t.Status, t.Detail = "n/a", "not measured in this run (needs weft-udp and kvxlan)"
	} else {
		t.Status = passFail(w.Ping.AvgMs <= k.Ping.AvgMs+targetPingMs)
		t.Detail = fmt.Sprintf("%.3f vs %.3f ms (%+.3f ms)", w.Ping.AvgMs, k.Ping.AvgMs, w.Ping.AvgMs-k.Ping.AvgMs)
		if w.Echo != nil {
			t.Detail += fmt.Sprintf("; user-space floor (UDP echo, same interval, no overlay) %.3f ms, kernel VXLAN + %.3f", w.Echo.AvgMs, w.Echo.AvgMs-k.Ping.AvgMs)
		}
	}
	ts = append(ts, t)

	cmp(fmt.Sprintf("weft-udp TCP 1 stream Gbit/s per busy core >= %.2gx kernel VXLAN's", targetPerCore), wpc, kpc, targetPerCore, "Gbit/s per busy core", 1, "weft-udp and kvxlan")
	cmp(fmt.Sprintf("weft-vxlan TCP 1 stream within 10%% of weft-udp (>= %.2gx)", targetVXLAN), xt1, wt1, targetVXLAN, "Gbit/s", 1e9, "weft-vxlan and weft-udp")
	cmp(fmt.Sprintf("weft-vxlan TCP 4 streams within 10%% of weft-udp (>= %.2gx)", targetVXLAN), xt4, wt4, targetVXLAN, "Gbit/s", 1e9, "weft-vxlan and weft-udp")
	cmp(fmt.Sprintf("weft-vxlan UDP %d-byte within 10%% of weft-udp (>= %.2gx)", r.Options.UDPLen, targetVXLAN), xu, wu, targetVXLAN, "kpps", 1e3, "weft-vxlan and weft-udp")
	cmp(fmt.Sprintf("weft-udp TCP 1 stream >= %dx weft-udp-nooff (one packet per syscall)", targetNoOff), wt1, nt1, targetNoOff, "Gbit/s", 1e9, "weft-udp and weft-udp-nooff")

	// Issue 13: the encrypted data plane against wireguard-go and against
	// weft without encryption.
	et1, _, eu, _ := get(r.path("weft-udp-encrypt"))
	gt1, _, gu, _ := get(r.path("wireguard-go"))
	cmp(fmt.Sprintf("weft-udp-encrypt TCP 1 stream >= %.2gx wireguard-go", targetEncWG), et1, gt1, targetEncWG, "Gbit/s", 1e9, "weft-udp-encrypt and wireguard-go")
	cmp(fmt.Sprintf("weft-udp-encrypt UDP %d-byte delivered >= %.2gx wireguard-go", r.Options.UDPLen, targetEncWG), eu, gu, targetEncWG, "kpps", 1e3, "weft-udp-encrypt and wireguard-go")
	cmp(fmt.Sprintf("weft-udp-encrypt TCP 1 stream >= %.2gx weft-udp", targetEncPlain), et1, wt1, targetEncPlain, "Gbit/s", 1e9, "weft-udp-encrypt and weft-udp")

	// Issue 25: the kernel data path (the device weft programs and its
	// peer filter) against a hand-made kernel VXLAN device.
	kn := r.path("weft-kernel")
	knt1, _, _, knpc := get(kn)
	cmp(fmt.Sprintf("weft-kernel TCP 1 stream >= %.2gx kernel VXLAN", targetKernelTCP1), knt1, kt1, targetKernelTCP1, "Gbit/s", 1e9, "weft-kernel and kvxlan")
	t = target{Name: fmt.Sprintf("weft-kernel ping RTT <= kernel VXLAN + %.2g ms", targetKernelPingMs)}
	if kn == nil || k == nil || kn.Ping == nil || k.Ping == nil {
		t.Status, t.Detail = "n/a", "not measured in this run (needs weft-kernel and kvxlan)"
	} else {
		t.Status = passFail(kn.Ping.AvgMs <= k.Ping.AvgMs+targetKernelPingMs)
		t.Detail = fmt.Sprintf("%.3f vs %.3f ms (%+.3f ms)", kn.Ping.AvgMs, k.Ping.AvgMs, kn.Ping.AvgMs-k.Ping.AvgMs)
	}
	ts = append(ts, t)
	cmp(fmt.Sprintf("weft-kernel TCP 1 stream Gbit/s per busy core >= %.2gx kernel VXLAN's", targetKernelPerCore), knpc, kpc, targetKernelPerCore, "Gbit/s per busy core", 1, "weft-kernel and kvxlan")

	t = target{Name: fmt.Sprintf("every weft daemon's peak RSS < %d MiB at the default worker count", targetRSSLimit)}
	var parts []string
	pass, seen := true, false
	for _, p := range r.Paths {
		if def, ok := pathByName(p.Name); ok && !def.defaultWorkers() {
			continue // not the default worker count
		}
		for _, d := range p.Daemons {
			if d.PeakRSSMiB <= 0 {
				continue
			}
			seen = true
			if d.PeakRSSMiB >= targetRSSLimit {
				pass = false
			}
			parts = append(parts, fmt.Sprintf("%s/%s %.1f", p.Name, d.Host, d.PeakRSSMiB))
		}
	}
	if !seen {
		t.Status, t.Detail = "n/a", "no weft path with the default worker count measured"
	} else {
		t.Status = passFail(pass)
		t.Detail = strings.Join(parts, ", ") + " MiB"
	}
	return append(ts, t)
}

// comparisons are the figures the issue asks for beside the targets: what
// the workers and the busy poll change, within this run.
func (r *results) comparisons() []string {
	var out []string
	w, w1, bp := r.path("weft-udp"), r.path("weft-udp-w1"), r.path("weft-udp-bp")
	f := func(a, b float64) string {
		if a <= 0 || b <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	if k := r.path("kvxlan"); w != nil && k != nil && w.UDPBigBuf != nil && k.UDPBigBuf != nil {
		s := fmt.Sprintf("UDP %d-byte with iperf3 -w %s: weft-udp vs kvxlan %s (%.1f vs %.1f kpps)", r.Options.UDPLen, r.Options.UDPRcvbuf,
			f(udpPPS(w.UDPBigBuf), udpPPS(k.UDPBigBuf)), udpPPS(w.UDPBigBuf)/1e3, udpPPS(k.UDPBigBuf)/1e3)
		if x := r.path("weft-vxlan"); x != nil && x.UDPBigBuf != nil {
			s += fmt.Sprintf(", weft-vxlan vs kvxlan %s", f(udpPPS(x.UDPBigBuf), udpPPS(k.UDPBigBuf)))
		}
		out = append(out, s)
	}
	if w != nil && w1 != nil {
		out = append(out, fmt.Sprintf("workers (weft-udp vs weft-udp-w1): TCP 1 %s, TCP 4 %s, TCP 8 %s, UDP %s, Gbit/s per busy core %s",
			f(tcpMedian(w.TCP1), tcpMedian(w1.TCP1)), f(tcpMedian(w.TCP4), tcpMedian(w1.TCP4)), f(tcpMedian(w.TCP8), tcpMedian(w1.TCP8)),
			f(udpPPS(w.UDP), udpPPS(w1.UDP)), f(perCore(w.TCP1), perCore(w1.TCP1))))
	}
	if fc := r.path("weft-udp-fullcsum"); w != nil && fc != nil {
		out = append(out, fmt.Sprintf("partial checksums (weft-udp vs weft-udp-fullcsum): TCP 1 %s, TCP 4 %s, TCP 8 %s, UDP %s, Gbit/s per busy core %s",
			f(tcpMedian(w.TCP1), tcpMedian(fc.TCP1)), f(tcpMedian(w.TCP4), tcpMedian(fc.TCP4)), f(tcpMedian(w.TCP8), tcpMedian(fc.TCP8)),
			f(udpPPS(w.UDP), udpPPS(fc.UDP)), f(perCore(w.TCP1), perCore(fc.TCP1))))
	}
	if cc, wg := r.path("weft-udp-encrypt-chacha"), r.path("wireguard-go"); cc != nil {
		s := "ChaCha20-Poly1305:"
		if wg != nil {
			s += fmt.Sprintf(" weft-udp-encrypt-chacha vs wireguard-go (the same cipher): TCP 1 %s, TCP 4 %s, UDP %s;",
				f(tcpMedian(cc.TCP1), tcpMedian(wg.TCP1)), f(tcpMedian(cc.TCP4), tcpMedian(wg.TCP4)), f(udpPPS(cc.UDP), udpPPS(wg.UDP)))
		}
		if e := r.path("weft-udp-encrypt"); e != nil {
			s += fmt.Sprintf(" weft-udp-encrypt-chacha vs weft-udp-encrypt (AES-256-GCM): TCP 1 %s, TCP 4 %s, UDP %s;",
				f(tcpMedian(cc.TCP1), tcpMedian(e.TCP1)), f(tcpMedian(cc.TCP4), tcpMedian(e.TCP4)), f(udpPPS(cc.UDP), udpPPS(e.UDP)))
		}
		out = append(out, strings.TrimSuffix(s, ";"))
	}
	if w6, k6 := r.path("weft-udp6"), r.path("kvxlan6"); w6 != nil && (k6 != nil || w != nil) {
		s := "IPv6 underlay:"
		if k6 != nil {
			s += fmt.Sprintf(" weft-udp6 vs kvxlan6: TCP 1 %s, TCP 4 %s, TCP 8 %s, UDP %s, Gbit/s per busy core %s;",
				f(tcpMedian(w6.TCP1), tcpMedian(k6.TCP1)), f(tcpMedian(w6.TCP4), tcpMedian(k6.TCP4)), f(tcpMedian(w6.TCP8), tcpMedian(k6.TCP8)),
				f(udpPPS(w6.UDP), udpPPS(k6.UDP)), f(perCore(w6.TCP1), perCore(k6.TCP1)))
		}
		if w != nil {
			s += fmt.Sprintf(" weft-udp6 vs weft-udp (IPv4 underlay): TCP 1 %s, TCP 4 %s, UDP %s;",
				f(tcpMedian(w6.TCP1), tcpMedian(w.TCP1)), f(tcpMedian(w6.TCP4), tcpMedian(w.TCP4)), f(udpPPS(w6.UDP), udpPPS(w.UDP)))
		}
		if k := r.path("kvxlan"); k != nil && k6 != nil {
			s += fmt.Sprintf(" kvxlan6 vs kvxlan: TCP 1 %s, TCP 4 %s, UDP %s;",
				f(tcpMedian(k6.TCP1), tcpMedian(k.TCP1)), f(tcpMedian(k6.TCP4), tcpMedian(k.TCP4)), f(udpPPS(k6.UDP), udpPPS(k.UDP)))
		}
		out = append(out, strings.TrimSuffix(s, ";"))
	}
	if w != nil && bp != nil {
		s := fmt.Sprintf("busy poll (weft-udp-bp vs weft-udp): TCP 1 %s, TCP 4 %s, UDP %s", f(tcpMedian(bp.TCP1), tcpMedian(w.TCP1)),
			f(tcpMedian(bp.TCP4), tcpMedian(w.TCP4)), f(udpPPS(bp.UDP), udpPPS(w.UDP)))
		if bp.Ping != nil && w.Ping != nil {
			s += fmt.Sprintf(", ping %.3f vs %.3f ms (%+.3f)", bp.Ping.AvgMs, w.Ping.AvgMs, bp.Ping.AvgMs-w.Ping.AvgMs)
		}
		if bp.TCP1 != nil && w.TCP1 != nil {
			s += fmt.Sprintf(", busy cores in TCP 1 %.2f vs %.2f", bp.TCP1.BusyCores, w.TCP1.BusyCores)
		}
		if len(bp.Daemons) == 2 && len(w.Daemons) == 2 {
			s += fmt.Sprintf(", daemon CPU %.1f+%.1f vs %.1f+%.1f s", bp.Daemons[0].CPUSeconds, bp.Daemons[1].CPUSeconds, w.Daemons[0].CPUSeconds, w.Daemons[1].CPUSeconds)
		}
		out = append(out, s)
	}
	return out
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// table renders the results as a Markdown table (readable as is, and ready
// to paste into bench/README.md).
func (r *results) table() string {
	header := []string{"path", "TCP 1 Gbit/s", "TCP 4 Gbit/s", "TCP 8 Gbit/s", fmt.Sprintf("UDP%d kpps (loss)", r.Options.UDPLen),
		bigBufHeader(r.Options), "ping ms (echo floor)",
		"busy cores TCP 1 (steal)", "Gbit/s/core", "CPU s (a/b)", "RSS MiB (a/b)", "vs kVXLAN (TCP1/4/8/UDP/per core)"}
	rows := [][]string{header}
	for _, p := range r.Paths {
		row := make([]string, len(header))
		row[0] = p.Name
		for i := 1; i < len(row); i++ {
			row[i] = "-"
		}
		for i, t := range []*tcpStat{p.TCP1, p.TCP4, p.TCP8} {
			if t != nil && len(t.Reps) > 0 {
				row[1+i] = gbps(t.MedianBPS)
			}
		}
		if p.UDP != nil && len(p.UDP.Reps) > 0 {
			row[4] = fmt.Sprintf("%.1f (%.0f%%)", p.UDP.DeliveredPPS/1e3, p.UDP.LossPercent)
		}
		if p.UDPBigBuf != nil && len(p.UDPBigBuf.Reps) > 0 {
			row[5] = fmt.Sprintf("%.1f (%.0f%%)", p.UDPBigBuf.DeliveredPPS/1e3, p.UDPBigBuf.LossPercent)
		}
		if p.Ping != nil {
			row[6] = fmt.Sprintf("%.3f", p.Ping.AvgMs)
			if p.Echo != nil {
				row[6] += fmt.Sprintf(" (%.3f)", p.Echo.AvgMs)
			}
		}
		if p.TCP1 != nil && p.TCP1.BusyCores > 0 {
			row[7] = fmt.Sprintf("%.2f", p.TCP1.BusyCores)
			if p.TCP1.CPU != nil {
				row[7] += fmt.Sprintf(" (%.2f)", p.TCP1.CPU.StealCores)
			}
			row[8] = fmt.Sprintf("%.2f", p.TCP1.GbpsPerBusyCore)
		}
		if len(p.Daemons) == 2 && p.Daemons[0].PeakRSSMiB > 0 {
			a, b := p.Daemons[0], p.Daemons[1]
			row[9] = fmt.Sprintf("%.2f / %.2f", a.CPUSeconds, b.CPUSeconds)
			row[10] = fmt.Sprintf("%.1f / %.1f", a.PeakRSSMiB, b.PeakRSSMiB)
		}
		if p.Ratio != nil {
			f := func(v *float64) string {
				if v == nil {
					return "-"
				}
				return fmt.Sprintf("%.2f", *v)
			}
			row[11] = f(p.Ratio.TCP1) + " / " + f(p.Ratio.TCP4) + " / " + f(p.Ratio.TCP8) + " / " + f(p.Ratio.UDP64) + " / " + f(p.Ratio.PerCore)
		}
		if !p.OK {
			row[0] += " (FAILED)"
		}
		rows = append(rows, row)
	}
	width := make([]int, len(header))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len(c))
		}
	}
	var sb strings.Builder
	line := func(row []string) {
		sb.WriteString("|")
		for i, c := range row {
			if i == 0 {
				fmt.Fprintf(&sb, " %-*s |", width[i], c)
			} else {
				fmt.Fprintf(&sb, " %*s |", width[i], c)
			}
		}
		sb.WriteString("\n")
	}
	line(rows[0])
	sb.WriteString("|")
	for i, w := range width {
		if i == 0 {
			sb.WriteString(" " + strings.Repeat("-", w) + " |")
		} else {
			sb.WriteString(" " + strings.Repeat("-", w-1) + ": |")
		}
	}
	sb.WriteString("\n")
	for _, row := range rows[1:] {
		line(row)
	}
	return sb.String()
}

func (r *results) printNotes() {
	o := r.Options
	fmt.Printf("TCP: median receiver throughput of %d x %d s; UDP: %d-byte datagrams at -b %s, delivered datagrams/s (median of %d x %d s) and receiver-side loss;\n",
		o.Reps, o.Duration, o.UDPLen, o.UDPRate, o.UDPReps, o.UDPDur)
	if o.UDPRcvbuf != "" {
		limit := "?"
		if b, err := os.ReadFile("/proc/sys/net/core/rmem_max"); err == nil {
			limit = strings.TrimSpace(string(b))
		}
		fmt.Printf("UDP, %s rcvbuf: the same test with iperf3 -w %s (both ends' socket buffers), so that the receiver's socket does not overflow between its reads (the kernel caps it at net.core.rmem_max, %s bytes here).\n",
			o.UDPRcvbuf, o.UDPRcvbuf, limit)
	}
	fmt.Printf("ping: average RTT of %d echo requests %.3g s apart; echo floor: a UDP echo between the underlay addresses (user space, no overlay), same count and interval;\n",
		o.Pings, o.PingIntvl)
	fmt.Printf("CPU: utime+stime of each weft daemon over all the measurements above; RSS: VmHWM.\n")
	fmt.Printf("busy cores: the whole machine's (%d CPUs) non-idle, non-iowait, non-steal time from /proc/stat over each TCP 1-stream run, median; Gbit/s/core: each run's throughput / its busy cores, median.\n",
		r.Machine.NumCPU)
	if r.path("kvxlan6") != nil {
		fmt.Printf("vs kVXLAN: the *6 paths (IPv6 underlay) against kvxlan6, the others against kvxlan.\n")
	}
	for _, p := range r.Paths {
		for _, e := range p.Errors {
			fmt.Printf("FAILED %s: %s\n", p.Name, e)
		}
		for _, s := range p.DaemonIssues {
			fmt.Printf("daemon problem, %s: %s\n", p.Name, s)
		}
		for _, d := range p.Daemons {
			if len(d.Drops) > 0 {
				var ks []string
				for k, v := range d.Drops {
					ks = append(ks, fmt.Sprintf("%s=%d", k, v))
				}
				sort.Strings(ks)
				fmt.Printf("note, %s: weft on %s counted drops: %s\n", p.Name, d.Host, strings.Join(ks, " "))
			}
		}
	}
	fmt.Println()
}

func (r *results) printTargets() {
	fmt.Println("targets (reported, not enforced):")
	for _, t := range r.Targets {
		fmt.Printf("  %-4s  %s: %s\n", t.Status, t.Name, t.Detail)
	}
	for _, c := range r.comparisons() {
		fmt.Println("  " + c)
	}
}

func (r *results) writeJSON(file string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minMax(v []float64) (float64, float64) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range v {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return lo, hi
}

func gbps(bps float64) string { return fmt.Sprintf("%.2f", bps/1e9) }

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// bigBufHeader names the column of the UDP test with a large receive
// buffer (empty when the run skipped it).
func bigBufHeader(o options) string {
	if o.UDPRcvbuf == "" {
		return fmt.Sprintf("UDP%d, large rcvbuf", o.UDPLen)
	}
	return fmt.Sprintf("UDP%d, %s rcvbuf", o.UDPLen, o.UDPRcvbuf)
}
