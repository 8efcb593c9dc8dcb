package tun

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzSplit splits arbitrary reads: never a panic, and what comes out fits
// the buffers it claims.
func FuzzSplit(f *testing.F) {
	f.Add(spec{payload: 4000, gso: 1400}.superpacket())
	f.Add(spec{v6: true, ext: true, udp: true, payload: 3000, gso: 1000}.superpacket())
	f.Add(spec{payload: 100}.superpacket())
	bufs, sizes := newTestBufs(8) // reused: one worker runs one input at a time
	f.Fuzz(func(t *testing.T, in []byte) {
		n, err := Split(in, bufs, sizes, testOff)
		if n > len(bufs) || (err == nil && n == 0) {
			t.Fatalf("split returned %d, %v", n, err)
		}
		for i := range n {
			if sizes[i] > len(bufs[i])-testOff {
				t.Fatalf("segment %d of %d bytes overflows", i, sizes[i])
			}
			CompleteChecksum(bufs[i][testOff : testOff+sizes[i]])
		}
	})
}

// FuzzRoundTrip builds a superpacket from the fuzzer's choices, splits it
// and coalesces the segments again: the same bytes must come back, in both
// checksum modes, and every segment must be valid.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint16(4000), uint16(1400), uint8(0), uint8(0), uint32(7), false)
	f.Add(uint16(4001), uint16(1200), uint8(1), uint8(0), uint32(0xffffff00), true)
	f.Add(uint16(64000), uint16(1000), uint8(2), uint8(3), uint32(0), false)
	bufs, sizes := newTestBufs(maxCoalesce) // reused: one worker runs one input at a time
	f.Fuzz(func(t *testing.T, payload, gso uint16, kind, tcpOpts uint8, seq uint32, psh bool) {
		s := spec{v6: kind&1 != 0, udp: kind&2 != 0, tcpOpts: 4 * int(tcpOpts%11), payload: int(payload), gso: int(gso), seq: seq}
		if s.udp {
			s.tcpOpts = 0
		}
		if psh && !s.udp {
			s.flags = tcpACK | tcpPSH
		}
		hl := s.ipLen() + s.l4Len()
		if s.payload == 0 || s.gso == 0 || hl+s.payload > maxIPLen || (s.payload+s.gso-1)/s.gso > maxCoalesce {
			return
		}
		sp := s.superpacket()
		for _, mode := range []Checksum{ChecksumPartial, ChecksumFull} {
			n, err := splitInPlace(sp, bufs, sizes)
			if err != nil {
				t.Fatalf("split %+v: %v", s, err)
			}
			segs := make([][]byte, n)
			for i := range segs {
				segs[i] = bufs[i][testOff : testOff+sizes[i]]
				CompleteChecksum(segs[i])
				if !refL4Valid(segs[i], s.v6, s.ipLen(), s.proto()) {
					t.Fatalf("segment %d of %+v: checksum wrong", i, s)
				}
				if mode == ChecksumPartial {
					h, _ := parseIP(segs[i])
					off, _ := csumOffset(h.proto)
					binary.BigEndian.PutUint16(segs[i][h.ipLen+off:], refPartial(segs[i], s.v6, h.ipLen, h.proto))
				}
			}
			var c coalescer
			_, out := planBatch(&c, segs, mode, true, FallbackNone)
			if n == 1 {
				if len(out) != 1 || !bytes.Equal(out[0].b[virtioNetHdrLen:], segs[0]) {
					t.Fatalf("%+v: a lone segment changed", s)
				}
				continue
			}
			if len(out) != 1 || !bytes.Equal(out[0].b, sp) {
				t.Fatalf("%+v %v: %d writes, or the superpacket differs", s, mode, len(out))
			}
		}
	})
}

// FuzzCoalesce plans writes for arbitrary packets: never a panic, every
// packet in exactly one write, in order within its write, and each
// coalesced write splits back into its members.
func FuzzCoalesce(f *testing.F) {
	var seed []byte
	for i := range 3 {
		p := seg(spec{full: true}, i, 1000)
		seed = append(seed, byte(len(p)>>8), byte(len(p)))
		seed = append(seed, p...)
	}
	f.Add(seed, false)
	f.Add(seed, true)
	f.Fuzz(func(t *testing.T, data []byte, partial bool) {
		var pkts [][]byte
		for len(data) >= 2 && len(pkts) < batchSize {
			n := min(int(binary.BigEndian.Uint16(data)), len(data)-2)
			pkts = append(pkts, data[2:2+n])
			data = data[2+n:]
		}
		mode := ChecksumFull
		if partial {
			mode = ChecksumPartial
		}
		var c coalescer
		_, out := planBatch(&c, pkts, mode, true, FallbackNone)
		seen := make([]bool, len(pkts))
		for _, w := range out {
			for k, m := range w.members {
				if seen[m] || (k > 0 && m <= w.members[k-1]) {
					t.Fatalf("packet %d twice, or out of order: %v", m, out)
				}
				seen[m] = true
			}
			if len(w.members) > 1 {
				checkWrite(t, w, pkts, mode)
			}
		}
		for i, s := range seen {
			if !s {
				t.Fatalf("packet %d not written", i)
			}
		}
	})
}
