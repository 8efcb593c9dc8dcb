package encap

import (
	"encoding/binary"
	"net/netip"
)

// IPAddrs returns the source and destination addresses of an IPv4 or IPv6
// packet. It checks only what it needs to read them safely and that the
// header's length fields agree with the slice: ok is false for anything else.
func IPAddrs(pkt []byte) (src, dst netip.Addr, ok bool) {
	if len(pkt) < 1 {
		return src, dst, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4Header {
			return src, dst, false
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < ipv4Header || total < ihl || total > len(pkt) {
			return src, dst, false
		}
		return netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])), true
	case 6:
		if len(pkt) < ipv6Header {
			return src, dst, false
		}
		if ipv6Header+int(binary.BigEndian.Uint16(pkt[4:6])) > len(pkt) {
			return src, dst, false
		}
		return netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return src, dst, false
}

// IPLen returns the length an IP packet's header says it has, or 0 if the
// header is not a valid IPv4 or IPv6 header. Datagrams may carry padding after
// the packet (Ethernet minimum frame size on a VXLAN path); IPLen lets the
// receiver trim it.
func IPLen(pkt []byte) int {
	if len(pkt) < 1 {
		return 0
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4Header {
			return 0
		}
		return int(binary.BigEndian.Uint16(pkt[2:4]))
	case 6:
		if len(pkt) < ipv6Header {
			return 0
		}
		return ipv6Header + int(binary.BigEndian.Uint16(pkt[4:6]))
	}
	return 0
}
