package tun

import (
	"bytes"
	"encoding/binary"

	"golang.org/x/sys/unix"
)

const (
	// maxCoalesce bounds the segments of one coalesced write: the kernel
	// refuses a UDP GSO packet of more than UDP_MAX_SEGMENTS (64 on older
	// kernels), and a TCP one of 64 KiB has at most 46 of 1400 bytes.
	maxCoalesce = 64
	maxIPLen    = 65535
	// hdrSpace holds a coalesced write's virtio-net header and its head's
	// IP (IPv4 without options, or IPv6) and TCP headers (up to 60 bytes).
	hdrSpace = 128
)

// Fallback says how far a queue backs off from coalesced writes because
// the kernel refused them (Linux 6.6.44 and the 6.1 LTS kernels with the
// same backport refuse a GSO superpacket whose last segment is short).
type Fallback int32

const (
	// FallbackNone: the kernel takes coalesced writes.
	FallbackNone Fallback = iota
	// FallbackEqualSegments: the kernel refused a coalesced write with a
	// short last segment; only runs of equal-sized segments are coalesced,
	// and a short segment is written on its own.
	FallbackEqualSegments
	// FallbackSerial: the kernel refused a coalesced write of equal-sized
	// segments too; every packet is written on its own.
	FallbackSerial
)

func (f Fallback) String() string {
	switch f {
	case FallbackNone:
		return "none"
	case FallbackEqualSegments:
		return "equal-segments"
	}
	return "serial"
}

// group is one write the coalescer plans: a head packet and the packets of
// the same flow whose payloads follow it (linked through coalescer.next).
type group struct {
	head, tail int // indices into bufs
	n          int // packets in the group
	h          ip
	l4Len      int
	segSize    int // the head's payload: the GSO size
	length     int // IP length of the coalesced packet
	nextSeq    uint32
	closed     bool // a short segment, a PSH, or a packet that cannot coalesce: nothing may follow
	psh        bool
	verified   bool // full mode: the head's checksums were checked
}

// coalescer plans the writes of a batch (GRO): consecutive TCP segments and
// UDP datagrams of a flow become one superpacket with a virtio-net GSO
// header. The plan does not copy or change the packets: a coalesced write
// is a gather list (iovecs) of a header built in scratch space and the
// payloads where they lie, so a refused write can be retried packet by
// packet from the untouched buffers, and no payload is moved in user space.
// All its state is preallocated and reused; one queue owns one.
type coalescer struct {
	groups []group
	next   []int32 // per packet: the next packet of its group, -1 at the end
	slots  []int32 // flow hash table: a flow's latest group + 1; 0 is empty
	hdrs   []byte  // hdrSpace per group: a coalesced write's headers, or a lone packet's virtio-net header without headroom
	parts  [][]byte
	writes []planned
}

// planned is one write: parts[lo:hi] gathered, for the packets of group g.
type planned struct {
	lo, hi, g int
}

func (c *coalescer) reset(n int) {
	if cap(c.groups) < n {
		size := 16
		for size < 2*n {
			size *= 2
		}
		*c = coalescer{
			groups: make([]group, 0, n),
			next:   make([]int32, n),
			slots:  make([]int32, size),
			hdrs:   make([]byte, n*hdrSpace),
			parts:  make([][]byte, 0, 2*n), // a lone packet takes at most 2, a group of k at most k+1
			writes: make([]planned, 0, n),
		}
	}
	clear(c.slots)
	c.groups, c.parts, c.writes = c.groups[:0], c.parts[:0], c.writes[:0]
}

// plan groups the packets bufs[i][offset:] into writes. offset leaves room
// for the virtio-net header. udp says whether the device takes UDP GSO
// (USO). The plan's writes are in the order of their first packets, so a
// flow's packets reach the kernel in the order given.
func (c *coalescer) plan(bufs [][]byte, offset int, mode Checksum, udp bool, fb Fallback) {
	c.reset(len(bufs))
	for i := range bufs {
		c.next[i] = -1
		pkt := bufs[i][offset:]
		h, ok := parseIP(pkt)
		_, minL4 := csumOffset(h.proto)
		if !ok || minL4 == 0 || len(pkt) < h.ipLen+minL4 {
			c.newGroup(i, h, 0, 0, false, false)
			continue
		}
		slot := c.lookup(bufs, offset, pkt, h)
		l4Len, payload, psh, cand := candidate(pkt, h, udp, fb)
		if g := c.slots[slot] - 1; g >= 0 && cand && c.appendTo(&c.groups[g], bufs, offset, i, h, l4Len, payload, psh, mode, fb) {
			continue
		}
		c.slots[slot] = int32(c.newGroup(i, h, l4Len, payload, psh, cand)) + 1
		if cand && h.proto == unix.IPPROTO_TCP {
			c.groups[len(c.groups)-1].nextSeq = binary.BigEndian.Uint32(pkt[h.ipLen+4:]) + uint32(payload)
		}
	}
	for gi := range c.groups {
		g := &c.groups[gi]
		lo := len(c.parts)
		scratch := c.hdrs[gi*hdrSpace : (gi+1)*hdrSpace] // the group's header space
		if g.n == 1 {
			c.parts = single(c.parts, bufs[g.head], offset, mode, scratch)
		} else {
			c.parts = append(c.parts, c.header(g, bufs[g.head][offset:], scratch))
			hl := g.h.ipLen + g.l4Len
			for i := g.head; i >= 0; i = int(c.next[i]) {
				c.parts = append(c.parts, bufs[i][offset+hl:])
			}
		}
		c.writes = append(c.writes, planned{lo, len(c.parts), gi})
	}
}

func (c *coalescer) newGroup(i int, h ip, l4Len, payload int, psh, cand bool) int {
	c.groups = append(c.groups, group{head: i, tail: i, n: 1, h: h, l4Len: l4Len, segSize: payload,
		length: h.ipLen + l4Len + payload, closed: !cand || psh, psh: psh})
	return len(c.groups) - 1
}

// lookup returns the hash table slot of pkt's flow (addresses, protocol
// and ports): the slot that holds the flow's latest group, or the empty
// slot where it goes.
func (c *coalescer) lookup(bufs [][]byte, offset int, pkt []byte, h ip) int {
	mask := uint32(len(c.slots) - 1)
	for s := flowHash(pkt, h) & mask; ; s = (s + 1) & mask {
		g := c.slots[s] - 1
		if g < 0 || sameFlow(bufs[c.groups[g].head][offset:], c.groups[g].h, pkt, h) {
			return int(s)
		}
	}
}

func addrs(pkt []byte, h ip) []byte {
	if h.v6 {
		return pkt[8:40]
	}
	return pkt[12:20]
}

func flowHash(pkt []byte, h ip) uint32 {
	const prime = 0x9e3779b97f4a7c15
	x := uint64(h.proto) * prime
	for a := addrs(pkt, h); len(a) >= 8; a = a[8:] {
		x = (x ^ binary.BigEndian.Uint64(a)) * prime
	}
	x = (x ^ uint64(binary.BigEndian.Uint32(pkt[h.ipLen:]))) * prime
	return uint32(x >> 32)
}

func sameFlow(a []byte, ha ip, b []byte, hb ip) bool {
	return ha.v6 == hb.v6 && ha.proto == hb.proto &&
		bytes.Equal(addrs(a, ha), addrs(b, hb)) &&
		binary.BigEndian.Uint32(a[ha.ipLen:]) == binary.BigEndian.Uint32(b[hb.ipLen:])
}

// candidate reports whether pkt (a TCP or UDP packet of its flow) may be
// coalesced at all, and its transport header length and payload. Like the
// kernel's GRO: a valid IPv4 header without options, TCP with ACK and at
// most PSH besides, some payload.
func candidate(pkt []byte, h ip, udp bool, fb Fallback) (l4Len, payload int, psh, ok bool) {
	if fb == FallbackSerial || !h.v6 && (h.ipLen != 20 || checksum(pkt[:20], 0) != 0xffff) {
		return 0, 0, false, false
	}
	switch h.proto {
	case unix.IPPROTO_TCP:
		l4Len = int(pkt[h.ipLen+12]>>4) * 4
		if l4Len < 20 || len(pkt) < h.ipLen+l4Len {
			return 0, 0, false, false
		}
		flags := pkt[h.ipLen+13]
		if flags != tcpACK && flags != tcpACK|tcpPSH {
			return 0, 0, false, false
		}
		psh = flags&tcpPSH != 0
	case unix.IPPROTO_UDP:
		l4Len = 8
		if !udp || int(binary.BigEndian.Uint16(pkt[h.ipLen+4:])) != len(pkt)-h.ipLen {
			return 0, 0, false, false
		}
	}
	payload = len(pkt) - h.ipLen - l4Len
	return l4Len, payload, psh, payload > 0
}

// appendTo adds packet i to group g if it continues it.
func (c *coalescer) appendTo(g *group, bufs [][]byte, offset, i int, h ip, l4Len, payload int, psh bool, mode Checksum, fb Fallback) bool {
	if g.closed || g.n >= maxCoalesce || g.length+payload > maxIPLen || l4Len != g.l4Len ||
		payload > g.segSize || (fb == FallbackEqualSegments && payload != g.segSize) {
		return false
	}
	head, pkt := bufs[g.head][offset:], bufs[i][offset:]
	if !sameHeaders(head, pkt, h, l4Len) {
		return false
	}
	if !h.v6 && binary.BigEndian.Uint16(pkt[4:]) != binary.BigEndian.Uint16(head[4:])+uint16(g.n) {
		return false // the IPv4 IDs must count up, as splitting makes them again
	}
	if h.proto == unix.IPPROTO_TCP && binary.BigEndian.Uint32(pkt[h.ipLen+4:]) != g.nextSeq {
		return false
	}
	if mode == ChecksumFull {
		if !g.verified {
			if !validChecksums(head, g.h) {
				g.closed = true // written alone, for the kernel to drop
				return false
			}
			g.verified = true
		}
		if !validChecksums(pkt, h) {
			return false
		}
	}
	c.next[g.tail] = int32(i)
	g.tail = i
	g.n++
	g.length += payload
	g.nextSeq += uint32(payload)
	if payload < g.segSize || psh {
		g.closed, g.psh = true, psh
	}
	return true
}

// sameHeaders reports whether pkt's headers let it join head's superpacket:
// as the kernel's GRO, equal TOS, DF and TTL (IPv4) or traffic class, flow
// label and hop limit (IPv6); for TCP the same acknowledgment and options.
func sameHeaders(head, pkt []byte, h ip, l4Len int) bool {
	if h.v6 {
		if binary.BigEndian.Uint32(head) != binary.BigEndian.Uint32(pkt) || head[7] != pkt[7] {
			return false
		}
	} else if head[1] != pkt[1] || head[6]&0xe0 != pkt[6]&0xe0 || head[8] != pkt[8] {
		return false
	}
	if h.proto == unix.IPPROTO_TCP {
		t, u := head[h.ipLen:], pkt[h.ipLen:]
		return binary.BigEndian.Uint32(t[8:]) == binary.BigEndian.Uint32(u[8:]) && bytes.Equal(t[20:l4Len], u[20:l4Len])
	}
	return true
}

// header builds the virtio-net GSO header and the head's IP and transport
// headers for the coalesced packet of group g in scratch, and returns them.
func (c *coalescer) header(g *group, head []byte, scratch []byte) []byte {
	hl := g.h.ipLen + g.l4Len
	off, _ := csumOffset(g.h.proto)
	v := vnetHdr{
		flags:      unix.VIRTIO_NET_HDR_F_NEEDS_CSUM,
		hdrLen:     uint16(hl),
		gsoSize:    uint16(g.segSize),
		csumStart:  uint16(g.h.ipLen),
		csumOffset: uint16(off),
	}
	switch {
	case g.h.proto == unix.IPPROTO_UDP:
		v.gsoType = unix.VIRTIO_NET_HDR_GSO_UDP_L4
	case g.h.v6:
		v.gsoType = unix.VIRTIO_NET_HDR_GSO_TCPV6
	default:
		v.gsoType = unix.VIRTIO_NET_HDR_GSO_TCPV4
	}
	v.encode(scratch)
	p := scratch[virtioNetHdrLen : virtioNetHdrLen+hl]
	copy(p, head[:hl])
	if g.h.v6 {
		binary.BigEndian.PutUint16(p[4:], uint16(g.length-40))
	} else {
		binary.BigEndian.PutUint16(p[2:], uint16(g.length))
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^checksum(p[:20], 0))
	}
	l4 := p[g.h.ipLen:]
	if g.h.proto == unix.IPPROTO_TCP {
		if g.psh {
			l4[13] |= tcpPSH
		}
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(g.length-g.h.ipLen))
	}
	binary.BigEndian.PutUint16(l4[off:], fold(pseudoSum(p, g.h, g.length-g.h.ipLen)))
	return scratch[:virtioNetHdrLen+hl]
}

// single appends to parts the write of a packet that goes alone: its
// virtio-net header in front of it, in the buffer's headroom when offset
// leaves room for it (one part), else in scratch (two parts, gathered:
// the header, then the packet where it lies). In partial mode a TCP or UDP
// packet whose checksum is partial goes with NEEDS_CSUM, so that the
// kernel neither verifies it nor (delivering locally) needs it; one with a
// complete checksum goes without, and the kernel verifies it as it would
// anyway.
func single(parts [][]byte, b []byte, offset int, mode Checksum, scratch []byte) [][]byte {
	v := vnetHdr{}
	if mode == ChecksumPartial {
		if h, at := partialAt(b[offset:]); at >= 0 {
			v.flags = unix.VIRTIO_NET_HDR_F_NEEDS_CSUM
			v.csumStart = uint16(h.ipLen)
			v.csumOffset = uint16(at - h.ipLen)
			v.hdrLen = uint16(at + 2)
		}
	}
	if offset >= virtioNetHdrLen {
		v.encode(b[offset-virtioNetHdrLen:])
		return append(parts, b[offset-virtioNetHdrLen:])
	}
	v.encode(scratch)
	return append(parts, scratch[:virtioNetHdrLen], b[offset:])
}
