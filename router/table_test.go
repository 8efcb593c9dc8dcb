package router

import (
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/fakes"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestTableLookupLongestPrefix(t *testing.T) {
	peers := []Peer{
		{Name: "wide", Subnets: []netip.Prefix{pfx("10.244.0.0/20")}, Underlay: addrB, State: "alive"},
		{Name: "narrow", Subnets: []netip.Prefix{pfx("10.244.16.0/24")}, Underlay: addrC, State: "alive"},
	}
	tb, conflicts, _ := buildTable([]netip.Prefix{pfx("10.244.100.0/24")}, 0, "self", peers)
	if len(conflicts) != 0 {
		t.Fatalf("unexpected conflicts %v", conflicts)
	}
	for dst, want := range map[string]string{
		"10.244.0.1": "wide", "10.244.15.255": "wide", "10.244.16.9": "narrow", "10.244.17.1": "", "10.244.100.1": "",
	} {
		e := tb.lookup(netip.MustParseAddr(dst))
		got := ""
		if e != nil {
			got = e.peer.Name
		}
		if got != want {
			t.Errorf("lookup(%s) = %q, want %q", dst, got, want)
		}
	}
}

func TestTableConflictsNewcomerRefused(t *testing.T) {
	peers := []Peer{
		{Name: "late", Subnets: []netip.Prefix{pfx("10.244.2.0/24")}, Underlay: addrC, State: "alive", Claimed: 200},
		{Name: "early", Subnets: []netip.Prefix{pfx("10.244.2.0/23")}, Underlay: addrB, State: "alive", Claimed: 100},
		{Name: "mine", Subnets: []netip.Prefix{pfx("10.244.1.0/25")}, Underlay: netip.MustParseAddrPort("192.0.2.9:1"), State: "alive", Claimed: 50},
		{Name: "after-me", Subnets: []netip.Prefix{pfx("10.244.1.128/25")}, Underlay: netip.MustParseAddrPort("192.0.2.10:1"), State: "alive", Claimed: 900},
	}
	tb, conflicts, reasons := buildTable([]netip.Prefix{pfx("10.244.1.0/24")}, 500, "self", peers)
	if len(tb.entries) != 1 || tb.entries[0].peer.Name != "early" {
		t.Fatalf("routed %v, want only early", names(tb.entries))
	}
	got := map[string]string{}
	for _, c := range conflicts {
		got[c.Loser] = c.Winner
	}
	// "mine" claimed before us: by the rule it wins and we are the loser;
	// "after-me" loses to us; "late" loses to "early".
	want := map[string]string{"": "mine", "after-me": "", "late": "early"}
	if !maps.Equal(got, want) {
		t.Errorf("conflicts loser→winner = %v, want %v", got, want)
	}
	for _, n := range []string{"late", "mine", "after-me"} {
		if reasons[n] != "subnet conflict" {
			t.Errorf("reason for %s = %q", n, reasons[n])
		}
	}
	if s := conflicts[0].String(); !strings.Contains(s, "overlaps") {
		t.Errorf("conflict text %q", s)
	}
}

func TestTableSkipsUnroutablePeers(t *testing.T) {
	peers := []Peer{
		{Name: "dead", Subnets: []netip.Prefix{pfx("10.244.2.0/24")}, Underlay: addrB, State: "dead"},
		{Name: "left", Subnets: []netip.Prefix{pfx("10.244.3.0/24")}, Underlay: addrC, State: "left"},
		{Name: "suspect", Subnets: []netip.Prefix{pfx("10.244.4.0/24")}, Underlay: netip.MustParseAddrPort("192.0.2.4:1"), State: "suspect"},
		{Name: "static", Subnets: []netip.Prefix{pfx("10.244.5.0/24")}, Underlay: netip.MustParseAddrPort("192.0.2.5:1"), State: "static", Static: true},
		{Name: "odd", Subnets: []netip.Prefix{pfx("10.244.6.0/24")}, Underlay: netip.MustParseAddrPort("192.0.2.6:1"), State: "alive", Incompatible: "runs encap vxlan"},
		{Name: "nometa", State: "alive"},
	}
	tb, _, reasons := buildTable([]netip.Prefix{pfx("10.244.1.0/24")}, 0, "self", peers)
	if got := names(tb.entries); strings.Join(got, ",") != "static,suspect" && strings.Join(got, ",") != "suspect,static" {
		t.Errorf("routed %v, want suspect and static", got)
	}
	if reasons["odd"] != "runs encap vxlan" || reasons["dead"] != "dead" || reasons["nometa"] != "invalid metadata" {
		t.Errorf("reasons = %v", reasons)
	}
}

func names(es []*entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.peer.Name)
	}
	return out
}

// recRoutes records the kernel routes the router asks for.
type recRoutes struct{ have map[netip.Prefix]netip.Addr }

func (r *recRoutes) Replace(dst netip.Prefix, via netip.Addr) error {
	r.have[dst] = via
	return nil
}

func (r *recRoutes) Delete(dst netip.Prefix, via netip.Addr) error {
	delete(r.have, dst)
	return nil
}

func TestDirectRoutesFollowMembership(t *testing.T) {
	onLink := pfx("192.0.2.0/24")
	for _, mode := range []DirectMode{DirectOnLink, DirectOnly} {
		rr := &recRoutes{have: map[netip.Prefix]netip.Addr{}}
		cfg := testConfig(encap.UDP)
		cfg.Direct, cfg.OnLink, cfg.Routes = mode, onLink.Contains, rr
		r := New(cfg, Worker{Dev: fakes.NewDevice(false), In: fakes.NewSocket(false), Out: fakes.NewSocket(false)})
		far := Peer{Name: "far", Subnets: []netip.Prefix{pfx("10.244.9.0/24")}, Underlay: netip.MustParseAddrPort("198.51.100.9:8285"), State: "alive"}
		r.SetPeers(append(testPeers(), far))
		want := map[netip.Prefix]netip.Addr{pfx("10.244.2.0/24"): addrB.Addr(), pfx("10.244.3.0/24"): addrC.Addr()}
		if !maps.Equal(rr.have, want) {
			t.Fatalf("mode %d: kernel routes %v, want %v", mode, rr.have, want)
		}
		vias := map[string]Via{}
		for _, s := range r.Status() {
			vias[s.Name] = s.Via
		}
		wantFar := ViaTunnel
		if mode == DirectOnly {
			wantFar = ViaNone
		}
		if vias["b"] != ViaDirect || vias["far"] != wantFar {
			t.Errorf("mode %d: vias %v, want b direct and far %s", mode, vias, wantFar)
		}
		// far must (not) be reachable through the tunnel.
		if e := r.table.Load().lookup(netip.MustParseAddr("10.244.9.1")); (e != nil) != (mode == DirectOnLink) {
			t.Errorf("mode %d: tunnel route to far = %v", mode, e)
		}

		// b moves to another on-link address; c leaves.
		peers := testPeers()
		peers[0].Underlay = netip.MustParseAddrPort("192.0.2.20:8285")
		peers[1].State = "left"
		r.SetPeers(append(peers, far))
		want = map[netip.Prefix]netip.Addr{pfx("10.244.2.0/24"): netip.MustParseAddr("192.0.2.20")}
		if !maps.Equal(rr.have, want) {
			t.Fatalf("mode %d after move/leave: kernel routes %v, want %v", mode, rr.have, want)
		}
		r.RemoveRoutes()
		if len(rr.have) != 0 {
			t.Errorf("mode %d: RemoveRoutes left %v", mode, rr.have)
		}
	}
}

func TestConflictCountedOnce(t *testing.T) {
	r, _, _ := newTestRouter(encap.UDP, false)
	dup := append(testPeers(), Peer{Name: "dup", Subnets: []netip.Prefix{pfx("10.244.2.0/24")}, Underlay: netip.MustParseAddrPort("192.0.2.77:1"), State: "alive", Claimed: 99})
	r.SetPeers(dup)
	r.SetPeers(dup)
	if c := r.conflCnt.Load(); c != 1 {
		t.Errorf("conflict counted %d times, want once", c)
	}
}
