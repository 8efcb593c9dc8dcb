package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/fakes"
	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/tun"
)

// memberlist's Shutdown does not wait for a failure-detection probe in
// flight (probeNode waits out its probe interval for acks, then ends): that
// goroutine is memberlist's, not the node's. gobgp v4.9.0 does not always
// close a BGP peer's outgoing queue when its server stops with the session
// up (bgp/speaker_test.go): that parked buffer goroutine is gobgp's. These
// two are the only ones let pass.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
		goleak.IgnoreTopFunction("github.com/eapache/channels.(*InfiniteChannel).infiniteBuffer"))
}

var network = netip.MustParsePrefix("10.244.0.0/16")

// host is one in-process weft host on fakes: its own kernel and TUN, a
// socket on the shared hub, real gossip on loopback.
type host struct {
	t      *testing.T
	name   string
	ev     *fakes.Events
	kernel *fakes.Kernel
	hub    *fakes.Hub
	dir    string
	s      Settings
	tun    chan fakeTUN // the device of each start
	log    *testWriter
	mod    func(*Deps) // changes the fakes' Deps, if set
	dev    fakeTUN
	n      *Node
	cancel context.CancelFunc
}

// newHost makes a host with underlay address 127.0.0.<i>; subnet "" means
// an automatic one.
func newHost(t *testing.T, h *fakes.Hub, name string, i byte, subnet string) *host {
	dir := t.TempDir()
	s := Settings{
		Name: name, Networks: []netip.Prefix{network}, Port: 8285, Encap: encap.UDP, VNI: 1, TUN: "weft0", Workers: 1,
		MetricsAddr: "127.0.0.1:0", Socket: filepath.Join(dir, "weft.sock"), Offload: true,
		StateDir: filepath.Join(dir, "state"), SubnetFile: filepath.Join(dir, "subnet.env"),
		SubnetReclaim: time.Hour, Pools: []lease.Pool{{Network: network, Bits: 24}},
		Live: Live{LogLevel: slog.LevelDebug, LogFormat: "text"},
	}
	if subnet == "" {
		s.AutoSubnet = true
	} else {
		s.Subnets = []netip.Prefix{netip.MustParsePrefix(subnet)}
	}
	ev := &fakes.Events{}
	return &host{t: t, name: name, ev: ev, kernel: fakes.NewKernel(ev, netip.AddrFrom4([4]byte{127, 0, 0, i})), hub: h, dir: dir, s: s, tun: make(chan fakeTUN, 8), log: newTestWriter(t, name)}
}

func (h *host) deps() Deps {
	return Deps{
		OpenTUN: func(cfg tun.Config, _ *slog.Logger) (TUN, error) {
			d := fakeTUN{fakes.NewTUN(h.ev, cfg)}
			h.tun <- d
			return d, nil
		},
		Listen: func(addr netip.AddrPort, _ int, _, reusePort bool) (Socket, error) {
			h.ev.Add("listen %s reuseport=%v", addr, reusePort)
			return h.hub.Attach(func() netip.Addr { u, _ := h.kernel.FindUnderlay("", netip.Addr{}); return u.Addr }, addr.Port()), nil
		},
		Kernel:  h.kernel,
		Logger:  slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Version: "test",
	}
}

func (h *host) start(join ...*host) error {
	h.t.Helper()
	s := h.s
	for _, j := range join {
		s.Live.Join = append(s.Live.Join, j.n.GossipAddr().String())
	}
	h.s = s
	ctx, cancel := context.WithCancel(context.Background())
	d := h.deps()
	if h.mod != nil {
		h.mod(&d)
	}
	n, err := Start(ctx, s, d)
	if err != nil {
		cancel()
		return err
	}
	h.n, h.cancel = n, cancel
	h.dev = <-h.tun
	h.t.Cleanup(h.stop)
	return nil
}

func (h *host) mustStart(join ...*host) {
	h.t.Helper()
	if err := h.start(join...); err != nil {
		h.t.Fatalf("start %s: %v", h.name, err)
	}
}

func (h *host) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := h.n.Wait(); err != nil {
		h.t.Errorf("%s stopped with %v", h.name, err)
	}
	h.cancel = nil
}

// testWriter logs to the test until it ends: memberlist does not wait
// for a probe in flight at Shutdown, and its late log lines must not reach
// a finished test.
type testWriter struct {
	t    *testing.T
	name string
	mu   sync.Mutex
	done bool
}

func newTestWriter(t *testing.T, name string) *testWriter {
	w := &testWriter{t: t, name: name}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s: %s", w.name, strings.TrimSpace(string(b)))
	}
	return len(b), nil
}

// eventually polls cond until it returns nil or 10 s pass.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func routedVia(h *host, peer string, via router.Via) func() error {
	return func() error {
		st := h.n.Status()
		p := st.Peer(peer)
		if p == nil || p.Via != via {
			return fmt.Errorf("%s does not route %s via %s: %+v", h.name, peer, via, st.Peers)
		}
		return nil
	}
}

// ipv4 is a UDP packet from src to dst.
func ipv4(src, dst string) []byte {
	p := make([]byte, 28+4)
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	return p
}

func recv(t *testing.T, d fakeTUN) []byte {
	t.Helper()
	select {
	case p := <-d.Queue(0).Out:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("nothing written to the TUN")
		return nil
	}
}

// Two hosts gossip, route each other through the tunnel and carry packets
// both ways; a packet whose inner source is not the sender's subnet is
// dropped as spoofed.
func TestTwoHostsForward(t *testing.T) {
	u := fakes.NewHub()
	a := newHost(t, u, "a", 1, "10.244.1.0/24")
	b := newHost(t, u, "b", 2, "10.244.2.0/24")
	a.mustStart()
	b.mustStart(a)
	eventually(t, "a routes b", routedVia(a, "b", router.ViaTunnel))
	eventually(t, "b routes a", routedVia(b, "a", router.ViaTunnel))

	out := ipv4("10.244.1.0", "10.244.2.7")
	a.dev.Send(out)
	if got := recv(t, b.dev); !slices.Equal(got, out) {
		t.Fatalf("b's TUN got %x, want %x", got, out)
	}
	b.dev.Send(ipv4("10.244.2.7", "10.244.1.0"))
	recv(t, a.dev)

	b.dev.Send(ipv4("10.244.9.9", "10.244.1.0")) // b forges a source outside its subnet
	eventually(t, "spoofed drop counted", func() error {
		if d := a.n.Status().Drops["spoofed"]; d != 1 {
			return fmt.Errorf("spoofed drops %d, want 1", d)
		}
		return nil
	})
	st := a.n.Status()
	if st.Node.Subnet != "10.244.1.0/24" || !st.Node.Ready || st.Totals.RxPackets != 1 || st.Totals.TxPackets != 1 {
		t.Errorf("a's status: %+v totals %+v", st.Node, st.Totals)
	}
	env, err := os.ReadFile(a.s.SubnetFile)
	if err != nil || !strings.Contains(string(env), "WEFT_SUBNET=10.244.1.0/24\n") || !strings.Contains(string(env), "WEFT_MTU=1472\n") {
		t.Errorf("subnet file: %q %v", env, err)
	}
}

// Automatic subnets: three hosts take three different subnets of the pool
// and keep their leases; a restart keeps the subnet and the claim.
func TestAutomaticSubnets(t *testing.T) {
	u := fakes.NewHub()
	hosts := []*host{newHost(t, u, "a", 1, ""), newHost(t, u, "b", 2, ""), newHost(t, u, "c", 3, "")}
	for i, h := range hosts {
		h.s.Pools[0].Min, h.s.Pools[0].Max = netip.MustParseAddr("10.244.10.0"), netip.MustParseAddr("10.244.12.0")
		if i == 0 {
			h.mustStart()
		} else {
			h.mustStart(hosts[0])
		}
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		sub := h.n.Status().Node.Subnet
		if seen[sub] || !h.s.Pools[0].Contains(netip.MustParsePrefix(sub)) {
			t.Fatalf("%s took %s (taken: %v)", h.name, sub, seen)
		}
		seen[sub] = true
		l, err := lease.Load(h.s.StateDir)
		if err != nil || family.First(l.Subnets).String() != sub {
			t.Errorf("%s's lease %+v %v, want %s", h.name, l, err, sub)
		}
	}
	a := hosts[0]
	before, _ := lease.Load(a.s.StateDir)
	a.stop()
	a.s.Live.Join = nil
	a.mustStart(hosts[1])
	after, _ := lease.Load(a.s.StateDir)
	if !reflect.DeepEqual(after, before) || a.n.Status().Node.Subnet != family.First(before.Subnets).String() {
		t.Errorf("restart changed the lease: %+v, then %+v (status %s)", before, after, a.n.Status().Node.Subnet)
	}
}

// Two hosts claim the same subnet: the later claim loses and moves to a
// free subnet, with a new TUN address, lease, metadata and subnet file.
func TestSubnetConflictMoves(t *testing.T) {
	u := fakes.NewHub()
	a, b := newHost(t, u, "a", 1, ""), newHost(t, u, "b", 2, "")
	same := netip.MustParsePrefix("10.244.5.0/24")
	for i, h := range []*host{a, b} {
		if err := lease.Save(h.s.StateDir, lease.Lease{Networks: []netip.Prefix{network}, Subnets: []netip.Prefix{same}, Claimed: time.Now().Add(-time.Hour).UnixMilli() + int64(1000*(i+1))}); err != nil {
			t.Fatal(err)
		}
	}
	a.mustStart()
	b.mustStart(a)
	eventually(t, "b moves", func() error {
		if sub := b.n.Status().Node.Subnet; sub == same.String() {
			return fmt.Errorf("b still holds %s", sub)
		}
		return nil
	})
	moved := netip.MustParsePrefix(b.n.Status().Node.Subnet)
	if got := family.First(b.dev.Addrs()); got != netip.PrefixFrom(moved.Addr(), 16) {
		t.Errorf("b's TUN address %s, want %s/16", got, moved.Addr())
	}
	eventually(t, "b keeps the new subnet in its lease and subnet file", func() error {
		if l, _ := lease.Load(b.s.StateDir); family.First(l.Subnets) != moved {
			return fmt.Errorf("b's lease %s, want %s", family.First(l.Subnets), moved)
		}
		if env, _ := os.ReadFile(b.s.SubnetFile); !strings.Contains(string(env), "WEFT_SUBNET="+moved.String()) {
			return fmt.Errorf("b's subnet file: %s", env)
		}
		return nil
	})
	if a.n.Status().Node.Subnet != same.String() {
		t.Errorf("a (the earlier claim) moved too")
	}
	eventually(t, "a routes b's new subnet", func() error {
		p := a.n.Status().Peer("b")
		if p == nil || p.Subnet != moved.String() || p.Via != router.ViaTunnel {
			return fmt.Errorf("a sees b as %+v", p)
		}
		return nil
	})
}

// Reload changes the live settings and refuses, by name, what needs a
// restart, keeping the running configuration.
func TestReload(t *testing.T) {
	u := fakes.NewHub()
	a := newHost(t, u, "a", 1, "10.244.1.0/24")
	var logFormat string
	a.mod = func(d *Deps) { d.SetLogging = func(format string, _ slog.Level) { logFormat = format } }
	a.mustStart()

	next := a.s
	next.Live.LogFormat = "json"
	next.Live.Peers = []StaticPeer{{Name: "k", Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")}, IP: netip.MustParseAddr("127.0.0.9"), Port: 8285}}
	changed, err := a.n.Reload(next)
	if err != nil || !slices.Equal(changed, []string{"logLevel/logFormat", "peers"}) || logFormat != "json" {
		t.Fatalf("reload: changed %v, err %v, log format %q", changed, err, logFormat)
	}
	if p := a.n.Status().Peer("k"); p == nil || p.State != "static" || p.Via != router.ViaTunnel {
		t.Fatalf("static peer after reload: %+v", p)
	}

	bad := next
	bad.Port, bad.MTU = 9999, 1400
	bad.Live.Peers = nil
	changed, err = a.n.Reload(bad)
	if !errors.Is(err, ErrNeedsRestart) || !strings.Contains(err.Error(), "port, mtu") || changed != nil {
		t.Fatalf("reload of port and mtu: changed %v, err %v", changed, err)
	}
	if a.n.Status().Peer("k") == nil {
		t.Error("a refused reload still changed the peers")
	}
	if changed, err := a.n.Reload(next); err != nil || len(changed) != 0 {
		t.Errorf("reload of the running settings: %v %v", changed, err)
	}
}

// The underlay address changes while running: the host follows it and its
// peer learns the new address.
func TestUnderlayAddressChange(t *testing.T) {
	u := fakes.NewHub()
	a := newHost(t, u, "a", 1, "10.244.1.0/24")
	b := newHost(t, u, "b", 2, "10.244.2.0/24")
	a.mustStart()
	b.mustStart(a)
	eventually(t, "a routes b", routedVia(a, "b", router.ViaTunnel))
	eventually(t, "b watches its underlay", func() error {
		if !b.kernel.Watching() {
			return errors.New("no watcher")
		}
		return nil
	})
	b.kernel.SetAddr(netip.MustParseAddr("127.0.0.22"))
	eventually(t, "a learns b's new address", func() error {
		p := a.n.Status().Peer("b")
		if p == nil || p.Underlay != "127.0.0.22:8285" || p.State != "alive" {
			return fmt.Errorf("a sees b as %+v", p)
		}
		return nil
	})
	// b rejoined with a new gossip: it routes a again once that gossip
	// has a (until then a's packets are unknown_peer at b).
	eventually(t, "b routes a again", routedVia(b, "a", router.ViaTunnel))
	if got := b.n.Status().Node.Underlay; got != "127.0.0.22:8285" {
		t.Errorf("b's own underlay %s", got)
	}
	out := ipv4("10.244.1.0", "10.244.2.7")
	a.dev.Send(out)
	if got := recv(t, b.dev); !slices.Equal(got, out) {
		t.Fatalf("after the move b's TUN got %x", got)
	}
	t.Logf("a %+v %v; b %+v %v", a.n.Status().Totals, a.n.Status().Drops, b.n.Status().Totals, b.n.Status().Drops)
}

// Shutdown runs in its fixed order: the direct routes go before the data
// path closes and the link goes; the TUN is closed once; the control socket
// is removed; a stale route of an earlier run is removed at start.
func TestShutdownOrder(t *testing.T) {
	u := fakes.NewHub()
	a := newHost(t, u, "a", 1, "10.244.1.0/24")
	b := newHost(t, u, "b", 2, "10.244.2.0/24")
	a.s.DirectRouting = true
	stale := netip.MustParsePrefix("10.244.77.0/24")
	a.kernel.SetStale([]tun.Route{{Dst: stale}})
	a.mustStart()
	b.mustStart(a)
	eventually(t, "a routes b directly", routedVia(a, "b", router.ViaDirect))
	a.stop()
	ev := a.ev.List()
	want := []string{"route del " + stale.String(), "listen 0.0.0.0:8285 reuseport=false", "route add 10.244.2.0/24 via 127.0.0.2", "route del 10.244.2.0/24", "link gone"}
	if !slices.Equal(ev, want) {
		t.Errorf("events %q, want %q", ev, want)
	}
	if n := a.dev.Closes(); n != 1 {
		t.Errorf("TUN closed %d times, want once", n)
	}
	if _, err := os.Stat(a.s.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket still there: %v", err)
	}
	if r := a.kernel.Routes(); len(r) != 0 {
		t.Errorf("routes left: %v", r)
	}
}

// A start that fails takes back what it made: here the data port's socket
// cannot be opened, after the TUN was.
func TestFailedStartCleansUp(t *testing.T) {
	u := fakes.NewHub()
	a := newHost(t, u, "a", 1, "10.244.1.0/24")
	d := a.deps()
	d.Listen = func(netip.AddrPort, int, bool, bool) (Socket, error) { return nil, errors.New("port taken") }
	_, err := Start(context.Background(), a.s, d)
	if err == nil || !strings.Contains(err.Error(), "port taken") {
		t.Fatalf("Start: %v", err)
	}
	dev := <-a.tun
	if dev.Closes() != 1 {
		t.Errorf("TUN closed %d times, want once", dev.Closes())
	}
	if _, err := os.Stat(a.s.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left: %v", err)
	}
	// The metrics listener is gone too: its port can be bound again.
	ln, err := net.Listen("unix", a.s.Socket)
	if err != nil {
		t.Fatalf("control socket path not free: %v", err)
	}
	ln.Close()
}

// With two workers each has its own TUN queue, a socket of the reuseport
// group on the data port and a sending socket of its own, and both carry
// traffic.
func TestWorkers(t *testing.T) {
	u := fakes.NewHub()
	a := newHost(t, u, "a", 1, "10.244.1.0/24")
	b := newHost(t, u, "b", 2, "10.244.2.0/24")
	a.s.Workers, b.s.Workers = 2, 2
	a.mustStart()
	b.mustStart(a)
	var listens []string
	for _, e := range a.ev.List() {
		if strings.HasPrefix(e, "listen ") {
			listens = append(listens, e)
		}
	}
	// The receive group first (its order is its steering index), then
	// each worker's sending socket on an ephemeral port ≡ its index mod 2.
	if len(listens) < 4 || !slices.Equal(listens[:2], []string{"listen 0.0.0.0:8285 reuseport=true", "listen 0.0.0.0:8285 reuseport=true"}) {
		t.Errorf("sockets %q: want the two of the reuseport group first", listens)
	}
	for _, l := range listens[2:] {
		if l != "listen 0.0.0.0:0 reuseport=false" {
			t.Errorf("sockets %q: want ephemeral sending sockets after the group", listens)
		}
	}
	conns := a.n.dp.(*userspace).conns
	if len(conns) != 4 {
		t.Fatalf("%d sockets kept open, want 4", len(conns))
	}
	for i, c := range conns[2:] {
		if p := c.LocalAddr().Port(); int(p)%2 != i {
			t.Errorf("worker %d sends from port %d, want one ≡ %d mod 2", i, p, i)
		}
	}
	if w := a.n.Status().Node.Workers; w != 2 {
		t.Errorf("status: %d workers", w)
	}
	eventually(t, "a routes b", routedVia(a, "b", router.ViaTunnel))
	eventually(t, "b routes a", routedVia(b, "a", router.ViaTunnel))
	for i, q := range a.dev.Devices() {
		out := ipv4("10.244.1.0", fmt.Sprintf("10.244.2.%d", i+1))
		q.In <- [][]byte{out}
		select {
		case got := <-b.dev.Queue(0).Out:
			if !slices.Equal(got, out) {
				t.Errorf("queue %d: b got %x", i, got)
			}
		case got := <-b.dev.Queue(1).Out:
			if !slices.Equal(got, out) {
				t.Errorf("queue %d: b got %x", i, got)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("a packet read from a's queue %d never reached b", i)
		}
	}
}

// A lost subnet is never the one moved to, even before the winner's
// metadata arrives: with two subnets in the pool, every move lands on
// the other.
func TestMoveSubnetLeavesTheLostOne(t *testing.T) {
	h := newHost(t, fakes.NewHub(), "a", 1, "")
	h.s.Pools[0].Min, h.s.Pools[0].Max = netip.MustParseAddr("10.244.10.0"), netip.MustParseAddr("10.244.11.0")
	h.mustStart()
	for range 20 {
		cur := family.First(h.n.getLocal().Subnets)
		h.n.moveSubnet(router.Conflict{Subnet: cur, Winner: "b"})
		if next := family.First(h.n.getLocal().Subnets); next == cur || !h.s.Pools[0].Contains(next) {
			t.Fatalf("moved from %s to %s", cur, next)
		}
	}
}
