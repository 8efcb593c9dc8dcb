// Package encap holds weft's wire formats and its batched UDP socket.
//
// The formats are pure functions over byte slices that carry headroom in front
// of the packet, so that a header is written in place in front of the inner
// packet without copying it. The socket (Conn) sends and receives batches with
// sendmmsg/recvmmsg and, where the kernel allows, UDP GSO and GRO.
package encap

import (
	"errors"
	"fmt"
	"strings"
)

// Kind names a wire format.
type Kind uint8

// The wire formats.
const (
	// UDP carries the inner IP packet as the whole UDP payload (flannel's udp backend).
	UDP Kind = 1
	// VXLAN carries an RFC 7348 VXLAN header and an inner Ethernet frame.
	VXLAN Kind = 2
	// None sends nothing through the tunnel: peers are reached by plain kernel routes (host-gw).
	None Kind = 3
)

// Headroom is the space every packet buffer keeps in front of the packet: room
// for the TUN virtio-net header (10 bytes), or for the largest encapsulation
// header (VXLAN + Ethernet, 22 bytes) behind an encrypted data plane's header
// (16 bytes, package seal), rounded up so that inner packets stay aligned.
const Headroom = 48

const (
	ipv4Header = 20
	ipv6Header = 40
	udpHeader  = 8
)

// ParseKind parses a wire format name: "udp", "vxlan" or "none".
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(s) {
	case "udp":
		return UDP, nil
	case "vxlan":
		return VXLAN, nil
	case "none", "host-gw":
		return None, nil
	}
	return 0, fmt.Errorf("unknown encapsulation %q (want udp, vxlan or none)", s)
}

func (k Kind) String() string {
	switch k {
	case UDP:
		return "udp"
	case VXLAN:
		return "vxlan"
	case None:
		return "none"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// HeaderLen is the number of bytes the format puts in front of the inner IP
// packet inside the UDP payload.
func (k Kind) HeaderLen() int {
	if k == VXLAN {
		return VXLANHeaderLen + EthernetHeaderLen
	}
	return 0
}

// Overhead is the number of bytes the tunnel adds to an inner packet on the
// underlay: outer IP header, UDP header and the format's own header.
func (k Kind) Overhead(ipv6Underlay bool) int {
	if k == None {
		return 0
	}
	ip := ipv4Header
	if ipv6Underlay {
		ip = ipv6Header
	}
	return ip + udpHeader + k.HeaderLen()
}

// DefaultPort is the format's conventional UDP port.
func (k Kind) DefaultPort() uint16 {
	if k == VXLAN {
		return 8472
	}
	return 8285
}

// ErrMalformed is wrapped by every decoding error caused by the datagram itself.
var ErrMalformed = errors.New("malformed datagram")
