package seal

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PeerStatus is a peer's encryption state in `weft status`.
type PeerStatus struct {
	// Session is "established" (a session to send with), "handshaking"
	// (none yet, a handshake under way) or "none".
	Session           string    `json:"session"`
	SessionAgeSeconds float64   `json:"sessionAgeSeconds,omitempty"`
	Initiator         bool      `json:"initiator,omitempty"`
	SendCounter       uint64    `json:"sendCounter,omitempty"`
	Handshakes        uint64    `json:"handshakes"`
	LastHandshake     time.Time `json:"lastHandshake,omitzero"`
	Key               string    `json:"key"`
}

// Status is this host's encryption state in `weft status`.
type Status struct {
	Cipher     string            `json:"cipher"`
	PublicKey  string            `json:"publicKey"`
	Handshakes map[string]uint64 `json:"handshakes"`
}

// Status reports the cipher, our key and the handshake counters.
func (m *Manager) Status() Status {
	return Status{Cipher: m.cfg.Cipher.String(), PublicKey: m.cfg.Static.Public.String(), Handshakes: m.Handshakes()}
}

// PeerStatus reports the named peer's sessions, or nil if it is not an
// encrypted peer.
func (m *Manager) PeerStatus(name string) *PeerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.peers[name]
	if p == nil {
		return nil
	}
	now := m.cfg.Now().UnixNano()
	st := &PeerStatus{Session: "none", Handshakes: p.handshakes, LastHandshake: p.lastHandshake, Key: p.key.String()}
	if s := p.current.Load(); s != nil && now-s.created < m.rejectAfter {
		st.Session = "established"
		st.SessionAgeSeconds = time.Duration(now - s.created).Seconds()
		st.Initiator = s.initiator
		st.SendCounter = s.sendCtr.Load()
	} else if p.pending != nil || p.pendingResponder(now, m.rejectAfter) {
		st.Session = "handshaking"
	}
	return st
}

var (
	descHandshakes = prometheus.NewDesc("weft_handshakes_total", "Data-plane handshake messages, by outcome.", []string{"result"}, nil)
	descSessionAge = prometheus.NewDesc("weft_session_age_seconds", "Age of the session each encrypted peer's traffic is sent with (absent: no session).", []string{"peer"}, nil)
	descSessions   = prometheus.NewDesc("weft_encrypted_peers", "Encrypted peers, by whether they have a session to send with.", []string{"session"}, nil)
	descStaged     = prometheus.NewDesc("weft_staged_packets_total", "Packets held while their encrypted peer had no session yet (a handshake under way), by outcome: sent once the session was there, or expired (none within 5 s, or the peer left). Those that did not fit the peer's queue are counted as no_session drops.", []string{"result"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHandshakes
	ch <- descSessionAge
	ch <- descSessions
	ch <- descStaged
}

// Collect implements prometheus.Collector.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	for r := range numHS {
		ch <- prometheus.MustNewConstMetric(descHandshakes, prometheus.CounterValue, float64(m.hs[r].Load()), r.String())
	}
	for r := range numStaged {
		ch <- prometheus.MustNewConstMetric(descStaged, prometheus.CounterValue, float64(m.staged[r].Load()), r.String())
	}
	m.mu.Lock()
	now := m.cfg.Now().UnixNano()
	var with, without int
	type age struct {
		name string
		s    float64
	}
	ages := make([]age, 0, len(m.peers))
	for name, p := range m.peers {
		if s := p.current.Load(); s != nil && now-s.created < m.rejectAfter {
			with++
			ages = append(ages, age{name, time.Duration(now - s.created).Seconds()})
		} else {
			without++
		}
	}
	m.mu.Unlock()
	for _, a := range ages {
		ch <- prometheus.MustNewConstMetric(descSessionAge, prometheus.GaugeValue, a.s, a.name)
	}
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(with), "established")
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(without), "none")
}

// Off is the collector of a host without --encrypt: the same metrics (but
// weft_session_age_seconds), all zero, so that dashboards and alerts find
// them on every host.
type Off struct{}

// Describe implements prometheus.Collector.
func (Off) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHandshakes
	ch <- descSessions
	ch <- descStaged
}

// Collect implements prometheus.Collector.
func (Off) Collect(ch chan<- prometheus.Metric) {
	for _, r := range HandshakeResults() {
		ch <- prometheus.MustNewConstMetric(descHandshakes, prometheus.CounterValue, 0, r)
	}
	for _, s := range []string{"established", "none"} {
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, 0, s)
	}
	for _, r := range StagedResults() {
		ch <- prometheus.MustNewConstMetric(descStaged, prometheus.CounterValue, 0, r)
	}
}
