package encap

import (
	"encoding/binary"
	"net/netip"
)

// IPv6 Neighbor Discovery (RFC 4861), the little of it a VTEP needs: a
// kernel VXLAN device resolves our IPv6 address with a Neighbor
// Solicitation, and we answer it with a Neighbor Advertisement, as ARPReply
// does for IPv4.

const (
	icmpv6Proto    = 58
	ndpNS          = 135
	ndpNA          = 136
	ndpOptSourceLL = 1
	ndpOptTargetLL = 2
	ndpNAFlagSolic = 0x40
	ndpNAFlagOverr = 0x20
	ndpNSMinLen    = 24 // type, code, checksum, reserved, target
	ndpNALen       = 24 + 8
	ndpReplyIPLen  = ipv6Header + ndpNALen
	ndpHopLimit    = 255
	ndpEthOff      = EthernetHeaderLen
	ndpICMPOff     = EthernetHeaderLen + ipv6Header
)

// NDPReplyLen is the length of the Ethernet frame NDPReply writes.
const NDPReplyLen = EthernetHeaderLen + ndpReplyIPLen

// SolicitedNodeMAC is the Ethernet multicast address a Neighbor
// Solicitation for a is sent to (33:33:ff and a's last three bytes).
func SolicitedNodeMAC(a netip.Addr) MAC {
	b := a.As16()
	return MAC{0x33, 0x33, 0xff, b[13], b[14], b[15]}
}

// IsNeighborSolicitation reports, cheaply, whether the Ethernet frame eth
// looks like a Neighbor Solicitation (IPv6, ICMPv6 right after the fixed
// header, type 135); NDPReply checks the rest.
func IsNeighborSolicitation(eth []byte) bool {
	return len(eth) > ndpICMPOff && eth[ndpEthOff+6] == icmpv6Proto && eth[ndpICMPOff] == ndpNS
}

// NDPReply turns a Neighbor Solicitation for ip, carried in the Ethernet
// frame eth, into the Neighbor Advertisement from mac, in place, and
// returns the reply: eth[:NDPReplyLen] (eth's capacity must allow it). It
// reports false, leaving eth unchanged, unless eth is a valid solicitation
// (hop limit 255, no extension headers, a correct checksum) for ip from a
// specified source address: a duplicate address detection probe is not
// answered.
func NDPReply(eth []byte, mac MAC, ip netip.Addr) ([]byte, bool) {
	if !ip.Is6() || ip.Is4In6() || cap(eth) < NDPReplyLen || len(eth) < ndpICMPOff+ndpNSMinLen ||
		binary.BigEndian.Uint16(eth[12:14]) != EtherTypeIPv6 {
		return nil, false
	}
	h := eth[ndpEthOff:]
	plen := int(binary.BigEndian.Uint16(h[4:6]))
	if h[0]>>4 != 6 || h[6] != icmpv6Proto || h[7] != ndpHopLimit || plen < ndpNSMinLen || ndpICMPOff+plen > len(eth) {
		return nil, false
	}
	icmp := eth[ndpICMPOff : ndpICMPOff+plen]
	src := netip.AddrFrom16([16]byte(h[8:24]))
	dst := netip.AddrFrom16([16]byte(h[24:40]))
	if icmp[0] != ndpNS || icmp[1] != 0 || netip.AddrFrom16([16]byte(icmp[8:24])) != ip || src.IsUnspecified() {
		return nil, false
	}
	if icmpv6Checksum(src, dst, icmp) != 0 {
		return nil, false
	}
	// Reply to the solicitor's link-layer address: its option, else the
	// frame's source.
	reqMAC := MAC(eth[6:12])
	for opts := icmp[ndpNSMinLen:]; len(opts) >= 2; {
		l := int(opts[1]) * 8
		if l == 0 || l > len(opts) {
			return nil, false // RFC 4861 7.1.1: a zero-length option invalidates the message
		}
		if opts[0] == ndpOptSourceLL && l >= 8 {
			reqMAC = MAC(opts[2:8])
		}
		opts = opts[l:]
	}

	eth = eth[:NDPReplyLen]
	copy(eth[0:6], reqMAC[:])
	copy(eth[6:12], mac[:])
	h = eth[ndpEthOff:]
	binary.BigEndian.PutUint32(h[0:4], 6<<28)
	binary.BigEndian.PutUint16(h[4:6], ndpNALen)
	h[6], h[7] = icmpv6Proto, ndpHopLimit
	a := ip.As16()
	copy(h[24:40], h[8:24]) // to the solicitor
	copy(h[8:24], a[:])
	icmp = eth[ndpICMPOff:]
	icmp[0], icmp[1], icmp[2], icmp[3] = ndpNA, 0, 0, 0
	icmp[4], icmp[5], icmp[6], icmp[7] = ndpNAFlagSolic|ndpNAFlagOverr, 0, 0, 0
	copy(icmp[8:24], a[:])
	icmp[24], icmp[25] = ndpOptTargetLL, 1
	copy(icmp[26:32], mac[:])
	binary.BigEndian.PutUint16(icmp[2:4], icmpv6Checksum(ip, netip.AddrFrom16([16]byte(h[24:40])), icmp))
	return eth, true
}

// icmpv6Checksum is the Internet checksum of msg with the IPv6
// pseudo-header: 0 for a message whose checksum field is right, the value
// to put there for one whose field is 0.
func icmpv6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	sum += uint32(len(msg)) + icmpv6Proto
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
