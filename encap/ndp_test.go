package encap

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// nsFrame builds, as a Linux kernel VXLAN device sends it, a Neighbor
// Solicitation from src (MAC smac) for target: to the solicited-node
// multicast address and MAC, with a source link-layer address option
// (omitted when withSLLA is false, as in a unicast NUD probe). The ICMPv6
// checksum is x/net/icmp's, not ours.
func nsFrame(t *testing.T, smac MAC, src, target netip.Addr, withSLLA bool) []byte {
	t.Helper()
	t16 := target.As16()
	dst := netip.AddrFrom16([16]byte{0xff, 0x02, 11: 0x01, 12: 0xff, 13: t16[13], 14: t16[14], 15: t16[15]})
	body := append(make([]byte, 4), t16[:]...) // reserved, target
	if withSLLA {
		body = append(body, 1, 1)
		body = append(body, smac[:]...)
	}
	msg := icmp.Message{Type: ipv6.ICMPTypeNeighborSolicitation, Body: &icmp.RawBody{Data: body}}
	b, err := msg.Marshal(icmp.IPv6PseudoHeader(net.IP(src.AsSlice()), net.IP(dst.AsSlice())))
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, EthernetHeaderLen+ipv6Header, 128)
	dmac := SolicitedNodeMAC(target)
	copy(frame[0:6], dmac[:])
	copy(frame[6:12], smac[:])
	binary.BigEndian.PutUint16(frame[12:14], EtherTypeIPv6)
	h := frame[EthernetHeaderLen:]
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:6], uint16(len(b)))
	h[6], h[7] = 58, 255
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return append(frame, b...)
}

func TestNDPReply(t *testing.T) {
	ours := MAC{0x02, 0x57, 0, 0, 0x01, 0}
	theirs := MAC{0x02, 0, 0, 0, 0, 0x09}
	ip := netip.MustParseAddr("fd00:10:244:1::")
	src := netip.MustParseAddr("fd00:10:244:9::")
	if got := SolicitedNodeMAC(ip); got != (MAC{0x33, 0x33, 0xff, 0, 0, 0}) {
		t.Errorf("SolicitedNodeMAC(%s) = %s", ip, got)
	}
	for _, slla := range []bool{true, false} {
		ns := nsFrame(t, theirs, src, ip, slla)
		reply, ok := NDPReply(ns, ours, ip)
		if !ok {
			t.Fatalf("SLLA %v: NDPReply refused a solicitation for %s", slla, ip)
		}
		if len(reply) != NDPReplyLen || &reply[0] != &ns[0] {
			t.Fatalf("reply is %d bytes (want %d), in place %v", len(reply), NDPReplyLen, &reply[0] == &ns[0])
		}
		if MAC(reply[0:6]) != theirs || MAC(reply[6:12]) != ours || binary.BigEndian.Uint16(reply[12:14]) != EtherTypeIPv6 {
			t.Errorf("Ethernet header % x", reply[:14])
		}
		h := reply[EthernetHeaderLen:]
		if h[0] != 0x60 || binary.BigEndian.Uint16(h[4:6]) != 32 || h[6] != 58 || h[7] != 255 ||
			netip.AddrFrom16([16]byte(h[8:24])) != ip || netip.AddrFrom16([16]byte(h[24:40])) != src {
			t.Errorf("IPv6 header % x", h[:40])
		}
		na := h[40:]
		// The checksum as x/net/icmp computes it over the same message.
		body := bytes.Clone(na[4:])
		want, err := (&icmp.Message{Type: ipv6.ICMPTypeNeighborAdvertisement, Body: &icmp.RawBody{Data: body}}).
			Marshal(icmp.IPv6PseudoHeader(ip.AsSlice(), src.AsSlice()))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(na, want) {
			t.Errorf("advertisement\n got % x\nwant % x (x/net/icmp's checksum)", na, want)
		}
		if icmpv6Checksum(ip, src, na) != 0 {
			t.Error("advertisement checksum does not verify")
		}
		if na[0] != 136 || na[4] != 0x60 || netip.AddrFrom16([16]byte(na[8:24])) != ip || na[24] != 2 || na[25] != 1 || MAC(na[26:32]) != ours {
			t.Errorf("advertisement fields % x", na)
		}
	}

	// Not answered, and left as they were.
	for name, f := range map[string]func() []byte{
		"other target": func() []byte { return nsFrame(t, theirs, src, netip.MustParseAddr("fd00:10:244:2::"), true) },
		"DAD probe":    func() []byte { return nsFrame(t, theirs, netip.IPv6Unspecified(), ip, false) },
		"bad checksum": func() []byte { b := nsFrame(t, theirs, src, ip, true); b[len(b)-1] ^= 1; return b },
		"hop limit 64": func() []byte { b := nsFrame(t, theirs, src, ip, true); b[EthernetHeaderLen+7] = 64; return b },
		"truncated":    func() []byte { return nsFrame(t, theirs, src, ip, true)[:70] },
		"zero-length option": func() []byte {
			b := nsFrame(t, theirs, src, ip, true)
			b[len(b)-7] = 0
			return b
		},
		"no room": func() []byte { b := nsFrame(t, theirs, src, ip, false); return b[:len(b):len(b)] },
		"IPv4":    func() []byte { return make([]byte, 90) },
	} {
		in := f()
		orig := bytes.Clone(in)
		if _, ok := NDPReply(in, ours, ip); ok {
			t.Errorf("%s: answered", name)
		}
		if !bytes.Equal(in, orig) {
			t.Errorf("%s: frame modified", name)
		}
	}
}

func FuzzNDPReply(f *testing.F) {
	ip := netip.MustParseAddr("fd00:10:244:1::")
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		buf := make([]byte, len(b), len(b)+NDPReplyLen)
		copy(buf, b)
		if reply, ok := NDPReply(buf, MAC{2}, ip); ok && len(reply) != NDPReplyLen {
			t.Fatalf("reply of %d bytes", len(reply))
		}
	})
}
