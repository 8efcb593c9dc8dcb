package seal

import (
	"bytes"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// clock is a fake clock the tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
func (c *clock) ns() int64 { return c.now().UnixNano() }

type wireMsg struct {
	from string
	b    []byte
}

// net is two or more Managers wired together in memory: Send queues a
// message, pump delivers the queue (through Peer.Open, as the router does)
// and runs the handshakes it gives rise to, until nothing is left.
type net struct {
	t     *testing.T
	clk   *clock
	ms    map[string]*Manager
	keys  map[string]KeyPair
	peers map[string]map[string]*Peer // peers[a][b]: a's Peer for b
	queue []wireMsg
	drop  func(from string, b []byte) bool // lose a message?
	got   map[string][][]byte              // plaintexts delivered, by receiver
	res   map[Result]int
}

func addrOf(name string) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, name[0]}), 8285)
}

func newNet(t *testing.T, cfg Config, names ...string) *net {
	t.Helper()
	n := &net{t: t, clk: &clock{t: time.Unix(1_700_000_000, 0)}, ms: map[string]*Manager{}, keys: map[string]KeyPair{},
		peers: map[string]map[string]*Peer{}, got: map[string][][]byte{}, res: map[Result]int{}}
	for _, name := range names {
		kp, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		n.keys[name] = kp
		n.start(name, cfg)
	}
	for _, name := range names {
		n.setPeers(name)
	}
	return n
}

// start (re)starts name's Manager, as a restart of the host would.
func (n *net) start(name string, cfg Config) {
	n.t.Helper()
	cfg.Static = n.keys[name]
	if cfg.Cipher == 0 {
		cfg.Cipher = AES256GCM
	}
	cfg.Now = n.clk.now
	cfg.Send = func(b []byte, dst netip.AddrPort) error {
		n.queue = append(n.queue, wireMsg{from: name, b: bytes.Clone(b)})
		_ = dst
		return nil
	}
	m, err := New(cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	n.ms[name] = m
}

func (n *net) setPeers(name string) {
	var pcs []PeerConfig
	for other, kp := range n.keys {
		if other != name {
			pcs = append(pcs, PeerConfig{Name: other, Key: kp.Public, Addr: addrOf(other)})
		}
	}
	n.peers[name] = n.ms[name].SetPeers(pcs)
}

// drain runs the handshake messages queued for each Manager.
func (n *net) drain() bool {
	did := false
	for _, m := range n.ms {
		for {
			select {
			case msg := <-m.in:
				m.handle(msg.p, msg.buf[:msg.n])
				did = true
				continue
			default:
			}
			break
		}
	}
	return did
}

func (n *net) pump() {
	for range 100 {
		q := n.queue
		n.queue = nil
		for _, w := range q {
			n.deliver(w)
		}
		if !n.drain() && len(n.queue) == 0 {
			return
		}
	}
	n.t.Fatal("pump: no end")
}

// deliver gives a datagram to every other host's Peer for its sender (in
// these tests a message is for the one other host; with three, to whom it
// was sent is not tracked, so tests with three use only pairs).
func (n *net) deliver(w wireMsg) {
	if n.drop != nil && n.drop(w.from, w.b) {
		return
	}
	for name, ps := range n.peers {
		p := ps[w.from]
		if p == nil || name == w.from {
			continue
		}
		pt, r := p.Open(bytes.Clone(w.b), n.clk.ns())
		n.res[r]++
		if r == Deliver && len(pt) > 0 {
			n.got[name] = append(n.got[name], bytes.Clone(pt))
		}
	}
}

func (n *net) tick() {
	for _, m := range n.ms {
		m.tick()
	}
}

// frame returns a frame with room for the header and the tag around payload.
func frame(payload []byte) []byte {
	f := make([]byte, HeaderLen+len(payload)+TagLen, HeaderLen+len(payload)+TagLen+64)
	copy(f[HeaderLen:], payload)
	return f
}

// send seals payload from a to b and queues it; false if a has no session.
func (n *net) send(a, b string, payload []byte) bool {
	f := frame(payload)
	if !n.peers[a][b].Seal([][]byte{f}, n.clk.ns()) {
		return false
	}
	n.queue = append(n.queue, wireMsg{from: a, b: f})
	return true
}
