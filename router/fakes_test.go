package router

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/tun"
)

// fakeConn records what is sent and serves prepared datagrams.
type fakeConn struct {
	mu      sync.Mutex
	sent    []sentGroup
	oneSent [][]byte
	count   int // datagrams sent, when record is false
	record  bool
	in      chan []datagram
	closed  chan struct{}
	once    sync.Once
	gro     []byte // ReadViews' receive buffer (the reading goroutine's)
}

type sentGroup struct {
	dst  netip.AddrPort
	pkts [][]byte
}

type datagram struct {
	src     netip.AddrPort
	payload []byte
}

func newFakeConn(record bool) *fakeConn {
	return &fakeConn{record: record, in: make(chan []datagram, 16), closed: make(chan struct{})}
}

func (c *fakeConn) WriteTo(pkts [][]byte, ep encap.Endpoint) (int, error) {
	if !c.record {
		c.count += len(pkts)
		return len(pkts), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g := sentGroup{dst: ep.AddrPort}
	for _, p := range pkts {
		g.pkts = append(g.pkts, append([]byte(nil), p...))
	}
	c.sent = append(c.sent, g)
	return len(pkts), nil
}

func (c *fakeConn) WriteOne(b []byte, dst netip.AddrPort) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.oneSent = append(c.oneSent, append([]byte(nil), b...))
	return nil
}

// load puts datagram p at i of s, as the socket would without UDP GRO: in
// bufs[i] behind the headroom, with views[i] on it.
func (s *inboundState) load(i int, p []byte) {
	n := encap.Headroom + copy(s.bufs[i][encap.Headroom:], p)
	s.views[i] = s.bufs[i][encap.Headroom:n:n]
}

// ReadViews packs a batch back to back in one buffer, as UDP GRO leaves
// it, and returns views without headroom, as encap.Conn does: the router
// must not write in front of a datagram.
func (c *fakeConn) ReadViews(_ [][]byte, _ int, views [][]byte, srcs []netip.AddrPort) (int, error) {
	select {
	case <-c.closed:
		return 0, os.ErrClosed
	case batch := <-c.in:
		if c.gro == nil {
			c.gro = make([]byte, 1<<20)
		}
		at := 0
		for i, d := range batch {
			n := copy(c.gro[at:], d.payload)
			views[i], srcs[i] = c.gro[at:at+n:at+n], d.src
			at += n
		}
		return len(batch), nil
	}
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fakeConn) groups() []sentGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sentGroup(nil), c.sent...)
}

// fakeDevice serves prepared packets to Read and records writes.
type fakeDevice struct {
	mu      sync.Mutex
	written [][]byte
	count   int
	record  bool
	in      chan [][]byte
	closed  chan struct{}
	once    sync.Once
	batch   int
	calls   int            // Write calls
	modes   []tun.Checksum // mode of each Write call
	refuse  int            // refuse this many packets at the end of each Write
}

func newFakeDevice(record bool) *fakeDevice {
	return &fakeDevice{record: record, in: make(chan [][]byte, 16), closed: make(chan struct{}), batch: 128}
}

func (d *fakeDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-d.closed:
		return 0, os.ErrClosed
	case batch := <-d.in:
		return loadBatch(batch, bufs, sizes, offset), nil
	}
}

// ReadMore is Read when a batch is waiting, 0 at once when none is.
func (d *fakeDevice) ReadMore(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-d.closed:
		return 0, os.ErrClosed
	case batch := <-d.in:
		return loadBatch(batch, bufs, sizes, offset), nil
	default:
		return 0, nil
	}
}

func loadBatch(batch, bufs [][]byte, sizes []int, offset int) int {
	for i, p := range batch {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(batch)
}

func (d *fakeDevice) Write(bufs [][]byte, offset int, mode tun.Checksum) (tun.WriteResult, error) {
	var res tun.WriteResult
	var err error
	d.calls++
	res.Syscalls = 1
	if d.refuse > 0 {
		k := min(d.refuse, len(bufs))
		res.Lost = k
		bufs = bufs[:len(bufs)-k]
		err = fmt.Errorf("tun write: %w", unix.EIO)
	}
	for _, b := range bufs {
		res.Packets++
		res.Bytes += len(b) - offset
	}
	if !d.record {
		d.count += len(bufs)
		return res, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.modes = append(d.modes, mode)
	for _, b := range bufs {
		d.written = append(d.written, append([]byte(nil), b[offset:]...))
	}
	return res, err
}

func (d *fakeDevice) BatchSize() int { return d.batch }

func (d *fakeDevice) WriteFallback() bool { return false }

func (d *fakeDevice) Readable() bool { return len(d.in) > 0 }

func (d *fakeDevice) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

func (d *fakeDevice) packets() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([][]byte(nil), d.written...)
}

// ipv4 builds an IPv4/UDP packet of total length n (n >= 28).
func ipv4(src, dst string, n int) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(n))
	p[8] = 64
	p[9] = 17
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	for i := 28; i < n; i++ {
		p[i] = byte(i)
	}
	return p
}

// ipv6 builds an IPv6 packet with a payload of n bytes.
func ipv6(src, dst string, n int) []byte {
	p := make([]byte, 40+n)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], uint16(n))
	p[6] = 17
	p[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	return p
}

var (
	addrB = netip.MustParseAddrPort("192.0.2.2:8285")
	addrC = netip.MustParseAddrPort("192.0.2.3:8285")
	macA  = encap.MAC{0x02, 0x57, 10, 244, 1, 0}
	macB  = encap.MAC{0x02, 0x57, 10, 244, 2, 0}
)

func testPeers() []Peer {
	return []Peer{
		{Name: "b", Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Underlay: addrB, MAC: macB, State: "alive", Claimed: 1},
		{Name: "c", Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")}, Underlay: addrC, State: "alive", Claimed: 2},
	}
}

func testConfig(kind encap.Kind) Config {
	return Config{
		Name:  "a",
		Local: Local{Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, Addrs: []netip.Addr{netip.MustParseAddr("10.244.1.0")}, MAC: macA},
		Encap: kind, VNI: 1,
	}
}

func newTestRouter(kind encap.Kind, record bool) (*Router, *fakeDevice, *fakeConn) {
	dev, conn := newFakeDevice(record), newFakeConn(record)
	r := New(testConfig(kind), Worker{Dev: dev, In: conn, Out: conn})
	r.SetPeers(testPeers())
	return r, dev, conn
}
