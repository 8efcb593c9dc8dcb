package node

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/fakes"
	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/router"
)

var network6 = netip.MustParsePrefix("fd00:10:244::/56")

// dualStack makes h a dual-stack host, its IPv6 subnet fd00:10:244:<i>::/64
// (sub6 "" with an automatic subnet).
func dualStack(h *host, sub6 string) {
	h.s.Networks = append(h.s.Networks, network6)
	h.s.Pools = append(h.s.Pools, lease.Pool{Network: network6, Bits: 64})
	if sub6 != "" {
		h.s.Subnets = append(h.s.Subnets, netip.MustParsePrefix(sub6))
	}
}

func ipv6(src, dst string) []byte {
	p := make([]byte, 48)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], 8)
	p[6], p[7] = 17, 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	return p
}

func TestDualStackHosts(t *testing.T) {
	u := fakes.NewHub()
	a := newHost(t, u, "a", 1, "10.244.1.0/24")
	b := newHost(t, u, "b", 2, "10.244.2.0/24")
	dualStack(a, "fd00:10:244:1::/64")
	dualStack(b, "fd00:10:244:2::/64")
	a.s.FlannelCompat = true
	a.mustStart()
	b.mustStart(a)
	eventually(t, "a routes b", routedVia(a, "b", router.ViaTunnel))
	eventually(t, "b routes a", routedVia(b, "a", router.ViaTunnel))

	for _, pkt := range [][]byte{ipv4("10.244.1.0", "10.244.2.7"), ipv6("fd00:10:244:1::", "fd00:10:244:2::7")} {
		a.dev.Send(pkt)
		if got := recv(t, b.dev); !slices.Equal(got, pkt) {
			t.Fatalf("b's TUN got %x, want %x", got, pkt)
		}
	}
	b.dev.Send(ipv6("fd00:10:244:3::7", "fd00:10:244:1::")) // outside b's IPv6 subnet
	eventually(t, "spoofed IPv6 drop counted", func() error {
		if d := a.n.Status().Drops["spoofed"]; d != 1 {
			return fmt.Errorf("spoofed drops %d, want 1", d)
		}
		return nil
	})
	st := a.n.Status()
	if st.Node.Subnet != "10.244.1.0/24" || st.Node.Subnet6 != "fd00:10:244:1::/64" || st.Node.Network6 != network6.String() || st.Node.Address6 != "fd00:10:244:1::" {
		t.Errorf("a's status: %+v", st.Node)
	}
	if p := st.Peer("b"); p == nil || p.Subnet6 != "fd00:10:244:2::/64" {
		t.Errorf("a's status of b: %+v", p)
	}
	env, err := os.ReadFile(a.s.SubnetFile)
	for _, line := range []string{"WEFT_SUBNET=10.244.1.0/24", "WEFT_IPV6_NETWORK=fd00:10:244::/56", "WEFT_IPV6_SUBNET=fd00:10:244:1::/64",
		"WEFT_IPV6_ADDRESS=fd00:10:244:1::", "FLANNEL_SUBNET=10.244.1.1/24", "FLANNEL_IPV6_NETWORK=fd00:10:244::/56", "FLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64"} {
		if err != nil || !strings.Contains(string(env), line+"\n") {
			t.Errorf("subnet file lacks %s: %q %v", line, env, err)
		}
	}
	if m := a.n.meta(); family.Second(m.Subnets) != family.Second(a.s.Subnets) {
		t.Errorf("metadata %+v", m)
	}
}

// Automatic dual-stack subnets: distinct per family, kept in the lease; an
// IPv6 conflict moves only the IPv6 subnet of the later claim.
func TestDualStackAutomaticSubnets(t *testing.T) {
	u := fakes.NewHub()
	a, b := newHost(t, u, "a", 1, ""), newHost(t, u, "b", 2, "")
	same := netip.MustParsePrefix("fd00:10:244:5::/64")
	for i, h := range []*host{a, b} {
		dualStack(h, "")
		l := lease.Lease{Networks: []netip.Prefix{network, network6}, Subnets: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 0}), 24), same},
			Claimed: time.Now().Add(-time.Hour).UnixMilli() + int64(1000*(i+1))}
		if err := lease.Save(h.s.StateDir, l); err != nil {
			t.Fatal(err)
		}
	}
	a.mustStart()
	b.mustStart(a)
	eventually(t, "b moves its IPv6 subnet", func() error {
		if sub := b.n.Status().Node.Subnet6; sub == same.String() {
			return fmt.Errorf("b still holds %s", sub)
		}
		return nil
	})
	st := b.n.Status().Node
	moved := netip.MustParsePrefix(st.Subnet6)
	if st.Subnet != "10.244.2.0/24" || !network6.Contains(moved.Addr()) || moved.Bits() != 64 {
		t.Errorf("b now holds %s and %s, want 10.244.2.0/24 kept and a /64 of %s", st.Subnet, moved, network6)
	}
	if got := family.Second(b.dev.Addrs()); got != netip.PrefixFrom(moved.Addr(), 56) {
		t.Errorf("b's TUN IPv6 address %s, want %s/56", got, moved.Addr())
	}
	if l, _ := lease.Load(b.s.StateDir); family.Second(l.Subnets) != moved || family.First(l.Subnets).String() != st.Subnet {
		t.Errorf("b's lease %+v", l)
	}
	if env, _ := os.ReadFile(b.s.SubnetFile); !strings.Contains(string(env), "WEFT_IPV6_SUBNET="+moved.String()) {
		t.Errorf("b's subnet file: %s", env)
	}
	if a.n.Status().Node.Subnet6 != same.String() {
		t.Errorf("a (the earlier claim) moved too")
	}
	eventually(t, "a routes b's new IPv6 subnet", func() error {
		p := a.n.Status().Peer("b")
		if p == nil || p.Subnet6 != moved.String() || p.Via != router.ViaTunnel {
			return fmt.Errorf("a sees b as %+v", p)
		}
		return nil
	})
}
