package encap

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

const (
	// maxGSOSegments is the most datagrams one UDP GSO send may carry
	// (UDP_MAX_SEGMENTS on older kernels; newer ones allow 128).
	maxGSOSegments = 64
	// maxGSOBytes bounds a GSO send's payload below the 64 KiB IP limit.
	maxGSOBytes = 65000
	// groBufSize holds the largest datagram UDP GRO can hand us.
	groBufSize = 65535
	// socketBuffer is the send and receive buffer we ask the kernel for.
	socketBuffer = 8 << 20
)

// Endpoint is a peer's data-plane address, converted once to the forms the
// socket needs so that a send converts nothing.
type Endpoint struct {
	AddrPort netip.AddrPort
	ua       *net.UDPAddr
}

// NewEndpoint prepares ap for sending.
func NewEndpoint(ap netip.AddrPort) Endpoint {
	return Endpoint{AddrPort: ap, ua: net.UDPAddrFromAddrPort(ap)}
}

// ConnStats counts the socket's system calls. Fields are updated once per
// system call, never per datagram.
type ConnStats struct {
	Sendmmsg atomic.Uint64
	Recvmmsg atomic.Uint64
}

// Conn is a UDP socket that sends and receives batches of datagrams.
//
// ReadViews and WriteTo may run concurrently with each other, but each must
// be called from one goroutine at a time: the receive and the send side each
// own preallocated state and share no lock. WriteOne is safe from anywhere.
type Conn struct {
	uc    *net.UDPConn
	rc    syscall.RawConn
	batch interface {
		WriteBatch([]ipv4.Message, int) (int, error)
	}
	v6    bool
	gso   atomic.Bool
	gro   bool
	Stats ConnStats

	send sendState
	recv recvState
}

type sendState struct {
	msgs []ipv4.Message
	oob  [][]byte
}

type recvState struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte
	fn    func(fd uintptr) bool // bound once: a RawConn.Read callback that does not allocate
	want  int
	got   int
	errno syscall.Errno

	// UDP GRO: datagrams land in groBufs and are handed out as views of
	// their segments; a batch that did not fit resumes at (pendMsg, pendOff).
	groBufs  [][]byte
	groSeg   []int
	groSrc   []netip.AddrPort
	pendMsgs int
	pendMsg  int
	pendOff  int
}

var oobSpace = unix.CmsgSpace(4)

// Listen opens a batched UDP socket on addr. The socket's family follows
// addr; an unspecified address listens on all addresses of that family. It
// probes UDP GSO and GRO and uses them where the kernel accepts them, unless
// offload is false. batch is the most datagrams one call handles.
func Listen(addr netip.AddrPort, batch int, offload bool) (*Conn, error) {
	return listen(addr, batch, offload, false)
}

// ListenReusePort is Listen with SO_REUSEPORT: several sockets, one per
// worker, share addr, and the kernel gives each datagram to one of them by
// a hash of its addresses and ports, so a flow always reaches the same
// socket.
func ListenReusePort(addr netip.AddrPort, batch int, offload bool) (*Conn, error) {
	return listen(addr, batch, offload, true)
}

func listen(addr netip.AddrPort, batch int, offload, reusePort bool) (*Conn, error) {
	network := "udp4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network = "udp6"
	}
	var lc net.ListenConfig
	if reusePort {
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	pc, err := lc.ListenPacket(context.Background(), network, addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen on udp %s: %w", addr, err)
	}
	uc := pc.(*net.UDPConn)
	c := &Conn{uc: uc, v6: network == "udp6"}
	if c.rc, err = uc.SyscallConn(); err != nil {
		uc.Close()
		return nil, fmt.Errorf("udp socket: %w", err)
	}
	if c.v6 {
		c.batch = ipv6.NewPacketConn(uc)
	} else {
		c.batch = ipv4.NewPacketConn(uc)
	}
	var gso, gro bool
	if err := c.rc.Control(func(fd uintptr) {
		setBuffer(int(fd), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF)
		setBuffer(int(fd), unix.SO_SNDBUFFORCE, unix.SO_SNDBUF)
		_, errSeg := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		gso = errSeg == nil
		gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	}); err != nil {
		uc.Close()
		return nil, fmt.Errorf("udp socket options: %w", err)
	}
	if !offload && gro {
		_ = c.rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 0) })
	}
	c.gso.Store(gso && offload)
	c.gro = gro && offload
	c.initSend(batch)
	c.initRecv(batch)
	return c, nil
}

func setBuffer(fd, force, plain int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, socketBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, socketBuffer)
	}
}

// LocalAddr is the socket's bound address.
func (c *Conn) LocalAddr() netip.AddrPort { return c.uc.LocalAddr().(*net.UDPAddr).AddrPort() }

// GSO reports whether sends use UDP segmentation offload. It can turn false
// at run time if the kernel refuses a segmented send.
func (c *Conn) GSO() bool { return c.gso.Load() }

// GRO reports whether receives use UDP receive offload.
func (c *Conn) GRO() bool { return c.gro }

// Close closes the socket; blocked reads return an error.
func (c *Conn) Close() error { return c.uc.Close() }

func (c *Conn) initSend(batch int) {
	c.send.msgs = make([]ipv4.Message, batch)
	c.send.oob = make([][]byte, batch)
	for i := range c.send.oob {
		c.send.oob[i] = make([]byte, oobSpace)
	}
}

// WriteTo sends each of pkts as one datagram to ep, in order. pkts[i] is the
// whole UDP payload. Runs of equal-length datagrams go out as one UDP GSO
// send whose segments are gathered straight from the callers' buffers. It
// returns how many datagrams the kernel took; a datagram the kernel refuses
// is skipped (and reported through err) so that one bad packet does not hold
// up the rest of the batch.
func (c *Conn) WriteTo(pkts [][]byte, ep Endpoint) (int, error) {
	sent := 0
	var firstErr error
	for len(pkts) > 0 {
		gso := c.gso.Load()
		msgs, covered := c.pack(pkts, ep, gso)
		done := 0 // datagrams of pkts fully handled
		for m := 0; m < len(msgs); {
			n, err := c.batch.WriteBatch(msgs[m:], 0)
			c.Stats.Sendmmsg.Add(1)
			if n == 0 && err == nil {
				err = errors.New("sendmmsg sent nothing")
			}
			for _, msg := range msgs[m : m+n] {
				sent += len(msg.Buffers)
				done += len(msg.Buffers)
			}
			m += n
			if err == nil {
				continue
			}
			if gso && len(msgs[m].Buffers) > 1 && errors.Is(err, unix.EIO) {
				// The kernel (or the route's device) cannot segment:
				// turn GSO off and send the rest one datagram each.
				c.gso.Store(false)
				break
			}
			if firstErr == nil {
				firstErr = err
			}
			done += len(msgs[m].Buffers)
			m++
		}
		if c.gso.Load() != gso && done < covered {
			pkts = pkts[done:]
			continue
		}
		pkts = pkts[covered:]
	}
	if firstErr != nil {
		return sent, fmt.Errorf("sendmmsg to %s: %w", ep.AddrPort, firstErr)
	}
	return sent, nil
}

// pack lays pkts out as messages, grouping equal-size runs for GSO. It
// returns the messages and how many of pkts they cover (all of them unless
// the message array is full).
func (c *Conn) pack(pkts [][]byte, ep Endpoint, gso bool) ([]ipv4.Message, int) {
	msgs := c.send.msgs[:0]
	i := 0
	for i < len(pkts) && len(msgs) < cap(msgs) {
		j := i + 1
		if gso {
			seg, total := len(pkts[i]), len(pkts[i])
			for j < len(pkts) && j-i < maxGSOSegments && total+len(pkts[j]) <= maxGSOBytes && len(pkts[j]) <= seg {
				total += len(pkts[j])
				j++
				if len(pkts[j-1]) < seg {
					break // only the last segment may be shorter
				}
			}
		}
		msgs = msgs[:len(msgs)+1]
		m := &msgs[len(msgs)-1]
		m.Buffers = pkts[i:j]
		m.Addr = ep.ua
		m.OOB = nil
		if j-i > 1 {
			oob := c.send.oob[len(msgs)-1]
			putCmsg(oob, unix.UDP_SEGMENT, 2)
			binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(len(pkts[i])))
			m.OOB = oob[:unix.CmsgSpace(2)]
		}
		i = j
	}
	return msgs, i
}

func putCmsg(b []byte, typ, dataLen int) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = int32(typ)
	h.SetLen(unix.CmsgLen(dataLen))
}

// WriteOne sends one datagram to dst outside the batch path (for rare
// replies such as ARP). It may allocate.
func (c *Conn) WriteOne(b []byte, dst netip.AddrPort) error {
	_, err := c.uc.WriteToUDPAddrPort(b, dst)
	return err
}

func (c *Conn) initRecv(batch int) {
	r := &c.recv
	n := batch
	if c.gro {
		// Each GRO datagram may carry dozens of segments: fewer, larger reads.
		n = max(1, batch/8)
		r.groBufs = make([][]byte, n)
		for i := range r.groBufs {
			r.groBufs[i] = make([]byte, groBufSize)
		}
		r.groSeg = make([]int, n)
		r.groSrc = make([]netip.AddrPort, n)
	}
	r.hdrs = make([]unix.Mmsghdr, n)
	r.iovs = make([]unix.Iovec, n)
	r.names = make([]unix.RawSockaddrInet6, n)
	r.oob = make([]byte, n*oobSpace)
	for i := range r.hdrs {
		h := &r.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.Iovlen = 1
		h.Control = &r.oob[i*oobSpace]
	}
	r.fn = r.recvmmsg
}

func (r *recvState) recvmmsg(fd uintptr) bool {
	for i := range r.hdrs[:r.want] {
		r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		r.hdrs[i].Hdr.SetControllen(oobSpace)
		r.hdrs[i].Hdr.Flags = 0
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.want), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // not ready: let the runtime poller wait
		}
		r.got, r.errno = int(n), e
		return true
	}
}

// ReadViews reads a batch of datagrams and copies none: views[i] is
// datagram i, srcs[i] the address it came from. With UDP GRO the views
// point into c's own receive buffers, one per segment of a coalesced
// datagram, where they stay valid, and the caller's to change in place,
// until the next read from c; without it the datagrams are read into
// bufs[i][offset:] and the views point there. A view's capacity ends with
// it, so nothing written through it reaches the next datagram. It blocks
// until at least one datagram is available; a zero-length datagram is
// returned too, as an empty view, for the caller to count.
func (c *Conn) ReadViews(bufs [][]byte, offset int, views [][]byte, srcs []netip.AddrPort) (int, error) {
	r := &c.recv
	if !c.gro {
		n := min(len(bufs), len(views), len(r.hdrs))
		if err := c.readInto(bufs[:n], offset); err != nil {
			return 0, err
		}
		for i := range r.got {
			l := offset + int(r.hdrs[i].Len)
			views[i] = bufs[i][offset:l:l]
			srcs[i] = sockaddrToAddrPort(&r.names[i])
		}
		return r.got, nil
	}
	if r.pendMsgs == 0 {
		if err := c.readInto(r.groBufs, 0); err != nil {
			return 0, err
		}
	}
	n := 0
	for r.pendMsg < r.pendMsgs && n < len(views) {
		m := r.pendMsg
		total := int(r.hdrs[m].Len)
		seg := r.groSeg[m]
		if seg <= 0 {
			seg = max(total, 1)
		}
		if total == 0 {
			views[n], srcs[n] = r.groBufs[m][:0:0], r.groSrc[m]
			n++
		}
		for r.pendOff < total && n < len(views) {
			end := min(r.pendOff+seg, total)
			views[n], srcs[n] = r.groBufs[m][r.pendOff:end:end], r.groSrc[m]
			n++
			r.pendOff = end
		}
		if r.pendOff >= total {
			r.pendMsg++
			r.pendOff = 0
		}
	}
	if r.pendMsg >= r.pendMsgs {
		r.pendMsgs = 0
	}
	return n, nil
}

func (c *Conn) readInto(bufs [][]byte, offset int) error {
	r := &c.recv
	for i, b := range bufs {
		r.iovs[i].Base = &b[offset]
		r.iovs[i].SetLen(len(b) - offset)
	}
	r.want = len(bufs)
	if err := c.rc.Read(r.fn); err != nil {
		return fmt.Errorf("recvmmsg: %w", err)
	}
	c.Stats.Recvmmsg.Add(1)
	if r.errno != 0 {
		return fmt.Errorf("recvmmsg: %w", r.errno)
	}
	if c.gro {
		for i := range r.got {
			r.groSeg[i] = groSegment(r.oob[i*oobSpace : i*oobSpace+int(r.hdrs[i].Hdr.Controllen)])
			r.groSrc[i] = sockaddrToAddrPort(&r.names[i])
		}
		r.pendMsgs, r.pendMsg, r.pendOff = r.got, 0, 0
	}
	return nil
}

// groSegment returns the UDP_GRO segment size from a control message
// buffer, or 0 if there is none.
func groSegment(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):]))
		}
		oob = oob[min(len(oob), unix.CmsgSpace(l-unix.CmsgLen(0))):]
	}
	return 0
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	if sa.Family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
}
