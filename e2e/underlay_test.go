package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/weftrun"
)

// TestUnderlayAddressChangeWhileRunning renumbers a host's underlay
// interface under a running daemon that was not pinned to an address
// (--iface, no --public-ip): the new address is advertised without a
// restart and the peers move their routes to it.
func TestUnderlayAddressChangeWhileRunning(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	a := c.by["a"]
	// Follow the interface instead of a pinned --public-ip, with metrics on
	// every address.
	spec := a.spec(otherUnderlays(c.nodes, a))
	spec.PublicIP = netip.Addr{}
	spec.MetricsAddr = netip.MustParseAddrPort("0.0.0.0:9586")
	a.args = weftrun.RunArgs(a.files, spec, "--iface", "eth0")
	c.startAll()
	c.waitFormed(formationTimeout)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pid := a.proc.PID()
	newAddr := netip.MustParseAddr("192.168.50.11")
	// Remove first: deleting a primary address also deletes the
	// secondaries of its subnet.
	if _, err := a.host.IP(ctx, "addr", "del", "192.168.50.1/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.host.IP(ctx, "addr", "add", newAddr.String()+"/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	moved := time.Now()
	b := c.by["b"]
	err := pollUntil(time.Now().Add(20*time.Second), func() error {
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
	})
	if err != nil {
		t.Fatalf("after a's address changed: %v", err)
	}
	t.Logf("peers reached a at its new address %v after the change", time.Since(moved).Round(time.Millisecond))
	if err := pingOK(ctx, a, c.by["c"].overlay, 3); err != nil {
		t.Error(err)
	}
	if a.proc.Exited() || a.proc.PID() != pid {
		t.Fatal("a restarted; the address change must be taken without a restart")
	}
	if !strings.Contains(a.proc.Logs(), "underlay address changed") {
		t.Error("a's log does not say its underlay address changed")
	}
}
