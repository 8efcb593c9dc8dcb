package router

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/encap"
)

// udp4 builds an IPv4/UDP packet to dst:port carrying payload.
func udp4(src, dst string, port uint16, payload []byte) []byte {
	p := ipv4(src, dst, 28+len(payload))
	binary.BigEndian.PutUint16(p[22:24], port)
	copy(p[28:], payload)
	return p
}

func TestProbesAreSeenNotDropped(t *testing.T) {
	r, _, _ := newTestRouter(encap.UDP, true)
	r.w(0).forwardOut(loadOut(r,
		udp4("10.244.1.0", "10.244.1.255", ProbePort, ProbePayload(42)),
		udp4("10.244.1.0", "10.244.1.255", 53, ProbePayload(43)), // wrong port: a plain no-route drop
	), 2)
	s := r.w(0).newInbound()
	for i, d := range []datagram{
		{netip.MustParseAddrPort("127.0.0.1:40000"), ProbePayload(42)},
		{netip.MustParseAddrPort("198.51.100.1:40000"), ProbePayload(44)}, // a stranger cannot fake one
	} {
		s.load(i, d.payload)
		s.srcs[i] = d.src
	}
	r.w(0).forwardIn(s, 2)
	if !r.WaitProbes(42, true, time.Second) {
		t.Fatalf("probes not seen: out %d in %d", r.probeOut.Load(), r.probeIn.Load())
	}
	if d := r.Drops(); d["no_route"] != 1 || d["unknown_peer"] != 1 {
		t.Errorf("drops %v, want one no_route and one unknown_peer", d)
	}
	if r.WaitProbes(43, false, 10*time.Millisecond) {
		t.Error("a probe to the wrong port was taken for a probe")
	}
}

func TestSetLocalMovesSubnet(t *testing.T) {
	r, dev, _ := newTestRouter(encap.VXLAN, true)
	newMAC := encap.MAC{0x02, 0x57, 10, 244, 5, 0}
	r.SetLocal(Local{Subnets: []netip.Prefix{pfx("10.244.5.0/24")}, Addrs: []netip.Addr{netip.MustParseAddr("10.244.5.0")}, MAC: newMAC, Claimed: 9})
	s := r.w(0).newInbound()
	for i, d := range []datagram{
		{addrB, vxlanDatagram(1, newMAC, macB, encap.EtherTypeIPv4, ipv4("10.244.2.1", "10.244.5.0", 60))},
		{addrB, vxlanDatagram(1, macA, macB, encap.EtherTypeIPv4, ipv4("10.244.2.1", "10.244.5.0", 60))},   // old MAC
		{addrB, vxlanDatagram(1, newMAC, macB, encap.EtherTypeIPv4, ipv4("10.244.2.1", "10.244.1.0", 60))}, // old subnet
	} {
		s.load(i, d.payload)
		s.srcs[i] = d.src
	}
	r.w(0).forwardIn(s, 3)
	if n := len(dev.Packets()); n != 1 {
		t.Errorf("wrote %d packets, want 1", n)
	}
	if d := r.Drops(); d["not_our_mac"] != 1 || d["not_local"] != 1 {
		t.Errorf("drops %v", d)
	}
	if len(r.Status()) != 2 {
		t.Errorf("peers lost by SetLocal: %+v", r.Status())
	}
}
