package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/tun"
)

// bufSize is one packet buffer: headroom plus the largest IP packet, so a
// TUN write can coalesce a whole GRO superpacket into the buffer.
const bufSize = encap.Headroom + 65535

// Start starts the two forwarding loops. They run until the device and the
// socket are closed, which their owner does (the router never closes
// them); Wait then returns. If a loop fails first, Failed is closed and Err
// says why.
func (r *Router) Start() {
	for i := range r.workers {
		w := r.w(i)
		for _, loop := range []func() error{w.outbound, w.inbound} {
			r.loops.Go(func() {
				if err := loop(); err != nil {
					r.failOnce.Do(func() {
						r.failErr = err
						close(r.failed)
					})
				}
			})
		}
	}
}

// Worker is one forwarding worker's share of the OS: a TUN queue, the
// socket it receives on (one of a SO_REUSEPORT group on the data port),
// and the socket it sends from (its own source port, so that the peer's
// kernel spreads the flows it sends over the peer's workers). In and Out
// may be the same socket. A flow stays on one worker in both directions:
// the kernel steers a flow's packets to the TUN queue its replies were
// written on, and the peer's reuseport hash sends a source port to one
// socket.
type Worker struct {
	Dev     Device
	In, Out Conn
}

// worker runs one Worker's two loops.
type worker struct {
	*Router
	Worker
}

func (r *Router) w(i int) *worker { return &worker{r, r.workers[i]} }

// Wait waits for the forwarding loops to end.
func (r *Router) Wait() { r.loops.Wait() }

// Failed is closed when a forwarding loop has failed.
func (r *Router) Failed() <-chan struct{} { return r.failed }

// Err is why a forwarding loop failed, once Failed is closed.
func (r *Router) Err() error {
	select {
	case <-r.failed:
		return r.failErr
	default:
		return nil
	}
}

func closedErr(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)
}

func newBufs(n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, bufSize)
	}
	return bufs
}

// outboundState is the TUN → underlay loop's preallocated working set.
type outboundState struct {
	bufs   [][]byte // pool buffers, read at encap.Headroom
	sizes  []int
	frames [][]byte // each packet with its encap header, as sent
	owner  []*entry // peer of each frame, nil once handled or dropped
	group  [][]byte
}

// outBatchPackets is how many packets one outbound batch holds: a
// BatchSize's worth accumulated from several reads, plus room for one more
// read (a superpacket splits into up to BatchSize packets).
func (r *worker) outBatchPackets() int { return 2 * r.Dev.BatchSize() }

func (r *worker) newOutbound() *outboundState {
	n := r.outBatchPackets()
	return &outboundState{
		bufs:   newBufs(n),
		sizes:  make([]int, n),
		frames: make([][]byte, n),
		owner:  make([]*entry, n),
		group:  make([][]byte, 0, n),
	}
}

// outbound is the TUN → underlay loop. It waits for a packet, then reads
// on without waiting (ReadMore) as long as the TUN has a packet and the
// batch has room for another read, then sends the batch: small packets,
// which the TUN returns one per read, leave in one sendmmsg (one GSO
// message per peer and size) instead of one system call each. A lone
// packet is sent after one more read finds the queue empty. Reader and
// sender stay on one goroutine: a hand-off between goroutines costs a
// thread wakeup per batch, which measured slower.
func (r *worker) outbound() error {
	s := r.newOutbound()
	batch := r.Dev.BatchSize()
	n := 0
	for {
		var k int
		var err error
		if n == 0 {
			k, err = r.Dev.Read(s.bufs, s.sizes, encap.Headroom)
		} else {
			k, err = r.Dev.ReadMore(s.bufs[n:], s.sizes[n:], encap.Headroom)
		}
		r.ctr.tunReads.Add(1)
		if err != nil {
			switch {
			case closedErr(err):
				return nil
			case errors.Is(err, tun.ErrTooManySegments):
				// The packets split so far are valid; the rest are lost.
				r.drop(DropTooBig, 1)
			default:
				return fmt.Errorf("read from TUN: %w", err)
			}
		}
		more := k > 0 // a read that found nothing ends the batch
		n += k
		if n == 0 || (more && batch > 1 && len(s.bufs)-n >= batch) {
			continue
		}
		r.forwardOut(s, n)
		n = 0
		r.busyPoll()
	}
}

// busyPoll spins, up to Config.BusyPoll, until the TUN has another packet:
// a worker that goes back to sleep at once pays a thread wakeup for the
// next one.
func (r *worker) busyPoll() {
	if r.cfg.BusyPoll <= 0 {
		return
	}
	deadline := time.Now().Add(r.cfg.BusyPoll)
	for !r.Dev.Readable() && time.Now().Before(deadline) {
	}
}

// forwardOut encapsulates the first n packets of s in place, groups them by
// peer and sends each group as one batch: the codec writes its headers
// over a whole group in one call.
func (r *worker) forwardOut(s *outboundState, n int) {
	t := r.table.Load()
	codec := t.codec
	hdr := codec.HeaderLen()
	r.txBatch.Observe(float64(n))
	var noRoute, malformed, tooBig int
	for i := range n {
		s.owner[i] = nil
		pkt := s.bufs[i][encap.Headroom : encap.Headroom+s.sizes[i]]
		_, dst, ok := encap.IPAddrs(pkt)
		if !ok {
			malformed++
			continue
		}
		e := t.lookup(dst)
		if e == nil {
			if nonce, ok := outboundProbe(pkt, family.First(t.local), dst); ok {
				r.probeOut.Store(nonce)
				continue
			}
			noRoute++
			continue
		}
		if !e.peer.PartialChecksums {
			tun.CompleteChecksum(pkt)
		}
		head, tail := sealRoom(e)
		if encap.Headroom+len(pkt)+tail > len(s.bufs[i]) {
			tooBig++
			continue
		}
		s.frames[i] = s.bufs[i][encap.Headroom-hdr-head : encap.Headroom+len(pkt)+tail]
		s.owner[i] = e
	}
	r.drop(DropNoRoute, noRoute)
	r.drop(DropMalformed, malformed)
	r.drop(DropTooBig, tooBig)

	now := time.Now().UnixNano()
	var txPackets, txBytes uint64
	for i := range n {
		e := s.owner[i]
		if e == nil {
			continue
		}
		// Gather this peer's frames, in order; most batches have one peer.
		g := s.group[:0]
		var bytes uint64
		head, _ := sealRoom(e)
		over := hdr + sealOverhead(e)
		for j := i; j < n; j++ {
			if s.owner[j] == e {
				g = append(g, s.frames[j])
				bytes += uint64(len(s.frames[j]) - over)
				s.owner[j] = nil
			}
		}
		codec.Wrap(g, head, encap.Remote{MAC: e.peer.MAC})
		if !sealGroup(e, g, now) {
			// No session yet: the peer holds a few frames until its
			// handshake completes; the rest are dropped.
			r.drop(DropNoSession, len(g)-e.peer.Secure.Stage(g, now))
			continue
		}
		sent, err := r.Out.WriteTo(g, e.ep)
		if err != nil {
			r.drop(DropSendError, len(g)-sent)
			if sent < len(g) {
				bytes = bytes * uint64(sent) / uint64(len(g))
			}
		}
		e.stats.txPackets.Add(uint64(sent))
		e.stats.txBytes.Add(bytes)
		txPackets += uint64(sent)
		txBytes += bytes
	}
	r.ctr.txPackets.Add(txPackets)
	r.ctr.txBytes.Add(txBytes)
}

// inboundState is the underlay → TUN loop's preallocated working set.
type inboundState struct {
	bufs     [][]byte // what the socket reads into when it has no UDP GRO
	views    [][]byte // the datagrams read
	srcs     []netip.AddrPort
	kept     [][]byte // the datagrams from peers, opened, for the codec to unwrap in place
	from     []*entry // the peer each kept datagram came from
	verdicts []encap.Verdict
	out      [2][][]byte // the inner packets to write, by tun.Checksum mode
}

func (r *worker) newInbound() *inboundState {
	n := r.Dev.BatchSize()
	return &inboundState{
		bufs:     newBufs(n),
		views:    make([][]byte, n),
		srcs:     make([]netip.AddrPort, n),
		kept:     make([][]byte, n),
		from:     make([]*entry, n),
		verdicts: make([]encap.Verdict, n),
		out:      [2][][]byte{make([][]byte, 0, n), make([][]byte, 0, n)},
	}
}

func (r *worker) inbound() error {
	s := r.newInbound()
	for {
		n, err := r.In.ReadViews(s.bufs, encap.Headroom, s.views, s.srcs)
		if err != nil {
			if closedErr(err) {
				return nil
			}
			if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.ENETUNREACH) {
				continue // an ICMP error for an earlier send; not ours to stop for
			}
			return fmt.Errorf("read from underlay: %w", err)
		}
		r.forwardIn(s, n)
	}
}

// forwardIn checks and decapsulates the first n datagrams of s and writes
// the inner packets to the TUN: one batch for the peers that send complete
// checksums and one for those that leave them partial (most batches come
// from one peer, so one of the two is empty). It takes three passes: the
// sender of each datagram (and, encrypted, its plaintext); the codec over
// all that are left, in one call; the inner packets' checks and delivery.
// Nothing is copied: the inner packets are written from where the socket
// left them (tun.Queue.Write takes views without headroom).
func (r *worker) forwardIn(s *inboundState, n int) {
	t := r.table.Load()
	r.rxBatch.Observe(float64(n))
	// The inner packets to write, by checksum mode (in locals while the
	// loop appends: no store to the heap per packet).
	full, partial := s.out[tun.ChecksumFull][:0], s.out[tun.ChecksumPartial][:0]
	var drops [numDropReasons]int
	now := time.Now().UnixNano()

	var last netip.Addr
	var e *entry
	k := 0
	for i := range n {
		src := s.srcs[i].Addr()
		if src != last || e == nil {
			e, last = t.byAddr[src], src
		}
		d := s.views[i]
		if e == nil {
			if nonce, ok := inboundProbe(d, src); ok {
				r.probeIn.Store(nonce)
				continue
			}
			drops[DropUnknownPeer]++
			continue
		}
		if e.peer.Secure != nil {
			pt, reason, ok := openDatagram(e, d, now)
			if !ok {
				if reason != dropNone {
					drops[reason]++
				}
				continue
			}
			d = pt
		}
		s.kept[k], s.from[k] = d, e
		k++
	}
	kept, from, verdicts := s.kept[:k], s.from[:k], s.verdicts[:k]
	t.codec.Unwrap(kept, verdicts)

	var runPackets, runBytes uint64 // for the current run of datagrams from e
	e = nil
	flush := func() {
		if e != nil && runPackets > 0 {
			e.stats.rxPackets.Add(runPackets)
			e.stats.rxBytes.Add(runBytes)
			e.stats.lastRx.Store(now)
		}
		runPackets, runBytes = 0, 0
	}
	for i, inner := range kept {
		if from[i] != e {
			flush()
			e = from[i]
		}
		switch v := verdicts[i]; v {
		case encap.Deliver:
		case encap.Reply:
			if reason := r.answer(e, inner); reason != dropNone {
				drops[reason]++
			}
			continue
		default:
			drops[verdictDrop(v)]++
			continue
		}
		isrc, idst, ok := encap.IPAddrs(inner)
		switch {
		case !ok:
			drops[DropMalformed]++
			continue
		case !e.peer.owns(isrc):
			drops[DropSpoofed]++
			continue
		case !t.isLocal(idst):
			drops[DropNotLocal]++
			continue
		}
		l := encap.IPLen(inner) // trims Ethernet padding
		if e.peer.PartialChecksums {
			partial = append(partial, inner[:l])
		} else {
			full = append(full, inner[:l])
		}
		runPackets++
		runBytes += uint64(l)
	}
	flush()
	s.out[tun.ChecksumFull], s.out[tun.ChecksumPartial] = full, partial
	for reason, c := range drops {
		r.drop(DropReason(reason), c)
	}
	for m, out := range s.out {
		if len(out) > 0 {
			r.writeTUN(out, 0, tun.Checksum(m))
		}
	}
}

// answer sends a codec's reply to a control frame (an ARP request, a
// Neighbor Solicitation) back to peer e, where the datagram came from, and
// returns the drop reason if it is not sent (dropNone if it is). A peer that
// seals is not answered: weft hosts never ask, and the answer would leave
// in plaintext.
func (r *worker) answer(e *entry, reply []byte) DropReason {
	if e.peer.Secure != nil {
		return DropBadEtherType
	}
	if err := r.In.WriteOne(reply, e.peer.Underlay); err != nil {
		return DropSendError
	}
	return dropNone
}

// writeTUN writes out to the device and counts what the kernel took and
// refused (tun_write_error; the error itself says no more than the count,
// and is not logged per batch). The device coalesces, and falls back by
// itself when the kernel refuses coalesced writes.
func (r *worker) writeTUN(out [][]byte, off int, mode tun.Checksum) {
	res, _ := r.Dev.Write(out, off, mode)
	r.ctr.tunWrites.Add(uint64(res.Syscalls))
	r.ctr.rxPackets.Add(uint64(res.Packets))
	r.ctr.rxBytes.Add(uint64(res.Bytes))
	r.drop(DropTUNWriteError, res.Lost)
}
