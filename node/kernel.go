package node

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/kernelvx"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/tun"
)

// kernelPath is the kernel data path (--datapath kernel, or auto where the
// kernel can carry the configuration): the kernel's VXLAN device carries
// the peers' packets, flannel-style, and weft programs it (package
// kernelvx) with a route, a neighbour and an FDB entry per peer, and a
// peer filter that keeps the userspace path's checks on who may send.
//
// The peers it programs are exactly those package router routes through
// the tunnel: the engine hands every peer set to a router (the same
// conflict rules, refusals, judging, status and metrics as the userspace
// path) and programs the kernel with the peers the router's status shows
// "via tunnel". Before that it refuses, as the router refuses anything,
// what one kernel device cannot carry (screenPeers, macClashes).
//
// The router runs over weft0, kept as the overlay network's catch-all:
// the TUN holds our overlay address with the whole network's prefix, so
// the kernel sends there what no peer's route (more specific, through the
// VXLAN device) takes, and the router drops it as no_route rather than let
// it leak to the default gateway; the watchdog's outbound probe goes
// through it too. It has one worker and no sockets: it never sends.
// Traffic counts come from the VXLAN device's counters and drops from the
// filter's (router.Config.Beside).
type kernelPath struct {
	log      *slog.Logger
	k        VXLANKernel
	sink     *userspace // weft0 and the router over it
	rt       *router.Router
	underlay func() tun.Underlay

	dev  atomic.Pointer[kernelvx.Device]
	base atomic.Pointer[router.Counts] // counts of the devices replaced (Beside adds them)
	slow atomic.Uint64                 // the filter's slow_path count of the devices replaced

	mu     sync.Mutex      // serializes programming; guards the fields below
	cfg    kernelvx.Config // the device's, defaults filled in
	input  []router.Peer   // the last peer set, as given
	routed []kernelvx.Peer // what is programmed: the router's tunnel peers
	err    error           // the last programming error (nil: the kernel holds what it should)
	probe  int             // the next routed peer the watchdog probes as
}

var _ Datapath = (*kernelPath)(nil)

// openKernel creates (or adopts) the VXLAN device and its filter, opens
// weft0 and starts the router over it. What it made is removed again if a
// later step fails.
func (n *Node) openKernel(k VXLANKernel) (*kernelPath, error) {
	s, l, u := n.s, n.getLocal(), n.getUnderlay()
	kp := &kernelPath{log: n.log.With("component", "kernelvx"), k: k, underlay: n.getUnderlay}
	kp.base.Store(&router.Counts{})
	dev, err := kernelvx.New(k, kernelvx.Config{Name: s.VXLANDevice, VNI: s.VNI, Port: s.Port, MTU: n.mtu,
		Underlay: u.Addr, UnderlayIndex: u.Index, MAC: l.MAC, Subnets: l.Subnets}, kp.log)
	if err != nil {
		return nil, err
	}
	if err := dev.Ensure(); err != nil {
		return nil, err
	}
	kp.cfg = dev.Config()
	kp.dev.Store(dev)
	sink, err := n.openSink(kp.counts)
	if err != nil {
		if cerr := dev.Cleanup(); cerr != nil {
			n.log.Error("removing the VXLAN device after a failed start", "err", cerr)
		}
		return nil, err
	}
	kp.sink, kp.rt = sink, sink.rt
	n.log.Info("data path", "mode", DatapathKernel, "device", kp.cfg.Name, "index", dev.Index(), "vni", kp.cfg.VNI, "port", kp.cfg.Port,
		"mtu", kp.cfg.MTU, "vtep_mac", kp.cfg.MAC.String(), "catch_all", s.TUN)
	return kp, nil
}

// openSink opens weft0 (one queue) and starts a router over it with no
// sockets: it routes nothing itself, it drops what reaches the TUN, and
// it judges and accounts the peers.
func (n *Node) openSink(beside func() router.Counts) (*userspace, error) {
	s, l := n.s, n.getLocal()
	dev, err := n.d.OpenTUN(tun.Config{Name: s.TUN, MTU: n.mtu, Addrs: n.tunPrefixes(l), NoOffload: true, Queues: 1}, n.log)
	if err != nil {
		return nil, err
	}
	u := &userspace{log: n.log, dev: dev}
	u.rt = router.New(router.Config{
		Name:   s.Name,
		Local:  l,
		Encap:  s.Encap,
		VNI:    s.VNI,
		Direct: router.DirectOff,
		Beside: beside,
		Logger: n.log.With("component", "router"),
	}, router.Worker{Dev: dev.Queues()[0], In: nopConn{}, Out: nopConn{}})
	u.rt.Start()
	return u, nil
}

// screenPeers refuses, in a copy of peers, the routable ones that one
// kernel VXLAN device cannot carry (the userspace path could): a VXLAN
// port other than ours (the device sends to one port), an underlay address
// of the other family (it sends over one underlay), our own underlay
// address, or a VTEP MAC that is not unicast. The router then shows and
// counts them as refused, like any refusal.
func screenPeers(peers []router.Peer, cfg kernelvx.Config) []router.Peer {
	out := slices.Clone(peers)
	for i := range out {
		p := &out[i]
		if p.Incompatible != "" || !(p.Static || p.State == "alive" || p.State == "suspect") || !p.Underlay.IsValid() {
			continue
		}
		under := p.Underlay.Addr().Unmap()
		switch {
		case p.Underlay.Port() != 0 && p.Underlay.Port() != cfg.Port:
			refuseKernel(p, router.RefusedEncap, "VXLAN port %d, but the kernel's VXLAN device sends to one port, ours (%d)", p.Underlay.Port(), cfg.Port)
		case under.Is4() != cfg.Underlay.Is4():
			refuseKernel(p, router.RefusedEncap, "underlay %s is not of our underlay's family (%s): one kernel VXLAN device sends over one", under, cfg.Underlay)
		case under == cfg.Underlay:
			refuseKernel(p, router.RefusedUnderlay, "advertises our own underlay address %s", under)
		case p.MAC.IsZero() || p.MAC[0]&1 != 0:
			refuseKernel(p, router.RefusedInvalidMeta, "VTEP MAC %s is not a unicast MAC", p.MAC)
		}
	}
	return out
}

func refuseKernel(p *router.Peer, why router.Refusal, format string, args ...any) {
	p.Refused, p.Incompatible = why, "kernel data path: "+fmt.Sprintf(format, args...)
}

// macClashes refuses, in peers, those of the routed ones (by name) whose
// VTEP MAC is ours or an earlier routed peer's (by name): the kernel's
// forwarding database keeps one destination per MAC. MACs derive from
// subnets, which the router keeps apart, so only an explicit --vtep-mac
// clashes. It reports whether it refused any.
func macClashes(peers []router.Peer, routed map[string]bool, ours encap.MAC) bool {
	order := make([]int, 0, len(routed))
	for i := range peers {
		if routed[peers[i].Name] {
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(peers[a].Name, peers[b].Name) })
	owners := map[encap.MAC]string{ours: "this host"}
	found := false
	for _, i := range order {
		p := &peers[i]
		if owner, taken := owners[p.MAC]; taken {
			refuseKernel(p, router.RefusedEncap, "VTEP MAC %s is also %s's: the kernel's forwarding database keeps one destination per MAC", p.MAC, owner)
			found = true
			continue
		}
		owners[p.MAC] = fmt.Sprintf("%q", p.Name)
	}
	return found
}

// SetPeers implements Datapath: the router judges the peer set, and the
// kernel is programmed with the peers it routes.
func (kp *kernelPath) SetPeers(peers []router.Peer) []router.Conflict {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	return kp.setPeers(peers)
}

func (kp *kernelPath) setPeers(peers []router.Peer) []router.Conflict {
	kp.input = slices.Clone(peers)
	if u := kp.underlay(); u.Addr != kp.cfg.Underlay || u.Index != kp.cfg.UnderlayIndex {
		cfg := kp.cfg
		cfg.Underlay, cfg.UnderlayIndex = u.Addr, u.Index
		kp.log.Warn("the underlay address changed: the VXLAN device sends from the new one", "old", kp.cfg.Underlay, "new", u.Addr)
		kp.replace(cfg)
	}
	screened := screenPeers(peers, kp.cfg)
	conflicts := kp.rt.SetPeers(screened)
	if macClashes(screened, kp.tunnelPeers(), kp.cfg.MAC) {
		conflicts = kp.rt.SetPeers(screened)
	}
	routed := kp.tunnelPeers()
	kp.routed = kp.routed[:0]
	for _, p := range screened {
		if routed[p.Name] {
			kp.routed = append(kp.routed, kernelvx.Peer{Name: p.Name, Subnets: p.Subnets, Underlay: p.Underlay, MAC: p.MAC})
		}
	}
	kp.reconcile()
	return conflicts
}

// tunnelPeers are the names of the peers the router routes through the
// tunnel, which the kernel carries.
func (kp *kernelPath) tunnelPeers() map[string]bool {
	out := map[string]bool{}
	for _, st := range kp.rt.Status() {
		if st.Via == router.ViaTunnel {
			out[st.Name] = true
		}
	}
	return out
}

// reconcile makes the kernel hold the routed peers (kernelvx reads it
// back and changes only what differs) and logs a change of outcome.
func (kp *kernelPath) reconcile() {
	err := kp.dev.Load().Reconcile(kp.routed)
	kp.noteErr(err)
}

func (kp *kernelPath) noteErr(err error) {
	switch {
	case err != nil && (kp.err == nil || kp.err.Error() != err.Error()):
		kp.log.Error("programming the kernel's VXLAN device", "err", err)
	case err == nil && kp.err != nil:
		kp.log.Info("the kernel's VXLAN device holds every routed peer again")
	}
	kp.err = err
}

// replace gives the device a new configuration (our subnets and MAC after
// a move, our underlay address after a change): a kernelvx.Device for it,
// ensured (kernelvx recreates the link if its attributes differ; the
// filter keeps its peers). The counts of what it replaces are kept.
func (kp *kernelPath) replace(cfg kernelvx.Config) {
	old := kp.dev.Load()
	dev, err := kernelvx.New(kp.k, cfg, kp.log)
	if err != nil {
		kp.noteErr(fmt.Errorf("the VXLAN device's new configuration: %w", err))
		return
	}
	last := kp.deviceCounts(old)
	kp.slow.Add(slowPath(old))
	oldIndex := old.Index()
	err = dev.Ensure()
	kp.cfg = dev.Config()
	kp.dev.Store(dev)
	base := *kp.base.Load()
	// The new filter counts from zero; the link's counters go on if the
	// link was kept.
	if dev.Index() == oldIndex {
		last.Totals = router.Totals{}
	}
	kp.base.Store(&router.Counts{Totals: addTotals(base.Totals, last.Totals), Drops: addDrops(base.Drops, last.Drops)})
	if err != nil {
		kp.noteErr(err)
	}
}

// SetAddress implements Datapath: weft0 follows a subnet move (the VXLAN
// device follows in SetLocal).
func (kp *kernelPath) SetAddress(next, old netip.Prefix) error { return kp.sink.SetAddress(next, old) }

// SetLocal implements Datapath: after a subnet move the device gets its
// new addresses, MAC and local subnets (the filter's not_local), and the
// peers are judged and programmed again.
func (kp *kernelPath) SetLocal(l router.Local) []router.Conflict {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	cfg := kp.cfg
	cfg.Subnets, cfg.MAC = l.Subnets, l.MAC
	kp.replace(cfg)
	kp.rt.SetLocal(l)
	return kp.setPeers(kp.input)
}

// Status implements Datapath: the router's peers, and the kernel's
// counters and entries, read back.
func (kp *kernelPath) Status(st *Status) {
	st.Node.Workers = 0 // the kernel forwards
	st.Peers, st.Drops, st.Totals = kp.rt.Status(), kp.rt.Drops(), kp.rt.Totals()
	st.Kernel = kp.status()
}

// KernelStatus is the kernel data path's part of the status: its VXLAN
// device and what weft programmed there, read back from the kernel.
type KernelStatus struct {
	Device string `json:"device"`
	Index  int    `json:"index"`
	// Routes, Neighbors and FDB are the device's entries for the peers,
	// as ip-route(8), ip-neighbour(8) and bridge(8) would show them.
	Routes    []string `json:"routes"`
	Neighbors []string `json:"neighbors"`
	FDB       []string `json:"fdb"`
	// FilterPeers are the underlay addresses the peer filter accepts
	// VXLAN from.
	FilterPeers []string `json:"filterPeers"`
	// Error is the last programming error (absent: the kernel holds
	// every routed peer).
	Error string `json:"error,omitempty"`
}

func (kp *kernelPath) status() *KernelStatus {
	kp.mu.Lock()
	name, perr := kp.cfg.Name, kp.err
	kp.mu.Unlock()
	idx := kp.dev.Load().Index()
	ks := &KernelStatus{Device: name, Index: idx, Routes: []string{}, Neighbors: []string{}, FDB: []string{}, FilterPeers: []string{}}
	var errs []error
	if perr != nil {
		errs = append(errs, perr)
	}
	if routes, err := kp.k.RouteList(idx); err == nil {
		for _, r := range routes {
			ks.Routes = append(ks.Routes, fmt.Sprintf("%s via %s dev %s onlink", r.Dst, r.Via, name))
		}
	} else {
		errs = append(errs, fmt.Errorf("list routes: %w", err))
	}
	if neighs, err := kp.k.NeighList(idx); err == nil {
		for _, n := range neighs {
			ks.Neighbors = append(ks.Neighbors, fmt.Sprintf("%s lladdr %s dev %s permanent", n.IP, n.MAC, name))
		}
	} else {
		errs = append(errs, fmt.Errorf("list neighbours: %w", err))
	}
	if fdb, err := kp.k.FDBList(idx); err == nil {
		for _, f := range fdb {
			ks.FDB = append(ks.FDB, fmt.Sprintf("%s dst %s dev %s self permanent", f.MAC, f.Dst, name))
		}
	} else {
		errs = append(errs, fmt.Errorf("list the FDB: %w", err))
	}
	if fs, err := kp.k.FilterSets(); err == nil {
		for _, p := range fs.Peers {
			ks.FilterPeers = append(ks.FilterPeers, p.String())
		}
	} else {
		errs = append(errs, fmt.Errorf("read the peer filter: %w", err))
	}
	for _, l := range [][]string{ks.Routes, ks.Neighbors, ks.FDB, ks.FilterPeers} {
		slices.Sort(l)
	}
	if err := errors.Join(errs...); err != nil {
		ks.Error = err.Error()
	}
	return ks
}

func (kp *kernelPath) Drops() map[string]uint64 { return kp.rt.Drops() }

// Tunnel implements Datapath: weft itself receives nothing on the data
// port (the kernel's VXLAN socket does, behind the filter): the
// watchdog's loopback probe would only be dropped there as unknown_peer.
func (kp *kernelPath) Tunnel() bool { return false }

// WaitProbes implements Datapath: the outbound probe through weft0's
// router (the catch-all works), and the kernel path's own check (check).
func (kp *kernelPath) WaitProbes(nonce uint64, _ bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	if err := kp.check(nonce, timeout); err != nil {
		kp.log.Error("watchdog: the kernel data path failed its probe", "err", err)
		return false
	}
	return kp.rt.WaitProbes(nonce, false, time.Until(deadline))
}

// check proves the kernel path for the watchdog: the device is there,
// weft's and up (else it is set up again); its routes, neighbour and FDB
// entries and the filter's sets are read back and repaired (Reconcile);
// and a VXLAN datagram as one of the routed peers (each in turn) would
// send it gets through the filter and the device to a socket on our
// overlay address (kernelprobe.go). With no peer routed the last step
// has no one to speak for, and is skipped.
func (kp *kernelPath) check(nonce uint64, timeout time.Duration) error {
	kp.mu.Lock()
	dev := kp.dev.Load()
	l, err := kp.k.LinkByName(kp.cfg.Name)
	if err != nil || l.Kind != kernelvx.KindVXLAN || l.Index != dev.Index() || !l.Up {
		kp.log.Warn("watchdog: the VXLAN device is gone, replaced or down: setting it up again", "device", kp.cfg.Name, "lookup_err", err, "up", l.Up)
		if err := dev.Ensure(); err != nil {
			kp.noteErr(err)
			kp.mu.Unlock()
			return err
		}
	}
	kp.reconcile()
	if kp.err != nil {
		err := kp.err
		kp.mu.Unlock()
		return err
	}
	probe, ok := kp.nextProbe(nonce)
	kp.mu.Unlock()
	if !ok {
		return nil
	}
	return kp.k.ProbeVXLAN(probe, timeout)
}

// nextProbe is the probe datagram as the next routed peer would send it,
// in our first subnet's family (the other if the peer has none of it).
// kp.mu is held.
func (kp *kernelPath) nextProbe(nonce uint64) (VXLANProbe, bool) {
	for range kp.routed {
		p := kp.routed[kp.probe%len(kp.routed)]
		kp.probe++
		for _, ours := range kp.cfg.Subnets {
			theirs := family.Of(p.Subnets, ours.Addr().Is6())
			if !theirs.IsValid() {
				continue
			}
			return VXLANProbe{
				From: netip.AddrPortFrom(p.Underlay.Addr().Unmap(), 0), To: netip.AddrPortFrom(kp.cfg.Underlay, kp.cfg.Port),
				VNI: kp.cfg.VNI, SrcMAC: p.MAC, DstMAC: kp.cfg.MAC,
				InnerSrc: theirs.Addr(), InnerDst: ours.Addr(), Payload: router.ProbePayload(nonce),
			}, true
		}
	}
	return VXLANProbe{}, false
}

// WriteOne implements Datapath: the kernel path never encrypts, so weft
// sends no handshakes.
func (kp *kernelPath) WriteOne([]byte, netip.AddrPort) error {
	return errors.New("the kernel data path sends no datagrams of weft's own")
}

func (kp *kernelPath) Failed() <-chan struct{} { return kp.rt.Failed() }
func (kp *kernelPath) Err() error              { return kp.rt.Err() }

// Close implements Datapath: the VXLAN device goes, and with it every
// route, neighbour and FDB entry on it, and the peer filter; then weft0.
func (kp *kernelPath) Close() {
	kp.mu.Lock()
	if err := kp.dev.Load().Cleanup(); err != nil {
		kp.log.Error("removing the VXLAN device and its filter", "err", err)
	}
	kp.mu.Unlock()
	kp.sink.Close()
}

var descSlowPath = prometheus.NewDesc("weft_kernel_filter_slow_path_packets_total",
	"VXLAN datagrams the kernel data path's peer filter let through by its slow rules, not its fast ones: frames that are not IP, or from a peer whose subnet has another length than ours (0 when every subnet has one length).", nil, nil)

func (kp *kernelPath) Describe(ch chan<- *prometheus.Desc) {
	kp.rt.Describe(ch)
	ch <- descSlowPath
}

func (kp *kernelPath) Collect(ch chan<- prometheus.Metric) {
	kp.rt.Collect(ch)
	ch <- prometheus.MustNewConstMetric(descSlowPath, prometheus.CounterValue, float64(kp.slow.Load()+slowPath(kp.dev.Load())))
}

// slowPath is dev's filter's slow_path count (0 if it cannot be read).
func slowPath(dev *kernelvx.Device) uint64 {
	if dev == nil {
		return 0
	}
	fc, err := dev.FilterCounters()
	if err != nil {
		return 0
	}
	return fc.SlowPath.Packets
}

// counts are the kernel's counts for the router (Config.Beside): the
// device's traffic counters and the filter's drops, with those of the
// devices it replaced.
func (kp *kernelPath) counts() router.Counts {
	base := *kp.base.Load()
	c := kp.deviceCounts(kp.dev.Load())
	return router.Counts{Totals: addTotals(base.Totals, c.Totals), Drops: addDrops(base.Drops, c.Drops)}
}

// deviceCounts reads dev's counters; what cannot be read counts nothing.
func (kp *kernelPath) deviceCounts(dev *kernelvx.Device) router.Counts {
	var c router.Counts
	if dev == nil {
		return c
	}
	if st, err := dev.Stats(); err == nil {
		c.Totals = router.Totals{TxPackets: st.TxPackets, TxBytes: st.TxBytes, RxPackets: st.RxPackets, RxBytes: st.RxBytes}
	}
	if fc, err := dev.FilterCounters(); err == nil {
		c.Drops = map[router.DropReason]uint64{
			router.DropUnknownPeer: fc.UnknownPeer.Packets,
			router.DropSpoofed:     fc.Spoofed.Packets,
			router.DropNotLocal:    fc.NotLocal.Packets,
		}
	}
	return c
}

func addTotals(a, b router.Totals) router.Totals {
	return router.Totals{TxPackets: a.TxPackets + b.TxPackets, TxBytes: a.TxBytes + b.TxBytes,
		RxPackets: a.RxPackets + b.RxPackets, RxBytes: a.RxBytes + b.RxBytes}
}

func addDrops(a, b map[router.DropReason]uint64) map[router.DropReason]uint64 {
	out := make(map[router.DropReason]uint64, len(a)+len(b))
	for k, v := range a {
		out[k] += v
	}
	for k, v := range b {
		out[k] += v
	}
	return out
}

// cleanupKernel removes what a kernel-mode run left (its VXLAN device and
// filter): at a start in userspace mode, whose socket on the VXLAN port
// the device would hold and the filter would guard.
func (n *Node) cleanupKernel() {
	if n.vx == nil {
		return
	}
	if err := kernelvx.Cleanup(n.vx, n.s.VXLANDevice, n.log.With("component", "kernelvx")); err != nil {
		n.log.Warn("removing a kernel data path's leftovers", "device", n.s.VXLANDevice, "err", err)
	}
}

// describeObstacles is the reason --datapath auto gives for the userspace
// path when the configuration keeps the kernel out.
func describeObstacles(obs []KernelObstacle) string {
	parts := make([]string, len(obs))
	for i, o := range obs {
		parts[i] = o.String()
	}
	return strings.Join(parts, "; ")
}
