package node

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/tun"
)

// events is the order in which fakes saw things happen, across a node.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, fmt.Sprintf(format, args...))
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

// fakeTUN is a TUN device in memory: tests inject packets to read and
// collect what the node wrote.
type fakeTUN struct {
	ev      *events
	in      chan []byte
	out     chan []byte
	closed  chan struct{}
	once    sync.Once
	mu      sync.Mutex
	addr    netip.Prefix
	addr6   netip.Prefix // a dual-stack host's second address
	nCloses int
	more    []*fakeTUN // queues after this one
}

func newFakeTUN(ev *events, addr netip.Prefix) *fakeTUN {
	return &fakeTUN{ev: ev, in: make(chan []byte, 64), out: make(chan []byte, 1024), closed: make(chan struct{}), addr: addr}
}

func (d *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-d.closed:
		return 0, os.ErrClosed
	case p := <-d.in:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	}
}

// ReadMore never finds more: every packet comes through Read, a batch of
// its own (the node's tests are not about batching).
func (d *fakeTUN) ReadMore([][]byte, []int, int) (int, error) { return 0, nil }

func (d *fakeTUN) Write(bufs [][]byte, offset int, _ tun.Checksum) (tun.WriteResult, error) {
	var res tun.WriteResult
	for _, b := range bufs {
		select {
		case d.out <- slices.Clone(b[offset:]):
		default:
		}
		res.Packets++
		res.Bytes += len(b) - offset
		res.Syscalls++
	}
	return res, nil
}

func (d *fakeTUN) BatchSize() int      { return 16 }
func (d *fakeTUN) Readable() bool      { return false }
func (d *fakeTUN) WriteFallback() bool { return false }
func (d *fakeTUN) VNetHdr() bool       { return true }
func (d *fakeTUN) Queues() []router.Device {
	qs := []router.Device{d}
	for _, q := range d.more {
		qs = append(qs, q)
	}
	return qs
}
func (d *fakeTUN) MultiQueueErr() error { return nil }

func (d *fakeTUN) SetAddress(next, old netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := &d.addr
	if d.addr6.IsValid() && old.Addr().Is6() != d.addr.Addr().Is6() {
		cur = &d.addr6
	}
	if *cur != old {
		return fmt.Errorf("fake TUN has %s, not %s", *cur, old)
	}
	*cur = next
	d.ev.add("tun address %s", next)
	return nil
}

func (d *fakeTUN) address6() netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addr6
}

func (d *fakeTUN) address() netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addr
}

func (d *fakeTUN) Close() error {
	d.mu.Lock()
	d.nCloses++
	d.mu.Unlock()
	d.once.Do(func() {
		for _, q := range d.more {
			q.Close()
		}
		close(d.closed)
		d.ev.add("link gone")
	})
	return nil
}

func (d *fakeTUN) closes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nCloses
}

// hub is the underlay: it carries datagrams between fake sockets by
// address.
type hub struct {
	mu    sync.Mutex
	socks map[*fakeSocket]bool
	next  int
}

func newHub() *hub { return &hub{socks: map[*fakeSocket]bool{}} }

// attach opens a socket on port whose address is whatever addr says now
// (the host's underlay address, which may change).
func (h *hub) attach(addr func() netip.Addr, port uint16) *fakeSocket {
	s := &fakeSocket{hub: h, addr: addr, port: port, in: make(chan datagram, 1024), closed: make(chan struct{})}
	h.mu.Lock()
	h.next++
	s.id = h.next
	if s.port == 0 { // an ephemeral port
		s.port = uint16(40000 + s.id)
	}
	h.socks[s] = true
	h.mu.Unlock()
	return s
}

func (h *hub) detach(s *fakeSocket) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.socks, s)
}

// deliver gives b to the socket at dst; of a reuseport group, to one chosen
// by the source port, as the kernel's hash does.
func (h *hub) deliver(src, dst netip.AddrPort, b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var group []*fakeSocket
	for s := range h.socks {
		if s.local() == dst {
			group = append(group, s)
		}
	}
	if len(group) == 0 {
		return
	}
	slices.SortFunc(group, func(x, y *fakeSocket) int { return x.id - y.id })
	select {
	case group[int(src.Port())%len(group)].in <- datagram{src, slices.Clone(b)}:
	default:
	}
}

type datagram struct {
	src netip.AddrPort
	b   []byte
}

// fakeSocket is a data socket on the hub. Its address is the node's
// underlay address (the listen address is a wildcard).
type fakeSocket struct {
	hub    *hub
	id     int
	addr   func() netip.Addr
	port   uint16
	in     chan datagram
	closed chan struct{}
	once   sync.Once
}

func (s *fakeSocket) local() netip.AddrPort { return netip.AddrPortFrom(s.addr(), s.port) }

func (s *fakeSocket) ReadViews(bufs [][]byte, offset int, views [][]byte, srcs []netip.AddrPort) (int, error) {
	select {
	case <-s.closed:
		return 0, os.ErrClosed
	case d := <-s.in:
		n := offset + copy(bufs[0][offset:], d.b)
		views[0], srcs[0] = bufs[0][offset:n:n], d.src
		return 1, nil
	}
}

func (s *fakeSocket) WriteTo(pkts [][]byte, ep encap.Endpoint) (int, error) {
	for _, p := range pkts {
		s.hub.deliver(s.local(), ep.AddrPort, p)
	}
	return len(pkts), nil
}

func (s *fakeSocket) WriteOne(b []byte, dst netip.AddrPort) error {
	s.hub.deliver(s.local(), dst, b)
	return nil
}

func (s *fakeSocket) Close() error {
	s.once.Do(func() { close(s.closed); s.hub.detach(s) })
	return nil
}

func (s *fakeSocket) LocalAddr() netip.AddrPort { return s.local() }

// SteerBySourcePort changes nothing: the hub always steers a group by
// source port, in the order its sockets were bound.
func (s *fakeSocket) SteerBySourcePort(int) error { return nil }

func (s *fakeSocket) GSO() bool                  { return true }
func (s *fakeSocket) GRO() bool                  { return true }
func (s *fakeSocket) Syscalls() (uint64, uint64) { return 0, 0 }

// fakeKernel holds one host's underlay interface and routes.
type fakeKernel struct {
	ev      *events
	mu      sync.Mutex
	u       tun.Underlay
	routes  map[netip.Prefix]tun.Route
	stale   []tun.Route
	changed func()
}

func newFakeKernel(ev *events, addr netip.Addr) *fakeKernel {
	k := &fakeKernel{ev: ev, routes: map[netip.Prefix]tun.Route{}}
	k.setAddr(addr)
	return k
}

func (k *fakeKernel) setAddr(a netip.Addr) {
	k.mu.Lock()
	k.u = tun.Underlay{Iface: "eth0", Index: 2, MTU: 1500, Addr: a,
		OnLink: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Addrs: []netip.Addr{a}}
	changed := k.changed
	k.mu.Unlock()
	if changed != nil {
		changed()
	}
}

func (k *fakeKernel) FindUnderlay(iface string, want netip.Addr) (tun.Underlay, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	u := k.u
	if want.IsValid() && !want.IsUnspecified() {
		u.Addr = want
	}
	return u, nil
}

func (k *fakeKernel) WatchAddrs(ctx context.Context, ifindex int, changed func()) error {
	k.mu.Lock()
	k.changed = changed
	k.mu.Unlock()
	<-ctx.Done()
	k.mu.Lock()
	k.changed = nil
	k.mu.Unlock()
	return nil
}

func (k *fakeKernel) ReplaceRoute(r tun.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.routes[r.Dst] = r
	k.ev.add("route add %s via %s", r.Dst, r.Via)
	return nil
}

func (k *fakeKernel) DeleteRoute(r tun.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.routes, r.Dst)
	k.ev.add("route del %s", r.Dst)
	return nil
}

func (k *fakeKernel) OurRoutes() ([]tun.Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := slices.Clone(k.stale)
	for _, r := range k.routes {
		out = append(out, r)
	}
	return out, nil
}

func (k *fakeKernel) routeList() []netip.Prefix {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []netip.Prefix
	for p := range k.routes {
		out = append(out, p)
	}
	return out
}
