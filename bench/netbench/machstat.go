package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Machine-wide CPU accounting over one iperf3 run, from /proc/stat and
// /proc/softirqs (both machine-wide: a network namespace does not change
// them). Busy cores = (total - idle - iowait - steal) jiffies / CLK_TCK /
// elapsed, summed over all CPUs: 2.00 is the whole of a 2-core machine. It
// counts everything that ran in this guest, iperf3, both daemons, the
// kernel's softirq work and any neighbour's job, which is why the load
// average is recorded beside it. Steal (time the hypervisor gave this
// guest's runnable vCPUs to its other guests) is not work done here, so it
// is left out of the busy time and reported apart: on a shared host it
// came and went by the second, up to 0.9 of a core, whatever the path.

// procStat is one reading of /proc/stat and /proc/softirqs.
type procStat struct {
	at      time.Time
	cpu     [8]uint64 // user nice system idle iowait irq softirq steal (jiffies, all CPUs)
	perCPU  [][8]uint64
	ctxt    uint64
	softirq map[string]uint64 // /proc/softirqs, summed over CPUs
}

func readProcStat() (procStat, error) {
	ps := procStat{at: time.Now()}
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return ps, err
	}
	parse := func(f []string) (v [8]uint64) {
		for i := 0; i < 8 && i+1 < len(f); i++ {
			v[i], _ = strconv.ParseUint(f[i+1], 10, 64)
		}
		return v
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch {
		case f[0] == "cpu":
			ps.cpu = parse(f)
		case strings.HasPrefix(f[0], "cpu"):
			ps.perCPU = append(ps.perCPU, parse(f))
		case f[0] == "ctxt":
			ps.ctxt, _ = strconv.ParseUint(f[1], 10, 64)
		}
	}
	if data, err := os.ReadFile("/proc/softirqs"); err == nil {
		ps.softirq = map[string]uint64{}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 2 || !strings.HasSuffix(f[0], ":") {
				continue
			}
			var sum uint64
			for _, v := range f[1:] {
				n, _ := strconv.ParseUint(v, 10, 64)
				sum += n
			}
			ps.softirq[strings.TrimSuffix(f[0], ":")] = sum
		}
	}
	return ps, nil
}

// machineCPU is the machine's CPU use over an interval.
type machineCPU struct {
	Seconds   float64 `json:"seconds"`
	BusyCores float64 `json:"busy_cores"` // (total - idle - iowait - steal) / elapsed, all CPUs
	// Parts of the busy time, in cores.
	UserCores    float64   `json:"user_cores"`
	SystemCores  float64   `json:"system_cores"`
	SoftirqCores float64   `json:"softirq_cores"`
	StealCores   float64   `json:"steal_cores"` // not counted as busy: the hypervisor's other guests
	PerCPUBusy   []float64 `json:"per_cpu_busy"`
	CtxtPerSec   float64   `json:"context_switches_per_s"`
	// /proc/softirqs deltas per second (NET_RX, NET_TX, SCHED, ...).
	SoftirqsPerSec map[string]float64 `json:"softirqs_per_s,omitempty"`
}

func cpuDelta(a, b procStat) *machineCPU {
	el := b.at.Sub(a.at).Seconds()
	if el <= 0 {
		return nil
	}
	d := func(x, y [8]uint64, i int) float64 { return float64(y[i]-x[i]) / clkTck / el }
	busy := func(x, y [8]uint64) float64 {
		var t float64
		for i := range 8 {
			if i == 3 || i == 4 || i == 7 { // idle, iowait, steal
				continue
			}
			t += d(x, y, i)
		}
		return t
	}
	m := &machineCPU{Seconds: round3(el), BusyCores: round3(busy(a.cpu, b.cpu)),
		UserCores: round3(d(a.cpu, b.cpu, 0) + d(a.cpu, b.cpu, 1)), SystemCores: round3(d(a.cpu, b.cpu, 2)),
		SoftirqCores: round3(d(a.cpu, b.cpu, 6) + d(a.cpu, b.cpu, 5)), StealCores: round3(d(a.cpu, b.cpu, 7)),
		CtxtPerSec: round3(float64(b.ctxt-a.ctxt) / el)}
	for i := range min(len(a.perCPU), len(b.perCPU)) {
		m.PerCPUBusy = append(m.PerCPUBusy, round3(busy(a.perCPU[i], b.perCPU[i])))
	}
	if a.softirq != nil && b.softirq != nil {
		m.SoftirqsPerSec = map[string]float64{}
		for k, v := range b.softirq {
			if w, ok := a.softirq[k]; ok && v > w {
				m.SoftirqsPerSec[k] = round3(float64(v-w) / el)
			}
		}
	}
	return m
}

// meanCPU averages the readings (nil ones skipped), weighted by length.
func meanCPU(ms []*machineCPU) *machineCPU {
	var out machineCPU
	var total float64
	for _, m := range ms {
		if m == nil {
			continue
		}
		w := m.Seconds
		total += w
		out.BusyCores += m.BusyCores * w
		out.UserCores += m.UserCores * w
		out.SystemCores += m.SystemCores * w
		out.SoftirqCores += m.SoftirqCores * w
		out.StealCores += m.StealCores * w
		out.CtxtPerSec += m.CtxtPerSec * w
		for i, v := range m.PerCPUBusy {
			if i >= len(out.PerCPUBusy) {
				out.PerCPUBusy = append(out.PerCPUBusy, 0)
			}
			out.PerCPUBusy[i] += v * w
		}
		for k, v := range m.SoftirqsPerSec {
			if out.SoftirqsPerSec == nil {
				out.SoftirqsPerSec = map[string]float64{}
			}
			out.SoftirqsPerSec[k] += v * w
		}
	}
	if total == 0 {
		return nil
	}
	out.Seconds = round3(total)
	out.BusyCores = round3(out.BusyCores / total)
	out.UserCores = round3(out.UserCores / total)
	out.SystemCores = round3(out.SystemCores / total)
	out.SoftirqCores = round3(out.SoftirqCores / total)
	out.StealCores = round3(out.StealCores / total)
	out.CtxtPerSec = round3(out.CtxtPerSec / total)
	for i := range out.PerCPUBusy {
		out.PerCPUBusy[i] = round3(out.PerCPUBusy[i] / total)
	}
	for k := range out.SoftirqsPerSec {
		out.SoftirqsPerSec[k] = round3(out.SoftirqsPerSec[k] / total)
	}
	return &out
}

func (m *machineCPU) String() string {
	if m == nil {
		return "n/a"
	}
	s := fmt.Sprintf("%.2f busy cores (user %.2f, sys %.2f, irq+softirq %.2f, steal %.2f; per CPU", m.BusyCores, m.UserCores, m.SystemCores, m.SoftirqCores, m.StealCores)
	for _, v := range m.PerCPUBusy {
		s += fmt.Sprintf(" %.2f", v)
	}
	return s + fmt.Sprintf("), %.0f ctxt/s, NET_RX %.0f/s", m.CtxtPerSec, m.SoftirqsPerSec["NET_RX"])
}
