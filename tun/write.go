package tun

import "golang.org/x/sys/unix"

// virtioNetHdrLen is the size of the virtio-net header wireguard's tun
// puts in front of each packet it writes with offloads on.
const virtioNetHdrLen = 10

// notWritten marks, in the virtio-net header's gso_type byte, a buffer that
// wireguard's Write has not (yet) given a header of its own: after a write,
// it is still there on exactly the packets that GRO merged into another.
const notWritten = 0xff

// WriteError is a failed TUN write, with how many of its packets were lost.
type WriteError struct {
	Err  error
	Lost int
}

func (e *WriteError) Error() string { return e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// PacketsLost is how many of the packets handed to Write did not reach the
// kernel.
func (e *WriteError) PacketsLost() int { return e.Lost }

// Write writes bufs as wireguard's tun does, coalescing with GRO when the
// device has offloads. A failed write returns a *WriteError that says how
// many packets were lost: a refused coalesced write takes with it every
// packet merged into it, which the count of wireguard's joined errors (one
// per write system call) does not show.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	gro := d.VNetHdr() && offset >= virtioNetHdrLen
	if gro {
		for _, b := range bufs {
			b[offset-virtioNetHdrLen+1] = notWritten
		}
	}
	n, err := d.Device.Write(bufs, offset)
	if err == nil {
		return n, nil
	}
	return n, &WriteError{Err: err, Lost: lostInWrite(bufs, offset, n, err, gro)}
}

// lostInWrite counts the packets of a failed write of bufs that did not
// reach the kernel; n is the bytes written. With GRO, each buffer's virtio
// header says what became of it: zeroed, written alone; a GSO type, the
// head of a coalesced write; notWritten, merged into such a head. The
// writes that fail are the coalesced ones (EINVAL), so their heads and
// what was merged into them are lost. An error on a lone packet is counted
// from the joined errors, one per failed write.
func lostInWrite(bufs [][]byte, offset, n int, err error, gro bool) int {
	if n == 0 {
		return len(bufs)
	}
	failedWrites := 1
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		failedWrites = len(j.Unwrap())
	}
	if !gro {
		return failedWrites
	}
	heads, merged := 0, 0
	for _, b := range bufs {
		switch b[offset-virtioNetHdrLen+1] {
		case unix.VIRTIO_NET_HDR_GSO_NONE:
		case notWritten:
			merged++
		default:
			heads++
		}
	}
	return heads + merged + max(0, failedWrites-heads)
}
