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

// Direct routing over an IPv6 underlay across two L2 segments: the IPv6
// twin of twoSegments, with a dual-stack overlay.
//
//	segment 1 fd00:61::/64: a=::1 (10.244.1.0/24, fd00:10:244:1::/64), b=::2, router=::fe
//	segment 2 fd00:62::/64: c=::1 (10.244.3.0/24, fd00:10:244:3::/64), d=::2, router=::fe
//
// No IPv4 address exists on the underlay. The hosts reach the other
// segment through the router (a route for that /64 only); everyone joins
// a. Only the router forwards.

// underlaySeg6 is the address ::<host> on segment fd00:<seg>::/64.
func underlaySeg6(seg, host byte) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0x00, 0x00, seg, 15: host})
}

// twoSegments6 builds the topology above, dual-stack, each daemon with
// extra as additional flags. Daemons are not started.
func twoSegments6(t *testing.T, extra ...string) *cluster {
	t.Helper()
	tp := newLab(t, "sysctl")
	segs := map[byte]*netlab.Segment{
		0x61: tp.segment("seg61v6", "fd00:61::/64"),
		0x62: tp.segment("seg62v6", "fd00:62::/64"),
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := tp.lab.Host("r")
	if err != nil {
		t.Fatal(err)
	}
	for seg, s := range segs {
		if _, err := r.Attach(s, netip.PrefixFrom(underlaySeg6(seg, 0xfe), 64)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := r.Run(ctx, "sysctl", "-w", "net.ipv6.conf.all.forwarding=1"); err != nil {
		t.Fatalf("router: %v: %s", err, out)
	}
	tp.addExtra(r, []string{"sysctl", "net.ipv6.conf.all.forwarding"}, []string{"ip", "-6", "route"})

	seed := []string{netip.AddrPortFrom(underlaySeg6(0x61, 1), 7946).String()}
	for i, h := range []struct {
		name      string
		seg, host byte
		join      []string
	}{{"a", 0x61, 1, nil}, {"b", 0x61, 2, seed}, {"c", 0x62, 1, seed}, {"d", 0x62, 2, seed}} {
		n := tp.addNode(h.name, segs[h.seg], underlaySeg6(h.seg, h.host), i+1)
		dualStackNode(n, h.join, extra...)
		other := byte(0x61 + 0x62 - h.seg)
		// Only the other segment, never a default route.
		if _, err := n.host.IP(ctx, "-6", "route", "add", netip.PrefixFrom(underlaySeg6(other, 0), 64).String(),
			"via", underlaySeg6(h.seg, 0xfe).String()); err != nil {
			t.Fatal(err)
		}
	}
	// The underlay works before weft starts: a reaches d through the router.
	if err := pollUntil(time.Now().Add(10*time.Second), func() error {
		return pingOK(ctx, tp.by["a"], tp.by["d"].underlay, 1)
	}); err != nil {
		t.Fatalf("IPv6 underlay a -> d through the router: %v", err)
	}
	return tp
}

// onLink6 reports whether two nodes share an IPv6 segment (a /64).
func onLink6(x, y *node) bool {
	return netip.PrefixFrom(x.underlay, 64).Masked() == netip.PrefixFrom(y.underlay, 64).Masked()
}

// directRoutesFamily is n's proto 87 routes of one family ("-4" or "-6"),
// keyed by destination, each with its whole "ip route" line.
func directRoutesFamily(n *node, family string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n.host.IP(ctx, family, "route", "show", "proto", routeProto)
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

// checkDirectRoutes6 requires n's weft routes to be exactly two per
// on-link peer and none for the others:
//
//	<peer subnet> via inet6 <peer underlay> dev eth0 proto 87 src <n's overlay>
//	<peer subnet6> via <peer underlay> dev eth0 proto 87 src <n's overlay6>
func checkDirectRoutes6(n *node, peers []*node) error {
	for _, fam := range []struct {
		flag, via string
		subnet    func(*node) netip.Prefix
		src       func(*node) netip.Addr
	}{
		{"-4", "via inet6 ", func(p *node) netip.Prefix { return p.subnet }, func(p *node) netip.Addr { return p.overlay }},
		{"-6", "via ", func(p *node) netip.Prefix { return p.subnet6 }, func(p *node) netip.Addr { return p.overlay6 }},
	} {
		got, err := directRoutesFamily(n, fam.flag)
		if err != nil {
			return err
		}
		want := map[string]bool{}
		for _, p := range peers {
			if p == n || !onLink6(n, p) {
				continue
			}
			dst := fam.subnet(p).String()
			want[dst] = true
			line, ok := got[dst]
			if !ok {
				return fmt.Errorf("%s has no direct route (ip %s) to %s's subnet %s; proto %s routes: %v", n.name, fam.flag, p.name, dst, routeProto, got)
			}
			f := " " + line + " "
			for _, part := range []string{" " + fam.via + p.underlay.String() + " ", " dev eth0 ", " src " + fam.src(n).String() + " "} {
				if !strings.Contains(f, part) {
					return fmt.Errorf("%s: route to %s is %q, want it to contain %q", n.name, dst, line, strings.TrimSpace(part))
				}
			}
		}
		for dst, line := range got {
			if !want[dst] {
				return fmt.Errorf("%s has an unexpected ip %s proto %s route (only on-link peers get one): %q", n.name, fam.flag, routeProto, line)
			}
		}
	}
	return nil
}

// noDirectRoutes requires n to have no proto 87 route of either family.
func noDirectRoutes(n *node) error {
	for _, family := range []string{"-4", "-6"} {
		got, err := directRoutesFamily(n, family)
		if err != nil {
			return err
		}
		if len(got) != 0 {
			return fmt.Errorf("%s has ip %s proto %s routes: %v", n.name, family, routeProto, got)
		}
	}
	return nil
}

// peerTx is weft_peer_tx_packets_total{peer} on n (0 when absent: nothing
// sent to that peer yet).
func peerTx(ctx context.Context, n *node, peer string) (float64, error) {
	m, _, err := metrics(ctx, n)
	if err != nil {
		return 0, err
	}
	v, _ := m.value("weft_peer_tx_packets_total", "peer", peer)
	return v, nil
}

// TestIPv6DirectRoutingTwoSegments: dual-stack overlay on an IPv6 underlay
// split by a router. With --direct-routing each host reaches its on-link
// peer by an IPv4 route through an IPv6 gateway ("via inet6") and an IPv6
// route (proto 87), and the off-link peers through the tunnel; both
// families ping over both paths (the tunnel counters tell which one
// carried them), and the routes go with the peer and at shutdown.
func TestIPv6DirectRoutingTwoSegments(t *testing.T) {
	tp := twoSegments6(t, "--direct-routing", "--per-peer-metrics")
	tp.startAll()
	tp.waitFormed(formationTimeout)
	a, b, c, d := tp.by["a"], tp.by["b"], tp.by["c"], tp.by["d"]

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	for _, n := range tp.nodes {
		if err := pollUntil(time.Now().Add(10*time.Second), func() error {
			return checkDirectRoutes6(n, tp.nodes)
		}); err != nil {
			t.Errorf("direct routes: %v", err)
		}
	}
	for _, n := range []*node{a, c} {
		r4, _ := directRoutesFamily(n, "-4")
		r6, _ := directRoutesFamily(n, "-6")
		t.Logf("proto %s routes on %s: %v %v", routeProto, n.name, r4, r6)
	}
	if t.Failed() {
		t.FailNow()
	}

	// The kernel picks the direct routes for b and weft0 for c.
	for _, tc := range []struct {
		family string
		dst    netip.Addr
		want   string
	}{
		{"-4", b.overlay, "via inet6 " + b.underlay.String() + " dev eth0"},
		{"-6", b.overlay6, "via " + b.underlay.String() + " dev eth0"},
		{"-4", c.overlay, "dev weft0"},
		{"-6", c.overlay6, "dev weft0"},
	} {
		out, err := a.host.IP(ctx, tc.family, "route", "get", tc.dst.String())
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("on a, ip %s route get %s = %q (%v), want %q", tc.family, tc.dst, strings.TrimSpace(string(out)), err, tc.want)
		}
	}

	all := func(_, _ *node) bool { return true }
	if n := pingPairs(t, ctx, false, tp.nodes, all); n != 12 {
		t.Fatalf("pinged %d ordered pairs over IPv4, want 12", n)
	}
	if n := pingPairsTo(t, ctx, false, tp.nodes, all, func(n *node) netip.Addr { return n.overlay6 }); n != 12 {
		t.Fatalf("pinged %d ordered pairs over IPv6, want 12", n)
	}

	// Which path carried them: pings a -> b (both families) leave weft's
	// tunnel counter for b unchanged; pings a -> c raise c's by at least
	// the number of echo requests.
	const count = 5
	for _, tc := range []struct {
		dst    *node
		addr   netip.Addr
		tunnel bool
	}{{b, b.overlay, false}, {b, b.overlay6, false}, {c, c.overlay, true}, {c, c.overlay6, true}} {
		before, err := peerTx(ctx, a, tc.dst.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := pingOK(ctx, a, tc.addr, count); err != nil {
			t.Errorf("a -> %s (%s): %v", tc.dst.name, tc.addr, err)
			continue
		}
		after, err := peerTx(ctx, a, tc.dst.name)
		if err != nil {
			t.Fatal(err)
		}
		switch delta := after - before; {
		case tc.tunnel && delta < count:
			t.Errorf("a -> %s (%s): weft sent %v packets to %s through the tunnel, want >= %d (it is off-link)", tc.dst.name, tc.addr, delta, tc.dst.name, count)
		case !tc.tunnel && delta != 0:
			t.Errorf("a -> %s (%s): weft sent %v packets to %s through the tunnel, want 0 (the direct route carries them)", tc.dst.name, tc.addr, delta, tc.dst.name)
		default:
			t.Logf("a -> %s (%s): %d pings, weft_peer_tx_packets_total{peer=%q} +%v", tc.dst.name, tc.addr, count, tc.dst.name, delta)
		}
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

	// b leaves: a drops both its direct routes to b, b's own are gone at
	// its shutdown.
	stopNode(t, b)
	if err := pollUntil(time.Now().Add(5*time.Second), func() error {
		for family, dst := range map[string]string{"-4": b.subnet.String(), "-6": b.subnet6.String()} {
			got, err := directRoutesFamily(a, family)
			if err != nil {
				return err
			}
			if line, ok := got[dst]; ok {
				return fmt.Errorf("a still has %q", line)
			}
		}
		return nil
	}); err != nil {
		t.Errorf("after b left: %v", err)
	}
	if err := noDirectRoutes(b); err != nil {
		t.Errorf("b left routes behind at shutdown: %v", err)
	}
	// The tunnelled peers are unaffected.
	if err := pingOK(ctx, a, c.overlay6, 2); err != nil {
		t.Errorf("after b left, a -> c over IPv6: %v", err)
	}

	stopNode(t, a)
	if err := noDirectRoutes(a); err != nil {
		t.Errorf("a left routes behind at shutdown: %v", err)
	}
	// c still has both direct routes to d; stopping c removes them.
	if err := checkDirectRoutes6(c, []*node{c, d}); err != nil {
		t.Errorf("before its shutdown: %v", err)
	}
	stopNode(t, c)
	if err := noDirectRoutes(c); err != nil {
		t.Errorf("c left routes behind at shutdown: %v", err)
	}
	stopNode(t, d)
	if err := noDirectRoutes(d); err != nil {
		t.Errorf("d left routes behind at shutdown: %v", err)
	}
}
