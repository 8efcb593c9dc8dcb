package tun

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// CoalescedWritesWork asks the kernel whether it accepts the coalesced
// (GSO) writes that wireguard's tun builds with GRO. Linux 6.6.44, and the
// 6.1 LTS kernels that took the same backport (commit e269d79c7d35 without
// its fix 89add40066f9), reject with EINVAL a TCP or UDP superpacket whose
// last segment is shorter than the others, which is the common shape. A
// data path that finds out on its first such write loses that batch, so
// weft asks at start-up.
//
// The probe is one TCP and one UDP train of three segments each (payloads
// of 100, 100 and 60 bytes), from 127.0.0.1 to 127.0.0.1: the TUN driver
// checks the virtio-net header when the write is made, and the IP layer
// then drops the packets as martians, so nothing is delivered, answered or
// forwarded. It reports false when the kernel refused the write with
// EINVAL; an error means the probe could not decide (the caller keeps
// coalescing and relies on the data path's own fallback).
func (d *Device) CoalescedWritesWork() (bool, error) {
	if !d.VNetHdr() {
		return false, errors.New("the device runs without offloads")
	}
	const off = 32 // headroom for the virtio-net header
	var bufs [][]byte
	for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		seq := uint32(1000)
		for i, n := range []int{100, 100, 60} {
			b := make([]byte, off, 65535)
			b = append(b, probeSegment(proto, uint16(i), seq, n)...)
			bufs = append(bufs, b)
			seq += uint32(n)
		}
	}
	_, err := d.Device.Write(bufs, off)
	if errors.Is(err, unix.EINVAL) {
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("write probe segments: %w", err)
	}
	// wireguard's GRO coalesces into the first buffer of each train and
	// writes a GSO virtio-net header in front of it. If it did not, the
	// probe tested nothing.
	if bufs[0][off-virtioNetHdrLen+1] == unix.VIRTIO_NET_HDR_GSO_NONE {
		return true, errors.New("the probe's TCP segments were not coalesced")
	}
	return true, nil
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

// checksum is the RFC 1071 ones' complement sum of b added to initial,
// folded to 16 bits (not inverted).
func checksum(b []byte, initial uint16) uint16 {
	sum := uint32(initial)
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}
