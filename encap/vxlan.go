package encap

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/weftnet/weft/internal/family"
)

// vxlan: an 8-byte VXLAN header (flags 0x08, 24-bit VNI), an inner Ethernet
// header and the inner IP packet (RFC 7348), so that a Linux kernel VXLAN
// device can talk to weft both ways. The codec answers the kernel's ARP
// requests and IPv6 Neighbor Solicitations for our overlay addresses.

const vxlanPort = 8472

var vxlanFormat = format{
	name:   "vxlan",
	header: VXLANHeaderLen + EthernetHeaderLen,
	port:   vxlanPort,
	vtep:   true,
	codec:  newVXLAN,
}

// Sizes of the VXLAN framing (RFC 7348).
const (
	VXLANHeaderLen    = 8
	EthernetHeaderLen = 14
)

// EtherTypes weft understands in an inner Ethernet frame.
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeARP  uint16 = 0x0806
	EtherTypeIPv6 uint16 = 0x86dd
)

const vxlanFlagI = 0x08 // "VNI present"

// MAC is an Ethernet address.
type MAC [6]byte

// Broadcast is the Ethernet broadcast address.
var Broadcast = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

// ParseMAC parses a 48-bit Ethernet address such as "02:57:0a:f4:01:00".
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return MAC{}, fmt.Errorf("invalid MAC address %q", s)
	}
	return MAC(hw), nil
}

// VTEPMAC derives a stable, locally administered unicast VTEP MAC from a
// subnet: 02:57 ("W") followed by the subnet's first four address bytes for
// IPv4, or its last four for IPv6. The same subnet gives the same MAC on
// every restart, so kernel peers configured by hand keep working.
func VTEPMAC(subnet netip.Prefix) MAC {
	a := subnet.Masked().Addr().AsSlice()
	m := MAC{0x02, 0x57}
	copy(m[2:], a[len(a)-4:])
	return m
}

// EtherTypeFor returns the EtherType of an IP packet by its version nibble.
func EtherTypeFor(pkt []byte) uint16 {
	if len(pkt) > 0 && pkt[0]>>4 == 6 {
		return EtherTypeIPv6
	}
	return EtherTypeIPv4
}

// PutVXLAN writes a VXLAN header and an inner Ethernet header into
// b[:VXLANHeaderLen+EthernetHeaderLen].
func PutVXLAN(b []byte, vni uint32, dst, src MAC, etherType uint16) {
	_ = b[VXLANHeaderLen+EthernetHeaderLen-1]
	binary.BigEndian.PutUint32(b[0:4], vxlanFlagI<<24)
	binary.BigEndian.PutUint32(b[4:8], vni<<8)
	copy(b[8:14], dst[:])
	copy(b[14:20], src[:])
	binary.BigEndian.PutUint16(b[20:22], etherType)
}

// VXLANFrame is a decoded VXLAN datagram. Payload aliases the datagram.
type VXLANFrame struct {
	VNI       uint32
	Dst, Src  MAC
	EtherType uint16
	Payload   []byte
}

// ParseVXLAN decodes a VXLAN datagram (the UDP payload). It rejects frames
// that are too short or lack the I flag; per RFC 7348 the reserved bits are
// ignored. Errors wrap ErrMalformed.
func ParseVXLAN(b []byte) (VXLANFrame, error) {
	var f VXLANFrame
	if len(b) < VXLANHeaderLen+EthernetHeaderLen {
		return f, errShortVXLAN
	}
	if b[0]&vxlanFlagI == 0 {
		return f, errVXLANFlags
	}
	f.VNI = binary.BigEndian.Uint32(b[4:8]) >> 8
	f.Dst = MAC(b[8:14])
	f.Src = MAC(b[14:20])
	f.EtherType = binary.BigEndian.Uint16(b[20:22])
	f.Payload = b[VXLANHeaderLen+EthernetHeaderLen:]
	return f, nil
}

var (
	errShortVXLAN = fmt.Errorf("%w: shorter than VXLAN and Ethernet headers", ErrMalformed)
	errVXLANFlags = fmt.Errorf("%w: VXLAN I flag not set", ErrMalformed)
)

const arpLen = 28

// ARPReply turns an ARP request for ip, carried in the Ethernet frame eth,
// into the reply from mac, in place. It reports whether eth was such a
// request; if not, eth is left unchanged.
func ARPReply(eth []byte, mac MAC, ip netip.Addr) bool {
	if len(eth) < EthernetHeaderLen+arpLen || !ip.Is4() {
		return false
	}
	a := eth[EthernetHeaderLen:]
	if binary.BigEndian.Uint16(eth[12:14]) != EtherTypeARP ||
		binary.BigEndian.Uint16(a[0:2]) != 1 || // Ethernet
		binary.BigEndian.Uint16(a[2:4]) != EtherTypeIPv4 ||
		a[4] != 6 || a[5] != 4 ||
		binary.BigEndian.Uint16(a[6:8]) != 1 { // request
		return false
	}
	if netip.AddrFrom4([4]byte(a[24:28])) != ip {
		return false
	}
	var sha MAC
	var spa [4]byte
	copy(sha[:], a[8:14])
	copy(spa[:], a[14:18])
	binary.BigEndian.PutUint16(a[6:8], 2) // reply
	copy(a[8:14], mac[:])
	ip4 := ip.As4()
	copy(a[14:18], ip4[:])
	copy(a[18:24], sha[:])
	copy(a[24:28], spa[:])
	copy(eth[0:6], sha[:])
	copy(eth[6:12], mac[:])
	return true
}

// vxlanCodec is the vxlan data path for one local identity.
type vxlanCodec struct {
	vni    uint32
	mac    MAC        // our VTEP MAC
	addr   netip.Addr // answered in ARP
	addr6  netip.Addr // answered in Neighbor Discovery, if valid
	solMAC MAC        // the solicited-node multicast MAC of addr6 (zero without one)
}

func newVXLAN(l Local) Codec {
	c := &vxlanCodec{vni: l.VNI, mac: l.MAC, addr: family.AddrOf(l.Addrs, false), addr6: family.AddrOf(l.Addrs, true)}
	if c.addr6.IsValid() {
		c.solMAC = SolicitedNodeMAC(c.addr6)
	}
	return c
}

const vxlanFrameLen = VXLANHeaderLen + EthernetHeaderLen

func (c *vxlanCodec) HeaderLen() int { return vxlanFrameLen }

// Wrap writes the VXLAN and Ethernet headers from us to the peer's MAC,
// the EtherType by each inner packet's IP version.
func (c *vxlanCodec) Wrap(frames [][]byte, off int, to Remote) {
	var h [vxlanFrameLen]byte
	PutVXLAN(h[:], c.vni, to.MAC, c.mac, EtherTypeIPv4)
	for _, f := range frames {
		f = f[off:]
		*(*[vxlanFrameLen]byte)(f) = h
		if len(f) > vxlanFrameLen && f[vxlanFrameLen]>>4 == 6 {
			binary.BigEndian.PutUint16(f[vxlanFrameLen-2:vxlanFrameLen], EtherTypeIPv6)
		}
	}
}

// Unwrap delivers the IP packets of our VNI addressed to our VTEP MAC (or
// broadcast, or, for a Neighbor Solicitation, our solicited-node multicast
// MAC) and answers ARP requests and Neighbor Solicitations for our
// addresses.
func (c *vxlanCodec) Unwrap(views [][]byte, verdicts []Verdict) {
	verdicts = verdicts[:len(views)]
	for i, d := range views {
		if len(d) < vxlanFrameLen || d[0]&vxlanFlagI == 0 {
			verdicts[i] = Malformed
			continue
		}
		if binary.BigEndian.Uint32(d[4:8])>>8 != c.vni {
			verdicts[i] = WrongVNI
			continue
		}
		if dst := MAC(d[8:14]); dst != c.mac && dst != Broadcast && (dst != c.solMAC || c.solMAC.IsZero()) {
			verdicts[i] = NotOurMAC
			continue
		}
		switch binary.BigEndian.Uint16(d[20:22]) {
		case EtherTypeIPv4:
			views[i], verdicts[i] = d[vxlanFrameLen:], Deliver
		case EtherTypeIPv6:
			views[i], verdicts[i] = c.ipv6(d)
		case EtherTypeARP:
			views[i], verdicts[i] = c.arp(d)
		default:
			verdicts[i] = BadEtherType
		}
	}
}

// arp answers an ARP request for our address; any other ARP frame is a
// bad_ethertype drop.
func (c *vxlanCodec) arp(d []byte) ([]byte, Verdict) {
	if !ARPReply(d[VXLANHeaderLen:], c.mac, c.addr) {
		return d, BadEtherType
	}
	return d[:vxlanFrameLen+arpLen], Reply
}

// ipv6 answers a Neighbor Solicitation for our IPv6 address, as arp
// answers ARP; any other IPv6 packet is delivered (and checked like every
// other).
func (c *vxlanCodec) ipv6(d []byte) ([]byte, Verdict) {
	eth := d[VXLANHeaderLen:]
	if !c.addr6.IsValid() || !IsNeighborSolicitation(eth) {
		return d[vxlanFrameLen:], Deliver
	}
	reply, ok := NDPReply(eth, c.mac, c.addr6)
	if !ok {
		return d[vxlanFrameLen:], Deliver // not for us: the router drops it as not_local
	}
	return d[:VXLANHeaderLen+len(reply)], Reply
}
