package tun

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// probeWrites asks the kernel, through q's own write path, whether it takes
// coalesced (GSO) writes. Linux 6.6.44, and the 6.1 LTS kernels that took
// the same backport (commit e269d79c7d35 without its fix 89add40066f9),
// reject with EINVAL a TCP or UDP superpacket whose last segment is
// shorter than the others, which is the common shape. Write falls back by
// itself without losing packets, but a probe at start-up makes the
// fallback visible (logged, and Fallback reports it) before traffic flows.
//
// The probe is, for TCP and (with USO) UDP, a train of three segments with
// a short last one (payloads of 100, 100 and 60 bytes) and, if that is
// refused, one of three equal segments, from 127.0.0.1 to 127.0.0.1: the
// TUN driver checks the virtio-net header when the write is made, and the
// IP layer then drops the packets as martians, so nothing is delivered,
// answered or forwarded. An error means the probe could not decide.
func (d *Device) probeWrites(q *Queue) error {
	const off = 32 // headroom for the virtio-net header
	protos := []uint8{unix.IPPROTO_TCP}
	if d.uso {
		protos = append(protos, unix.IPPROTO_UDP)
	}
	for _, proto := range protos {
		for _, train := range [][]int{{100, 100, 60}, {100, 100, 100}} {
			before := q.Fallback()
			if before == FallbackSerial {
				return nil
			}
			var bufs [][]byte
			seq := uint32(1000)
			for i, n := range train {
				b := make([]byte, off, 2048)
				bufs = append(bufs, append(b, probeSegment(proto, uint16(i), seq, n)...))
				seq += uint32(n)
			}
			res, err := q.Write(bufs, off, ChecksumFull)
			if err != nil {
				return fmt.Errorf("write probe segments: %w", err)
			}
			if res.Syscalls == len(bufs) && q.Fallback() == before && before == FallbackNone {
				return fmt.Errorf("the probe's protocol %d segments were not coalesced", proto)
			}
		}
	}
	if f := q.Fallback(); f != FallbackNone {
		d.log.Warn("this kernel refuses some coalesced TUN writes (the Linux 6.6.44 / 6.1 LTS virtio-net regression)", "fallback", f.String())
	}
	return nil
}

// probeSegment is an IPv4 TCP (ACK) or UDP segment from 127.0.0.1:9 to
// 127.0.0.1:9 with n bytes of payload and valid checksums (wireguard's GRO
// checks them before it coalesces).
func probeSegment(proto uint8, id uint16, seq uint32, n int) []byte {
	l4 := 8
	if proto == unix.IPPROTO_TCP {
		l4 = 20
	}
	p := make([]byte, 20+l4+n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], id)
	p[6] = 0x40 // don't fragment
	p[8] = 64
	p[9] = proto
	copy(p[12:16], []byte{127, 0, 0, 1})
	copy(p[16:20], []byte{127, 0, 0, 1})
	binary.BigEndian.PutUint16(p[10:], ^checksum(p[:20], 0))
	t := p[20:]
	binary.BigEndian.PutUint16(t[0:], 9)
	binary.BigEndian.PutUint16(t[2:], 9)
	csumAt := 6
	if proto == unix.IPPROTO_TCP {
		binary.BigEndian.PutUint32(t[4:], seq)
		binary.BigEndian.PutUint32(t[8:], 1)
		t[12] = 5 << 4
		t[13] = 0x10 // ACK
		binary.BigEndian.PutUint16(t[14:], 512)
		csumAt = 16
	} else {
		binary.BigEndian.PutUint16(t[4:], uint16(len(t)))
	}
	for i := range n {
		t[l4+i] = byte(i)
	}
	pseudo := make([]byte, 12)
	copy(pseudo, p[12:20])
	pseudo[9] = proto
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(t)))
	binary.BigEndian.PutUint16(t[csumAt:], ^checksum(t, checksum(pseudo, 0)))
	return p
}
