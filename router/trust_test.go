package router

// Regression tests of issue 21's rows in the router: a forged early claim
// cannot take an incumbent's subnet (row 3), two peers on one underlay
// address (row 4), refusals counted by reason, per-peer counters dropped
// with the peer, and no Neighbor Advertisement in plaintext to an
// encrypted peer (row 8).

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/fakes"
	"github.com/weftnet/weft/seal"
)

// clock is a settable time for the router's conflict rules.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func trustRouter(c *clock) *Router {
	cfg := testConfig(encap.UDP)
	cfg.Local.Claimed = 5_000
	cfg.Now = c.now
	return New(cfg, Worker{Dev: fakes.NewDevice(false), In: fakes.NewSocket(false), Out: fakes.NewSocket(false)})
}

func refusedGauge(t *testing.T, r *Router, reason string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "weft_peers_refused" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == reason {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no weft_peers_refused{reason=%q}", reason)
	return 0
}

// A member that claims the subnet of a peer already routed, with an earlier
// claim time, is refused: the incumbent keeps its traffic.
func TestForgedEarlyClaimLosesToIncumbent(t *testing.T) {
	c := &clock{time.Unix(1_800_000_000, 0)}
	r := trustRouter(c)
	victim := Peer{Name: "victim", Subnets: []netip.Prefix{pfx("10.244.2.0/24")}, Underlay: addrB, State: "alive", Claimed: 10_000}
	r.SetPeers([]Peer{victim})
	c.t = c.t.Add(time.Minute)
	forger := Peer{Name: "aaa", Subnets: []netip.Prefix{pfx("10.244.2.0/25")}, Underlay: addrC, State: "alive", Claimed: 1}
	conflicts := r.SetPeers([]Peer{victim, forger})
	if len(conflicts) != 1 || conflicts[0].Loser != "aaa" || conflicts[0].Winner != "victim" {
		t.Fatalf("conflicts %+v, want aaa the loser", conflicts)
	}
	if e := r.table.Load().lookup(netip.MustParseAddr("10.244.2.9")); e == nil || e.peer.Name != "victim" {
		t.Fatalf("10.244.2.9 routes to %v, want victim", e)
	}
	if v := refusedGauge(t, r, "subnet_conflict"); v != 1 {
		t.Errorf("weft_peers_refused{reason=subnet_conflict} = %v, want 1", v)
	}
	// The victim stays the owner on every later rebuild, whatever order.
	r.SetPeers([]Peer{forger, victim})
	if e := r.table.Load().lookup(netip.MustParseAddr("10.244.2.9")); e == nil || e.peer.Name != "victim" {
		t.Fatalf("after a rebuild 10.244.2.9 routes to %v, want victim", e)
	}
	// Two newcomers at once: the earlier claim wins, as before.
	r2 := trustRouter(c)
	r2.SetPeers([]Peer{victim, forger})
	if e := r2.table.Load().lookup(netip.MustParseAddr("10.244.2.9")); e == nil || e.peer.Name != "aaa" {
		t.Fatalf("newcomers together: 10.244.2.9 routes to %v, want the earlier claim", e)
	}
}

// Our own subnet: a peer seen while our claim settles may take it by an
// earlier claim (two hosts that picked one subnet at once); one that shows
// up later may not, whatever claim time it advertises.
func TestLocalSubnetYieldsOnlyToEarlyPeers(t *testing.T) {
	c := &clock{time.Unix(1_800_000_000, 0)}
	forger := Peer{Name: "zz", Subnets: []netip.Prefix{pfx("10.244.1.0/24")}, Underlay: addrC, State: "alive", Claimed: 1}

	r := trustRouter(c)
	c.t = c.t.Add(DefaultClaimGrace / 2)
	if cs := r.SetPeers([]Peer{forger}); len(cs) != 1 || cs[0].Loser != "" {
		t.Fatalf("a peer seen while we settle, with an earlier claim: %+v, want us the loser", cs)
	}

	r = trustRouter(c)
	c.t = c.t.Add(DefaultClaimGrace + time.Second)
	cs := r.SetPeers([]Peer{forger})
	if len(cs) != 1 || cs[0].Loser != "zz" || cs[0].Winner != "" {
		t.Fatalf("a peer that came after we settled: %+v, want it the loser", cs)
	}
	if !strings.Contains(cs[0].String(), "held or claimed earlier") {
		t.Errorf("conflict text %q", cs[0])
	}
	// It stays the loser when it changes its claim again later.
	c.t = c.t.Add(time.Minute)
	forger.Claimed = 0
	if cs := r.SetPeers([]Peer{forger}); len(cs) != 1 || cs[0].Loser != "zz" {
		t.Fatalf("later again: %+v", cs)
	}
	// After we move (SetLocal), a peer seen within the grace may win again.
	r.SetLocal(Local{Subnets: []netip.Prefix{pfx("10.244.9.0/24")}, Addrs: []netip.Addr{netip.MustParseAddr("10.244.9.0")}, Claimed: 9_000})
	late := Peer{Name: "yy", Subnets: []netip.Prefix{pfx("10.244.9.0/24")}, Underlay: addrB, State: "alive", Claimed: 8_000}
	if cs := r.SetPeers([]Peer{forger, late}); len(cs) != 1 || cs[0].Loser != "" || cs[0].Winner != "yy" {
		t.Fatalf("after a move: %+v, want us the loser to the earlier claim seen within the grace", cs)
	}
}

// Two members advertising one underlay address: both are shown as a
// conflict; the one routed first keeps it, the other is refused.
func TestUnderlayAddressConflict(t *testing.T) {
	c := &clock{time.Unix(1_800_000_000, 0)}
	r := trustRouter(c)
	first := Peer{Name: "z-first", Subnets: []netip.Prefix{pfx("10.244.2.0/24")}, Underlay: addrB, State: "alive", Claimed: 9_000}
	r.SetPeers([]Peer{first})
	c.t = c.t.Add(time.Minute)
	same := netip.AddrPortFrom(addrB.Addr(), 9999) // another weft on the same IP, another port
	second := Peer{Name: "a-second", Subnets: []netip.Prefix{pfx("10.244.3.0/24")}, Underlay: same, State: "alive", Claimed: 1}
	r.SetPeers([]Peer{first, second})
	tb := r.table.Load()
	if e := tb.byAddr[addrB.Addr()]; e == nil || e.peer.Name != "z-first" {
		t.Fatalf("datagrams from %s are judged as %v's, want z-first's", addrB.Addr(), e)
	}
	if e := tb.lookup(netip.MustParseAddr("10.244.3.1")); e != nil {
		t.Fatalf("the refused peer is routed: %v", e.peer.Name)
	}
	st := map[string]PeerStatus{}
	for _, s := range r.Status() {
		st[s.Name] = s
	}
	if s := st["a-second"]; s.Via != ViaNone || !strings.Contains(s.Reason, "underlay address conflict") {
		t.Errorf("a-second: %+v", s)
	}
	if s := st["z-first"]; s.Via != ViaTunnel || !strings.Contains(s.Reason, "underlay address conflict") {
		t.Errorf("z-first: %+v, want routed and shown in conflict", s)
	}
	if v := refusedGauge(t, r, "underlay_conflict"); v != 1 {
		t.Errorf("weft_peers_refused{reason=underlay_conflict} = %v, want 1", v)
	}
}

// Every refusal the node hands over is counted under its label, and every
// label is exported (zero too).
func TestRefusalsCounted(t *testing.T) {
	r := trustRouter(&clock{time.Unix(1_800_000_000, 0)})
	r.SetPeers([]Peer{
		{Name: "x", Subnets: []netip.Prefix{pfx("10.9.1.0/24")}, Underlay: addrB, State: "alive", Incompatible: "runs network 10.9.0.0/16", Refused: RefusedNetwork},
		{Name: "y", Subnets: []netip.Prefix{pfx("10.244.4.0/24")}, Underlay: addrC, State: "alive", Incompatible: "odd"},
	})
	if v := refusedGauge(t, r, "network"); v != 1 {
		t.Errorf("network = %v, want 1", v)
	}
	if v := refusedGauge(t, r, "invalid_metadata"); v != 1 {
		t.Errorf("an incompatible peer without a label counts as invalid_metadata: %v", v)
	}
	for _, reason := range Refusals() {
		refusedGauge(t, r, reason) // fails if absent
	}
	if st := r.Status(); st[0].Via != ViaNone || st[0].Reason == "" {
		t.Errorf("status %+v", st[0])
	}
}

// A peer's counters go with it when it leaves the peer set for good.
func TestPeerStatsDroppedWithPeer(t *testing.T) {
	r := trustRouter(&clock{time.Unix(1_800_000_000, 0)})
	for i := range 100 {
		p := Peer{Name: "churn-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Subnets: []netip.Prefix{pfx("10.244.2.0/24")}, Underlay: addrB, State: "alive", Claimed: 1}
		r.SetPeers([]Peer{p})
	}
	r.mu.Lock()
	n, seen := len(r.stats), len(r.seen)
	r.mu.Unlock()
	if n != 1 || seen != 1 {
		t.Fatalf("after 100 peers came and went one at a time: %d counter sets and %d seen records, want 1", n, seen)
	}
	r.SetPeers(nil)
	r.mu.Lock()
	n = len(r.stats)
	r.mu.Unlock()
	if n != 0 {
		t.Errorf("%d counter sets with no peers", n)
	}
}

// Under --encrypt a Neighbor Solicitation from an encrypted peer is not
// answered (the advertisement would leave in plaintext), as ARP is not.
func TestNeighborSolicitationFromEncryptedPeerNotAnswered(t *testing.T) {
	r, _, conn := dualRouter(encap.VXLAN)
	kb, _ := seal.GenerateKey()
	ka, _ := seal.GenerateKey()
	m, err := seal.New(seal.Config{Static: ka, Cipher: seal.AES256GCM, Send: func([]byte, netip.AddrPort) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	peers := slicesClone(r.peers)
	peers[0].Secure = m.SetPeers([]seal.PeerConfig{{Name: "b", Key: kb.Public, Addr: addrB}})["b"]
	r.SetPeers(peers)
	ours := netip.MustParseAddr("fd00:10:244:1::")
	d := vxlanDatagram(1, encap.SolicitedNodeMAC(ours), macB, encap.EtherTypeIPv6, nsPacket(netip.MustParseAddr("fd00:10:244:2::"), ours, macB))
	tb := r.table.Load()
	views, verdicts := [][]byte{d}, make([]encap.Verdict, 1)
	tb.codec.Unwrap(views, verdicts)
	if verdicts[0] != encap.Reply {
		t.Fatalf("the codec's verdict %v, want an answer", verdicts[0])
	}
	if why := r.w(0).answer(tb.byAddr[addrB.Addr()], views[0]); why != DropBadEtherType {
		t.Fatalf("answer: %v, want dropped as bad_ethertype", why)
	}
	if len(conn.OneSent()) != 0 {
		t.Fatalf("sent %d advertisements in plaintext", len(conn.OneSent()))
	}
}

func slicesClone(p []Peer) []Peer { return append([]Peer(nil), p...) }
