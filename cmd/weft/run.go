package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/tun"
)

// node is a running weft daemon: what it created, in the order it did.
type daemon_ struct {
	s        Settings
	args     []string // weft run's arguments, parsed again on reload
	log      *slog.Logger
	logs     *switchHandler
	reg      *prometheus.Registry
	underlay tun.Underlay
	mtu      int
	started  time.Time

	mu    sync.Mutex // guards local, underlay and s's reloadable fields
	local router.Local

	dev    *tun.Device
	conn   *encap.Conn
	rt     *router.Router
	ready  atomic.Bool
	syncMu sync.Mutex // serializes syncPeers

	// The gossip is replaced when our underlay address changes (memberlist
	// cannot change the address it advertises); swapped tells watchMembers.
	cluster       atomic.Pointer[membership.Cluster]
	swapped       chan struct{}
	gossipMetrics *membership.Metrics

	// undo holds the steps that take back what start-up did; shutdown (or
	// a failed start) runs them last to first.
	undo []func()
}

// run is `weft run`: it starts the daemon and serves until SIGTERM/SIGINT,
// reloading on SIGHUP.
func run(ctx context.Context, s Settings, args []string, logs *switchHandler, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	n := &daemon_{s: s, args: args, log: log, logs: logs, started: time.Now(), swapped: make(chan struct{}, 1)}
	defer n.teardown()

	fwdErr := make(chan error, 1)
	if err := n.start(ctx, fwdErr); err != nil {
		return err
	}
	n.ready.Store(true)
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	l := n.getLocal()
	log.Info("weft is up", "name", s.Name, "subnet", l.Subnet, "address", l.Addr, "underlay", netip.AddrPortFrom(n.underlay.Addr, s.Port),
		"encap", s.Encap, "mtu", n.mtu, "tun", s.TUN)

	bg, cancelBg := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancelBg(); wg.Wait() }()
	if interval, err := daemon.SdWatchdogEnabled(false); err == nil && interval > 0 {
		wg.Go(func() { n.watchdog(bg, interval/2) })
	}
	wg.Go(func() { n.reportDrops(bg, 30*time.Second) })
	if !s.PublicIP.IsValid() {
		// The operator did not pin the address: follow the interface's.
		wg.Go(func() { n.watchUnderlay(bg) })
	}

	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
			return nil
		case err := <-fwdErr:
			return fmt.Errorf("data path stopped: %w", err)
		case <-hup:
			n.reload()
		}
	}
}

func (n *daemon_) teardown() {
	n.ready.Store(false)
	for i := len(n.undo) - 1; i >= 0; i-- {
		n.undo[i]()
	}
	n.undo = nil
}

func (n *daemon_) onStop(f func()) { n.undo = append(n.undo, f) }

func (n *daemon_) gossip() *membership.Cluster { return n.cluster.Load() }

func (n *daemon_) getUnderlay() tun.Underlay {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.underlay
}

func (n *daemon_) getLocal() router.Local {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.local
}

// localFor is our identity when we own subnet, claimed at claimed.
func (n *daemon_) localFor(subnet netip.Prefix, claimed int64) router.Local {
	mac := n.s.VTEPMAC
	if mac.IsZero() {
		mac = encap.VTEPMAC(subnet)
	}
	return router.Local{Subnet: subnet, Addr: subnet.Addr(), MAC: mac, Claimed: claimed}
}

// tunPrefix is the TUN's address with the network's prefix length, so the
// kernel routes the whole overlay network through the device.
func (n *daemon_) tunPrefix(l router.Local) netip.Prefix {
	return netip.PrefixFrom(l.Addr, n.s.Network.Bits())
}

// start brings the node up step by step; every step registers its undo.
func (n *daemon_) start(ctx context.Context, fwdErr chan<- error) error {
	s := n.s
	if err := claimSocket(s.Socket); err != nil {
		return err
	}
	var err error
	if n.underlay, err = tun.FindUnderlay(s.Iface, s.PublicIP); err != nil {
		return usagef("underlay (--iface %q, --public-ip %q): %v", s.Iface, addrString(s.PublicIP), err)
	}
	n.mtu = s.MTU
	if n.mtu == 0 {
		n.mtu = n.underlay.MTU - s.Encap.Overhead(n.underlay.Addr.Is6())
	}

	// Routes a crashed run left behind go before anything new is made.
	if routes, err := tun.OurRoutes(); err == nil {
		for _, r := range routes {
			n.log.Warn("removing stale route left by an earlier run", "route", r.String())
			_ = tun.DeleteRoute(r)
		}
	}

	fresh, err := n.chooseSubnet()
	if err != nil {
		return err
	}

	n.reg = prometheus.NewRegistry()
	registerProcessMetrics(n.reg, n)
	if err := n.serveMetrics(); err != nil {
		return err
	}

	// Gossip first: a host taking a fresh subnet learns the cluster's
	// subnets before it settles on one.
	if err := n.startGossip(ctx); err != nil {
		return err
	}
	if fresh {
		n.settleSubnet(ctx)
	}
	if s.AutoSubnet {
		l := n.getLocal()
		if err := lease.Save(s.StateDir, lease.Lease{Network: s.Network, Subnet: l.Subnet, Claimed: l.Claimed}); err != nil {
			return fmt.Errorf("keep the subnet lease in --state-dir %s: %w", s.StateDir, err)
		}
	}

	// The TUN holds our overlay address and the route to the whole
	// network. With host-gw (encap none) it carries no tunnel: packets for
	// peers without a direct route end there and are dropped as no_route,
	// rather than leaking to the default gateway.
	l := n.getLocal()
	if n.dev, err = tun.Open(tun.Config{Name: s.TUN, MTU: n.mtu, Addr: n.tunPrefix(l), NoOffload: !s.Offload}, n.log); err != nil {
		return err
	}
	n.onStop(func() {
		if err := n.dev.Close(); err != nil {
			n.log.Error("closing TUN device", "err", err)
		}
	})
	serialWrites := false
	if n.dev.VNetHdr() {
		ok, err := n.dev.CoalescedWritesWork()
		switch {
		case err != nil:
			n.log.Warn("could not probe the TUN for coalesced writes; keeping them, with the fallback on first failure", "err", err)
		case !ok:
			serialWrites = true
			n.log.Warn("this kernel refuses coalesced TUN writes (the Linux 6.6.44 / 6.1 LTS virtio-net regression): writing one packet per call")
		}
	}
	var conn router.Conn = nopConn{}
	if s.Encap != encap.None {
		listen := netip.AddrPortFrom(netip.IPv4Unspecified(), s.Port)
		if n.underlay.Addr.Is6() {
			listen = netip.AddrPortFrom(netip.IPv6Unspecified(), s.Port)
		}
		if n.conn, err = encap.Listen(listen, n.dev.BatchSize(), s.Offload); err != nil {
			return err
		}
		n.onStop(func() { n.conn.Close() })
		conn = n.conn
		n.log.Info("data path", "tun_offloads", n.dev.VNetHdr(), "udp_gso", n.conn.GSO(), "udp_gro", n.conn.GRO(), "batch", n.dev.BatchSize())
	}

	mode := router.DirectOff
	switch {
	case s.Encap == encap.None:
		mode = router.DirectOnly
	case s.DirectRouting:
		mode = router.DirectOnLink
	}
	n.rt = router.New(router.Config{
		Name:            s.Name,
		Local:           l.Subnet,
		LocalAddr:       l.Addr,
		Claimed:         l.Claimed,
		Encap:           s.Encap,
		VNI:             s.VNI,
		MAC:             l.MAC,
		Direct:          mode,
		OnLink:          func(a netip.Addr) bool { return n.getUnderlay().IsOnLink(a) },
		Routes:          kernelRoutes{index: n.underlay.Index, src: func() netip.Addr { return n.getLocal().Addr }},
		PerPeerMetrics:  s.PerPeerMetrics,
		SerialTUNWrites: serialWrites,
		Logger:          n.log.With("component", "router"),
	}, n.dev, conn)
	n.onStop(n.rt.RemoveRoutes)
	n.reg.MustRegister(n.rt)
	if n.conn != nil {
		n.reg.MustRegister(newDataPathCollector(n.conn, n.dev, n.rt))
	}
	n.syncPeers()

	watchCtx, cancelWatch := context.WithCancel(ctx)
	n.onStop(cancelWatch)
	go n.watchMembers(watchCtx)

	fwdCtx, cancelFwd := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.rt.Run(fwdCtx); err != nil {
			fwdErr <- err
		}
	}()
	n.onStop(func() { cancelFwd(); <-done })

	if err := n.serveControl(); err != nil {
		return err
	}
	if err := n.writeSubnetFile(); err != nil {
		return err
	}
	return nil
}

// chooseSubnet settles where our subnet comes from: the flag, the lease kept
// in the state directory, or (fresh is true) a tentative free one that
// settleSubnet confirms once the cluster's subnets are known.
func (n *daemon_) chooseSubnet() (fresh bool, err error) {
	s := n.s
	if !s.AutoSubnet {
		n.local = n.localFor(s.Subnet, lease.Now())
		return false, nil
	}
	l, err := lease.Load(s.StateDir)
	if err != nil {
		n.log.Warn("ignoring unreadable subnet lease", "err", err)
	}
	if l.Subnet.IsValid() && l.Network == s.Network && s.Pool.Contains(l.Subnet) {
		n.local = n.localFor(l.Subnet, l.Claimed)
		n.log.Info("keeping the subnet leased before", "subnet", l.Subnet, "state_dir", s.StateDir)
		return false, nil
	}
	if l.Subnet.IsValid() {
		n.log.Warn("subnet lease does not fit the configured network, taking a new one", "lease", l.Subnet, "network", s.Network)
	}
	sub, err := s.Pool.Free(n.takenSubnets(), rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
	if err != nil {
		return false, fmt.Errorf("choose a subnet in %s: %w", s.Network, err)
	}
	n.local = n.localFor(sub, lease.Now())
	return true, nil
}

// takenSubnets are the subnets no fresh lease may overlap: every peer's
// that is alive, or was seen within the reclaim time, and the static peers'.
func (n *daemon_) takenSubnets() []netip.Prefix {
	var taken []netip.Prefix
	n.mu.Lock()
	statics := n.s.Peers
	n.mu.Unlock()
	for _, p := range statics {
		taken = append(taken, p.Subnet)
	}
	c := n.gossip()
	if c == nil {
		return taken
	}
	for _, m := range c.Members() {
		if m.MetaErr != nil {
			continue
		}
		gone := m.State == membership.StateDead || m.State == membership.StateLeft
		if gone && time.Since(m.Since) > n.s.SubnetReclaim {
			continue
		}
		taken = append(taken, m.Meta.Subnet)
	}
	return taken
}

// settleSubnet waits briefly for the first join, so that a fresh subnet is
// chosen knowing the cluster's, and moves off the tentative one if taken.
func (n *daemon_) settleSubnet(ctx context.Context) {
	if len(n.s.Join) > 0 {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil && !n.anyAlive() {
			time.Sleep(50 * time.Millisecond)
		}
	}
	l := n.getLocal()
	if !slices.ContainsFunc(n.takenSubnets(), l.Subnet.Overlaps) {
		n.log.Info("took a free subnet", "subnet", l.Subnet)
		return
	}
	sub, err := n.s.Pool.Free(n.takenSubnets(), rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
	if err != nil {
		n.log.Error("no free subnet left; keeping the tentative one", "subnet", l.Subnet, "err", err)
		return
	}
	n.setLocal(n.localFor(sub, lease.Now()))
	n.log.Info("took a free subnet", "subnet", sub)
}

func (n *daemon_) anyAlive() bool {
	for _, m := range n.gossip().Members() {
		if m.State == membership.StateAlive {
			return true
		}
	}
	return false
}

func (n *daemon_) setLocal(l router.Local) {
	n.mu.Lock()
	n.local = l
	n.mu.Unlock()
	if err := n.gossip().UpdateMeta(n.meta()); err != nil {
		n.log.Error("advertising our new subnet", "err", err)
	}
}

func (n *daemon_) startGossip(ctx context.Context) error {
	n.gossipMetrics = membership.NewMetrics(n.reg)
	c, err := n.newGossip(ctx, n.s.Join)
	if err != nil {
		return err
	}
	n.cluster.Store(c)
	n.onStop(func() {
		c := n.gossip()
		if err := c.Leave(2 * time.Second); err != nil {
			n.log.Warn("leaving the cluster", "err", err)
		}
		_ = c.Shutdown()
	})
	return nil
}

// newGossip starts a gossip member advertising our current underlay address.
func (n *daemon_) newGossip(ctx context.Context, seeds []string) (*membership.Cluster, error) {
	s := n.s
	u := n.getUnderlay()
	reap := max(24*time.Hour, s.SubnetReclaim)
	var key []byte
	var extra [][]byte
	if len(s.GossipKeys) > 0 {
		key, extra = s.GossipKeys[0], s.GossipKeys[1:]
	}
	mcfg := membership.Config{
		Name:          s.Name,
		BindAddr:      unspecifiedLike(u.Addr),
		BindPort:      s.GossipPort,
		AdvertiseAddr: u.Addr,
		Seeds:         seeds,
		Meta:          n.meta(),
		SecretKey:     key,
		ExtraKeys:     extra,
		Logger:        n.log.With("component", "gossip"),
		Metrics:       n.gossipMetrics,
		ReapAfter:     reap,
	}
	c, err := membership.Start(ctx, mcfg)
	if err != nil {
		return nil, fmt.Errorf("start gossip on port %d: %w", s.GossipPort, err)
	}
	return c, nil
}

func (n *daemon_) meta() membership.Meta {
	enc := membership.EncapUDP
	switch n.s.Encap {
	case encap.VXLAN:
		enc = membership.EncapVXLAN
	case encap.None:
		enc = membership.EncapNone
	}
	l := n.getLocal()
	m := membership.Meta{
		Subnet:   l.Subnet,
		Underlay: n.getUnderlay().Addr,
		Port:     n.s.Port,
		Encap:    enc,
		Claimed:  l.Claimed,
	}
	if n.s.Encap == encap.VXLAN {
		m.VNI = n.s.VNI
		m.VTEPMAC = l.MAC
	}
	return m
}

// watchMembers rebuilds the route table whenever the membership changes.
func (n *daemon_) watchMembers(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.gossip().Changes():
			n.syncPeers()
		case <-n.swapped:
			n.syncPeers()
		}
	}
}

func (n *daemon_) syncPeers() {
	n.syncMu.Lock()
	defer n.syncMu.Unlock()
	n.mu.Lock()
	statics := n.s.Peers
	n.mu.Unlock()
	conflicts := n.rt.SetPeers(peersFrom(n.gossip().Members(), statics, n.meta()))
	for _, c := range conflicts {
		if c.Loser == "" && n.s.AutoSubnet {
			n.moveSubnet(c)
			return
		}
	}
}

// moveSubnet takes another free subnet after we lost a conflict for ours:
// new TUN address, new metadata, new lease, new subnet file.
func (n *daemon_) moveSubnet(c router.Conflict) {
	old := n.getLocal()
	sub, err := n.s.Pool.Free(n.takenSubnets(), rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
	if err != nil {
		n.log.Error("lost a subnet conflict but no free subnet is left", "subnet", old.Subnet, "winner", c.Winner, "err", err)
		return
	}
	l := n.localFor(sub, lease.Now())
	if err := n.dev.SetAddress(n.tunPrefix(l), n.tunPrefix(old)); err != nil {
		n.log.Error("moving the TUN to the new subnet", "err", err)
		return
	}
	n.setLocal(l)
	n.rt.SetLocal(l)
	if err := lease.Save(n.s.StateDir, lease.Lease{Network: n.s.Network, Subnet: l.Subnet, Claimed: l.Claimed}); err != nil {
		n.log.Error("saving the subnet lease", "err", err)
	}
	if err := n.writeSubnetFile(); err != nil {
		n.log.Error("writing the subnet file", "err", err)
	}
	n.log.Warn("lost a subnet conflict: moved to a free subnet", "old", old.Subnet, "new", l.Subnet, "winner", c.Winner)
}

// peersFrom converts gossip members and static peers into router peers.
func peersFrom(members []membership.Member, statics []StaticPeer, self membership.Meta) []router.Peer {
	peers := make([]router.Peer, 0, len(members)+len(statics))
	for _, m := range members {
		p := router.Peer{Name: m.Name, State: m.State.String()}
		switch {
		case m.MetaErr != nil:
			p.Incompatible = "invalid metadata: " + m.MetaErr.Error()
		case m.Meta.Encap != self.Encap:
			p.Incompatible = fmt.Sprintf("runs encap %s, we run %s", m.Meta.Encap, self.Encap)
		case self.Encap == membership.EncapVXLAN && m.Meta.VNI != self.VNI:
			p.Incompatible = fmt.Sprintf("VNI %d, ours is %d", m.Meta.VNI, self.VNI)
		}
		if m.MetaErr == nil {
			p.Subnet = m.Meta.Subnet
			p.Underlay = netip.AddrPortFrom(m.Meta.Underlay, m.Meta.Port)
			p.MAC = encap.MAC(m.Meta.VTEPMAC)
			p.Claimed = m.Meta.Claimed
		}
		peers = append(peers, p)
	}
	for _, sp := range statics {
		peers = append(peers, router.Peer{
			Name: sp.Name, Subnet: sp.Subnet, Underlay: netip.AddrPortFrom(sp.IP, sp.Port),
			MAC: sp.MAC, State: "static", Static: true,
		})
	}
	return peers
}

func (n *daemon_) serveMetrics() error {
	ln, err := net.Listen("tcp", n.s.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener --metrics-addr %s: %w", n.s.MetricsAddr, err)
	}
	srv := &http.Server{Handler: n.metricsHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("metrics server", "err", err)
		}
	}()
	n.onStop(func() { _ = srv.Close() })
	return nil
}

// kernelRoutes installs direct routes to peers through the underlay
// interface, with our overlay address as their preferred source.
type kernelRoutes struct {
	index int
	src   func() netip.Addr
}

func (k kernelRoutes) Replace(dst netip.Prefix, via netip.Addr) error {
	return tun.ReplaceRoute(tun.Route{Dst: dst, Via: via, Src: k.src(), LinkIndex: k.index})
}

func (k kernelRoutes) Delete(dst netip.Prefix, via netip.Addr) error {
	return tun.DeleteRoute(tun.Route{Dst: dst, Via: via, LinkIndex: k.index})
}

// nopConn stands in for the tunnel when there is none (host-gw).
type nopConn struct{}

func (nopConn) ReadBatch([][]byte, int, []int, []netip.AddrPort) (int, error) { return 0, os.ErrClosed }
func (nopConn) WriteTo([][]byte, encap.Endpoint) (int, error)                 { return 0, os.ErrClosed }
func (nopConn) WriteOne([]byte, netip.AddrPort) error                         { return os.ErrClosed }
func (nopConn) Close() error                                                  { return nil }

func unspecifiedLike(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
