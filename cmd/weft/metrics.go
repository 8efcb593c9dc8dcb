package main

import (
	"net/http"
	"net/http/pprof"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/tun"
)

// version and buildRevision are set at build time with -ldflags
// "-X main.version=... -X main.buildRevision=...".
var (
	version       = "dev"
	buildRevision = ""
)

func revision() string {
	if buildRevision != "" {
		return buildRevision
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func registerProcessMetrics(reg *prometheus.Registry, n *daemon_) {
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "weft_build_info",
			Help:        "Always 1; the labels say which weft is running.",
			ConstLabels: prometheus.Labels{"version": version, "revision": revision(), "goversion": goVersion()},
		}, func() float64 { return 1 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "weft_ready", Help: "1 once the TUN device is up and the gossip is running.",
		}, func() float64 {
			if n.ready.Load() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "weft_start_time_seconds", Help: "When the daemon started, in seconds since the Unix epoch.",
		}, func() float64 { return float64(n.started.UnixNano()) / 1e9 }),
	)
}

func goVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return "unknown"
}

var (
	descSyscalls = prometheus.NewDesc("weft_syscalls_total", "System calls made by the data path, by operation.", []string{"op"}, nil)
	descOffload  = prometheus.NewDesc("weft_offload_enabled", "1 if an offload is in use, by feature.", []string{"feature"}, nil)
)

// dataPathCollector exports the socket's and the device's counters, read
// from the atomics the data path keeps (nothing is counted per packet).
type dataPathCollector struct {
	conn *encap.Conn
	dev  *tun.Device
	rt   *router.Router
}

func newDataPathCollector(c *encap.Conn, d *tun.Device, r *router.Router) prometheus.Collector {
	return dataPathCollector{c, d, r}
}

func (c dataPathCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSyscalls
	ch <- descOffload
}

func (c dataPathCollector) Collect(ch chan<- prometheus.Metric) {
	reads, writes := c.rt.TUNSyscalls()
	for op, v := range map[string]uint64{
		"tun_read": reads, "tun_write": writes,
		"sendmmsg": c.conn.Stats.Sendmmsg.Load(), "recvmmsg": c.conn.Stats.Recvmmsg.Load(),
	} {
		ch <- prometheus.MustNewConstMetric(descSyscalls, prometheus.CounterValue, float64(v), op)
	}
	for feature, on := range map[string]bool{"udp_gso": c.conn.GSO(), "udp_gro": c.conn.GRO(), "tun_vnet_hdr": c.dev.VNetHdr()} {
		v := 0.0
		if on {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descOffload, prometheus.GaugeValue, v, feature)
	}
}

func (n *daemon_) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if c := n.gossip(); !n.ready.Load() || c == nil || !c.Running() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /v1/status", n.serveStatus)
	if n.s.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
