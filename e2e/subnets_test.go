package e2e

// Automatic subnets: hosts without --subnet choose free ones, keep them
// across restarts, and resolve conflicts by the earlier claim.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/lease"
)

// autoCluster is newCluster whose daemons choose their own subnets: no
// --subnet flag, and n.subnet / n.overlay unknown until settledSubnets.
func autoCluster(t *testing.T, names ...string) *cluster {
	t.Helper()
	c := newCluster(t, names...)
	for _, n := range c.nodes {
		n.subnet, n.overlay = netip.Prefix{}, netip.Addr{}
		n.args = runArgs(n, otherUnderlays(c.nodes, n))
	}
	return c
}

// subnetFileValue returns KEY's value in n's subnet file.
func subnetFileValue(n *node, key string) (string, error) {
	b, err := os.ReadFile(n.files.SubnetFile)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s has no %s: %q", n.files.SubnetFile, key, b)
}

// tunAddrs returns the IPv4 addresses (CIDR) of weft0 in n.
func tunAddrs(ctx context.Context, n *node) ([]string, error) {
	out, err := n.host.IP(ctx, "-o", "-4", "addr", "show", "dev", "weft0")
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" {
				addrs = append(addrs, f[i+1])
			}
		}
	}
	return addrs, nil
}

// pingWithin pings dst from src once per try until a reply comes or

// settledSubnets polls until every node of c runs on an automatic /24 of
// the overlay network, all distinct and non-overlapping, and every node
// routes every other one through the tunnel with the subnet that node
// reports for itself. It sets each node's subnet and overlay address.
func settledSubnets(t *testing.T, c *cluster, timeout time.Duration) map[string]*statusDoc {
	t.Helper()
	network := netip.MustParsePrefix(overlayNetwork)
	var views map[string]*statusDoc
	err := pollUntil(time.Now().Add(timeout), func() error {
		views = map[string]*statusDoc{}
		own := map[string]netip.Prefix{}
		for _, n := range c.nodes {
			if n.proc.Exited() {
				return errExited(n)
			}
			v, err := status(n)
			if err != nil {
				return err
			}
			views[n.name] = v
			sub, err := netip.ParsePrefix(v.Node.Subnet)
			switch {
			case err != nil:
				return fmt.Errorf("%s: node.subnet %q: %v", n.name, v.Node.Subnet, err)
			case !v.Node.AutoSubnet:
				return permanent{fmt.Errorf("%s: node.autoSubnet is false without --subnet", n.name)}
			case sub.Bits() != 24 || sub.Masked() != sub || !network.Contains(sub.Addr()):
				return permanent{fmt.Errorf("%s: automatic subnet %s is not a /24 of %s", n.name, sub, network)}
			case v.Node.Address != sub.Addr().String():
				return permanent{fmt.Errorf("%s: node.address %q, want the subnet's first address %s", n.name, v.Node.Address, sub.Addr())}
			}
			for name, o := range own {
				if o.Overlaps(sub) {
					return fmt.Errorf("%s and %s both hold %s / %s (conflict not resolved yet)", name, n.name, o, sub)
				}
			}
			own[n.name] = sub
		}
		for _, n := range c.nodes {
			v := views[n.name]
			if err := seesAlive(v, otherNames(c.nodes, n)...); err != nil {
				return err
			}
			for _, p := range v.Peers {
				if want, ok := own[p.Name]; ok && p.Subnet != want.String() {
					return fmt.Errorf("%s sees %s with subnet %s, but %s reports %s", n.name, p.Name, p.Subnet, p.Name, want)
				}
			}
		}
		for _, n := range c.nodes {
			n.subnet = own[n.name]
			n.overlay = n.subnet.Addr()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("automatic subnets did not settle within %v: %v", timeout, err)
	}
	return views
}

// settledSubnets6 polls until every dual-stack node of c holds an
// automatic IPv6 /64 of its network, all distinct, each routed by every
// other node with that subnet; it sets each node's subnet6 and overlay6.
func settledSubnets6(t *testing.T, c *cluster, timeout time.Duration) {
	t.Helper()
	err := pollUntil(time.Now().Add(timeout), func() error {
		own := map[string]netip.Prefix{}
		views := map[string]*statusDoc{}
		for _, n := range c.nodes {
			v, err := status(n)
			if err != nil {
				return err
			}
			views[n.name] = v
			sub, err := netip.ParsePrefix(v.Node.Subnet6)
			if err != nil || sub.Bits() != 64 || !n.network6.Contains(sub.Addr()) || v.Node.Address6 != sub.Addr().String() {
				return fmt.Errorf("%s: node.subnet6 %q, address6 %q: want a /64 of %s and its first address", n.name, v.Node.Subnet6, v.Node.Address6, n.network6)
			}
			for name, o := range own {
				if o.Overlaps(sub) {
					return fmt.Errorf("%s and %s both hold %s (conflict not resolved yet)", name, n.name, sub)
				}
			}
			own[n.name] = sub
		}
		for _, n := range c.nodes {
			for _, p := range views[n.name].Peers {
				if want, ok := own[p.Name]; ok && p.Subnet6 != want.String() {
					return fmt.Errorf("%s sees %s with subnet6 %q, but %s reports %s", n.name, p.Name, p.Subnet6, p.Name, want)
				}
			}
		}
		for _, n := range c.nodes {
			n.subnet6, n.overlay6 = own[n.name], own[n.name].Addr()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("automatic IPv6 subnets did not settle within %v: %v", timeout, err)
	}
}

// TestAutomaticSubnets: six hosts started at once without --subnet end on
// six distinct /24s of the network, every one routes the other five, the
// overlay works between them, and a restarted host keeps its subnet.
//
// The hosts run dual stack, so they also choose six distinct IPv6 /64s of
// fd00:10:244::/56, kept in the lease with the IPv4 one.
func TestAutomaticSubnets(t *testing.T) {
	c := autoCluster(t, "a", "b", "c", "d", "e", "f")
	for _, n := range c.nodes {
		n.network6 = overlayNetwork6
		n.args = runArgs(n, otherUnderlays(c.nodes, n))
	}
	start := time.Now()
	c.startAll()
	c.waitFormed(60 * time.Second)
	settledSubnets(t, c, 60*time.Second)
	var subnets []string
	for _, n := range c.nodes {
		subnets = append(subnets, n.name+"="+n.subnet.String())
	}
	t.Logf("six hosts settled on distinct subnets %v after %v", subnets, time.Since(start).Round(time.Millisecond))
	settledSubnets6(t, c, 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// What each host keeps and publishes: the lease in its state directory,
	// the subnet file, and weft0's address (the network's prefix length).
	for _, n := range c.nodes {
		l, err := lease.Load(n.files.StateDir)
		if err != nil {
			t.Errorf("%s: lease: %v", n.name, err)
		} else if family.First(l.Subnets) != n.subnet || family.First(l.Networks) != overlayPrefix || l.Claimed <= 0 || family.Second(l.Subnets) != n.subnet6 || family.Second(l.Networks) != overlayNetwork6 {
			t.Errorf("%s: lease %+v, want subnet %s in %s with a claim time", n.name, l, n.subnet, overlayNetwork)
		}
		if v, err := subnetFileValue(n, "WEFT_SUBNET"); err != nil || v != n.subnet.String() {
			t.Errorf("%s: subnet file WEFT_SUBNET=%q (%v), want %s", n.name, v, err, n.subnet)
		}
		addrs, err := tunAddrs(ctx, n)
		if want := n.overlay.String() + "/16"; err != nil || !slices.Equal(addrs, []string{want}) {
			t.Errorf("%s: weft0 addresses %v (%v), want [%s]", n.name, addrs, err, want)
		}
		if got := countLines(n.proc.Logs(), "took a free subnet"); got < 1 {
			t.Errorf("%s: log does not say it took a free subnet", n.name)
		}
	}

	// Every ordered pair (30), concurrently per source.
	pingStart := time.Now()
	if errs := pingAll(ctx, c.nodes, 10*time.Second); len(errs) > 0 {
		t.Fatalf("overlay pings failed:\n%v", errors.Join(errs...))
	}
	t.Logf("all 30 ordered pairs ping over the overlay (%v)", time.Since(pingStart).Round(time.Millisecond))

	// Restart c with the same flags: it keeps its subnet.
	cc := c.by["c"]
	before := cc.subnet
	stopNode(t, cc)
	c.start(cc)
	restartedAt := time.Now()
	if err := waitReady(cc, 30*time.Second); err != nil {
		t.Fatalf("restarted c not ready: %v", err)
	}
	v, err := status(cc)
	if err != nil {
		t.Fatal(err)
	}
	if v.Node.Subnet != before.String() {
		t.Fatalf("after a restart c runs on %s, want the subnet it had: %s", v.Node.Subnet, before)
	}
	if !strings.Contains(cc.proc.Logs(), "keeping the subnet leased before") {
		t.Errorf("restarted c does not log that it kept its lease:\n%s", tail(cc.proc.Logs(), 30))
	}
	settledSubnets(t, c, 30*time.Second)
	if cc.subnet != before {
		t.Fatalf("after the restart the cluster settled with c on %s, want %s", cc.subnet, before)
	}
	if err := pingWithin(ctx, c.by["a"], cc.overlay, 10*time.Second); err != nil {
		t.Fatalf("a -> restarted c (%s): %v", cc.overlay, err)
	}
	if err := pingWithin(ctx, cc, c.by["f"].overlay, 10*time.Second); err != nil {
		t.Fatalf("restarted c -> f: %v", err)
	}
	t.Logf("c restarted on the same subnet %s; everyone routes it again %v after the restart", before, time.Since(restartedAt).Round(time.Millisecond))
}

// TestSubnetConflictResolves: two hosts whose leases hold the same subnet
// start together; the later claim moves to a free subnet and says so, and
// the overlay works between them.
func TestSubnetConflictResolves(t *testing.T) {
	c := autoCluster(t, "a", "b")
	a, b := c.by["a"], c.by["b"]
	contested := netip.MustParsePrefix("10.244.77.0/24")
	now := time.Now().UnixMilli()
	claims := map[string]int64{"a": now - 120_000, "b": now - 60_000} // a claimed first
	for _, n := range c.nodes {
		if err := lease.Save(n.files.StateDir, lease.Lease{Networks: []netip.Prefix{overlayPrefix}, Subnets: []netip.Prefix{contested}, Claimed: claims[n.name]}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	c.startAll()
	c.waitFormed(formationTimeout)
	settledSubnets(t, c, 30*time.Second)
	t.Logf("conflict resolved %v after start: a=%s b=%s", time.Since(start).Round(time.Millisecond), a.subnet, b.subnet)

	if a.subnet != contested {
		t.Errorf("a claimed %s first but now runs on %s", contested, a.subnet)
	}
	if b.subnet == contested {
		t.Fatalf("b (the later claim) still runs on %s", contested)
	}
	const moved = "lost a subnet conflict: moved to a free subnet"
	if err := pollUntil(time.Now().Add(5*time.Second), func() error {
		if !strings.Contains(b.proc.Logs(), moved) {
			return errors.New("b's log does not say it moved")
		}
		return nil
	}); err != nil {
		t.Errorf("%v:\n%s", err, tail(b.proc.Logs(), 40))
	}
	for _, line := range strings.Split(b.proc.Logs(), "\n") {
		if strings.Contains(line, moved) {
			t.Logf("b: %s", line)
		}
	}
	if strings.Contains(a.proc.Logs(), moved) {
		t.Errorf("a, the earlier claim, moved too:\n%s", tail(a.proc.Logs(), 40))
	}

	// b's lease, subnet file and TUN follow the move; a's lease is untouched.
	if l, err := lease.Load(b.files.StateDir); err != nil || family.First(l.Subnets) != b.subnet || l.Claimed <= claims["b"] {
		t.Errorf("b's lease after the move: %+v (%v), want subnet %s with a new claim time", l, err, b.subnet)
	}
	if l, err := lease.Load(a.files.StateDir); err != nil || family.First(l.Subnets) != contested || l.Claimed != claims["a"] {
		t.Errorf("a's lease: %+v (%v), want %s claimed at %d", l, err, contested, claims["a"])
	}
	if v, err := subnetFileValue(b, "WEFT_SUBNET"); err != nil || v != b.subnet.String() {
		t.Errorf("b's subnet file WEFT_SUBNET=%q (%v), want %s", v, err, b.subnet)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range c.nodes {
		addrs, err := tunAddrs(ctx, n)
		if want := n.overlay.String() + "/16"; err != nil || !slices.Equal(addrs, []string{want}) {
			t.Errorf("%s: weft0 addresses %v (%v), want [%s]", n.name, addrs, err, want)
		}
	}
	if err := pingWithin(ctx, a, b.overlay, 10*time.Second); err != nil {
		t.Errorf("a -> b (%s) after the move: %v", b.overlay, err)
	}
	if err := pingWithin(ctx, b, a.overlay, 10*time.Second); err != nil {
		t.Errorf("b -> a (%s) after the move: %v", a.overlay, err)
	}
}
