package membership

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the gossip metrics. Create them with NewMetrics and pass them
// in Config.Metrics; one Metrics serves one Cluster at a time (the cluster
// attaches itself in Start and detaches in Shutdown; the gauges read 0 while
// no cluster is attached).
type Metrics struct {
	JoinAttempts prometheus.Counter   // weft_gossip_join_attempts_total
	JoinFailures prometheus.Counter   // weft_gossip_join_failures_total
	HealthScore  prometheus.GaugeFunc // weft_gossip_health_score: memberlist GetHealthScore (0 = healthy)
	Members      prometheus.GaugeFunc // weft_gossip_members: alive members including self
	KeyErrors    prometheus.Counter   // weft_gossip_key_errors_total: gossip that failed to decrypt (wrong or missing key)
	// Refused is weft_gossip_refused_total{reason}: gossip this host did not
	// believe or had no room for (bounds.go); reason is one of
	// RefusalReasons.
	Refused *prometheus.CounterVec

	cluster atomic.Pointer[Cluster]
}

// NewMetrics creates the gossip metrics and registers them on reg (with
// MustRegister, so a duplicate registration panics, like promauto). A nil reg
// creates them unregistered.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		JoinAttempts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_gossip_join_attempts_total",
			Help: "Attempts to join the gossip cluster (initial join retries and reconnects).",
		}),
		JoinFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_gossip_join_failures_total",
			Help: "Join attempts that reached no other member.",
		}),
		KeyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_gossip_key_errors_total",
			Help: "Gossip messages refused because they were encrypted with another key, or not encrypted as configured.",
		}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_gossip_refused_total",
			Help: "Gossip refused: leave intents and joining members that were not believed or did not fit a bound, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range RefusalReasons {
		m.Refused.WithLabelValues(r) // every reason is exported from the start, at 0
	}
	m.HealthScore = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "weft_gossip_health_score",
		Help: "memberlist health (awareness) score; 0 is healthy, higher is worse.",
	}, func() float64 {
		if c := m.cluster.Load(); c != nil {
			return float64(c.Health())
		}
		return 0
	})
	m.Members = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "weft_gossip_members",
		Help: "Alive gossip members, including this host.",
	}, func() float64 {
		if c := m.cluster.Load(); c != nil {
			return float64(c.ml.NumMembers())
		}
		return 0
	})
	if reg != nil {
		reg.MustRegister(m.JoinAttempts, m.JoinFailures, m.KeyErrors, m.Refused, m.HealthScore, m.Members)
	}
	return m
}

func (m *Metrics) attach(c *Cluster) {
	if m != nil {
		m.cluster.Store(c)
	}
}

func (m *Metrics) detach(c *Cluster) {
	if m != nil {
		m.cluster.CompareAndSwap(c, nil)
	}
}

func (m *Metrics) joinAttempt() {
	if m != nil {
		m.JoinAttempts.Inc()
	}
}

func (m *Metrics) joinFailure() {
	if m != nil {
		m.JoinFailures.Inc()
	}
}

func (m *Metrics) keyError() {
	if m != nil {
		m.KeyErrors.Inc()
	}
}

func (m *Metrics) refused(reason string) {
	if m != nil {
		m.Refused.WithLabelValues(reason).Inc()
	}
}
