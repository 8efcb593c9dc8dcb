package node

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/bgp"
	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/tun"
)

// BGPSettings configure the embedded BGP speaker (fixed for the node's
// life; the neighbours are in Live.BGPPeers).
type BGPSettings struct {
	Enabled bool
	ASN     uint32
	// RouterID is the BGP identifier (invalid: the underlay IPv4 address).
	RouterID netip.Addr
	// AnnounceNetwork announces the cluster networks as aggregates too.
	AnnounceNetwork bool
	// ListenPort, if positive, makes the speaker accept sessions on it
	// (tests); weft opens every session itself otherwise.
	ListenPort int32
}

// BGPStatus is the BGP speaker's part of the status.
type BGPStatus struct {
	ASN       uint32               `json:"asn"`
	RouterID  string               `json:"routerId"`
	Announced []string             `json:"announced"`
	Neighbors []bgp.NeighborStatus `json:"neighbors"`
	// ClusterRoute is the kernel route for the cluster network that
	// replaces the TUN's with encap none (native routing over the fabric).
	ClusterRoute []string `json:"clusterRoute,omitempty"`
}

// bgpState is the node's BGP speaker and what it put in the kernel.
type bgpState struct {
	sp *bgp.Speaker
	mu sync.Mutex // serializes syncs
	// other is the underlay interface's address of the family other than
	// the underlay address's (the next hop for that family's subnet).
	other netip.Addr
	// routes are the cluster routes installed (native routing), by network.
	routes   map[netip.Prefix]tun.Route
	routerID netip.Addr
}

var (
	descBGPUp        = prometheus.NewDesc("weft_bgp_session_up", "1 if the BGP session with the neighbor is established.", []string{"neighbor"}, nil)
	descBGPAnnounced = prometheus.NewDesc("weft_bgp_announced_prefixes", "Prefixes this host announces by BGP (its subnets, and the cluster network with --bgp-announce-network).", nil, nil)
	descBGPReceived  = prometheus.NewDesc("weft_bgp_received_prefixes", "Prefixes received from the BGP neighbor (weft installs none).", []string{"neighbor"}, nil)
)

type bgpCollector struct{ n *Node }

func (c bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBGPUp
	ch <- descBGPAnnounced
	ch <- descBGPReceived
}

func (c bgpCollector) Collect(ch chan<- prometheus.Metric) {
	sp := c.n.bgp.sp
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, st := range sp.Status(ctx) {
		ch <- prometheus.MustNewConstMetric(descBGPUp, prometheus.GaugeValue, b2f(st.Up()), st.Addr)
		ch <- prometheus.MustNewConstMetric(descBGPReceived, prometheus.GaugeValue, float64(st.Received), st.Addr)
	}
	ch <- prometheus.MustNewConstMetric(descBGPAnnounced, prometheus.GaugeValue, float64(len(sp.Announced())))
}

// nativeRouting: with BGP and encap none the fabric routes the cluster
// network (each host's subnet announced to the router), so the TUN holds
// only its own address and the network goes to the underlay gateway.
func (n *Node) nativeRouting() bool { return n.s.BGP.Enabled && n.s.Encap == encap.None }

// offLinkReason is what the status says of a peer off our segment under
// encap none: with BGP the fabric carries its traffic.
func (n *Node) offLinkReason() string {
	if n.nativeRouting() {
		return "not on-link: reached through the fabric (BGP), not by weft"
	}
	return ""
}

// startBGP starts the speaker with the configured neighbours; it
// announces once the node is ready (syncBGP). Its stop (withdraw, then
// Cease) is the first step of the shutdown.
func (n *Node) startBGP(ctx context.Context) error {
	if !n.s.BGP.Enabled {
		return nil
	}
	u := n.getUnderlay()
	id := n.s.BGP.RouterID
	if !id.IsValid() {
		id = u.Addr
		if !id.Is4() {
			id = n.otherUnderlayAddr(u)
		}
		if !id.Is4() {
			return &ConfigError{Key: "bgpRouterId", Err: fmt.Errorf("--bgp-router-id not given and the underlay %s has no IPv4 address to take it from", u.Iface)}
		}
	}
	n.bgp.other, n.bgp.routerID = n.otherUnderlayAddr(u), id
	n.bgp.routes = map[netip.Prefix]tun.Route{}
	log := n.log.With("component", "bgp")
	sp, err := bgp.Start(context.WithoutCancel(ctx), bgp.Config{ASN: n.s.BGP.ASN, RouterID: id, ListenPort: n.s.BGP.ListenPort, Logger: log})
	if err != nil {
		return err
	}
	n.bgp.sp = sp
	n.onStop(n.stopBGP)
	if err := sp.SetNeighbors(ctx, n.live.Load().BGPPeers); err != nil {
		return err
	}
	n.reg.MustRegister(bgpCollector{n})
	log.Info("bgp speaker started", "asn", n.s.BGP.ASN, "router_id", id, "neighbors", len(n.live.Load().BGPPeers), "native_routing", n.nativeRouting())
	return nil
}

// otherUnderlayAddr is the underlay interface's address of the family
// that u.Addr is not (invalid if none).
func (n *Node) otherUnderlayAddr(u tun.Underlay) netip.Addr {
	want := netip.IPv6Unspecified()
	if u.Addr.Is6() {
		want = netip.IPv4Unspecified()
	}
	o, err := n.d.Kernel.FindUnderlay(u.Iface, want)
	if err != nil {
		return netip.Addr{}
	}
	return o.Addr
}

// stopBGP withdraws our routes (the routers drop them at once, not after
// a graceful-restart wait), closes the sessions and removes the cluster
// routes.
func (n *Node) stopBGP() {
	n.bgp.mu.Lock()
	defer n.bgp.mu.Unlock()
	n.bgp.sp.Stop()
	for _, r := range n.bgp.routes {
		if err := n.d.Kernel.DeleteRoute(r); err != nil {
			n.log.Warn("removing the cluster route", "route", r.String(), "err", err)
		}
	}
	n.bgp.routes = nil
}

// watchBGP follows readiness (the gossip may stop) once a second; the
// subnet moves and underlay changes call syncBGP themselves.
func (n *Node) watchBGP(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		n.syncBGP()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// syncBGP makes the announcements (and, with native routing, the cluster
// routes) match the node's state now.
func (n *Node) syncBGP() {
	if n.bgp.sp == nil {
		return
	}
	n.bgp.mu.Lock()
	defer n.bgp.mu.Unlock()
	if n.bgp.routes == nil {
		return // stopped
	}
	l, u := n.getLocal(), n.getUnderlay()
	c := n.gossip()
	st := bgp.State{
		Ready:           n.ready.Load() && c != nil && c.Running(),
		Subnets:         l.Subnets,
		Networks:        n.s.Networks,
		AnnounceNetwork: n.s.BGP.AnnounceNetwork,
	}
	for _, a := range []netip.Addr{u.Addr, n.bgp.other} {
		switch {
		case a.Is4() && !st.NextHop4.IsValid():
			st.NextHop4 = a
		case a.Is6() && !st.NextHop6.IsValid():
			st.NextHop6 = a
		}
	}
	if err := n.bgp.sp.Announce(bgp.Paths(st)); err != nil {
		n.log.Error("bgp announcements", "err", err)
	}
	if n.nativeRouting() {
		n.syncClusterRoutes(st)
	}
}

// syncClusterRoutes routes each cluster network to the gateway of its
// family: the first BGP neighbour on the underlay's segment (the
// top-of-rack router), with our overlay address as the source, so that
// the replies come back to our subnet through the fabric. Peers on our
// segment keep their direct routes (more specific).
func (n *Node) syncClusterRoutes(st bgp.State) {
	u, l := n.getUnderlay(), n.getLocal()
	want := map[netip.Prefix]tun.Route{}
	for _, net := range n.s.Networks {
		src := localAddrFor(l, net.Addr())
		i := slices.IndexFunc(n.live.Load().BGPPeers, func(p bgp.Neighbor) bool {
			return p.Addr.Is6() == net.Addr().Is6() && u.IsOnLink(p.Addr)
		})
		if i < 0 || !src.IsValid() {
			continue
		}
		want[net] = tun.Route{Dst: net, Via: n.live.Load().BGPPeers[i].Addr, Src: src, LinkIndex: u.Index}
	}
	for net, r := range n.bgp.routes {
		if w, ok := want[net]; !ok || w != r {
			_ = n.d.Kernel.DeleteRoute(r)
			delete(n.bgp.routes, net)
		}
	}
	for net, r := range want {
		if _, ok := n.bgp.routes[net]; ok {
			continue
		}
		if err := n.d.Kernel.ReplaceRoute(r); err != nil {
			n.log.Error("routing the cluster network to the fabric", "route", r.String(), "err", err)
			continue
		}
		n.bgp.routes[net] = r
		n.log.Info("cluster network routed through the fabric", "network", net, "via", r.Via, "src", r.Src)
	}
	if len(want) == 0 && len(n.bgp.routes) == 0 {
		n.log.Warn("native routing: no BGP neighbour on the underlay's segment to route the cluster network to; only on-link peers are reachable", "iface", u.Iface)
	}
}

// reloadBGP applies a changed neighbour list: the sessions of the
// neighbours that did not change are not touched.
func (n *Node) reloadBGP(old, next Live) (bool, error) {
	if n.bgp.sp == nil || slices.Equal(old.BGPPeers, next.BGPPeers) {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := n.bgp.sp.SetNeighbors(ctx, next.BGPPeers)
	n.syncBGP() // the gateway of the cluster routes may have changed
	if err != nil {
		return true, fmt.Errorf("bgp neighbors: %w", err)
	}
	return true, nil
}

// bgpStatus adds the speaker's state to st.
func (n *Node) bgpStatus(st *Status) {
	if n.bgp.sp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	bs := &BGPStatus{ASN: n.s.BGP.ASN, Neighbors: n.bgp.sp.Status(ctx), Announced: []string{}}
	bs.RouterID = n.bgp.routerID.String()
	for _, p := range n.bgp.sp.Announced() {
		bs.Announced = append(bs.Announced, p.String())
	}
	n.bgp.mu.Lock()
	for _, r := range n.bgp.routes {
		bs.ClusterRoute = append(bs.ClusterRoute, fmt.Sprintf("%s via %s src %s", r.Dst, r.Via, r.Src))
	}
	n.bgp.mu.Unlock()
	slices.Sort(bs.ClusterRoute)
	st.BGP = bs
}
