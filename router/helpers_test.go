package router

import (
	"encoding/binary"
	"net/netip"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/fakes"
)

// datagram is a datagram for an inbound batch (load).
type datagram struct {
	src     netip.AddrPort
	payload []byte
}

// load puts datagram p at i of s, as the socket would without UDP GRO: in
// bufs[i] behind the headroom, with views[i] on it.
func (s *inboundState) load(i int, p []byte) {
	n := encap.Headroom + copy(s.bufs[i][encap.Headroom:], p)
	s.views[i] = s.bufs[i][encap.Headroom:n:n]
}

// ipv4 builds an IPv4/UDP packet of total length n (n >= 28).
func ipv4(src, dst string, n int) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(n))
	p[8] = 64
	p[9] = 17
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	for i := 28; i < n; i++ {
		p[i] = byte(i)
	}
	return p
}

// ipv6 builds an IPv6 packet with a payload of n bytes.
func ipv6(src, dst string, n int) []byte {
	p := make([]byte, 40+n)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], uint16(n))
	p[6] = 17
	p[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	return p
}

var (
	addrB = netip.MustParseAddrPort("192.0.2.2:8285")
	addrC = netip.MustParseAddrPort("192.0.2.3:8285")
	macA  = encap.MAC{0x02, 0x57, 10, 244, 1, 0}
	macB  = encap.MAC{0x02, 0x57, 10, 244, 2, 0}
)

func testPeers() []Peer {
	return []Peer{
		{Name: "b", Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Underlay: addrB, MAC: macB, State: "alive", Claimed: 1},
		{Name: "c", Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")}, Underlay: addrC, State: "alive", Claimed: 2},
	}
}

func testConfig(kind encap.Kind) Config {
	return Config{
		Name:  "a",
		Local: Local{Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, Addrs: []netip.Addr{netip.MustParseAddr("10.244.1.0")}, MAC: macA},
		Encap: kind, VNI: 1,
	}
}

func newTestRouter(kind encap.Kind, record bool) (*Router, *fakes.Device, *fakes.Socket) {
	dev, conn := fakes.NewDevice(record), fakes.NewSocket(record)
	r := New(testConfig(kind), Worker{Dev: dev, In: conn, Out: conn})
	r.SetPeers(testPeers())
	return r, dev, conn
}
