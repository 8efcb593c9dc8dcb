package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/kernelvx"
	"github.com/weftnet/weft/router"
)

// The watchdog's probe through the kernel data path. The kernel forwards
// the overlay's packets there, so no weft loop sees them; what can break
// is the kernel state weft programs. The probe proves the inbound half
// end to end, inside this host: a VXLAN datagram that a routed peer could
// have sent (its underlay address as the outer source, its VTEP MAC, an
// inner source in its subnet) is sent to our underlay address and VXLAN
// port from a socket with IP_TRANSPARENT (which may send from an address
// that is not ours; it never leaves the host, loopback delivers it). It
// passes the peer filter's three checks, the kernel's VXLAN socket and its
// decapsulation (VNI, destination MAC), the device and the inner route
// back to the peer's subnet (reverse-path filtering), and its inner UDP
// packet must reach a socket on our overlay address. The outbound half
// (route, neighbour and FDB entry, encapsulation) leaves the host and has
// no local witness: the engine reads those entries back from the kernel
// on every tick instead (kernelPath.check).

// VXLANProbe is one probe datagram: from peer From's underlay address to
// To (our underlay address and VXLAN port), a VXLAN frame with VNI from
// the peer's VTEP MAC SrcMAC to ours, DstMAC, carrying a UDP packet from
// InnerSrc (the first address of the peer's subnet) to InnerDst (our
// overlay address) with Payload.
type VXLANProbe struct {
	From, To           netip.AddrPort
	VNI                uint32
	SrcMAC, DstMAC     encap.MAC
	InnerSrc, InnerDst netip.Addr
	Payload            []byte
}

// Datagram is the probe's outer UDP payload, its inner UDP packet sent to
// dstPort (from router.ProbePort), checksums complete.
func (p VXLANProbe) Datagram(dstPort uint16) []byte {
	const hdr = encap.VXLANHeaderLen + encap.EthernetHeaderLen
	inner := innerUDP(p.InnerSrc, p.InnerDst, router.ProbePort, dstPort, p.Payload)
	b := make([]byte, hdr+len(inner))
	encap.PutVXLAN(b, p.VNI, p.DstMAC, p.SrcMAC, encap.EtherTypeFor(inner))
	copy(b[hdr:], inner)
	return b
}

// innerUDP is an IPv4 or IPv6 packet (of src's family) carrying a UDP
// datagram with payload, its checksums computed.
func innerUDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	udpLen := 8 + len(payload)
	var pkt []byte
	var pseudo []byte
	if src.Is4() {
		pkt = make([]byte, 20+udpLen)
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		binary.BigEndian.PutUint16(pkt[6:], 0x4000) // don't fragment
		pkt[8], pkt[9] = 64, unix.IPPROTO_UDP
		s, d := src.As4(), dst.As4()
		copy(pkt[12:], s[:])
		copy(pkt[16:], d[:])
		binary.BigEndian.PutUint16(pkt[10:], ^onesSum(pkt[:20], 0))
		pseudo = append(append(s[:], d[:]...), 0, unix.IPPROTO_UDP, byte(udpLen>>8), byte(udpLen))
	} else {
		pkt = make([]byte, 40+udpLen)
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(udpLen))
		pkt[6], pkt[7] = unix.IPPROTO_UDP, 64
		s, d := src.As16(), dst.As16()
		copy(pkt[8:], s[:])
		copy(pkt[24:], d[:])
		pseudo = append(append(s[:], d[:]...), 0, 0, byte(udpLen>>8), byte(udpLen), 0, 0, 0, unix.IPPROTO_UDP)
	}
	udp := pkt[len(pkt)-udpLen:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen))
	copy(udp[8:], payload)
	c := ^onesSum(udp, onesSum(pseudo, 0))
	if c == 0 {
		c = 0xffff // 0 means "no checksum" in UDP
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	return pkt
}

// onesSum is the ones' complement sum of b (RFC 1071), starting at initial.
func onesSum(b []byte, initial uint16) uint16 {
	s := uint32(initial)
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// systemVXLAN is the real VXLANKernel: kernelvx's netlink and nftables,
// and the probe on real sockets.
type systemVXLAN struct{ *kernelvx.System }

// ProbeVXLAN implements VXLANKernel: it listens on p.InnerDst, sends p's
// datagram from p.From with IP_TRANSPARENT, and waits for the payload.
func (systemVXLAN) ProbeVXLAN(p VXLANProbe, timeout time.Duration) error {
	ln, err := net.ListenUDP(udpNetwork(p.InnerDst), net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.InnerDst, 0)))
	if err != nil {
		return fmt.Errorf("listen on our overlay address %s: %w", p.InnerDst, err)
	}
	defer ln.Close()
	out, err := transparentUDP(p.From.Addr())
	if err != nil {
		return fmt.Errorf("a socket sending as peer %s (IP_TRANSPARENT): %w", p.From.Addr(), err)
	}
	defer out.Close()
	port := ln.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	if _, err := out.WriteToUDPAddrPort(p.Datagram(port), p.To); err != nil {
		return fmt.Errorf("send the probe datagram to %s: %w", p.To, err)
	}
	if err := ln.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	buf := make([]byte, 256)
	for {
		n, from, err := ln.ReadFromUDPAddrPort(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("a VXLAN datagram as %s sends it, to %s, did not reach %s:%d within %v (dropped by the peer filter, the VXLAN device or the route back to %s)",
				p.From.Addr(), p.To, p.InnerDst, port, timeout, p.InnerSrc)
		}
		if err != nil {
			return err
		}
		if from.Addr().Unmap() == p.InnerSrc && bytes.Equal(buf[:n], p.Payload) {
			return nil
		}
	}
}

func udpNetwork(a netip.Addr) string {
	if a.Is4() {
		return "udp4"
	}
	return "udp6"
}

// transparentUDP is a UDP socket bound to from, an address this host need
// not hold (IP_TRANSPARENT, IPV6_TRANSPARENT: CAP_NET_ADMIN or
// CAP_NET_RAW).
func transparentUDP(from netip.Addr) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if from.Is4() {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), udpNetwork(from), netip.AddrPortFrom(from, 0).String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}
