package tun

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchSize is how many packets a Read may return and a Write is given at
// most by the forwarding loops with offloads on (wireguard's
// conn.IdealBatchSize). The link's gso_max_segs is set to it, so that a
// superpacket never splits into more segments than one Read holds.
const batchSize = 128

// Queue is one queue of the TUN device: its own file descriptor, read
// buffer, coalescing tables and write state. One goroutine reads from a
// queue and one writes to it (they may be different goroutines); a
// forwarding worker owns one queue, as it owns one socket.
//
// With several queues (IFF_MULTI_QUEUE) the kernel picks the queue a packet
// is read from by its flow hash, and remembers the queue on which a flow's
// packets were last written (the TUN flow table, tun_flow_update): a
// flow's replies are then read from the queue its packets were written on.
// A worker that writes a flow's inbound packets thus also reads its
// outbound ones, and a flow stays on one worker in both directions.
type Queue struct {
	file   *os.File
	raw    syscall.RawConn
	vnet   bool // IFF_VNET_HDR: offloads on
	uso    bool // the kernel takes UDP GSO (TUN_F_USO4|6)
	state  *writeState
	closed atomic.Bool

	poll poller
	try  tryReader

	gro      coalescer
	iovs     []unix.Iovec
	wvErr    unix.Errno            // result of the last writev, set by doWritev
	writevFn func(fd uintptr) bool // q.doWritev, bound once
	readBuf  []byte                // for a Read whose first buffer cannot take a superpacket in place
	// A packet of a refused coalesced write, written again alone.
	alone    [2][]byte
	aloneHdr [virtioNetHdrLen]byte
}

// writeState is shared by a device's queues: a kernel that refuses a
// coalesced write on one queue refuses it on all.
type writeState struct {
	fallback atomic.Int32
	log      *slog.Logger
}

func (w *writeState) level() Fallback { return Fallback(w.fallback.Load()) }

// backOff raises the fallback to at least to, and logs a change.
func (w *writeState) backOff(to Fallback, err error) {
	for {
		cur := w.fallback.Load()
		if cur >= int32(to) {
			return
		}
		if w.fallback.CompareAndSwap(cur, int32(to)) {
			w.log.Warn("the kernel refused a coalesced TUN write (the Linux 6.6.44 / 6.1 LTS virtio-net regression); the packets were written one by one",
				"fallback", to.String(), "err", err)
			return
		}
	}
}

func newQueue(fd int, vnet, uso bool, state *writeState) (*Queue, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set TUN queue non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("TUN queue raw conn: %w", err)
	}
	q := &Queue{file: f, raw: raw, vnet: vnet, uso: uso, state: state, poll: poller{raw: raw}}
	q.poll.check = q.poll.run
	q.try.fn = q.try.run
	q.writevFn = q.doWritev
	if vnet {
		q.gro.reset(batchSize)
		q.iovs = make([]unix.Iovec, 0, maxCoalesce+1)
	}
	return q, nil
}

// BatchSize is the most packets one Read returns, and the batch Write is
// built for: 128 with offloads, 1 without.
func (q *Queue) BatchSize() int {
	if q.vnet {
		return batchSize
	}
	return 1
}

// Readable reports whether a Read would return at once. Only the goroutine
// that reads may call it. Without offloads it is always false: that mode
// is the one-packet-per-system-call design, kept as it is for comparison.
func (q *Queue) Readable() bool {
	if !q.vnet {
		return false
	}
	if err := q.raw.Control(q.poll.check); err != nil {
		return false
	}
	return q.poll.ready
}

// Fallback reports how far the device backs off from coalesced writes.
func (q *Queue) Fallback() Fallback { return q.state.level() }

// WriteFallback reports whether the kernel refused coalesced writes and
// the device coalesces less or not at all (weft_tun_gro_fallback).
func (q *Queue) WriteFallback() bool { return q.state.level() != FallbackNone }

// Close closes the queue's file descriptor, which ends a blocked Read. A
// second Close does nothing (the router closes its queues to stop, and
// the device's owner closes the device afterwards).
func (q *Queue) Close() error {
	if q.closed.Swap(true) {
		return nil
	}
	return q.file.Close()
}

// Read reads one packet from the queue into bufs[0][offset:] and, with
// offloads, splits a TSO/USO superpacket into bufs (see Split: the TCP and
// UDP checksums are left partial; CompleteChecksum finishes them). It
// returns how many packets it wrote, with their lengths in sizes. With
// offloads, offset must leave room for the virtio-net header, which is read
// in front of the packet, so that a packet that is not a superpacket is
// not copied at all.
func (q *Queue) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	if !q.vnet {
		n, err := q.file.Read(bufs[0][offset:])
		if err != nil {
			return 0, q.ioErr("read", err)
		}
		sizes[0] = n
		return 1, nil
	}
	in, err := q.readInto(bufs[0], offset)
	if err != nil {
		return 0, err
	}
	n, err := q.file.Read(in)
	if err != nil {
		return 0, q.ioErr("read", err)
	}
	return Split(in[:n], bufs, sizes, offset)
}

// readInto is where a read with offloads puts the virtio-net header and the
// packet: in front of offset in buf, so that a packet that is not a
// superpacket stays where it is read, or the queue's own buffer when buf is
// too short to take a superpacket.
func (q *Queue) readInto(buf []byte, offset int) ([]byte, error) {
	if offset < virtioNetHdrLen {
		return nil, fmt.Errorf("tun: read offset %d leaves no room for the virtio-net header", offset)
	}
	in := buf[offset-virtioNetHdrLen:]
	if len(in) < virtioNetHdrLen+maxIPLen {
		if q.readBuf == nil {
			q.readBuf = make([]byte, virtioNetHdrLen+maxIPLen)
		}
		in = q.readBuf
	}
	return in, nil
}

// ReadMore is Read for the rest of a batch: it returns 0 and no error at
// once when the queue holds no packet, instead of waiting for one. It is
// one system call, where asking first (Readable) and then reading is two:
// a batch of k small packets costs k+1 reads instead of 2k calls. Without
// offloads it returns 0 without a system call (one packet per batch, as
// Readable says). Only the reading goroutine may call it.
func (q *Queue) ReadMore(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || !q.vnet {
		return 0, nil
	}
	in, err := q.readInto(bufs[0], offset)
	if err != nil {
		return 0, err
	}
	q.try.buf = in
	err = q.raw.Read(q.try.fn)
	q.try.buf = nil
	if err == nil {
		err = q.try.err
	}
	switch {
	case errors.Is(err, unix.EAGAIN):
		return 0, nil
	case err != nil:
		return 0, q.ioErr("read", err)
	case q.try.n == 0:
		return 0, q.ioErr("read", io.EOF)
	}
	return Split(in[:q.try.n], bufs, sizes, offset)
}

// tryReader is one non-blocking read(2) through the queue's RawConn; its
// fields are preallocated so that a ReadMore allocates nothing.
type tryReader struct {
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool // run, bound once
}

// run reads once and reports done whatever came of it, so that RawConn.Read
// never parks the goroutine: EAGAIN is an answer here.
func (t *tryReader) run(fd uintptr) bool {
	for {
		n, err := unix.Read(int(fd), t.buf)
		if err == unix.EINTR {
			continue
		}
		t.n, t.err = max(n, 0), err
		return true
	}
}

// WriteResult is what became of a batch given to Write.
type WriteResult struct {
	Packets  int // packets the kernel took
	Bytes    int // their IP bytes
	Lost     int // packets the kernel refused (they are dropped)
	Syscalls int // write and writev system calls made
}

func (r *WriteResult) took(packets, bytes int) {
	r.Packets += packets
	r.Bytes += bytes
}

// Write writes the packets bufs[i][offset:] to the queue. With offloads it
// coalesces the consecutive segments of each TCP flow (and UDP flow, where
// the kernel takes UDP GSO) into one superpacket per write; mode says
// whether their checksums are complete (verified before coalescing) or
// partial (trusted, and handed to the kernel as CHECKSUM_PARTIAL). A
// coalesced write gathers the payloads from where they lie (writev): the
// buffers are not changed, apart from the virtio-net header written into
// the headroom in front of a packet that goes alone. offset may be 0 (the
// packets are views into a receive buffer, without headroom): such a
// packet is gathered behind a header kept here instead.
//
// When the kernel refuses a coalesced write with EINVAL (Linux 6.6.44 and
// the 6.1 LTS kernels with the same backport), its packets are written
// again one by one, so nothing is lost, and the device coalesces less from
// then on (see Fallback). The error, if any, is the first write that
// failed; the result says how many packets were written and lost.
func (q *Queue) Write(bufs [][]byte, offset int, mode Checksum) (WriteResult, error) {
	var r WriteResult
	if !q.vnet {
		var first error
		for _, b := range bufs {
			r.Syscalls++
			if err := q.write1(b[offset:]); err != nil {
				r.Lost++
				first = cmpErr(first, err)
				continue
			}
			r.took(1, len(b)-offset)
		}
		return r, first
	}
	g := &q.gro
	g.plan(bufs, offset, mode, q.uso, q.state.level())
	var first error
	for _, w := range g.writes {
		parts, grp := g.parts[w.lo:w.hi], &g.groups[w.g]
		r.Syscalls++
		if grp.n == 1 {
			if err := q.writeParts(parts); err != nil {
				r.Lost++
				first = cmpErr(first, err)
				continue
			}
			r.took(1, len(bufs[grp.head])-offset)
			continue
		}
		err := q.writev(parts)
		if err == nil {
			r.took(grp.n, q.groupBytes(bufs, offset, grp))
			continue
		}
		if !errors.Is(err, unix.EINVAL) {
			r.Lost += grp.n
			first = cmpErr(first, err)
			continue
		}
		q.state.backOff(fallbackAfter(bufs, offset, grp), err)
		for i := grp.head; i >= 0; i = int(g.next[i]) {
			r.Syscalls++
			if err := q.writeParts(single(q.alone[:0], bufs[i], offset, mode, q.aloneHdr[:])); err != nil {
				r.Lost++
				first = cmpErr(first, err)
				continue
			}
			r.took(1, len(bufs[i])-offset)
		}
	}
	return r, first
}

// fallbackAfter is the fallback a refused coalesced write of grp calls for:
// coalescing only equal segments if its last one was short, else none.
func fallbackAfter(bufs [][]byte, offset int, grp *group) Fallback {
	if len(bufs[grp.tail])-offset-grp.h.ipLen-grp.l4Len < grp.segSize {
		return FallbackEqualSegments
	}
	return FallbackSerial
}

func (q *Queue) groupBytes(bufs [][]byte, offset int, grp *group) int {
	n := 0
	for i := grp.head; i >= 0; i = int(q.gro.next[i]) {
		n += len(bufs[i]) - offset
	}
	return n
}

// cmpErr keeps the first error, and a closed device over anything else.
func cmpErr(first, err error) error {
	if first == nil || (errors.Is(err, os.ErrClosed) && !errors.Is(first, os.ErrClosed)) {
		return err
	}
	return first
}

func (q *Queue) write1(b []byte) error {
	if _, err := q.file.Write(b); err != nil {
		return q.ioErr("write", err)
	}
	return nil
}

// writeParts writes one packet given as one part or gathered from several.
func (q *Queue) writeParts(parts [][]byte) error {
	if len(parts) == 1 {
		return q.write1(parts[0])
	}
	return q.writev(parts)
}

func (q *Queue) writev(parts [][]byte) error {
	q.iovs = q.iovs[:0]
	for _, p := range parts {
		if len(p) > 0 {
			iov := unix.Iovec{Base: &p[0]}
			iov.SetLen(len(p))
			q.iovs = append(q.iovs, iov)
		}
	}
	q.wvErr = 0
	if err := q.raw.Write(q.writevFn); err != nil {
		return q.ioErr("writev", err)
	}
	if q.wvErr != 0 {
		return q.ioErr("writev", q.wvErr)
	}
	return nil
}

func (q *Queue) doWritev(fd uintptr) bool {
	_, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&q.iovs[0])), uintptr(len(q.iovs)))
	if e == unix.EAGAIN {
		return false // wait until writable
	}
	q.wvErr = e
	return true
}

// ioErr maps a closed queue (or a TUN detached under it) to os.ErrClosed.
func (q *Queue) ioErr(op string, err error) error {
	if q.closed.Load() || errors.Is(err, unix.EBADFD) || errors.Is(err, os.ErrClosed) {
		return os.ErrClosed
	}
	return fmt.Errorf("tun %s: %w", op, err)
}

// poller asks the kernel whether the queue holds a packet, without
// blocking and without taking the descriptor out of Go's poller (which
// os.File.Fd would do). Its fields are preallocated so that a check
// allocates nothing; only the reading goroutine uses it.
type poller struct {
	raw   syscall.RawConn
	fds   [1]unix.PollFd
	ready bool
	check func(fd uintptr) // p.run, bound once
}

func (p *poller) run(fd uintptr) {
	p.fds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	n, err := unix.Poll(p.fds[:], 0)
	p.ready = err == nil && n > 0 && p.fds[0].Revents&unix.POLLIN != 0
}
