package e2e

// Issue 21's claims between real weft processes: a host of another cluster
// network is refused by every host and gets no kernel route anywhere, with
// and without direct routing; a member that dates its claim of a victim's
// subnet back cannot take the subnet, and the victim keeps its traffic.

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/weftrun"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/router"
)

// refusedBy waits until n's status shows peer refused (via none, with a
// refusal label) with a reason containing want.
func refusedBy(n *node, peer, want string, within time.Duration) error {
	return pollUntil(time.Now().Add(within), func() error {
		st, err := status(n)
		if err != nil {
			return err
		}
		p := st.Peer(peer)
		switch {
		case p == nil:
			return fmt.Errorf("%s does not list %s yet: %s", n.name, peer, st.summary())
		case p.Via != router.ViaNone || p.Refused == "" || !strings.Contains(p.Reason, want):
			return fmt.Errorf("%s sees %s via %s, refused %q, reason %q; want refused for %q", n.name, peer, p.Via, p.Refused, p.Reason, want)
		}
		return nil
	})
}

func TestForeignNetworkRefused(t *testing.T) {
	t.Parallel() // waits more than it works: runs beside the other parallel tests (make e2e -parallel 4)
	c := newCluster(t, "a", "b", "x")
	a, b, x := c.by["a"], c.by["b"], c.by["x"]
	// a routes on-link peers directly, b through the tunnel: neither may
	// get a route to x's network.
	a.args = runArgs(a, otherUnderlays(c.nodes, a), "--direct-routing")
	spec := x.spec([]string{a.underlay.String()})
	spec.Network, spec.Subnet = netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("10.9.1.0/24")
	x.subnet, x.overlay = spec.Subnet, spec.Subnet.Addr()
	x.args = weftrun.RunArgs(x.files, spec)
	c.startAll()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for _, n := range []*node{a, b} {
		if err := refusedBy(n, "x", "runs network 10.9.0.0/16", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if v := counter(ctx, t, n, "weft_peers_refused", "reason", "network"); v != 1 {
			t.Errorf("%s: weft_peers_refused{reason=network} = %v, want 1", n.name, v)
		}
		if got := countLines(n.proc.Logs(), `msg="peer refused"`); got != 1 {
			t.Errorf("%s logged the refusal %d times, want once:\n%s", n.name, got, tail(n.proc.Logs(), 20))
		}
	}
	for _, peer := range []string{"a", "b"} {
		if err := refusedBy(x, peer, "runs network 10.244.0.0/16", 10*time.Second); err != nil {
			t.Error(err)
		}
	}
	// The overlay between a and b works (a reaches b directly, b a through
	// the tunnel), and nothing routes x's network.
	if err := pingWithin(ctx, a, b.overlay, 10*time.Second); err != nil {
		t.Errorf("a -> b: %v", err)
	}
	if err := pingWithin(ctx, b, a.overlay, 10*time.Second); err != nil {
		t.Errorf("b -> a: %v", err)
	}
	for _, n := range []*node{a, b} {
		raw, err := n.host.IP(ctx, "route", "show", "table", "all")
		if err != nil {
			t.Fatal(err)
		}
		out := string(raw)
		if strings.Contains(out, "10.9.") {
			t.Errorf("%s has a route into x's network:\n%s", n.name, out)
		}
		if n == a && !strings.Contains(out, b.subnet.String()+" via "+b.underlay.String()) {
			t.Errorf("a has no direct route to b (so the check above proves little):\n%s", out)
		}
	}
	if err := pingOK(ctx, a, x.overlay, 1); err == nil {
		t.Errorf("a reached x's overlay address %s", x.overlay)
	}
}

func TestForgedEarlyClaimRefused(t *testing.T) {
	t.Parallel() // waits more than it works: runs beside the other parallel tests (make e2e -parallel 4)
	c := newCluster(t, "a", "b", "c", "m")
	a, b, cc, m := c.by["a"], c.by["b"], c.by["c"], c.by["m"]
	victim := netip.MustParsePrefix("10.244.2.0/24")
	now := time.Now()
	// b, the victim, holds an automatic subnet (its lease); m, the forger,
	// holds a lease for the same subnet dated 30 days earlier.
	for n, claimed := range map[*node]time.Time{b: now.Add(-time.Hour), m: now.Add(-30 * 24 * time.Hour)} {
		if err := lease.Save(n.files.StateDir, lease.Lease{Networks: []netip.Prefix{overlayPrefix}, Subnets: []netip.Prefix{victim}, Claimed: claimed.UnixMilli()}); err != nil {
			t.Fatal(err)
		}
		n.subnet, n.overlay = netip.Prefix{}, netip.Addr{}
		n.args = runArgs(n, []string{a.underlay.String()})
	}
	b.overlay = victim.Addr()
	real := []*node{a, b, cc}
	c.nodes = real // m starts later
	for _, n := range real {
		c.start(n)
	}
	started := time.Now()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := pingWithin(ctx, cc, b.overlay, 10*time.Second); err != nil {
		t.Fatalf("c -> b before the forger: %v", err)
	}
	// A member that joins after the victim settled cannot take its subnet.
	if wait := router.DefaultClaimGrace + 2*time.Second - time.Since(started); wait > 0 {
		time.Sleep(wait)
	}
	c.nodes = append(real, m)
	c.start(m)
	for _, n := range real {
		if err := refusedBy(n, "m", "subnet conflict", 15*time.Second); err != nil {
			t.Fatal(err)
		}
		if v := counter(ctx, t, n, "weft_peers_refused", "reason", "subnet_conflict"); v != 1 {
			t.Errorf("%s: weft_peers_refused{reason=subnet_conflict} = %v, want 1", n.name, v)
		}
	}
	// The victim keeps its subnet and its traffic, from every host.
	time.Sleep(2 * time.Second) // long enough for a move to show
	if st, err := status(b); err != nil || st.Node.Subnet != victim.String() {
		t.Fatalf("b's subnet after the forged claim: %v (%v), want %s", st.Node.Subnet, err, victim)
	}
	if strings.Contains(b.proc.Logs(), "lost a subnet conflict") {
		t.Errorf("b moved:\n%s", tail(b.proc.Logs(), 20))
	}
	for _, n := range []*node{a, cc} {
		if err := pingOK(ctx, n, b.overlay, 3); err != nil {
			t.Errorf("%s -> b after the forged claim: %v", n.name, err)
		}
		st, err := status(n)
		if err != nil {
			t.Fatal(err)
		}
		if p := st.Peer("b"); p == nil || p.Via == router.ViaNone || p.Subnet != victim.String() {
			t.Errorf("%s sees b as %+v, want it routed with %s", n.name, p, victim)
		}
	}
}
