package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// The reference checksum: RFC 1071 as written, 16 bits at a time, nothing
// shared with csum.go.
func refSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// refPseudo is the pseudo-header (RFC 793 / RFC 8200 section 8.1).
func refPseudo(pkt []byte, v6 bool, proto uint8, l4Len int) []byte {
	if v6 {
		p := append([]byte{}, pkt[8:40]...)
		return append(p, byte(l4Len>>24), byte(l4Len>>16), byte(l4Len>>8), byte(l4Len), 0, 0, 0, proto)
	}
	p := append([]byte{}, pkt[12:20]...)
	return append(p, 0, proto, byte(l4Len>>8), byte(l4Len))
}

func refL4Valid(pkt []byte, v6 bool, l4At int, proto uint8) bool {
	return refSum(append(refPseudo(pkt, v6, proto, len(pkt)-l4At), pkt[l4At:]...)) == 0xffff
}

func refPartial(pkt []byte, v6 bool, l4At int, proto uint8) uint16 {
	return refSum(refPseudo(pkt, v6, proto, len(pkt)-l4At))
}

// spec describes a hand-built packet or superpacket.
type spec struct {
	v6      bool
	udp     bool
	ipOpts  int  // IPv4 options, bytes (a multiple of 4)
	tcpOpts int  // TCP options, bytes (a multiple of 4)
	ext     bool // IPv6: a destination options header before the transport header
	payload int
	gso     int  // 0: a plain packet
	flags   byte // TCP flags; 0 means ACK
	seq     uint32
	id      uint16
	sport   uint16
	ttl     byte
	ack     uint32
	full    bool // complete checksum (else partial, as the kernel hands it over)
}

func (s spec) proto() uint8 {
	if s.udp {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}

func (s spec) ipLen() int {
	switch {
	case s.v6 && s.ext:
		return 48
	case s.v6:
		return 40
	}
	return 20 + s.ipOpts
}

func (s spec) l4Len() int {
	if s.udp {
		return 8
	}
	return 20 + s.tcpOpts
}

// packet builds the IP packet s describes, with its checksums as s says.
func (s spec) packet() []byte {
	ipl, l4l := s.ipLen(), s.l4Len()
	p := make([]byte, ipl+l4l+s.payload)
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	if s.v6 {
		copy(p, []byte{0x60, 0x0a, 0xbc, 0xde})
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		p[6], p[7] = s.proto(), ttl
		copy(p[8:], []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
		copy(p[24:], []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2})
		if s.ext {
			p[6] = 60
			copy(p[40:], []byte{s.proto(), 0, 1, 4, 0, 0, 0, 0})
		}
	} else {
		p[0] = 0x40 | byte(ipl/4)
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], s.id)
		p[6] = 0x40
		p[8], p[9] = ttl, s.proto()
		copy(p[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
		for i := 20; i < ipl; i++ {
			p[i] = 1 // NOP
		}
		binary.BigEndian.PutUint16(p[10:], ^refSum(p[:ipl]))
	}
	t := p[ipl:]
	sport := s.sport
	if sport == 0 {
		sport = 1000
	}
	binary.BigEndian.PutUint16(t, sport)
	binary.BigEndian.PutUint16(t[2:], 2000)
	at := ipl + 6
	if s.udp {
		binary.BigEndian.PutUint16(t[4:], uint16(len(t)))
	} else {
		at = ipl + 16
		binary.BigEndian.PutUint32(t[4:], s.seq)
		binary.BigEndian.PutUint32(t[8:], s.ack)
		t[12] = byte(l4l/4) << 4
		t[13] = s.flags
		if t[13] == 0 {
			t[13] = tcpACK
		}
		binary.BigEndian.PutUint16(t[14:], 512)
		for i := 20; i < l4l; i++ {
			t[i] = 1
		}
		if s.tcpOpts >= 12 {
			copy(t[20:], []byte{1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9}) // NOP NOP timestamps
		}
	}
	for i := ipl + l4l; i < len(p); i++ {
		p[i] = byte(i*31 + 7)
	}
	binary.BigEndian.PutUint16(p[at:], refPartial(p, s.v6, ipl, s.proto()))
	if s.full {
		binary.BigEndian.PutUint16(p[at:], 0)
		c := ^refSum(append(refPseudo(p, s.v6, s.proto(), len(p)-ipl), p[ipl:]...))
		if c == 0 && s.udp {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(p[at:], c)
	}
	return p
}

// superpacket is s.packet() behind the virtio-net header the kernel gives
// a TSO/USO superpacket (or, with gso 0, a plain CHECKSUM_PARTIAL packet).
func (s spec) superpacket() []byte {
	p := s.packet()
	v := vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: uint16(s.ipLen()), hdrLen: uint16(s.ipLen() + s.l4Len()), gsoSize: uint16(s.gso)}
	v.csumOffset = 16
	if s.udp {
		v.csumOffset = 6
	}
	switch {
	case s.gso == 0:
	case s.udp:
		v.gsoType = unix.VIRTIO_NET_HDR_GSO_UDP_L4
	case s.v6:
		v.gsoType = unix.VIRTIO_NET_HDR_GSO_TCPV6
	default:
		v.gsoType = unix.VIRTIO_NET_HDR_GSO_TCPV4
	}
	out := make([]byte, virtioNetHdrLen, virtioNetHdrLen+len(p))
	v.encode(out)
	return append(out, p...)
}

const testOff = 32

func newTestBufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, testOff+maxIPLen)
	}
	return bufs, make([]int, n)
}

// splitInPlace reads sp into bufs[0] as Queue.Read does and splits it.
func splitInPlace(sp []byte, bufs [][]byte, sizes []int) (int, error) {
	in := bufs[0][testOff-virtioNetHdrLen:]
	copy(in, sp)
	return Split(in[:len(sp)], bufs, sizes, testOff)
}

func TestSplit(t *testing.T) {
	cases := []spec{
		{payload: 4000, gso: 1400},                                      // IPv4 TCP, short last segment
		{payload: 4200, gso: 1400},                                      // exact multiple
		{payload: 300, gso: 1400},                                       // one segment
		{payload: 4000, gso: 1400, flags: tcpACK | tcpPSH | tcpFIN},     // FIN and PSH on the last only
		{payload: 4000, gso: 1400, flags: tcpACK | tcpCWR},              // CWR on the first only
		{payload: 4000, gso: 1388, tcpOpts: 12},                         // TCP timestamps
		{payload: 4000, gso: 1388, tcpOpts: 40},                         // 60-byte TCP header
		{payload: 4000, gso: 1400, ipOpts: 8},                           // IPv4 options
		{payload: 4000, gso: 1400, id: 0xfffe},                          // IPv4 ID wraps
		{payload: 4000, gso: 1400, seq: 0xfffff000},                     // sequence number wraps
		{v6: true, payload: 4000, gso: 1380},                            // IPv6 TCP
		{v6: true, payload: 4000, gso: 1368, tcpOpts: 12},               //
		{v6: true, ext: true, payload: 4000, gso: 1380},                 // IPv6 extension header: completed here
		{udp: true, payload: 4000, gso: 1400},                           // IPv4 UDP (USO)
		{udp: true, v6: true, payload: 4001, gso: 1200},                 // IPv6 UDP, odd length
		{udp: true, v6: true, ext: true, payload: 3000, gso: 1000},      //
		{payload: 64000, gso: 1000},                                     // 64 segments
		{udp: true, payload: 65507 - 20, gso: 1472},                     // the largest UDP superpacket
		{v6: true, payload: 65535 - 20 - 40 + 40 - 40, gso: 1440 - 100}, // the largest IPv6 TCP one
	}
	for _, s := range cases {
		t.Run(fmt.Sprintf("%+v", s), func(t *testing.T) {
			sp := s.superpacket()
			orig := sp[virtioNetHdrLen:]
			for _, inPlace := range []bool{true, false} {
				bufs, sizes := newTestBufs(64)
				var n int
				var err error
				if inPlace {
					n, err = splitInPlace(sp, bufs, sizes)
				} else {
					n, err = Split(bytes.Clone(sp), bufs, sizes, testOff)
				}
				if err != nil {
					t.Fatalf("split: %v", err)
				}
				checkSegments(t, s, orig, bufs[:n], sizes[:n])
			}
		})
	}
}

func checkSegments(t *testing.T, s spec, orig []byte, bufs [][]byte, sizes []int) {
	t.Helper()
	ipl, hl := s.ipLen(), s.ipLen()+s.l4Len()
	want := (s.payload + s.gso - 1) / s.gso
	if len(bufs) != want {
		t.Fatalf("%d segments, want %d", len(bufs), want)
	}
	origFlags := orig[ipl+13]
	for i := range bufs {
		seg := bufs[i][testOff : testOff+sizes[i]]
		lo, hi := hl+i*s.gso, min(hl+(i+1)*s.gso, len(orig))
		if len(seg) != hl+hi-lo || !bytes.Equal(seg[hl:], orig[lo:hi]) {
			t.Fatalf("segment %d: %d bytes, payload differs or misplaced", i, len(seg))
		}
		if s.v6 {
			if got := int(binary.BigEndian.Uint16(seg[4:])); got != len(seg)-40 {
				t.Errorf("segment %d: IPv6 payload length %d, want %d", i, got, len(seg)-40)
			}
			if !bytes.Equal(seg[:4], orig[:4]) || !bytes.Equal(seg[6:ipl], orig[6:ipl]) {
				t.Errorf("segment %d: IPv6 header changed beyond its length", i)
			}
		} else {
			if got := int(binary.BigEndian.Uint16(seg[2:])); got != len(seg) {
				t.Errorf("segment %d: IPv4 total length %d, want %d", i, got, len(seg))
			}
			if got, want := binary.BigEndian.Uint16(seg[4:]), s.id+uint16(i); got != want {
				t.Errorf("segment %d: IPv4 ID %#x, want %#x", i, got, want)
			}
			if refSum(seg[:ipl]) != 0xffff {
				t.Errorf("segment %d: IPv4 header checksum wrong", i)
			}
			if !bytes.Equal(seg[20:ipl], orig[20:ipl]) {
				t.Errorf("segment %d: IPv4 options changed", i)
			}
		}
		last := i == len(bufs)-1
		if s.udp {
			if got := int(binary.BigEndian.Uint16(seg[ipl+4:])); got != len(seg)-ipl {
				t.Errorf("segment %d: UDP length %d, want %d", i, got, len(seg)-ipl)
			}
		} else {
			if got, want := binary.BigEndian.Uint32(seg[ipl+4:]), s.seq+uint32(i*s.gso); got != want {
				t.Errorf("segment %d: seq %#x, want %#x", i, got, want)
			}
			wantFlags := origFlags
			if !last {
				wantFlags &^= tcpFIN | tcpPSH
			}
			if i > 0 {
				wantFlags &^= tcpCWR
			}
			if seg[ipl+13] != wantFlags {
				t.Errorf("segment %d: TCP flags %#x, want %#x", i, seg[ipl+13], wantFlags)
			}
			if !bytes.Equal(seg[ipl+20:hl], orig[ipl+20:hl]) {
				t.Errorf("segment %d: TCP options changed", i)
			}
		}
		at := ipl + 16
		if s.udp {
			at = ipl + 6
		}
		if s.ext { // completed by Split
			if !refL4Valid(seg, s.v6, ipl, s.proto()) {
				t.Errorf("segment %d: checksum not complete behind an extension header", i)
			}
			continue
		}
		if got, want := binary.BigEndian.Uint16(seg[at:]), refPartial(seg, s.v6, ipl, s.proto()); got != want {
			t.Errorf("segment %d: checksum field %#04x, want the partial %#04x", i, got, want)
		}
		CompleteChecksum(seg)
		if !refL4Valid(seg, s.v6, ipl, s.proto()) {
			t.Errorf("segment %d: checksum wrong after CompleteChecksum", i)
		}
		c := binary.BigEndian.Uint16(seg[at:])
		CompleteChecksum(seg)
		if binary.BigEndian.Uint16(seg[at:]) != c {
			t.Errorf("segment %d: a second CompleteChecksum changed a complete checksum", i)
		}
	}
}

func TestSplitPlainPackets(t *testing.T) {
	bufs, sizes := newTestBufs(4)
	// CHECKSUM_PARTIAL without GSO: passed on partial, found again by
	// CompleteChecksum.
	s := spec{payload: 500}
	sp := s.superpacket()
	if n, err := splitInPlace(sp, bufs, sizes); n != 1 || err != nil {
		t.Fatalf("split = %d, %v", n, err)
	}
	p := bufs[0][testOff : testOff+sizes[0]]
	if !bytes.Equal(p, sp[virtioNetHdrLen:]) {
		t.Fatal("a plain packet changed on read")
	}
	CompleteChecksum(p)
	if !refL4Valid(p, false, 20, unix.IPPROTO_TCP) {
		t.Error("CompleteChecksum did not finish the partial checksum")
	}
	// Behind an IPv6 extension header CompleteChecksum would not find it:
	// Split completes it.
	s = spec{v6: true, ext: true, udp: true, payload: 333}
	if n, err := splitInPlace(s.superpacket(), bufs, sizes); n != 1 || err != nil {
		t.Fatalf("split = %d, %v", n, err)
	}
	if !refL4Valid(bufs[0][testOff:testOff+sizes[0]], true, 48, unix.IPPROTO_UDP) {
		t.Error("partial checksum behind an extension header left incomplete")
	}
	// No NEEDS_CSUM: the bytes as they are.
	s = spec{payload: 100, full: true}
	sp = s.superpacket()
	sp[0] = 0
	if n, err := Split(sp, bufs, sizes, testOff); n != 1 || err != nil || !bytes.Equal(bufs[0][testOff:testOff+sizes[0]], sp[virtioNetHdrLen:]) {
		t.Fatalf("split = %d, %v, or the packet changed", n, err)
	}
}

func TestSplitErrors(t *testing.T) {
	bufs, sizes := newTestBufs(4)
	good := spec{payload: 4000, gso: 1000}
	n, err := Split(good.superpacket(), bufs[:2], sizes, testOff)
	if !errors.Is(err, ErrTooManySegments) || n != 2 {
		t.Errorf("4 segments into 2 buffers: %d, %v; want 2 and ErrTooManySegments", n, err)
	}
	mutate := map[string]func(b []byte){
		"no header":          func(b []byte) {},
		"gso_size 0":         func(b []byte) { b[4], b[5] = 0, 0 },
		"TCPV6 on IPv4":      func(b []byte) { b[1] = unix.VIRTIO_NET_HDR_GSO_TCPV6 },
		"unknown GSO type":   func(b []byte) { b[1] = 9 },
		"csum_start not IHL": func(b []byte) { b[6] = 24 },
		"TCP header short":   func(b []byte) { b[10+32] = 4 << 4 },
		"UDP type on TCP":    func(b []byte) { b[1] = unix.VIRTIO_NET_HDR_GSO_UDP_L4 },
		"no payload":         func(b []byte) {},
	}
	for name, f := range mutate {
		sp := good.superpacket()
		switch name {
		case "no header":
			sp = sp[:5]
		case "no payload":
			sp = sp[:10+40]
		}
		f(sp)
		if _, err := Split(sp, bufs, sizes, testOff); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	small := [][]byte{make([]byte, 100), make([]byte, 100)}
	if _, err := Split(good.superpacket(), small, sizes, testOff); err == nil {
		t.Error("segments larger than the buffers: no error")
	}
}

// planned bytes: what each planned write sends.
type sent struct {
	b       []byte
	members []int
}

func planBatch(c *coalescer, pkts [][]byte, mode Checksum, udp bool, fb Fallback) (bufs [][]byte, out []sent) {
	bufs = make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = append(make([]byte, testOff, testOff+len(p)), p...)
	}
	c.plan(bufs, testOff, mode, udp, fb)
	for _, w := range c.writes {
		var s sent
		for _, p := range c.parts[w.lo:w.hi] {
			s.b = append(s.b, p...)
		}
		for i := c.groups[w.g].head; i >= 0; i = int(c.next[i]) {
			s.members = append(s.members, i)
		}
		out = append(out, s)
	}
	return bufs, out
}

func TestRoundTrip(t *testing.T) {
	cases := []spec{
		{payload: 4000, gso: 1400},
		{payload: 4200, gso: 1400, flags: tcpACK | tcpPSH},
		{payload: 4000, gso: 1388, tcpOpts: 12},
		{v6: true, payload: 9000, gso: 1380},
		{udp: true, payload: 4000, gso: 1400},
		{udp: true, v6: true, payload: 4001, gso: 1200},
		{payload: 64000, gso: 1000},
		{udp: true, payload: 65507 - 20, gso: 1472},
	}
	var c coalescer
	for _, s := range cases {
		for _, mode := range []Checksum{ChecksumPartial, ChecksumFull} {
			t.Run(fmt.Sprintf("%v/%+v", mode, s), func(t *testing.T) {
				sp := s.superpacket()
				bufs, sizes := newTestBufs(64)
				n, err := splitInPlace(sp, bufs, sizes)
				if err != nil {
					t.Fatal(err)
				}
				segs := make([][]byte, n)
				for i := range segs {
					segs[i] = bufs[i][testOff : testOff+sizes[i]]
					if mode == ChecksumFull {
						CompleteChecksum(segs[i])
					}
				}
				_, out := planBatch(&c, segs, mode, true, FallbackNone)
				if len(out) != 1 || len(out[0].members) != n {
					t.Fatalf("%d writes (%v), want all %d segments in one", len(out), out, n)
				}
				if !bytes.Equal(out[0].b, sp) {
					t.Fatalf("coalesced\n%x\nwant\n%x", out[0].b[:80], sp[:80])
				}
			})
		}
	}
}

func seg(s spec, i, size int) []byte {
	s.payload, s.seq, s.id = size, s.seq+uint32(i*1000), s.id+uint16(i)
	return s.packet()
}

func TestCoalesce(t *testing.T) {
	tcp := spec{full: true}
	udp := spec{udp: true, full: true}
	other := tcp
	other.sport = 3000
	badCsum := func(p []byte) []byte { p[len(p)-1]++; return p }
	partial := func(s spec) spec { s.full = false; return s }
	cases := []struct {
		name   string
		pkts   [][]byte
		mode   Checksum
		udp    bool
		fb     Fallback
		groups [][]int
	}{
		{"a TCP train and a short tail", [][]byte{seg(tcp, 0, 1000), seg(tcp, 1, 1000), seg(tcp, 2, 500)}, ChecksumFull, true, 0, [][]int{{0, 1, 2}}},
		{"nothing after a short segment", [][]byte{seg(tcp, 0, 1000), seg(tcp, 1, 500), seg(tcp, 2, 500)}, ChecksumFull, true, 0, [][]int{{0, 1}, {2}}},
		{"a larger segment starts anew", [][]byte{seg(tcp, 0, 500), seg(tcp, 1, 1000)}, ChecksumFull, true, 0, [][]int{{0}, {1}}},
		{"two flows interleaved", [][]byte{seg(tcp, 0, 1000), seg(other, 0, 1000), seg(tcp, 1, 1000), seg(other, 1, 1000)}, ChecksumFull, true, 0, [][]int{{0, 2}, {1, 3}}},
		{"out of order", [][]byte{seg(tcp, 0, 1000), seg(tcp, 2, 1000), seg(tcp, 1, 1000)}, ChecksumFull, true, 0, [][]int{{0}, {1}, {2}}},
		{"another ack", [][]byte{seg(tcp, 0, 1000), seg(spec{full: true, ack: 5}, 1, 1000)}, ChecksumFull, true, 0, [][]int{{0}, {1}}},
		{"another TTL", [][]byte{seg(tcp, 0, 1000), seg(spec{full: true, ttl: 9}, 1, 1000)}, ChecksumFull, true, 0, [][]int{{0}, {1}}},
		{"PSH ends a train", [][]byte{seg(tcp, 0, 1000), seg(spec{full: true, flags: tcpACK | tcpPSH}, 1, 1000), seg(tcp, 2, 1000)}, ChecksumFull, true, 0, [][]int{{0, 1}, {2}}},
		{"FIN is never coalesced, and keeps its place", [][]byte{seg(tcp, 0, 1000), seg(spec{full: true, flags: tcpACK | tcpFIN}, 1, 1000), seg(tcp, 2, 1000)}, ChecksumFull, true, 0, [][]int{{0}, {1}, {2}}},
		{"full: a bad checksum is written alone", [][]byte{seg(tcp, 0, 1000), badCsum(seg(tcp, 1, 1000)), seg(tcp, 2, 1000)}, ChecksumFull, true, 0, [][]int{{0}, {1}, {2}}},
		{"full: a bad head is written alone", [][]byte{badCsum(seg(tcp, 0, 1000)), seg(tcp, 1, 1000), seg(tcp, 2, 1000)}, ChecksumFull, true, 0, [][]int{{0}, {1, 2}}},
		{"full: partial checksums do not verify", [][]byte{seg(partial(tcp), 0, 1000), seg(partial(tcp), 1, 1000)}, ChecksumFull, true, 0, [][]int{{0}, {1}}},
		{"partial: nothing verified", [][]byte{seg(partial(tcp), 0, 1000), badCsum(seg(partial(tcp), 1, 1000)), seg(tcp, 2, 1000)}, ChecksumPartial, true, 0, [][]int{{0, 1, 2}}},
		{"UDP", [][]byte{seg(udp, 0, 1000), seg(udp, 1, 1000), seg(udp, 2, 10)}, ChecksumFull, true, 0, [][]int{{0, 1, 2}}},
		{"UDP without USO", [][]byte{seg(udp, 0, 1000), seg(udp, 1, 1000)}, ChecksumFull, false, 0, [][]int{{0}, {1}}},
		{"UDP checksum 0 is not verified", [][]byte{udpNoCsum(seg(udp, 0, 1000)), udpNoCsum(seg(udp, 1, 1000))}, ChecksumFull, true, 0, [][]int{{0}, {1}}},
		{"IPv4 options", [][]byte{seg(spec{full: true, ipOpts: 4}, 0, 1000), seg(spec{full: true, ipOpts: 4}, 1, 1000)}, ChecksumFull, true, 0, [][]int{{0}, {1}}},
		{"IPv6", [][]byte{seg(spec{v6: true, full: true}, 0, 1000), seg(spec{v6: true, full: true}, 1, 1000)}, ChecksumFull, true, 0, [][]int{{0, 1}}},
		{"equal segments only", [][]byte{seg(tcp, 0, 1000), seg(tcp, 1, 1000), seg(tcp, 2, 500)}, ChecksumFull, true, FallbackEqualSegments, [][]int{{0, 1}, {2}}},
		{"serial", [][]byte{seg(tcp, 0, 1000), seg(tcp, 1, 1000)}, ChecksumFull, true, FallbackSerial, [][]int{{0}, {1}}},
		{"not IP", [][]byte{{0x00, 1, 2}, seg(tcp, 0, 1000)}, ChecksumFull, true, 0, [][]int{{0}, {1}}},
	}
	var c coalescer
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, out := planBatch(&c, tc.pkts, tc.mode, tc.udp, tc.fb)
			var got [][]int
			for _, w := range out {
				got = append(got, w.members)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.groups) {
				t.Fatalf("writes %v, want %v", got, tc.groups)
			}
			for _, w := range out {
				checkWrite(t, w, tc.pkts, tc.mode)
			}
		})
	}
}

func udpNoCsum(p []byte) []byte {
	p[26], p[27] = 0, 0
	return p
}

// checkWrite checks one planned write: a lone packet behind its virtio-net
// header, or a superpacket that splits back into its members.
func checkWrite(t *testing.T, w sent, pkts [][]byte, mode Checksum) {
	t.Helper()
	var v vnetHdr
	v.decode(w.b)
	if len(w.members) == 1 {
		p := pkts[w.members[0]]
		if !bytes.Equal(w.b[virtioNetHdrLen:], p) || v.gsoType != 0 {
			t.Errorf("lone packet %d changed, or given GSO", w.members[0])
		}
		h, at := partialAt(p)
		wantFlag := mode == ChecksumPartial && at >= 0
		if (v.flags&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0) != wantFlag || (wantFlag && int(v.csumStart) != h.ipLen) {
			t.Errorf("lone packet %d: header %+v, want NEEDS_CSUM %v", w.members[0], v, wantFlag)
		}
		return
	}
	bufs, sizes := newTestBufs(len(w.members) + 1)
	n, err := Split(w.b, bufs, sizes, testOff)
	if err != nil || n != len(w.members) {
		t.Fatalf("the superpacket splits into %d, %v; want %d", n, err, len(w.members))
	}
	for i, m := range w.members {
		got := bufs[i][testOff : testOff+sizes[i]]
		if mode == ChecksumFull {
			CompleteChecksum(got)
		}
		want := bytes.Clone(pkts[m])
		h, _ := parseIP(want)
		if h.proto == unix.IPPROTO_TCP { // the head's window and urgent pointer go for all, as in the kernel's GRO
			head := pkts[w.members[0]][h.ipLen:]
			copy(want[h.ipLen+14:h.ipLen+16], head[14:16])
			copy(want[h.ipLen+18:h.ipLen+20], head[18:20])
		}
		off, _ := csumOffset(h.proto)
		binary.BigEndian.PutUint16(want[h.ipLen+off:], refPartial(want, h.v6, h.ipLen, h.proto))
		if mode == ChecksumFull {
			CompleteChecksum(want)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("member %d comes back as\n%x\nwant\n%x", m, got[:60], want[:60])
		}
	}
}

// CompleteChecksum leaves what is not a partial TCP or UDP checksum alone.
func TestCompleteChecksumLeavesOthers(t *testing.T) {
	for _, p := range [][]byte{
		spec{payload: 100, full: true}.packet(),
		spec{udp: true, v6: true, payload: 99, full: true}.packet(),
		udpNoCsum(spec{udp: true, payload: 100, full: true}.packet()),
		{0x45, 0, 0, 20, 0, 0, 0x20, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2},                      // a fragment
		{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 8, 0, 1, 2, 3, 4, 5, 6}, // ICMP
		{0x60, 1},
	} {
		orig := bytes.Clone(p)
		CompleteChecksum(p)
		if !bytes.Equal(p, orig) {
			t.Errorf("CompleteChecksum changed %x", orig)
		}
	}
}

func TestChecksumMatchesReference(t *testing.T) {
	b := make([]byte, 2000)
	for i := range b {
		b[i] = byte(i*131 + i>>3)
	}
	for n := 0; n <= len(b); n += 1 + n/7 {
		for _, start := range []int{0, 1, 3} {
			if start > n {
				continue
			}
			if got, want := checksum(b[start:n], 0), refSum(b[start:n]); got != want && !(got == 0xffff && want == 0) {
				t.Fatalf("checksum of b[%d:%d] = %#04x, reference %#04x", start, n, got, want)
			}
		}
	}
}

func TestSplitAndCoalesceAllocateNothing(t *testing.T) {
	sp := spec{payload: 64000, gso: 1400}.superpacket()
	bufs, sizes := newTestBufs(64)
	var c coalescer
	var segs [][]byte
	if a := testing.AllocsPerRun(100, func() {
		n, _ := splitInPlace(sp, bufs, sizes)
		segs = segs[:0]
		for i := range n {
			CompleteChecksum(bufs[i][testOff : testOff+sizes[i]])
			segs = append(segs, bufs[i][:testOff+sizes[i]])
		}
		c.plan(segs, testOff, ChecksumFull, true, FallbackNone)
	}); a != 0 {
		t.Errorf("split, complete and coalesce allocate %.1f times per superpacket, want 0", a)
	}
	if len(c.writes) != 1 {
		t.Errorf("%d writes, want 1", len(c.writes))
	}
}
