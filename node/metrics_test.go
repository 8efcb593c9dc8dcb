package node

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/weftnet/weft/bgp"
	"github.com/weftnet/weft/deploy"
	"github.com/weftnet/weft/internal/fakes"
	"github.com/weftnet/weft/pki"
)

// The metrics a live node exports and the contract the dashboard, the
// alerts and the README rely on (deploy.Metrics) are the same, both ways:
// a new metric must be added to the contract, a contract entry must be
// exported, types and label names agree, and enumerated labels take only
// their listed values. Five nodes cover every metric: a plain one with
// per-peer metrics, a plain peer and a BGP speaker, and two encrypted ones (session
// ages); the two plain ones hold certificates; one runs the kernel data
// path.
func TestMetricsContract(t *testing.T) {
	u := fakes.NewHub()
	a := newHost(t, u, "a", 1, "10.244.1.0/24")
	a.s.PerPeerMetrics = true
	// A BGP speaker whose one neighbour (nothing listens there, on
	// loopback) stays down: its metrics are exported all the same.
	a.s.BGP = BGPSettings{Enabled: true, ASN: 64512}
	a.s.Live.BGPPeers = []bgp.Neighbor{{Addr: netip.MustParseAddr("127.0.0.9"), ASN: 65000, Port: 1179}}
	b := encrypted(newHost(t, u, "b", 2, "10.244.2.0/24"))
	c := encrypted(newHost(t, u, "c", 3, "10.244.3.0/24"))
	d := newHost(t, u, "d", 4, "10.244.4.0/24")
	// e runs the kernel data path (plaintext VXLAN: a cluster of its
	// own kind, refused by the others' encapsulation, and they by it).
	e := kernelHost(newHost(t, u, "e", 5, "10.244.5.0/24"), DatapathKernel, newFakeVXLAN())
	a.s.Live.GossipKeys, d.s.Live.GossipKeys, e.s.Live.GossipKeys = b.s.Live.GossipKeys, b.s.Live.GossipKeys, b.s.Live.GossipKeys // one cluster
	// a and d hold certificates from one CA (weft_cert_expiry_seconds).
	lab := newPKILab(t, time.Now())
	trust := lab.trust([]*pki.CA{lab.ca})
	for _, h := range []*host{a, d} {
		cert, key := lab.issue(lab.ca, h.name, time.Now(), h.s.Subnets, nil)
		h.s.Live.PKI = &PKI{Trust: trust, Cert: cert, Key: key}
	}
	a.mustStart()
	b.mustStart(a)
	c.mustStart(a, b)
	d.mustStart(a)
	e.mustStart(a)
	eventually(t, "b and c have a session", func() error {
		if p := b.n.Status().Peer("c"); p == nil || p.Encryption == nil || p.Encryption.Session != "established" {
			return fmt.Errorf("b sees c as %+v", p)
		}
		if p := a.n.Status().Peer("d"); p == nil || p.Via != "tunnel" {
			return fmt.Errorf("a sees d as %+v", p)
		}
		return nil
	})

	contract := deploy.Metrics()
	exported := map[string]bool{}
	for _, h := range []*host{a, b, c, e} {
		mfs, err := h.n.reg.Gather()
		if err != nil {
			t.Fatalf("%s: gather: %v", h.name, err)
		}
		for _, mf := range mfs {
			name := mf.GetName()
			want, ok := contract[name]
			switch {
			case !ok && strings.HasPrefix(name, "weft_"):
				t.Errorf("%s exports %s, which deploy.Metrics lacks", h.name, name)
				continue
			case !ok:
				continue // a go_* or process_* metric the dashboard does not use
			}
			exported[name] = true
			if typ := strings.ToLower(mf.GetType().String()); typ != want.Type {
				t.Errorf("%s: %s is a %s, deploy.Metrics says %s", h.name, name, typ, want.Type)
			}
			for _, m := range mf.GetMetric() {
				checkLabels(t, h.name, name, m, want)
			}
		}
	}
	for name := range contract {
		if strings.HasPrefix(name, "weft_") && !exported[name] {
			t.Errorf("deploy.Metrics has %s, which no node exports", name)
		}
	}
}

func checkLabels(t *testing.T, host, name string, m *dto.Metric, want deploy.Metric) {
	t.Helper()
	var names []string
	for _, l := range m.GetLabel() {
		names = append(names, l.GetName())
		values, ok := want.Labels[l.GetName()]
		switch {
		case !ok:
			t.Errorf("%s: %s has label %s, which deploy.Metrics lacks", host, name, l.GetName())
		case values != nil && !slices.Contains(values, l.GetValue()):
			t.Errorf("%s: %s{%s=%q}: not one of %v", host, name, l.GetName(), l.GetValue(), values)
		}
	}
	if len(names) != len(want.Labels) && name != "go_gc_duration_seconds" {
		t.Errorf("%s: %s has labels %v, deploy.Metrics %v", host, name, names, want.Labels)
	}
}
