package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/router"
)

// Direct routing and host-gw: four weft hosts on two L2 segments joined by
// a router namespace.
//
//	segment 1 192.168.61.0/24: a=.1 (10.244.1.0/24), b=.2 (10.244.2.0/24), router=.254
//	segment 2 192.168.62.0/24: c=.1 (10.244.3.0/24), d=.2 (10.244.4.0/24), router=.254
//
// The hosts reach the other segment through the router (a route for that
// segment only, never a default route); everyone joins a. Only the router
// forwards: the weft hosts keep ip_forward=0, since a direct route delivers
// to the peer's own overlay address (local on its weft0), nothing is
// forwarded on their behalf.

// twoSegments builds the topology described at the top of this file. Each
// weft node gets extra as additional flags. Daemons are not started.
func twoSegments(t *testing.T, extra ...string) *cluster {
	t.Helper()
	tp := newLab(t, "sysctl")
	s1 := tp.segment("seg61", "192.168.61.0/24")
	s2 := tp.segment("seg62", "192.168.62.0/24")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := tp.lab.Host("r")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Attach(s1, netip.MustParsePrefix("192.168.61.254/24")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Attach(s2, netip.MustParsePrefix("192.168.62.254/24")); err != nil {
		t.Fatal(err)
	}
	if out, err := r.Run(ctx, "sysctl", "-w", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatalf("router: %v: %s", err, out)
	}
	tp.addExtra(r, []string{"sysctl", "net.ipv4.ip_forward"})

	seed := []string{"192.168.61.1"}
	// a is the seed: it joins nobody.
	for i, h := range []struct {
		name string
		seg  *netlab.Segment
		addr string
		join []string
	}{{"a", s1, "192.168.61.1", nil}, {"b", s1, "192.168.61.2", seed}, {"c", s2, "192.168.62.1", seed}, {"d", s2, "192.168.62.2", seed}} {
		n := tp.addNode(h.name, h.seg, netip.MustParseAddr(h.addr), i+1)
		n.args = runArgs(n, h.join, extra...)
	}
	for _, n := range tp.nodes {
		other, gw := "192.168.62.0/24", "192.168.61.254"
		if strings.HasPrefix(n.underlay.String(), "192.168.62.") {
			other, gw = "192.168.61.0/24", "192.168.62.254"
		}
		// Only the other segment, never a default route.
		if _, err := n.host.IP(ctx, "route", "add", other, "via", gw); err != nil {
			t.Fatal(err)
		}
	}
	// The underlay works before weft starts: a reaches d through the router.
	if err := pingOK(ctx, tp.by["a"], tp.by["d"].underlay, 1); err != nil {
		t.Fatalf("underlay a -> d through the router: %v", err)
	}
	return tp
}

// onLink reports whether two nodes share a segment (192.168.6X.0/24).
func onLink(x, y *node) bool {
	return netip.PrefixFrom(x.underlay, 24).Masked() == netip.PrefixFrom(y.underlay, 24).Masked()
}

// directRoutes returns n's routes of protocol 87 (weft's), keyed by
// destination, each with its whole "ip route" line.
func directRoutes(n *node) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n.host.IP(ctx, "-4", "route", "show", "proto", routeProto)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			m[f[0]] = strings.TrimSpace(line)
		}
	}
	return m, nil
}

// checkDirectRoutes requires n's weft routes to be exactly one per on-link
// peer: "<peer subnet> via <peer underlay> dev eth0 ... src <n's overlay>".
func checkDirectRoutes(n *node, peers []*node) error {
	got, err := directRoutes(n)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, p := range peers {
		if p == n || !onLink(n, p) {
			continue
		}
		dst := p.subnet.String()
		want[dst] = true
		line, ok := got[dst]
		if !ok {
			return fmt.Errorf("%s has no direct route to %s's subnet %s; proto %s routes: %v", n.name, p.name, dst, routeProto, got)
		}
		f := " " + line + " "
		for _, part := range []string{" via " + p.underlay.String() + " ", " dev eth0 ", " src " + n.overlay.String() + " "} {
			if !strings.Contains(f, part) {
				return fmt.Errorf("%s: route to %s is %q, want it to contain %q", n.name, dst, line, strings.TrimSpace(part))
			}
		}
	}
	for dst, line := range got {
		if !want[dst] {
			return fmt.Errorf("%s has an unexpected proto %s route (only on-link peers get one): %q", n.name, routeProto, line)
		}
	}
	return nil
}

// TestDirectRouting: with --direct-routing, peers on the same segment are
// reached by kernel routes (proto 87) through the underlay, the others
// through the tunnel; the routes follow membership and go at shutdown.
func TestDirectRouting(t *testing.T) {
	tp := twoSegments(t, "--direct-routing")
	tp.startAll()
	tp.waitFormed(formationTimeout)
	a, b, c, d := tp.by["a"], tp.by["b"], tp.by["c"], tp.by["d"]

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Every node: a direct route to its on-link peer, none to the others
	// (they go through weft0's /16). Routes may lag "alive" a little.
	for _, n := range tp.nodes {
		if err := pollUntil(time.Now().Add(5*time.Second), func() error {
			return checkDirectRoutes(n, tp.nodes)
		}); err != nil {
			t.Errorf("direct routes: %v", err)
		}
	}
	ra, _ := directRoutes(a)
	rc, _ := directRoutes(c)
	t.Logf("proto %s routes on a: %v; on c: %v", routeProto, ra, rc)
	if _, ok := ra[b.subnet.String()]; !ok {
		t.Errorf("a has no direct route to b's subnet %s: %v", b.subnet, ra)
	}
	if _, ok := rc[d.subnet.String()]; !ok {
		t.Errorf("c has no direct route to d's subnet %s: %v", d.subnet, rc)
	}
	if t.Failed() {
		t.FailNow()
	}

	// The kernel picks the direct route for b and weft0 for c.
	for _, tc := range []struct {
		dst  *node
		want string
	}{{b, "via 192.168.61.2 dev eth0"}, {c, "dev weft0"}} {
		out, err := a.host.IP(ctx, "route", "get", tc.dst.overlay.String())
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("on a, ip route get %s = %q (%v), want %q", tc.dst.overlay, strings.TrimSpace(string(out)), err, tc.want)
		}
	}

	if n := pingPairs(t, ctx, false, tp.nodes, func(_, _ *node) bool { return true }); n != 12 {
		t.Fatalf("pinged %d ordered pairs, want 12", n)
	}

	// Status on a: b direct, c and d tunnel.
	want := map[string]router.Via{"b": router.ViaDirect, "c": router.ViaTunnel, "d": router.ViaTunnel}
	if err := pollUntil(time.Now().Add(5*time.Second), func() error {
		st, err := status(a)
		if err != nil {
			return err
		}
		peers := st.peers()
		for name, via := range want {
			p, ok := peers[name]
			if !ok || p.Via != via || p.State != "alive" {
				return fmt.Errorf("status of a: peer %s is %+v, want alive via %s\n%s", name, p, via, st.raw)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// b leaves: a drops its direct route to b's subnet, and b's own
	// routes are gone at its shutdown.
	sigAt := stopNode(t, b)
	exitedAt := time.Now()
	if err := pollUntil(sigAt.Add(3*time.Second), func() error {
		got, err := directRoutes(a)
		if err != nil {
			return err
		}
		if line, ok := got[b.subnet.String()]; ok {
			return fmt.Errorf("a still has %q", line)
		}
		return nil
	}); err != nil {
		t.Errorf("a kept its direct route to b's subnet %s for more than 3 s after b's SIGTERM (b exited after %v): %v",
			b.subnet, exitedAt.Sub(sigAt).Round(time.Millisecond), err)
	} else {
		t.Logf("a removed its direct route to %s %v after b's SIGTERM", b.subnet, time.Since(sigAt).Round(time.Millisecond))
	}
	if got, err := directRoutes(b); err != nil || len(got) != 0 {
		t.Errorf("b left proto %s routes behind at shutdown: %v (%v)", routeProto, got, err)
	}
	// The tunnelled peers are unaffected.
	if err := pingOK(ctx, a, c.overlay, 2); err != nil {
		t.Errorf("after b left, a -> c: %v", err)
	}

	stopNode(t, a)
	if got, err := directRoutes(a); err != nil || len(got) != 0 {
		t.Errorf("a left proto %s routes behind at shutdown: %v (%v)", routeProto, got, err)
	}
	// c still has its direct route to d; stopping c must remove it too.
	if got, err := directRoutes(c); err != nil || got[d.subnet.String()] == "" {
		t.Errorf("before its shutdown c should still route %s directly: %v (%v)", d.subnet, got, err)
	}
	stopNode(t, c)
	if got, err := directRoutes(c); err != nil || len(got) != 0 {
		t.Errorf("c left proto %s routes behind at shutdown: %v (%v)", routeProto, got, err)
	}
}

// TestHostGW: with --encap none there is no tunnel: on-link peers are
// reached by kernel routes, the others are not routed at all (and status
// says why).
func TestHostGW(t *testing.T) {
	tp := twoSegments(t, "--encap", "none")
	tp.startAll()
	tp.waitFormed(formationTimeout)
	a, c := tp.by["a"], tp.by["c"]

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, n := range tp.nodes {
		if err := pollUntil(time.Now().Add(5*time.Second), func() error {
			return checkDirectRoutes(n, tp.nodes)
		}); err != nil {
			t.Errorf("direct routes: %v", err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if n := pingPairs(t, ctx, false, tp.nodes, onLink); n != 4 {
		t.Fatalf("pinged %d on-link ordered pairs, want 4", n)
	}

	// a's status: b direct, c and d not routed, with a reason.
	if err := pollUntil(time.Now().Add(5*time.Second), func() error {
		st, err := status(a)
		if err != nil {
			return err
		}
		peers := st.peers()
		if p := peers["b"]; p.Via != router.ViaDirect {
			return fmt.Errorf("status of a: b is %+v, want via direct\n%s", p, st.raw)
		}
		for _, name := range []string{"c", "d"} {
			p, ok := peers[name]
			if !ok || p.Via != "none" {
				return fmt.Errorf("status of a: %s is %+v, want via none\n%s", name, p, st.raw)
			}
			if !strings.Contains(strings.ToLower(p.Reason), "on-link") {
				return fmt.Errorf("status of a: %s has reason %q, want one that mentions on-link\n%s", name, p.Reason, st.raw)
			}
		}
		t.Logf("status of a: c: via %s, reason %q", peers["c"].Via, peers["c"].Reason)
		return nil
	}); err != nil {
		t.Error(err)
	}

	// a -> c is not routed: weft0 takes the packet (the /16) and drops it.
	res, err := a.host.Ping(ctx, c.overlay, 2)
	if err == nil && res.Received > 0 {
		t.Errorf("host-gw: a reached c's overlay address %s across the router: %v", c.overlay, res)
	} else {
		t.Logf("a -> c (not on-link) fails as it should: %v %v", res, err)
	}

	m, body, err := metrics(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m.value("weft_routes", "kind", "direct"); !ok || v != 1 {
		t.Errorf(`/metrics on a: weft_routes{kind="direct"} = %v (present %v), want 1`, v, ok)
	}
	if v, ok := m.value("weft_dropped_packets_total", "reason", "no_route"); !ok || v < 1 {
		t.Errorf(`/metrics on a: weft_dropped_packets_total{reason="no_route"} = %v (present %v), want >= 1 after the ping to c`, v, ok)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "weft_routes") || strings.HasPrefix(line, `weft_dropped_packets_total{reason="no_route"}`) {
			t.Logf("metrics on a: %s", line)
		}
	}
}
