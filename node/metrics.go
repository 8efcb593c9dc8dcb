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
		datapathCollector{n},
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
