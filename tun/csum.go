package tun

import (
	"encoding/binary"
	"math/bits"

	"golang.org/x/sys/unix"
)

// Checksum says who completes the TCP and UDP checksums of the packets a
// queue reads and writes.
type Checksum uint8

const (
	// ChecksumFull: every packet carries complete IP and TCP/UDP checksums,
	// as a kernel VTEP, a static peer or a weft without the capability
	// expects. Coalescing verifies them: a packet whose checksum is wrong is
	// not merged, but written alone so that the kernel drops it.
	ChecksumFull Checksum = iota
	// ChecksumPartial: TCP and UDP checksums may be left partial (the
	// pseudo-header sum in the checksum field, the kernel's
	// CHECKSUM_PARTIAL), because the outer UDP checksum protected the bytes
	// on the wire. Coalescing verifies nothing, and the packets are written
	// with VIRTIO_NET_HDR_F_NEEDS_CSUM, so that the kernel does not verify
	// them either.
	ChecksumPartial
)

func (c Checksum) String() string {
	if c == ChecksumPartial {
		return "partial"
	}
	return "full"
}

// sum adds b to the ones' complement sum acc (RFC 1071), eight bytes at a
// time, without folding. Big-endian words: the result folds to the sum of
// the 16-bit words in network order.
func sum(b []byte, acc uint64) uint64 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), 0)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), c)
		acc += c
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), 0)
		acc += c
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), 0)
		acc += c
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), 0)
		acc += c
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0])<<8, 0)
		acc += c
	}
	return acc
}

// fold folds a ones' complement sum to 16 bits (not inverted).
func fold(s uint64) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// checksum is the RFC 1071 ones' complement sum of b added to initial,
// folded to 16 bits (not inverted).
func checksum(b []byte, initial uint16) uint16 {
	return fold(sum(b, uint64(initial)))
}

// ip is the layout of a packet's IP and transport headers as far as the
// offloads care.
type ip struct {
	v6    bool
	ipLen int   // bytes before the transport header
	proto uint8 // transport protocol
}

// parseIP reads the IP header of pkt. ok is false unless pkt is IPv4 (with
// or without options) or IPv6 without extension headers, its length field
// agrees with len(pkt), and it is not an IPv4 fragment.
func parseIP(pkt []byte) (h ip, ok bool) {
	if len(pkt) < 20 {
		return h, false
	}
	switch pkt[0] >> 4 {
	case 4:
		h.ipLen = int(pkt[0]&0x0f) * 4
		if h.ipLen < 20 || len(pkt) < h.ipLen || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
			return h, false
		}
		if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 { // MF or a fragment offset
			return h, false
		}
		h.proto = pkt[9]
	case 6:
		if len(pkt) < 40 || 40+int(binary.BigEndian.Uint16(pkt[4:])) != len(pkt) {
			return h, false
		}
		h.v6, h.ipLen, h.proto = true, 40, pkt[6]
	default:
		return h, false
	}
	return h, true
}

// csumOffset is where the checksum field of proto lies in its header, and
// the header's least length; 0 for a protocol the offloads do not cover.
func csumOffset(proto uint8) (off, minLen int) {
	switch proto {
	case unix.IPPROTO_TCP:
		return 16, 20
	case unix.IPPROTO_UDP:
		return 6, 8
	}
	return 0, 0
}

// pseudoSum is the unfolded sum of pkt's pseudo-header for a transport
// segment of l4Len bytes.
func pseudoSum(pkt []byte, h ip, l4Len int) uint64 {
	var acc uint64
	if h.v6 {
		acc = sum(pkt[8:40], 0)
	} else {
		acc = sum(pkt[12:20], 0)
	}
	return acc + uint64(h.proto) + uint64(l4Len)
}

// equalCsum compares two ones' complement values, for which 0x0000 and
// 0xffff are the same number.
func equalCsum(a, b uint16) bool {
	return a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

// partialAt reports where the TCP or UDP checksum field of pkt lies if it
// holds the pseudo-header sum (a partial checksum), or -1. A complete
// checksum that happens to equal the pseudo-header sum is indistinguishable
// and needs no care: completing it (summing the segment over the field)
// gives back the same, correct, value.
func partialAt(pkt []byte) (h ip, at int) {
	h, ok := parseIP(pkt)
	if !ok {
		return h, -1
	}
	off, minLen := csumOffset(h.proto)
	if minLen == 0 || len(pkt) < h.ipLen+minLen {
		return h, -1
	}
	at = h.ipLen + off
	if !equalCsum(binary.BigEndian.Uint16(pkt[at:]), fold(pseudoSum(pkt, h, len(pkt)-h.ipLen))) {
		return h, -1
	}
	return h, at
}

// CompleteChecksum finishes the TCP or UDP checksum of pkt (an IP packet) if
// it was left partial: by Read, which splits superpackets and passes on the
// kernel's CHECKSUM_PARTIAL packets without computing their checksums. Call
// it on each packet bound for a peer that expects complete checksums. A
// packet whose checksum is already complete (or that is not TCP or UDP) is
// left as it is; it is safe to call twice.
func CompleteChecksum(pkt []byte) {
	h, at := partialAt(pkt)
	if at < 0 {
		return
	}
	c := ^checksum(pkt[h.ipLen:], 0) // the field holds the pseudo-header sum
	if c == 0 && h.proto == unix.IPPROTO_UDP {
		c = 0xffff // 0 means "no checksum" in UDP
	}
	binary.BigEndian.PutUint16(pkt[at:], c)
}

// validChecksums reports whether pkt's IPv4 header checksum (if any) and
// its TCP or UDP checksum are correct.
func validChecksums(pkt []byte, h ip) bool {
	if !h.v6 && checksum(pkt[:h.ipLen], 0) != 0xffff {
		return false
	}
	off, _ := csumOffset(h.proto)
	if h.proto == unix.IPPROTO_UDP && binary.BigEndian.Uint16(pkt[h.ipLen+off:]) == 0 {
		return false // no checksum: nothing to verify, so not coalesced
	}
	return fold(sum(pkt[h.ipLen:], pseudoSum(pkt, h, len(pkt)-h.ipLen))) == 0xffff
}

// virtioNetHdrLen is the size of the virtio-net header (struct
// virtio_net_hdr) in front of each packet on a TUN with IFF_VNET_HDR.
const virtioNetHdrLen = 10

// vnetHdr is struct virtio_net_hdr (include/uapi/linux/virtio_net.h), in
// the host's byte order as a legacy (non-virtio-1.0) TUN uses it.
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func (v *vnetHdr) decode(b []byte) {
	v.flags, v.gsoType = b[0], b[1]
	v.hdrLen = binary.NativeEndian.Uint16(b[2:])
	v.gsoSize = binary.NativeEndian.Uint16(b[4:])
	v.csumStart = binary.NativeEndian.Uint16(b[6:])
	v.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (v *vnetHdr) encode(b []byte) {
	b[0], b[1] = v.flags, v.gsoType
	binary.NativeEndian.PutUint16(b[2:], v.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], v.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], v.csumStart)
	binary.NativeEndian.PutUint16(b[8:], v.csumOffset)
}
