package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/tun"
)

// userspace is the userspace data path: a TUN device with a queue per
// worker, the router's forwarding workers, and each worker's UDP sockets
// (none with encap none). It owns the device and the sockets, and is their
// one closer.
type userspace struct {
	log     *slog.Logger
	dev     TUN
	conns   []Socket // every data socket, receiving and sending; none with encap none
	rt      *router.Router
	partial bool // partial checksums advertised (for the status)
}

var _ Datapath = (*userspace)(nil)

// openUserspace opens the TUN with a queue per worker and each worker's
// sockets, and starts forwarding. The TUN holds our overlay addresses and
// the routes to the whole networks; with host-gw (encap none) it carries no
// tunnel: packets for peers without a direct route end there and are
// dropped as no_route, rather than leaking to the default gateway.
func (n *Node) openUserspace() (*userspace, error) {
	s := n.s
	l := n.getLocal()
	dev, err := n.d.OpenTUN(tun.Config{Name: s.TUN, MTU: n.mtu, Addrs: n.tunPrefixes(l), NoOffload: !s.Offload, Queues: s.Workers}, n.log)
	if err != nil {
		return nil, err
	}
	u := &userspace{log: n.log, dev: dev, partial: s.PartialChecksums}
	queues := dev.Queues()
	if err := dev.MultiQueueErr(); err != nil {
		n.log.Warn("the kernel refused a multi-queue TUN: running one worker", "workers_wanted", s.Workers, "err", err)
	}
	workers := make([]router.Worker, len(queues))
	for i, q := range queues {
		workers[i] = router.Worker{Dev: q, In: nopConn{}, Out: nopConn{}}
	}
	if s.Encap.Tunnel() {
		listen := func(addr netip.AddrPort, reusePort bool) (Socket, error) {
			return n.d.Listen(addr, dev.BatchSize(), s.Offload, reusePort)
		}
		if err := u.openSockets(workers, listen, unspecifiedLike(n.getUnderlay().Addr), s.Port); err != nil {
			u.closeSockets()
			u.closeTUN()
			return nil, err
		}
		c := u.conns[0]
		n.log.Info("data path", "workers", len(workers), "tun_offloads", dev.VNetHdr(), "udp_gso", c.GSO(), "udp_gro", c.GRO(),
			"batch", dev.BatchSize(), "partial_checksums", s.PartialChecksums)
	}

	mode := router.DirectOff
	switch {
	case !s.Encap.Tunnel():
		mode = router.DirectOnly
	case s.DirectRouting:
		mode = router.DirectOnLink
	}
	u.rt = router.New(router.Config{
		Name:           s.Name,
		Local:          l,
		Encap:          s.Encap,
		VNI:            s.VNI,
		Direct:         mode,
		OnLink:         func(a netip.Addr) bool { return n.getUnderlay().IsOnLink(a) },
		Routes:         kernelRoutes{n},
		OffLinkReason:  n.offLinkReason(),
		PerPeerMetrics: s.PerPeerMetrics,
		BusyPoll:       s.BusyPoll,
		Logger:         n.log.With("component", "router"),
	}, workers...)
	u.rt.Start()
	return u, nil
}

// openSockets gives each worker its sockets. One worker receives and sends
// on one socket bound to the data port (flannel's udp design). Several
// workers each receive on a socket of a SO_REUSEPORT group on the data port
// and send from a socket of their own on an ephemeral port (the kernel's
// ip_local_port_range, as the kernel VXLAN device's default source port
// range) that is ≡ the worker's index modulo the number of workers. The
// group is steered by source port modulo the number of workers, so the
// peer's worker i receives what our worker i sends, and its replies, sent
// from its worker i's port, reach our worker i: a flow keeps one worker
// (and one TUN queue) on both hosts, whatever ports the kernel chose.
func (u *userspace) openSockets(workers []router.Worker, listen func(netip.AddrPort, bool) (Socket, error), unspec netip.Addr, port uint16) error {
	open := func(addr netip.AddrPort, reusePort bool) (Socket, error) {
		c, err := listen(addr, reusePort)
		if err == nil {
			u.conns = append(u.conns, c)
		}
		return c, err
	}
	data := netip.AddrPortFrom(unspec, port)
	if len(workers) == 1 {
		c, err := open(data, false)
		if err != nil {
			return err
		}
		workers[0].In, workers[0].Out = c, c
		return nil
	}
	var group []Socket
	for i := range workers {
		in, err := open(data, true)
		if err != nil {
			return err
		}
		group = append(group, in)
		workers[i].In = in
	}
	if err := group[0].SteerBySourcePort(len(workers)); err != nil {
		return err
	}
	for i := range workers {
		out, err := sendSocket(listen, unspec, i, len(workers))
		if err != nil {
			return err
		}
		u.conns = append(u.conns, out)
		workers[i].Out = out
	}
	return nil
}

// sendSocket opens a socket on an ephemeral port p with p mod n = i.
// Ports the kernel offers that do not fit are held until one does, so that
// it does not offer them again, then released.
func sendSocket(listen func(netip.AddrPort, bool) (Socket, error), unspec netip.Addr, i, workers int) (Socket, error) {
	var misfits []Socket
	defer func() {
		for _, c := range misfits {
			c.Close()
		}
	}()
	for range 64 * workers {
		c, err := listen(netip.AddrPortFrom(unspec, 0), false)
		if err != nil {
			return nil, err
		}
		if int(c.LocalAddr().Port())%workers == i {
			return c, nil
		}
		misfits = append(misfits, c)
	}
	return nil, fmt.Errorf("no ephemeral UDP port ≡ %d (mod %d) for worker %d's sending socket", i, workers, i)
}

func (u *userspace) SetPeers(peers []router.Peer) []router.Conflict { return u.rt.SetPeers(peers) }
func (u *userspace) SetAddress(next, old netip.Prefix) error        { return u.dev.SetAddress(next, old) }
func (u *userspace) SetLocal(l router.Local) []router.Conflict      { return u.rt.SetLocal(l) }
func (u *userspace) Drops() map[string]uint64                       { return u.rt.Drops() }
func (u *userspace) Tunnel() bool                                   { return len(u.conns) > 0 }
func (u *userspace) Failed() <-chan struct{}                        { return u.rt.Failed() }
func (u *userspace) Err() error                                     { return u.rt.Err() }

func (u *userspace) WaitProbes(nonce uint64, inbound bool, timeout time.Duration) bool {
	return u.rt.WaitProbes(nonce, inbound, timeout)
}

// WriteOne sends from the first socket, the one on the data port.
func (u *userspace) WriteOne(b []byte, dst netip.AddrPort) error {
	if len(u.conns) == 0 {
		return errors.New("no data socket")
	}
	return u.conns[0].WriteOne(b, dst)
}

func (u *userspace) Status(st *Status) {
	st.Node.Workers = len(u.dev.Queues())
	if len(u.conns) > 0 {
		st.Node.Offloads = map[string]bool{"udp_gso": u.conns[0].GSO(), "udp_gro": u.conns[0].GRO(), "tun_vnet_hdr": u.dev.VNetHdr(),
			"partial_checksums": u.partial}
	}
	st.Peers, st.Drops, st.Totals = u.rt.Status(), u.rt.Drops(), u.rt.Totals()
}

// Close removes the direct routes, then closes the sockets and the TUN:
// closing them is what ends the loops' reads; the kernel removes the TUN
// link with its last queue.
func (u *userspace) Close() {
	u.rt.RemoveRoutes()
	u.closeSockets()
	u.closeTUN()
	u.rt.Wait()
}

func (u *userspace) closeSockets() {
	for _, c := range u.conns {
		if err := c.Close(); err != nil {
			u.log.Error("closing a data socket", "err", err)
		}
	}
}

func (u *userspace) closeTUN() {
	if err := u.dev.Close(); err != nil {
		u.log.Error("closing the TUN device", "err", err)
	}
}

var (
	descSyscalls   = prometheus.NewDesc("weft_syscalls_total", "System calls made by the data path, by operation.", []string{"op"}, nil)
	descOffload    = prometheus.NewDesc("weft_offload_enabled", "1 if an offload is in use, by feature.", []string{"feature"}, nil)
	descWorkers    = prometheus.NewDesc("weft_workers", "Forwarding workers running, each with its own TUN queue and sockets.", nil, nil)
	descMultiQueue = prometheus.NewDesc("weft_tun_multiqueue_refused", "1 if the kernel refused a multi-queue TUN and weft runs one worker instead of the number asked for.", nil, nil)
)

// Describe and Collect export the router's metrics and the socket's and
// the device's counters, read from the atomics the data path keeps
// (nothing is counted per packet).
func (u *userspace) Describe(ch chan<- *prometheus.Desc) {
	u.rt.Describe(ch)
	ch <- descSyscalls
	ch <- descOffload
	ch <- descWorkers
	ch <- descMultiQueue
}

func (u *userspace) Collect(ch chan<- prometheus.Metric) {
	u.rt.Collect(ch)
	reads, writes := u.rt.TUNSyscalls()
	ops := map[string]uint64{"tun_read": reads, "tun_write": writes}
	features := map[string]bool{"tun_vnet_hdr": u.dev.VNetHdr()}
	if len(u.conns) > 0 {
		for _, c := range u.conns {
			send, recv := c.Syscalls()
			ops["sendmmsg"] += send
			ops["recvmmsg"] += recv
		}
		features["udp_gso"], features["udp_gro"] = u.conns[0].GSO(), u.conns[0].GRO()
	}
	for op, v := range ops {
		ch <- prometheus.MustNewConstMetric(descSyscalls, prometheus.CounterValue, float64(v), op)
	}
	ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(len(u.dev.Queues())))
	ch <- prometheus.MustNewConstMetric(descMultiQueue, prometheus.GaugeValue, b2f(u.dev.MultiQueueErr() != nil))
	for feature, on := range features {
		ch <- prometheus.MustNewConstMetric(descOffload, prometheus.GaugeValue, b2f(on), feature)
	}
}

// nopConn stands in for the tunnel when there is none (host-gw): it reports
// itself closed, so the inbound loop ends at once.
type nopConn struct{}

func (nopConn) ReadViews([][]byte, int, [][]byte, []netip.AddrPort) (int, error) {
	return 0, os.ErrClosed
}
func (nopConn) WriteTo([][]byte, encap.Endpoint) (int, error) { return 0, os.ErrClosed }
func (nopConn) WriteOne([]byte, netip.AddrPort) error         { return os.ErrClosed }
func (nopConn) Close() error                                  { return nil }
