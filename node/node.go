package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/tun"
)

// Node is a running weft host.
//
// Ownership: the node owns every goroutine it starts (it waits for each
// before Wait returns), and it is the one closer of every descriptor it
// opens (the listeners; the data path closes its TUN device and sockets).
type Node struct {
	s           Settings // fixed; s.Live is unused (see live)
	d           Deps
	log         *slog.Logger
	live        atomic.Pointer[Live]
	reg         *prometheus.Registry
	mtu         int
	started     time.Time
	ready       atomic.Bool
	metricsAddr net.Addr
	pprofAddr   net.Addr

	mu       sync.Mutex // guards underlay and local
	underlay tun.Underlay
	local    router.Local

	dp     Datapath // the data path, opened at start (datapath.go)
	dpc    atomic.Pointer[dpChoice]
	vx     VXLANKernel // the kernel data path's view of the kernel (nil: none)
	secure secureState // --encrypt (secure.go)
	bgp    bgpState    // the BGP speaker (bgp.go)
	certs  certState   // peers' certificates (pki.go); guarded by syncMu
	signed signState   // our metadata's proof times (pki.go)

	// The gossip is replaced when our underlay address changes (memberlist
	// cannot change the address it advertises); swapped tells watchMembers.
	cluster       atomic.Pointer[membership.Cluster]
	swapped       chan struct{}
	gossipMetrics *membership.Metrics

	syncMu   sync.Mutex // serializes syncPeers and reloads
	reloadMu sync.Mutex

	// bg runs the background goroutines (member and underlay watchers,
	// drop reports, watchdog); shutdown stops them first.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
	// serving runs the listeners' goroutines.
	serving sync.WaitGroup
	// undo takes back what start-up did, last first: the steps of the
	// documented shutdown order register themselves here as they are made.
	undo []func()

	done chan struct{}
	err  error
}

// Start brings the node up: the control socket is claimed, the underlay
// found, stale routes removed, the subnet chosen, metrics served, gossip
// joined, the data path opened (the TUN and the sockets, the forwarding
// loops started: datapath.go), routes installed, the control socket served and the subnet file written.
// If a step fails, what the earlier steps made is taken back before Start
// returns the error.
//
// The node runs until ctx ends or the data path fails; Wait then returns
// once everything is shut down.
func Start(ctx context.Context, s Settings, d Deps) (*Node, error) {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Notify == nil {
		d.Notify = func(string) {}
	}
	if err := checkPlaintextPeers(s.Encrypt, s.Live.Peers); err != nil {
		return nil, err
	}
	if s.Encrypt && s.DirectRouting {
		// Direct routes are plain kernel routes past weft: never plaintext
		// under --encrypt (config refuses it too).
		return nil, &ConfigError{Key: "encrypt/directRouting", Err: fmt.Errorf("--encrypt with --direct-routing: direct routes carry on-link peers' traffic unencrypted, past weft")}
	}
	live := s.Live
	s.Live = Live{}
	n := &Node{s: s, d: d, log: d.Logger, started: d.Now(), swapped: make(chan struct{}, 1), done: make(chan struct{})}
	n.live.Store(&live)
	n.bgCtx, n.bgCancel = context.WithCancel(context.WithoutCancel(ctx))
	if err := n.start(ctx); err != nil {
		n.shutdown()
		return nil, err
	}
	// Every field start-up writes is written: from here /v1/status may
	// read them (serveStatus loads ready first).
	n.ready.Store(true)
	d.Notify("READY=1")
	l := n.getLocal()
	sub := family.First(l.Subnets)
	n.log.Info("weft is up", "name", s.Name, "subnet", sub, "address", family.AddrOf(l.Addrs, sub.Addr().Is6()), "subnet6", prefixString(family.Second(l.Subnets)), "underlay", netip.AddrPortFrom(n.getUnderlay().Addr, s.Port),
		"encap", s.Encap, "mtu", n.mtu, "tun", s.TUN)
	n.startBackground()
	go n.supervise(ctx)
	return n, nil
}

// Wait blocks until the node has stopped and everything it made is taken
// back. It returns the data path's error if that is why it stopped.
func (n *Node) Wait() error {
	<-n.done
	return n.err
}

// Done is closed once the node has stopped.
func (n *Node) Done() <-chan struct{} { return n.done }

// supervise stops the node when ctx ends or the data path fails.
func (n *Node) supervise(ctx context.Context) {
	defer close(n.done)
	select {
	case <-ctx.Done():
		n.log.Info("shutting down")
	case <-n.dp.Failed():
		n.err = fmt.Errorf("data path stopped: %w", n.dp.Err())
		n.log.Error("shutting down", "err", n.err)
	}
	n.d.Notify("STOPPING=1")
	n.shutdown()
}

// shutdown takes back what start-up made. The order is fixed: stop
// watching members (and every other background goroutine), leave the
// gossip, remove the kernel routes, close the data path (socket, then TUN,
// whose link goes with it), close the listeners.
func (n *Node) shutdown() {
	n.ready.Store(false)
	n.bgCancel()
	n.bg.Wait()
	for i := len(n.undo) - 1; i >= 0; i-- {
		n.undo[i]()
	}
	n.undo = nil
	n.serving.Wait()
}

func (n *Node) onStop(f func()) { n.undo = append(n.undo, f) }

func (n *Node) startBackground() {
	ctx := n.bgCtx
	n.bg.Go(func() { n.watchMembers(ctx) })
	n.bg.Go(func() { n.reportDrops(ctx, 30*time.Second) })
	n.runSecure(ctx)
	if n.d.Watchdog > 0 {
		n.bg.Go(func() { n.watchdog(ctx, n.d.Watchdog/2) })
	}
	if n.s.BGP.Enabled {
		n.bg.Go(func() { n.watchBGP(ctx) })
	}
	if !n.s.PublicIP.IsValid() {
		// The operator did not pin the address: follow the interface's.
		n.bg.Go(func() { n.watchUnderlay(ctx) })
	}
}

func (n *Node) gossip() *membership.Cluster { return n.cluster.Load() }

func (n *Node) getUnderlay() tun.Underlay {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.underlay
}

func (n *Node) getLocal() router.Local {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.local
}

// localFor is our identity when we own subnets (one per network, in the
// order of the networks), claimed at claimed. The TUN's address in each is
// the subnet's first.
func (n *Node) localFor(subnets []netip.Prefix, claimed int64) router.Local {
	mac := n.s.VTEPMAC
	if mac.IsZero() {
		mac = encap.VTEPMAC(family.First(subnets))
	}
	l := router.Local{Subnets: subnets, MAC: mac, Claimed: claimed}
	for _, sub := range subnets {
		l.Addrs = append(l.Addrs, sub.Addr())
	}
	return l
}

// tunPrefixes are the TUN's addresses, one per network, each with the
// network's prefix length, so the kernel routes the whole overlay network
// through the device.
func (n *Node) tunPrefixes(l router.Local) []netip.Prefix {
	out := make([]netip.Prefix, len(l.Addrs))
	for i, a := range l.Addrs {
		if n.nativeRouting() {
			// The fabric routes the network (bgp.go): the TUN holds its address only.
			out[i] = netip.PrefixFrom(a, a.BitLen())
			continue
		}
		out[i] = netip.PrefixFrom(a, n.s.Networks[i].Bits())
	}
	return out
}

func (n *Node) start(ctx context.Context) error {
	s := n.s
	if err := claimSocket(s.Socket); err != nil {
		return err
	}
	u, err := n.d.Kernel.FindUnderlay(s.Iface, s.PublicIP)
	if err != nil {
		return &ConfigError{Key: "iface/publicIp", Err: fmt.Errorf("underlay (--iface %q, --public-ip %q): %w", s.Iface, addrString(s.PublicIP), err)}
	}
	n.underlay = u
	n.mtu = s.MTU
	if n.mtu == 0 {
		n.mtu = u.MTU - s.Encap.Overhead(u.Addr.Is6()) - n.sealOverhead()
	}

	if err := n.openVXLAN(); err != nil {
		return err
	}
	// Routes a crashed run left behind go before anything new is made,
	// but for those through a kernel-mode run's VXLAN device, which the
	// kernel data path adopts (and a userspace start removes with the
	// device).
	keep := n.kernelDeviceIndex()
	if routes, err := n.d.Kernel.OurRoutes(); err == nil {
		for _, r := range routes {
			if keep != 0 && r.LinkIndex == keep {
				continue
			}
			n.log.Warn("removing stale route left by an earlier run", "route", r.String())
			_ = n.d.Kernel.DeleteRoute(r)
		}
	}

	fresh, err := n.chooseSubnet()
	if err != nil {
		return err
	}

	n.reg = prometheus.NewRegistry()
	n.registerMetrics()
	if err := n.serveMetrics(); err != nil {
		return err
	}
	if err := n.servePProf(); err != nil {
		return err
	}

	if err := n.loadSecure(); err != nil {
		return err
	}
	if len(n.live.Load().GossipKeys) == 0 {
		n.log.Warn("gossip is unauthenticated (--insecure-gossip): anyone who reaches the gossip port can join the cluster and claim subnets; give every host the same --gossip-key-file")
	}
	// Gossip first: a host taking a fresh subnet learns the cluster's
	// subnets before it settles on one.
	if err := n.startGossip(ctx); err != nil {
		return err
	}
	if fresh {
		n.settleSubnet(ctx)
	}
	if err := n.saveLease(); err != nil {
		return err
	}
	if err := n.openDataPath(); err != nil {
		return err
	}
	if err := n.serveControl(); err != nil {
		return err
	}
	if err := n.writeSubnetFile(); err != nil {
		return err
	}
	// Last started, first stopped: the routes are withdrawn before
	// anything else goes.
	return n.startBGP(ctx)
}

// openDataPath opens the data path the settings ask for (chooseDataPath),
// running, registers its metrics and its shutdown, and gives it the peers.
func (n *Node) openDataPath() error {
	dp, err := n.chooseDataPath()
	if err != nil {
		return err
	}
	n.dp = dp
	if n.s.Datapath == DatapathAuto && n.dpc.Load().Mode == DatapathUserspace && n.s.PartialChecksums {
		// Partial checksums were not advertised while the choice was
		// open (the kernel path cannot take them): they are now.
		if err := n.gossip().UpdateMeta(n.advertised()); err != nil {
			n.log.Error("advertising partial checksums", "err", err)
		}
	}
	n.reg.MustRegister(dp)
	// Shutdown order: the routes go (first thing Close does), then the
	// data path closes.
	n.onStop(dp.Close)
	n.syncPeers()
	return nil
}

// kernelRoutes installs direct routes to peers through the underlay
// interface, with our overlay address as their preferred source.
type kernelRoutes struct{ n *Node }

func (k kernelRoutes) Replace(dst netip.Prefix, via netip.Addr) error {
	if !slices.ContainsFunc(k.n.s.Networks, func(n netip.Prefix) bool { return membership.Inside(dst, n) }) {
		// The peer checks refuse such a subnet first; this is the last
		// line: weft never routes outside the overlay.
		return fmt.Errorf("route to %s: outside the overlay network", dst)
	}
	return k.n.d.Kernel.ReplaceRoute(tun.Route{Dst: dst, Via: via, Src: localAddrFor(k.n.getLocal(), dst.Addr()), LinkIndex: k.n.getUnderlay().Index})
}

// localAddrFor is our overlay address of a's family (invalid if none).
func localAddrFor(l router.Local, a netip.Addr) netip.Addr {
	return family.AddrOf(l.Addrs, a.Is6())
}

func (k kernelRoutes) Delete(dst netip.Prefix, via netip.Addr) error {
	return k.n.d.Kernel.DeleteRoute(tun.Route{Dst: dst, Via: via, LinkIndex: k.n.getUnderlay().Index})
}

// ConfigError is a start-up failure caused by the configuration (not by
// the system): weft exits 2 for it.
type ConfigError struct {
	Key string
	Err error
}

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func unspecifiedLike(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
