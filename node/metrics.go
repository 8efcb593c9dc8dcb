package node

import (
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func (n *Node) registerMetrics() {
	n.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "weft_build_info",
			Help:        "Always 1; the labels say which weft is running.",
			ConstLabels: prometheus.Labels{"version": n.d.Version, "revision": n.d.Revision, "goversion": goVersion()},
		}, func() float64 { return 1 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "weft_ready", Help: "1 once the TUN device is up and the gossip is running.",
		}, func() float64 { return b2f(n.ready.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "weft_start_time_seconds", Help: "When the daemon started, in seconds since the Unix epoch.",
		}, func() float64 { return float64(n.started.UnixNano()) / 1e9 }),
		certCollector{n},
	)
}

func goVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return "unknown"
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var (
	descSyscalls   = prometheus.NewDesc("weft_syscalls_total", "System calls made by the data path, by operation.", []string{"op"}, nil)
	descOffload    = prometheus.NewDesc("weft_offload_enabled", "1 if an offload is in use, by feature.", []string{"feature"}, nil)
	descWorkers    = prometheus.NewDesc("weft_workers", "Forwarding workers running, each with its own TUN queue and sockets.", nil, nil)
	descMultiQueue = prometheus.NewDesc("weft_tun_multiqueue_refused", "1 if the kernel refused a multi-queue TUN and weft runs one worker instead of the number asked for.", nil, nil)
)

// dataPathCollector exports the socket's and the device's counters, read
// from the atomics the data path keeps (nothing is counted per packet).
type dataPathCollector struct{ n *Node }

func (c dataPathCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSyscalls
	ch <- descOffload
	ch <- descWorkers
	ch <- descMultiQueue
}

func (c dataPathCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	reads, writes := n.rt.TUNSyscalls()
	ops := map[string]uint64{"tun_read": reads, "tun_write": writes}
	features := map[string]bool{"tun_vnet_hdr": n.dev.VNetHdr()}
	if len(n.conns) > 0 {
		for _, c := range n.conns {
			send, recv := c.Syscalls()
			ops["sendmmsg"] += send
			ops["recvmmsg"] += recv
		}
		features["udp_gso"], features["udp_gro"] = n.conns[0].GSO(), n.conns[0].GRO()
	}
	for op, v := range ops {
		ch <- prometheus.MustNewConstMetric(descSyscalls, prometheus.CounterValue, float64(v), op)
	}
	ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(len(n.dev.Queues())))
	ch <- prometheus.MustNewConstMetric(descMultiQueue, prometheus.GaugeValue, b2f(n.dev.MultiQueueErr() != nil))
	for feature, on := range features {
		ch <- prometheus.MustNewConstMetric(descOffload, prometheus.GaugeValue, b2f(on), feature)
	}
}
