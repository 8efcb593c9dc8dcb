package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/tun"
)

// node is a running weft daemon: what it created, in the order it did.
type node struct {
	s        Settings
	log      *slog.Logger
	level    *slog.LevelVar
	reg      *prometheus.Registry
	underlay tun.Underlay
	mtu      int
	tunAddr  netip.Prefix
	claimed  int64
	started  time.Time

	dev     *tun.Device
	conn    *encap.Conn
	rt      *router.Router
	cluster *membership.Cluster
	ready   atomic.Bool

	// undo holds the steps that take back what start-up did; shutdown (or
	// a failed start) runs them last to first.
	undo []func()
}

// run is `weft run`: it starts the daemon and serves until SIGTERM/SIGINT.
func run(ctx context.Context, s Settings, level *slog.LevelVar, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	n := &node{s: s, log: log, level: level, started: time.Now(), claimed: time.Now().UnixMilli()}
	defer n.teardown()

	fwdErr := make(chan error, 1)
	if err := n.start(ctx, fwdErr); err != nil {
		return err
	}
	n.ready.Store(true)
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	log.Info("weft is up", "name", s.Name, "subnet", s.Subnet, "address", n.tunAddr, "underlay", netip.AddrPortFrom(n.underlay.Addr, s.Port),
		"encap", s.Encap, "mtu", n.mtu, "tun", s.TUN)

	select {
	case <-ctx.Done():
		log.Info("shutting down", "signal", context.Cause(ctx))
		_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
		return nil
	case err := <-fwdErr:
		return fmt.Errorf("data path stopped: %w", err)
	}
}

func (n *node) teardown() {
	n.ready.Store(false)
	for i := len(n.undo) - 1; i >= 0; i-- {
		n.undo[i]()
	}
	n.undo = nil
}

func (n *node) onStop(f func()) { n.undo = append(n.undo, f) }

// start brings the node up step by step; every step registers its undo.
func (n *node) start(ctx context.Context, fwdErr chan<- error) error {
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
	n.tunAddr = netip.PrefixFrom(s.Subnet.Addr(), s.Network.Bits())

	// Routes a crashed run left behind go before anything new is made.
	if routes, err := tun.OurRoutes(); err == nil {
		for _, r := range routes {
			n.log.Warn("removing stale route left by an earlier run", "route", r.String())
			_ = tun.DeleteRoute(r)
		}
	}

	n.reg = prometheus.NewRegistry()
	registerProcessMetrics(n.reg, n)

	var dev router.Device = nopDevice{}
	var conn router.Conn = nopConn{}
	if s.Encap != encap.None {
		if n.dev, err = tun.Open(tun.Config{Name: s.TUN, MTU: n.mtu, Addr: n.tunAddr, NoOffload: !s.Offload}, n.log); err != nil {
			return err
		}
		n.onStop(func() {
			if err := n.dev.Close(); err != nil {
				n.log.Error("closing TUN device", "err", err)
			}
		})
		listen := netip.AddrPortFrom(netip.IPv4Unspecified(), s.Port)
		if n.underlay.Addr.Is6() {
			listen = netip.AddrPortFrom(netip.IPv6Unspecified(), s.Port)
		}
		if n.conn, err = encap.Listen(listen, n.dev.BatchSize(), s.Offload); err != nil {
			return err
		}
		n.onStop(func() { n.conn.Close() })
		dev, conn = n.dev, n.conn
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
		Name:           s.Name,
		Local:          s.Subnet,
		LocalAddr:      s.Subnet.Addr(),
		Claimed:        n.claimed,
		Encap:          s.Encap,
		VNI:            s.VNI,
		MAC:            s.VTEPMAC,
		Direct:         mode,
		OnLink:         n.underlay.IsOnLink,
		Routes:         kernelRoutes{index: n.underlay.Index},
		PerPeerMetrics: s.PerPeerMetrics,
		Logger:         n.log.With("component", "router"),
	}, dev, conn)
	n.onStop(n.rt.RemoveRoutes)
	n.reg.MustRegister(n.rt)
	if n.conn != nil {
		n.reg.MustRegister(newDataPathCollector(n.conn, n.dev, n.rt))
	}

	if err := n.serveMetrics(); err != nil {
		return err
	}

	mcfg := membership.Config{
		Name:          s.Name,
		BindAddr:      unspecifiedLike(n.underlay.Addr),
		BindPort:      s.GossipPort,
		AdvertiseAddr: n.underlay.Addr,
		Seeds:         s.Join,
		Meta:          n.meta(),
		Logger:        n.log.With("component", "gossip"),
		Metrics:       membership.NewMetrics(n.reg),
	}
	if n.cluster, err = membership.Start(ctx, mcfg); err != nil {
		return fmt.Errorf("start gossip on port %d: %w", s.GossipPort, err)
	}
	n.onStop(func() {
		if err := n.cluster.Leave(2 * time.Second); err != nil {
			n.log.Warn("leaving the cluster", "err", err)
		}
		_ = n.cluster.Shutdown()
	})
	n.syncPeers()

	watchCtx, cancelWatch := context.WithCancel(ctx)
	n.onStop(cancelWatch)
	go n.watchMembers(watchCtx)

	if s.Encap != encap.None {
		fwdCtx, cancelFwd := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := n.rt.Run(fwdCtx); err != nil {
				fwdErr <- err
			}
		}()
		n.onStop(func() { cancelFwd(); <-done })
	}

	if err := n.serveControl(); err != nil {
		return err
	}
	return nil
}

func (n *node) meta() membership.Meta {
	enc := membership.EncapUDP
	switch n.s.Encap {
	case encap.VXLAN:
		enc = membership.EncapVXLAN
	case encap.None:
		enc = membership.EncapNone
	}
	m := membership.Meta{
		Subnet:   n.s.Subnet,
		Underlay: n.underlay.Addr,
		Port:     n.s.Port,
		Encap:    enc,
		Claimed:  n.claimed,
	}
	if n.s.Encap == encap.VXLAN {
		m.VNI = n.s.VNI
		m.VTEPMAC = n.s.VTEPMAC
	}
	return m
}

// watchMembers rebuilds the route table whenever the membership changes.
func (n *node) watchMembers(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.cluster.Changes():
			n.syncPeers()
		}
	}
}

func (n *node) syncPeers() {
	n.rt.SetPeers(peersFrom(n.cluster.Members(), n.s, n.meta()))
}

// peersFrom converts gossip members and static peers into router peers.
func peersFrom(members []membership.Member, s Settings, self membership.Meta) []router.Peer {
	peers := make([]router.Peer, 0, len(members)+len(s.Peers))
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
	for _, sp := range s.Peers {
		peers = append(peers, router.Peer{
			Name: sp.Name, Subnet: sp.Subnet, Underlay: netip.AddrPortFrom(sp.IP, sp.Port),
			MAC: sp.MAC, State: "static", Static: true,
		})
	}
	return peers
}

func (n *node) serveMetrics() error {
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
// interface.
type kernelRoutes struct{ index int }

func (k kernelRoutes) Replace(dst netip.Prefix, via netip.Addr) error {
	return tun.ReplaceRoute(tun.Route{Dst: dst, Via: via, LinkIndex: k.index})
}

func (k kernelRoutes) Delete(dst netip.Prefix, via netip.Addr) error {
	return tun.DeleteRoute(tun.Route{Dst: dst, Via: via, LinkIndex: k.index})
}

// nopDevice and nopConn stand in for the tunnel when there is none
// (host-gw): the router then only manages kernel routes.
type nopDevice struct{}

func (nopDevice) Read([][]byte, []int, int) (int, error) { return 0, os.ErrClosed }
func (nopDevice) Write([][]byte, int) (int, error)       { return 0, os.ErrClosed }
func (nopDevice) BatchSize() int                         { return 1 }
func (nopDevice) Close() error                           { return nil }

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
