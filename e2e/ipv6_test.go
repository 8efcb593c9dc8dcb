package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/weftrun"
	"github.com/weftnet/weft/router"
)

// IPv6: an IPv6 underlay, IPv6 and dual-stack overlays.

const underlayNet6 = "fd00:50::/64"

// underlay6 is the IPv6 underlay address of the i-th host (from 1).
func underlay6(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0x00, 0x00, 0x50, 15: byte(i)})
}

// newCluster6 is newCluster on an IPv6-only underlay: hosts name[i] with
// fd00:50::<i+1>/64 (and no IPv4 address), subnet 10.244.<i+1>.0/24, each
// joining all the others as [addr]:7946. Daemons are not started.
func newCluster6(t *testing.T, names ...string) *cluster {
	t.Helper()
	c := newLab(t)
	c.seg = c.segment("lan6", underlayNet6)
	for i, name := range names {
		c.addNode(name, c.seg, underlay6(i+1), i+1)
	}
	for _, n := range c.nodes {
		var join []string
		for _, o := range c.nodes {
			if o != n {
				join = append(join, netip.AddrPortFrom(o.underlay, 7946).String())
			}
		}
		n.args = runArgs(n, join)
	}
	return c
}

// TestIPv6Underlay: three hosts whose underlay is IPv6 only carry an IPv4
// overlay: the cluster forms over IPv6 gossip, every pair pings, TCP flows,
// and the MTU leaves room for the IPv6 outer header.
func TestIPv6Underlay(t *testing.T) {
	c := newCluster6(t, "a", "b", "c")
	c.startAll()
	c.waitFormed(formationTimeout)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range c.nodes {
		st, err := status(n)
		if err != nil {
			t.Fatal(err)
		}
		// veth MTU 1500 - 40 (IPv6) - 8 (UDP).
		if st.Node.MTU != 1452 {
			t.Errorf("%s: MTU %d over an IPv6 underlay, want 1452", n.name, st.Node.MTU)
		}
		for _, o := range c.nodes {
			if p := st.Peer(o.name); o != n && p != nil {
				if ip, err := underlayAddr(p); err != nil || ip != o.underlay {
					t.Errorf("status of %s: peer %s underlay %q, want [%s]:port", n.name, o.name, p.Underlay, o.underlay)
				}
			}
		}
	}
	pingPairs(t, ctx, true, c.nodes, func(_, _ *node) bool { return true })
	a, b := c.by["a"], c.by["b"]
	iperfCheck(t, ctx, a.host, b.host, b.overlay, "a -> b, IPv4 overlay over an IPv6 underlay")
	m, _, err := metrics(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"udp_gso", "udp_gro"} {
		if v, _ := m.value("weft_offload_enabled", "feature", f); v != 1 {
			t.Errorf("a: weft_offload_enabled{feature=%q} = %v over IPv6, want 1", f, v)
		}
	}
}

// TestIPv6UnderlayDirectRouting: on an IPv6 underlay, --direct-routing
// reaches on-link dual-stack peers by an IPv4 route through an IPv6 gateway
// ("via inet6") and an IPv6 route, each with our address of its family as
// the source; both families ping over them.
func TestIPv6UnderlayDirectRouting(t *testing.T) {
	c := newCluster6(t, "a", "b")
	for _, n := range c.nodes {
		var join []string
		for _, o := range c.nodes {
			if o != n {
				join = append(join, netip.AddrPortFrom(o.underlay, 7946).String())
			}
		}
		dualStackNode(n, join, "--direct-routing")
	}
	c.startAll()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := c.by["a"], c.by["b"]
	if err := pollUntil(time.Now().Add(10*time.Second), func() error {
		out, err := a.host.IP(ctx, "route", "show", "proto", routeProto)
		if err != nil {
			return err
		}
		line := strings.TrimSpace(string(out))
		for _, part := range []string{b.subnet.String(), "via inet6 " + b.underlay.String(), "dev eth0", "src " + a.overlay.String()} {
			if !strings.Contains(line, part) {
				return fmt.Errorf("a's proto %s routes %q lack %q", routeProto, line, part)
			}
		}
		out, err = a.host.IP(ctx, "-6", "route", "show", "proto", routeProto)
		if err != nil {
			return err
		}
		line = strings.TrimSpace(string(out))
		for _, part := range []string{b.subnet6.String() + " via " + b.underlay.String(), "dev eth0", "src " + a.overlay6.String()} {
			if !strings.Contains(line, part) {
				return fmt.Errorf("a's IPv6 proto %s routes %q lack %q", routeProto, line, part)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st, err := status(a)
	if err != nil {
		t.Fatal(err)
	}
	if p := st.Peer("b"); p == nil || p.Via != router.ViaDirect {
		t.Fatalf("a does not reach b directly: %s", st.summary())
	}
	pingPairs(t, ctx, false, c.nodes, func(_, _ *node) bool { return true })
	pingPairsTo(t, ctx, false, c.nodes, func(_, _ *node) bool { return true }, func(n *node) netip.Addr { return n.overlay6 })
	if out, err := a.host.IP(ctx, "-6", "route", "get", b.overlay6.String()); err != nil || !strings.Contains(string(out), "via "+b.underlay.String()+" dev eth0") {
		t.Errorf("on a, ip -6 route get %s = %q (%v), want the direct route", b.overlay6, out, err)
	}
	stopNode(t, a)
	for _, family := range []string{"-4", "-6"} {
		if out, _ := a.host.IP(ctx, family, "route", "show", "proto", routeProto); strings.TrimSpace(string(out)) != "" {
			t.Errorf("a's direct routes survive its shutdown: %s", out)
		}
	}
}

// TestIPv6UnderlayAddressChange: a daemon following its interface (--iface,
// no --public-ip) on an IPv6-only underlay finds its IPv6 address, and
// advertises the new one when the interface is renumbered, without a
// restart.
func TestIPv6UnderlayAddressChange(t *testing.T) {
	c := newCluster6(t, "a", "b")
	a, b := c.by["a"], c.by["b"]
	spec := a.spec([]string{netip.AddrPortFrom(b.underlay, 7946).String()})
	spec.PublicIP = netip.Addr{}
	spec.MetricsAddr = netip.MustParseAddrPort("[::]:9586")
	a.args = weftrun.RunArgs(a.files, spec, "--iface", "eth0")
	c.startAll()
	c.waitFormed(formationTimeout)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pid := a.proc.PID()
	newAddr := underlay6(11)
	if _, err := a.host.IP(ctx, "addr", "add", newAddr.String()+"/64", "dev", "eth0", "nodad"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.host.IP(ctx, "addr", "del", a.underlay.String()+"/64", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	a.underlay = newAddr // metricsURL
	if err := pollUntil(time.Now().Add(20*time.Second), func() error {
		st, err := status(b)
		if err != nil {
			return err
		}
		p := st.Peer("a")
		if p == nil || !alive(p) {
			return fmt.Errorf("b does not see a alive: %s", st.summary())
		}
		if u, err := underlayAddr(p); err != nil || u != newAddr {
			return fmt.Errorf("b routes a via %s, want %s", p.Underlay, newAddr)
		}
		return pingOK(ctx, b, a.overlay, 1)
	}); err != nil {
		t.Fatalf("after a's address changed: %v", err)
	}
	if a.proc.Exited() || a.proc.PID() != pid {
		t.Fatal("a restarted; the address change must be taken without a restart")
	}
}

var overlayNetwork6 = netip.MustParsePrefix("fd00:10:244::/56")

// dualStackNode gives n the IPv6 subnet fd00:10:244:<idx>::/64 beside its
// IPv4 one, and its command line (joining join).
func dualStackNode(n *node, join []string, extra ...string) {
	n.network6 = overlayNetwork6
	n.subnet6 = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x00, 0x00, 0x10, 0x02, 0x44, 0x00, byte(n.idx)}), 64)
	n.overlay6 = n.subnet6.Addr()
	n.args = runArgs(n, join, extra...)
}

// ipv6UDP is an IPv6/UDP packet from src to dst (UDP checksum left 0: it
// is meant to be dropped before any kernel sees it).
func ipv6UDP(src, dst netip.Addr, payload string) []byte {
	p := make([]byte, 48+len(payload))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], uint16(8+len(payload)))
	p[6], p[7] = 17, 64
	s, d := src.As16(), dst.As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	binary.BigEndian.PutUint16(p[40:42], 40000)
	binary.BigEndian.PutUint16(p[42:44], 40001)
	binary.BigEndian.PutUint16(p[44:46], uint16(8+len(payload)))
	copy(p[48:], payload)
	return p
}

// TestDualStackOverlay: three dual-stack hosts on an IPv4 underlay. weft0
// holds both addresses, status and the subnet file show both subnets,
// every pair pings over IPv4 and IPv6, TCP flows over IPv6, and an IPv6
// packet whose inner source is outside the sending peer's subnets is
// dropped as spoofed.
func TestDualStackOverlay(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	for _, n := range c.nodes {
		dualStackNode(n, otherUnderlays(c.nodes, n), "--flannel-compat")
	}
	c.startAll()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, n := range c.nodes {
		out, err := n.host.IP(ctx, "-o", "addr", "show", "dev", "weft0")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{n.overlay.String() + "/16", n.overlay6.String() + "/56"} {
			if !strings.Contains(string(out), " "+want+" ") {
				t.Errorf("%s: weft0 should have %s, got: %s", n.name, want, out)
			}
		}
		st, err := status(n)
		if err != nil {
			t.Fatal(err)
		}
		if st.Node.Subnet != n.subnet.String() || st.Node.Subnet6 != n.subnet6.String() || st.Node.Address6 != n.overlay6.String() {
			t.Errorf("status of %s: subnet %q subnet6 %q address6 %q", n.name, st.Node.Subnet, st.Node.Subnet6, st.Node.Address6)
		}
		for _, o := range c.nodes {
			if p := st.Peer(o.name); o != n && (p == nil || p.Subnet6 != o.subnet6.String()) {
				t.Errorf("status of %s: peer %s is %+v, want subnet6 %s", n.name, o.name, p, o.subnet6)
			}
		}
		for key, want := range map[string]string{"WEFT_SUBNET": n.subnet.String(), "WEFT_IPV6_NETWORK": overlayNetwork6.String(),
			"WEFT_IPV6_SUBNET": n.subnet6.String(), "WEFT_IPV6_ADDRESS": n.overlay6.String(),
			"FLANNEL_IPV6_SUBNET": netip.PrefixFrom(n.overlay6.Next(), 64).String()} {
			if v, err := subnetFileValue(n, key); err != nil || v != want {
				t.Errorf("%s: subnet file %s=%q (%v), want %s", n.name, key, v, err, want)
			}
		}
	}
	all := func(_, _ *node) bool { return true }
	pingPairs(t, ctx, true, c.nodes, all)
	pingPairsTo(t, ctx, true, c.nodes, all, func(n *node) netip.Addr { return n.overlay6 })
	a, b := c.by["a"], c.by["b"]
	iperfCheck(t, ctx, a.host, b.host, b.overlay6, "a -> b over the IPv6 overlay")

	// b sends a (from its underlay address) IPv6 packets claiming c's
	// address: spoofed, never delivered.
	before, err := status(a)
	if err != nil {
		t.Fatal(err)
	}
	const forged = 5
	forgedPkt := ipv6UDP(c.by["c"].overlay6.Next(), a.overlay6, "forged")
	var sent map[string]int
	if err := runTrustHelperIn(ctx, b.host, "udp-send", udpSendSpec{
		LocalPort: 40999, To: netip.AddrPortFrom(a.underlay, dataPort), Count: forged, Raw: forgedPkt,
	}, &sent); err != nil {
		t.Fatal(err)
	}
	if err := pollUntil(time.Now().Add(10*time.Second), func() error {
		st, err := status(a)
		if err != nil {
			return err
		}
		if d := st.Drops["spoofed"] - before.Drops["spoofed"]; d != forged {
			return fmt.Errorf("a dropped %d of %d forged IPv6 packets as spoofed (drops %v)", d, forged, st.Drops)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestIPv6OnlyOverlay: an IPv6 overlay on an IPv6 underlay, no IPv4
// anywhere: every pair pings, TCP flows.
func TestIPv6OnlyOverlay(t *testing.T) {
	c := newCluster6(t, "a", "b", "c")
	for _, n := range c.nodes {
		n.subnet = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x00, 0x00, 0x10, 0x02, 0x44, 0x00, byte(n.idx)}), 64)
		n.overlay = n.subnet.Addr()
		var join []string
		for _, o := range c.nodes {
			if o != n {
				join = append(join, netip.AddrPortFrom(o.underlay, 7946).String())
			}
		}
		spec := n.spec(join)
		spec.Network = overlayNetwork6
		n.args = weftrun.RunArgs(n.files, spec)
	}
	c.startAll()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range c.nodes {
		if v, err := subnetFileValue(n, "WEFT_IPV6_SUBNET"); err != nil || v != n.subnet.String() {
			t.Errorf("%s: WEFT_IPV6_SUBNET=%q (%v), want %s", n.name, v, err, n.subnet)
		}
		if out, err := n.host.IP(ctx, "-4", "addr", "show", "dev", "weft0"); err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("%s: weft0 has IPv4 addresses in an IPv6-only overlay: %s (%v)", n.name, out, err)
		}
	}
	pingPairs(t, ctx, true, c.nodes, func(_, _ *node) bool { return true })
	a, b := c.by["a"], c.by["b"]
	iperfCheck(t, ctx, a.host, b.host, b.overlay, "a -> b, IPv6 overlay over an IPv6 underlay")
}
