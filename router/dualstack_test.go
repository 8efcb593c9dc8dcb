package router

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/fakes"
)

// dualRouter is a dual-stack router a (10.244.1.0/24, fd00:10:244:1::/64)
// with dual-stack peers b and c.
func dualRouter(kind encap.Kind) (*Router, *fakes.Device, *fakes.Socket) {
	dev, conn := fakes.NewDevice(true), fakes.NewSocket(true)
	cfg := testConfig(kind)
	cfg.Local.Subnets, cfg.Local.Addrs = append(cfg.Local.Subnets, pfx("fd00:10:244:1::/64")), append(cfg.Local.Addrs, netip.MustParseAddr("fd00:10:244:1::"))
	r := New(cfg, Worker{Dev: dev, In: conn, Out: conn})
	peers := testPeers()
	peers[0].Subnets = append(peers[0].Subnets, pfx("fd00:10:244:2::/64"))
	peers[1].Subnets = append(peers[1].Subnets, pfx("fd00:10:244:3::/64"))
	r.SetPeers(peers)
	return r, dev, conn
}

func TestDualStackForwarding(t *testing.T) {
	r, dev, conn := dualRouter(encap.UDP)
	out4 := ipv4("10.244.1.0", "10.244.2.7", 100)
	out6 := ipv6("fd00:10:244:1::", "fd00:10:244:3::7", 100)
	r.w(0).forwardOut(loadOut(r, out4, out6), 2)
	g := conn.Groups()
	if len(g) != 2 || g[0].Dst != addrB || !bytes.Equal(g[0].Pkts[0], out4) || g[1].Dst != addrC || !bytes.Equal(g[1].Pkts[0], out6) {
		t.Fatalf("sent %+v, want the IPv4 packet to b and the IPv6 one to c", g)
	}

	good4 := ipv4("10.244.2.7", "10.244.1.0", 60)
	good6 := ipv6("fd00:10:244:2::7", "fd00:10:244:1::", 60)
	in := []datagram{
		{addrB, good4},
		{addrB, good6},
		{addrB, ipv6("fd00:10:244:3::7", "fd00:10:244:1::", 60)}, // b claims c's IPv6 address
		{addrB, ipv6("fd00:10:244:1::9", "fd00:10:244:1::", 60)}, // b claims ours
		{addrB, ipv6("fd00:10:244:2::7", "fd00:10:244:9::", 60)}, // not for us
		{addrC, ipv6("fd00:10:244:3::7", "fd00:10:244:1::5", 60)},
	}
	s := r.w(0).newInbound()
	for i, d := range in {
		s.load(i, d.payload)
		s.srcs[i] = d.src
	}
	r.w(0).forwardIn(s, len(in))
	if got := dev.Packets(); len(got) != 3 || !bytes.Equal(got[0], good4) || !bytes.Equal(got[1], good6) {
		t.Fatalf("TUN got %d packets, want good4, good6 and c's", len(got))
	}
	want := map[string]uint64{"spoofed": 2, "not_local": 1}
	for k, v := range r.Drops() {
		if v != want[k] {
			t.Errorf("drops[%s] = %d, want %d", k, v, want[k])
		}
	}
	st := r.Status()
	if st[0].Subnet != "10.244.2.0/24" || st[0].Subnet6 != "fd00:10:244:2::/64" {
		t.Errorf("status of b: subnet %q subnet6 %q", st[0].Subnet, st[0].Subnet6)
	}
}

func TestDualStackConflicts(t *testing.T) {
	peers := []Peer{
		{Name: "b", Subnets: []netip.Prefix{pfx("10.244.2.0/24"), pfx("fd00:10:244:1::/64")}, Underlay: addrB, State: "alive", Claimed: 1},
		{Name: "c", Subnets: []netip.Prefix{pfx("10.244.3.0/24"), pfx("fd00:10:244:3::/64")}, Underlay: addrC, State: "alive", Claimed: 5},
		{Name: "d", Subnets: []netip.Prefix{pfx("10.244.4.0/24"), pfx("fd00:10:244:3::/64")}, Underlay: netip.MustParseAddrPort("192.0.2.4:8285"), State: "alive", Claimed: 9},
	}
	tb, conflicts, reasons := buildTable([]netip.Prefix{pfx("10.244.1.0/24"), pfx("fd00:10:244:1::/64")}, 3, "a", peers)
	// b claimed our IPv6 subnet earlier: we lose it (and b is not routed);
	// d overlaps c's IPv6 subnet, claimed later: d loses.
	want := []Conflict{
		{Loser: "", Winner: "b", Subnet: pfx("fd00:10:244:1::/64")},
		{Loser: "d", Winner: "c", Subnet: pfx("fd00:10:244:3::/64")},
	}
	if len(conflicts) != 2 || conflicts[0] != want[0] || conflicts[1] != want[1] {
		t.Fatalf("conflicts %+v, want %+v", conflicts, want)
	}
	if reasons["b"] != "subnet conflict" || reasons["d"] != "subnet conflict" {
		t.Errorf("reasons %v", reasons)
	}
	for a, name := range map[string]string{"10.244.3.9": "c", "fd00:10:244:3::9": "c", "10.244.4.1": "", "10.244.2.1": ""} {
		e := tb.lookup(netip.MustParseAddr(a))
		if (e == nil) != (name == "") || (e != nil && e.peer.Name != name) {
			t.Errorf("lookup(%s) = %v, want %q", a, e, name)
		}
	}
}

func TestDualStackDirectRoutes(t *testing.T) {
	routes := &recRoutes{have: map[netip.Prefix]netip.Addr{}}
	cfg := testConfig(encap.UDP)
	cfg.Local.Subnets, cfg.Local.Addrs = append(cfg.Local.Subnets, pfx("fd00:10:244:1::/64")), append(cfg.Local.Addrs, netip.MustParseAddr("fd00:10:244:1::"))
	cfg.Direct, cfg.OnLink, cfg.Routes = DirectOnLink, func(netip.Addr) bool { return true }, routes
	r := New(cfg)
	peers := testPeers()[:1]
	peers[0].Subnets = append(peers[0].Subnets, pfx("fd00:10:244:2::/64"))
	peers[0].Underlay = netip.MustParseAddrPort("[fd00:50::2]:8285")
	r.SetPeers(peers)
	got := routes.have
	if via := peers[0].Underlay.Addr(); len(got) != 2 || got[pfx("10.244.2.0/24")] != via || got[pfx("fd00:10:244:2::/64")] != via {
		t.Fatalf("direct routes %v, want both of b's subnets via %s", got, via)
	}
	r.RemoveRoutes()
	if got := routes.have; len(got) != 0 {
		t.Errorf("routes left: %v", got)
	}
	// Over an IPv4 underlay the IPv6 subnet has no direct route (the
	// kernel takes no IPv6 route via an IPv4 gateway).
	peers[0].Underlay = netip.MustParseAddrPort("192.0.2.2:8285")
	r.SetPeers(peers)
	if got := routes.have; len(got) != 1 || got[pfx("10.244.2.0/24")] != peers[0].Underlay.Addr() {
		t.Errorf("direct routes over IPv4 %v, want only the IPv4 subnet's", got)
	}
}

// TestNeighborSolicitationAnswered: a kernel VTEP resolving our IPv6
// address sends a Neighbor Solicitation to the solicited-node multicast
// MAC; weft answers with an advertisement of its VTEP MAC.
func TestNeighborSolicitationAnswered(t *testing.T) {
	r, dev, conn := dualRouter(encap.VXLAN)
	ours := netip.MustParseAddr("fd00:10:244:1::")
	ns := nsPacket(netip.MustParseAddr("fd00:10:244:2::"), ours, macB)
	in := []datagram{
		{addrB, vxlanDatagram(1, encap.SolicitedNodeMAC(ours), macB, encap.EtherTypeIPv6, ns)},
		{addrB, vxlanDatagram(1, macA, macB, encap.EtherTypeIPv6, ipv6("fd00:10:244:2::7", "fd00:10:244:1::", 20))},
		{addrB, vxlanDatagram(1, encap.SolicitedNodeMAC(netip.MustParseAddr("fd00::77")), macB, encap.EtherTypeIPv6, ns)}, // another group
	}
	s := r.w(0).newInbound()
	for i, d := range in {
		s.load(i, d.payload)
		s.srcs[i] = d.src
	}
	r.w(0).forwardIn(s, len(in))
	if got := dev.Packets(); len(got) != 1 {
		t.Fatalf("TUN got %d packets, want only the IPv6 data packet", len(got))
	}
	if d := r.Drops(); d["not_our_mac"] != 1 {
		t.Errorf("drops %v, want one not_our_mac", d)
	}
	if len(conn.OneSent()) != 1 {
		t.Fatalf("sent %d advertisements, want 1", len(conn.OneSent()))
	}
	f, err := encap.ParseVXLAN(conn.OneSent()[0])
	if err != nil || f.Dst != macB || f.Src != macA || f.EtherType != encap.EtherTypeIPv6 || len(f.Payload) != 72 {
		t.Fatalf("advertisement frame %+v, %v", f, err)
	}
	if na := f.Payload[40:]; na[0] != 136 || !bytes.Equal(na[26:32], macA[:]) {
		t.Errorf("advertisement % x", na)
	}
}

// nsPacket is a Neighbor Solicitation from src (MAC mac) for target.
func nsPacket(src, target netip.Addr, mac encap.MAC) []byte {
	t16 := target.As16()
	dst := netip.AddrFrom16([16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: t16[13], 14: t16[14], 15: t16[15]})
	p := make([]byte, 40+32)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], 32)
	p[6], p[7] = 58, 255
	s, d := src.As16(), dst.As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	icmp := p[40:]
	icmp[0] = 135
	copy(icmp[8:24], t16[:])
	icmp[24], icmp[25] = 1, 1
	copy(icmp[26:32], mac[:])
	var sum uint32
	for _, b := range [][]byte{s[:], d[:], {0, 0, 0, 32, 0, 0, 0, 58}, icmp} {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(icmp[2:4], ^uint16(sum))
	return p
}
