package fakes

import (
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/weftnet/weft/encap"
)

// Datagram is a datagram and where it came from.
type Datagram struct {
	Src     netip.AddrPort
	Payload []byte
}

// Group is a batch a socket sent to one destination.
type Group struct {
	Dst  netip.AddrPort
	Pkts [][]byte
}

// Socket is a batched datagram socket in memory (a router.Conn and a
// node.Socket). ReadViews returns the batches a test (or the Hub) sends on
// In, packed back to back in one buffer as UDP GRO leaves them, with views
// that have no headroom, as encap.Conn's. What a socket of no Hub sends is
// recorded (Groups, OneSent) if it records, and otherwise only counted (the
// benchmarks' way: no allocation); a socket of a Hub sends to the Hub's
// sockets.
type Socket struct {
	In chan []Datagram

	hub  *Hub
	id   int
	addr func() netip.Addr
	port uint16

	record  bool
	count   int // datagrams sent, when not recording
	mu      sync.Mutex
	sent    []Group
	oneSent [][]byte
	closed  chan struct{}
	once    sync.Once
	gro     []byte // ReadViews' receive buffer (the reading goroutine's)
}

// NewSocket returns a socket on no network that records what it sends if
// record is set.
func NewSocket(record bool) *Socket {
	return &Socket{record: record, In: make(chan []Datagram, 16), closed: make(chan struct{})}
}

// ReadViews returns the next batch sent on In, waiting for it.
func (s *Socket) ReadViews(_ [][]byte, _ int, views [][]byte, srcs []netip.AddrPort) (int, error) {
	select {
	case <-s.closed:
		return 0, os.ErrClosed
	case batch := <-s.In:
		if s.gro == nil {
			s.gro = make([]byte, 1<<20)
		}
		at := 0
		for i, d := range batch {
			n := copy(s.gro[at:], d.Payload)
			views[i], srcs[i] = s.gro[at:at+n:at+n], d.Src
			at += n
		}
		return len(batch), nil
	}
}

// WriteTo sends pkts to ep.
func (s *Socket) WriteTo(pkts [][]byte, ep encap.Endpoint) (int, error) {
	if s.hub != nil {
		for _, p := range pkts {
			s.hub.deliver(s.local(), ep.AddrPort, p)
		}
		return len(pkts), nil
	}
	if !s.record {
		s.count += len(pkts)
		return len(pkts), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := Group{Dst: ep.AddrPort}
	for _, p := range pkts {
		g.Pkts = append(g.Pkts, append([]byte(nil), p...))
	}
	s.sent = append(s.sent, g)
	return len(pkts), nil
}

// WriteOne sends b to dst.
func (s *Socket) WriteOne(b []byte, dst netip.AddrPort) error {
	if s.hub != nil {
		s.hub.deliver(s.local(), dst, b)
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oneSent = append(s.oneSent, append([]byte(nil), b...))
	return nil
}

// Close makes ReadViews return os.ErrClosed and takes the socket off its
// Hub.
func (s *Socket) Close() error {
	s.once.Do(func() {
		close(s.closed)
		if s.hub != nil {
			s.hub.detach(s)
		}
	})
	return nil
}

// Groups are the batches sent with WriteTo, when recording.
func (s *Socket) Groups() []Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sent)
}

// OneSent are the datagrams sent with WriteOne (by a socket of no Hub).
func (s *Socket) OneSent() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.oneSent)
}

func (s *Socket) local() netip.AddrPort {
	if s.addr == nil {
		return netip.AddrPortFrom(netip.Addr{}, s.port)
	}
	return netip.AddrPortFrom(s.addr(), s.port)
}

// LocalAddr is the socket's address: its host's underlay address now (the
// listen address is a wildcard) and its port.
func (s *Socket) LocalAddr() netip.AddrPort { return s.local() }

// SteerBySourcePort changes nothing: the Hub always steers a group by
// source port, in the order its sockets were bound.
func (s *Socket) SteerBySourcePort(int) error { return nil }

func (s *Socket) GSO() bool                  { return true }
func (s *Socket) GRO() bool                  { return true }
func (s *Socket) Syscalls() (uint64, uint64) { return 0, 0 }

// Hub is an underlay in memory: it carries datagrams between its sockets
// by address.
type Hub struct {
	mu    sync.Mutex
	socks map[*Socket]bool
	next  int
}

// NewHub returns an underlay with no sockets.
func NewHub() *Hub { return &Hub{socks: map[*Socket]bool{}} }

// Attach opens a socket on port (0: an ephemeral one) whose address is
// whatever addr says at the time (its host's underlay address, which may
// change). Sockets attached to one address and port are a SO_REUSEPORT
// group.
func (h *Hub) Attach(addr func() netip.Addr, port uint16) *Socket {
	s := &Socket{hub: h, addr: addr, port: port, In: make(chan []Datagram, 1024), closed: make(chan struct{})}
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

func (h *Hub) detach(s *Socket) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.socks, s)
}

// deliver gives b to the socket at dst; of a reuseport group, to one chosen
// by the source port, as the kernel's hash does. A full socket drops it.
func (h *Hub) deliver(src, dst netip.AddrPort, b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var group []*Socket
	for s := range h.socks {
		if s.local() == dst {
			group = append(group, s)
		}
	}
	if len(group) == 0 {
		return
	}
	slices.SortFunc(group, func(x, y *Socket) int { return x.id - y.id })
	select {
	case group[int(src.Port())%len(group)].In <- []Datagram{{src, slices.Clone(b)}}:
	default:
	}
}
