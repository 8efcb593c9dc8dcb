package tun

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrTooManySegments is returned by Split (and Read) when a superpacket has
// more segments than bufs can hold. The segments returned are valid; the
// rest of the superpacket is lost.
var ErrTooManySegments = errors.New("tun: superpacket has more segments than the batch holds")

const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpCWR = 0x80
)

// Split splits a packet read from a TUN with IFF_VNET_HDR into bufs, each
// packet at bufs[i][offset:] with its length in sizes[i], and returns how
// many it wrote. in is the virtio-net header followed by the packet; it may
// be bufs[0][offset-virtioNetHdrLen:] itself (Read reads in place), in
// which case the first segment stays where it is and only the others are
// copied.
//
// A TSO or USO superpacket (IPv4 or IPv6, TCP or UDP) becomes gso_size
// segments and a shorter last one, each with its own IP header (IPv4: the
// ID counting up, the length and the header checksum; IPv6: the payload
// length) and transport header (TCP: the sequence number, FIN and PSH only
// on the last segment, CWR only on the first; UDP: the length). The TCP or
// UDP checksum of each segment is left partial, the pseudo-header sum in
// the checksum field, as the kernel hands over a CHECKSUM_PARTIAL packet:
// toward a peer that expects complete checksums, CompleteChecksum finishes
// them one by one. A packet the kernel marked VIRTIO_NET_HDR_F_NEEDS_CSUM
// without GSO is passed on partial in the same way. The one exception is a
// layout CompleteChecksum does not parse (IPv6 extension headers before the
// transport header): those checksums are completed here.
func Split(in []byte, bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(in) < virtioNetHdrLen {
		return 0, fmt.Errorf("tun: read of %d bytes holds no virtio-net header", len(in))
	}
	if len(bufs) == 0 || len(sizes) < len(bufs) || offset < 0 {
		return 0, errors.New("tun: no buffers to split into")
	}
	var hdr vnetHdr
	hdr.decode(in)
	pkt := in[virtioNetHdrLen:]
	inPlace := len(pkt) > 0 && len(bufs[0]) > offset && &bufs[0][offset] == &pkt[0]

	if hdr.gsoType == unix.VIRTIO_NET_HDR_GSO_NONE {
		if len(bufs[0]) < offset+len(pkt) {
			return 0, fmt.Errorf("tun: packet of %d bytes overflows a buffer of %d", len(pkt), len(bufs[0])-offset)
		}
		if !inPlace {
			copy(bufs[0][offset:], pkt)
		}
		p := bufs[0][offset : offset+len(pkt)]
		if hdr.flags&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
			if err := finishOddPartial(p, hdr); err != nil {
				return 0, err
			}
		}
		sizes[0] = len(p)
		return 1, nil
	}
	return splitGSO(pkt, hdr, bufs, sizes, offset, inPlace)
}

// finishOddPartial completes the checksum of a CHECKSUM_PARTIAL packet
// unless it lies where CompleteChecksum will find it later.
func finishOddPartial(p []byte, hdr vnetHdr) error {
	start, at := int(hdr.csumStart), int(hdr.csumStart)+int(hdr.csumOffset)
	if at+2 > len(p) || start >= len(p) {
		return fmt.Errorf("tun: checksum at %d+%d lies outside a packet of %d bytes", hdr.csumStart, hdr.csumOffset, len(p))
	}
	if _, std := partialAt(p); std == at {
		return nil
	}
	binary.BigEndian.PutUint16(p[at:], ^checksum(p[start:], 0))
	return nil
}

// gsoLayout is what the split needs of a superpacket's headers.
type gsoLayout struct {
	ip
	hl, seg int // the IP and transport headers' length; the segment size (gso_size)
	csumOff int // the transport checksum's offset in its header
	// standard: no IPv6 extension headers, so the segments' checksums
	// may stay partial.
	standard bool
}

// parseGSO checks a superpacket's IP and transport headers against its
// virtio-net header.
func parseGSO(pkt []byte, hdr vnetHdr) (gsoLayout, error) {
	if len(pkt) < 20 {
		return gsoLayout{}, errors.New("tun: superpacket too short")
	}
	l := gsoLayout{ip: ip{v6: pkt[0]>>4 == 6, ipLen: int(hdr.csumStart)}, standard: true}
	switch gso := hdr.gsoType &^ unix.VIRTIO_NET_HDR_GSO_ECN; {
	case gso == unix.VIRTIO_NET_HDR_GSO_TCPV4 && pkt[0]>>4 == 4,
		gso == unix.VIRTIO_NET_HDR_GSO_TCPV6 && l.v6:
		l.proto = unix.IPPROTO_TCP
	case gso == unix.VIRTIO_NET_HDR_GSO_UDP_L4 && (pkt[0]>>4 == 4 || l.v6):
		l.proto = unix.IPPROTO_UDP
	default:
		return l, fmt.Errorf("tun: GSO type %d on an IPv%d packet", hdr.gsoType, pkt[0]>>4)
	}
	// Where the transport header starts is csum_start. IPv4 has no
	// extension headers, so it must equal the IHL; IPv6 may put extension
	// headers first, which only the "standard" layout (none) lets us leave
	// the checksums partial for.
	if l.v6 {
		if l.ipLen < 40 {
			return l, fmt.Errorf("tun: IPv6 csum_start %d", l.ipLen)
		}
		l.standard = l.ipLen == 40 && pkt[6] == l.proto
	} else if l.ipLen != int(pkt[0]&0x0f)*4 || l.ipLen < 20 || pkt[9] != l.proto {
		return l, fmt.Errorf("tun: IPv4 csum_start %d, IHL %d, protocol %d", l.ipLen, pkt[0]&0x0f, pkt[9])
	}
	var minL4 int
	l.csumOff, minL4 = csumOffset(l.proto)
	if len(pkt) < l.ipLen+minL4 {
		return l, errors.New("tun: superpacket shorter than its headers")
	}
	l4Len := minL4
	if l.proto == unix.IPPROTO_TCP {
		l4Len = int(pkt[l.ipLen+12]>>4) * 4
		if l4Len < 20 {
			return l, fmt.Errorf("tun: TCP header length %d", l4Len)
		}
	}
	l.hl, l.seg = l.ipLen+l4Len, int(hdr.gsoSize)
	switch {
	case len(pkt) <= l.hl:
		return l, errors.New("tun: superpacket without payload")
	case l.seg == 0:
		return l, errors.New("tun: superpacket with gso_size 0")
	case l.hl+l.seg > maxIPLen:
		return l, fmt.Errorf("tun: gso_size %d too large", l.seg)
	}
	return l, nil
}

// splitGSO cuts superpacket pkt into its segments, one per buffer of bufs at
// offset (the first in place if inPlace: pkt is bufs[0][offset:]), each
// with its own headers: IP length, ID and checksum, TCP sequence number and
// flags or UDP length, and the transport checksum (partial, or complete for
// a non-standard layout).
func splitGSO(pkt []byte, hdr vnetHdr, bufs [][]byte, sizes []int, offset int, inPlace bool) (int, error) {
	l, err := parseGSO(pkt, hdr)
	if err != nil {
		return 0, err
	}
	h, hl, seg, csumOff, standard := l.ip, l.hl, l.seg, l.csumOff, l.standard
	payload := len(pkt) - hl
	nseg := (payload + seg - 1) / seg
	n := min(nseg, len(bufs))

	var ps uint64 // pseudo-header sum without the length
	if h.v6 {
		ps = sum(pkt[8:40], uint64(h.proto))
	} else {
		ps = sum(pkt[12:20], uint64(h.proto))
	}
	var seq0 uint32
	var id0 uint16
	var ipSum uint64 // IPv4: the header's sum without its length, ID and checksum
	if h.proto == unix.IPPROTO_TCP {
		seq0 = binary.BigEndian.Uint32(pkt[h.ipLen+4:])
	}
	if !h.v6 {
		id0 = binary.BigEndian.Uint16(pkt[4:])
		ipSum = sum(pkt[:2], 0) + sum(pkt[6:10], 0) + sum(pkt[12:h.ipLen], 0)
	}
	// Segments 1..n-1 first: they copy the superpacket's headers, which
	// segment 0, when in place, patches last.
	for k := 1; k <= n; k++ {
		i := k % n
		start := hl + i*seg
		end := min(start+seg, len(pkt))
		segLen := hl + end - start
		if len(bufs[i]) < offset+segLen {
			return 0, fmt.Errorf("tun: segment of %d bytes overflows a buffer of %d", segLen, len(bufs[i])-offset)
		}
		out := bufs[i][offset : offset+segLen]
		if i != 0 || !inPlace {
			copy(out[:hl], pkt[:hl])
			copy(out[hl:], pkt[start:end])
		}
		if h.v6 {
			binary.BigEndian.PutUint16(out[4:], uint16(segLen-40))
		} else {
			binary.BigEndian.PutUint16(out[2:], uint16(segLen))
			binary.BigEndian.PutUint16(out[4:], id0+uint16(i))
			binary.BigEndian.PutUint16(out[10:], ^fold(ipSum+uint64(segLen)+uint64(id0+uint16(i))))
		}
		l4 := out[h.ipLen:]
		if h.proto == unix.IPPROTO_TCP {
			binary.BigEndian.PutUint32(l4[4:], seq0+uint32(i*seg))
			if i != nseg-1 {
				l4[13] &^= tcpFIN | tcpPSH
			}
			if i != 0 {
				l4[13] &^= tcpCWR
			}
		} else {
			binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		}
		binary.BigEndian.PutUint16(l4[csumOff:], fold(ps+uint64(len(l4))))
		if !standard {
			c := ^checksum(l4, 0)
			if c == 0 && h.proto == unix.IPPROTO_UDP {
				c = 0xffff
			}
			binary.BigEndian.PutUint16(l4[csumOff:], c)
		}
		sizes[i] = segLen
	}
	if n < nseg {
		return n, ErrTooManySegments
	}
	return n, nil
}
