// Package encap holds weft's wire formats and its batched UDP socket.
//
// Each encapsulation lives in its own file behind one interface, Codec, and
// is listed once in the registry (registry.go): its Kind (the byte node
// metadata carries), name, header, overhead and default port. The
// configuration, the node metadata and the router all read that one table.
//
// The formats are pure functions over byte slices that carry headroom in front
// of the packet, so that a header is written in place in front of the inner
// packet without copying it. The socket (Conn) sends and receives batches with
// sendmmsg/recvmmsg and, where the kernel allows, UDP GSO and GRO.
package encap

import "errors"

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

// ErrMalformed is wrapped by every decoding error caused by the datagram itself.
var ErrMalformed = errors.New("malformed datagram")
