package node

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/router"
)

func (n *Node) startGossip(ctx context.Context) error {
	n.gossipMetrics = membership.NewMetrics(n.reg)
	c, err := n.newGossip(ctx, n.live.Load().Join)
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
func (n *Node) newGossip(ctx context.Context, seeds []string) (*membership.Cluster, error) {
	s := n.s
	live := n.live.Load()
	u := n.getUnderlay()
	var key []byte
	var extra [][]byte
	if len(live.GossipKeys) > 0 {
		key, extra = live.GossipKeys[0], live.GossipKeys[1:]
	}
	c, err := membership.Start(ctx, membership.Config{
		Name:          s.Name,
		BindAddr:      unspecifiedLike(u.Addr),
		BindPort:      s.GossipPort,
		AdvertiseAddr: u.Addr,
		Seeds:         seeds,
		Meta:          n.advertised(),
		Cert:          n.ownCert(),
		SecretKey:     key,
		ExtraKeys:     extra,
		Logger:        n.log.With("component", "gossip"),
		Metrics:       n.gossipMetrics,
		ReapAfter:     max(24*time.Hour, s.SubnetReclaim),
	})
	if err != nil {
		return nil, fmt.Errorf("start gossip on port %d: %w", s.GossipPort, err)
	}
	return c, nil
}

func (n *Node) meta() membership.Meta {
	l := n.getLocal()
	m := membership.Meta{
		Subnets:  l.Subnets,
		Underlay: n.getUnderlay().Addr,
		Port:     n.s.Port,
		Encap:    n.s.Encap,
		Claimed:  l.Claimed,
		// Capabilities that change nothing without offloads are not
		// advertised (--offload=false implies full checksums).
		PartialChecksums: n.advertisePartial(),
		Encryption:       n.secureMeta(),
		Networks:         n.s.Networks,
	}
	if n.s.Encap.HasVTEP() {
		m.VNI = n.s.VNI
		m.VTEPMAC = l.MAC
	}
	return m
}

// watchMembers rebuilds the route table whenever the membership changes,
// and every certRecheck (certificates run out without a membership
// change).
func (n *Node) watchMembers(ctx context.Context) {
	recheck := time.NewTicker(certRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.gossip().Changes():
			n.syncPeers()
		case <-n.swapped:
			n.syncPeers()
		case <-recheck.C:
			if n.live.Load().PKI != nil {
				n.syncPeers()
			}
		}
	}
}

// syncPeers gives the router the current peer set, and moves our subnet if
// it lost a conflict.
func (n *Node) syncPeers() {
	n.syncMu.Lock()
	defer n.syncMu.Unlock()
	members := n.gossip().Members()
	now := n.d.Now()
	n.checkOwnCert(now)
	peers := n.certPeers(peersFrom(members, n.live.Load().Peers, n.meta(), now), members, now)
	conflicts := n.dp.SetPeers(n.securePeers(peers, members))
	for _, c := range conflicts {
		if c.Loser == "" && n.s.AutoSubnet {
			n.moveSubnet(c)
			return
		}
	}
}

// Claim times weft believes. A claim dated more than MaxClaimSkew after
// this host's clock, or before weft existed (ClaimEpoch), is a forgery or a
// broken clock: the peer is refused (claim_time), since an early claim
// would otherwise win every subnet conflict.
const (
	MaxClaimSkew = 5 * time.Minute
	ClaimEpoch   = int64(1735689600000) // 2025-01-01T00:00:00Z, in unix ms
)

// peersFrom converts gossip members and static peers into router peers,
// and refuses the members whose claims this host does not believe: another
// cluster network, a subnet outside ours (or two of one family), a claim
// time out of range, our own underlay address, another encapsulation.
func peersFrom(members []membership.Member, statics []StaticPeer, self membership.Meta, now time.Time) []router.Peer {
	peers := make([]router.Peer, 0, len(members)+len(statics))
	for _, m := range members {
		p := router.Peer{Name: m.Name, State: m.State.String()}
		if m.MetaErr == nil {
			p.Subnets = m.Meta.Subnets
			p.Underlay = netip.AddrPortFrom(m.Meta.Underlay, m.Meta.Port)
			p.MAC = encap.MAC(m.Meta.VTEPMAC)
			p.Claimed = m.Meta.Claimed
			p.PartialChecksums = self.PartialChecksums && m.Meta.PartialChecksums
		}
		p.Refused, p.Incompatible = believe(m, self, now)
		peers = append(peers, p)
	}
	for _, sp := range statics {
		peers = append(peers, router.Peer{
			Name: sp.Name, Subnets: sp.Subnets, Underlay: netip.AddrPortFrom(sp.IP, sp.Port),
			MAC: sp.MAC, State: "static", Static: true,
		})
	}
	return peers
}

// believe checks what member m claims against what this host knows (self,
// our own metadata, and the clock), and says why it is refused, if it is.
func believe(m membership.Member, self membership.Meta, now time.Time) (router.Refusal, string) {
	if m.MetaErr != nil {
		return router.RefusedInvalidMeta, "invalid metadata: " + m.MetaErr.Error()
	}
	meta := m.Meta
	switch {
	case meta.Encap != self.Encap:
		return router.RefusedEncap, fmt.Sprintf("runs encap %s, we run %s", meta.Encap, self.Encap)
	case self.Encap.HasVTEP() && meta.VNI != self.VNI:
		return router.RefusedEncap, fmt.Sprintf("VNI %d, ours is %d", meta.VNI, self.VNI)
	case !slices.Equal(meta.Networks, self.Networks):
		theirs := "none (a weft older than the network check)"
		if len(meta.Networks) > 0 {
			theirs = prefixList(meta.Networks)
		}
		return router.RefusedNetwork, fmt.Sprintf("runs network %s, ours is %s: another cluster, or misconfigured", theirs, prefixList(self.Networks))
	}
	// One subnet per family, each inside our network of its family (the
	// metadata codec checks them against the advertised networks, which
	// are ours: checked again here, where it matters).
	if len(meta.Subnets) == 2 && meta.Subnets[0].Addr().Is6() {
		return router.RefusedSubnet, fmt.Sprintf("two IPv6 subnets %s and %s", meta.Subnets[0], meta.Subnets[1])
	}
	for _, sub := range meta.Subnets {
		if !slices.ContainsFunc(self.Networks, func(n netip.Prefix) bool { return membership.Inside(sub, n) }) {
			return router.RefusedSubnet, fmt.Sprintf("subnet %s is outside our network %s", sub, prefixList(self.Networks))
		}
	}
	switch latest := now.Add(MaxClaimSkew).UnixMilli(); {
	case meta.Claimed > latest:
		return router.RefusedClaimTime, fmt.Sprintf("claims its subnet at %s, more than %v ahead of our clock", time.UnixMilli(meta.Claimed).UTC().Format(time.RFC3339), MaxClaimSkew)
	case meta.Claimed < ClaimEpoch:
		return router.RefusedClaimTime, fmt.Sprintf("claims its subnet at %s, before weft existed", time.UnixMilli(meta.Claimed).UTC().Format(time.RFC3339))
	}
	if meta.Underlay == self.Underlay {
		return router.RefusedUnderlay, fmt.Sprintf("advertises our own underlay address %s", meta.Underlay)
	}
	return router.RefusedNone, ""
}

func prefixList(ps []netip.Prefix) string {
	var out []string
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p.String())
		}
	}
	return strings.Join(out, ",")
}

// watchUnderlay follows the addresses of the underlay interface. When the
// address we advertise goes away and the interface has another (DHCP
// renumbering, a moved address), the new one is advertised without a
// restart.
func (n *Node) watchUnderlay(ctx context.Context) {
	changed := make(chan struct{}, 1)
	var watch sync.WaitGroup
	defer watch.Wait()
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	watch.Go(func() {
		err := n.d.Kernel.WatchAddrs(watchCtx, n.getUnderlay().Index, func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
		if err != nil {
			n.log.Warn("cannot watch underlay addresses: an address change will need a restart", "err", err)
		}
	})
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			// An address change comes as a remove and an add: look once
			// both have landed.
			settle = time.After(500 * time.Millisecond)
		case <-settle:
			n.checkUnderlay(ctx)
		}
	}
}

// checkUnderlay moves to a new underlay address if ours is gone.
func (n *Node) checkUnderlay(ctx context.Context) {
	cur := n.getUnderlay()
	u, err := n.d.Kernel.FindUnderlay(cur.Iface, unspecifiedLike(cur.Addr)) // keep the family
	if err != nil {
		n.log.Warn("underlay interface has no usable address; keeping the old one until it gets one", "iface", cur.Iface, "err", err)
		return
	}
	if slices.Contains(u.Addrs, cur.Addr) {
		n.mu.Lock()
		n.underlay.OnLink = u.OnLink // a secondary address may have come or gone
		n.underlay.Addrs = u.Addrs
		n.mu.Unlock()
		return
	}
	n.log.Warn("underlay address changed: advertising the new one", "old", cur.Addr, "new", u.Addr, "iface", u.Iface)
	n.mu.Lock()
	n.underlay = u
	n.mu.Unlock()
	n.restartGossip(ctx)
	n.syncPeers()
	n.syncBGP() // the new next hop
}

// restartGossip leaves with the old address and joins again with the new
// one, through the members we know and the configured seeds. Peers see us
// leave and come back at once (memberlist lets a new address replace a
// member that left).
func (n *Node) restartGossip(ctx context.Context) {
	n.reloadMu.Lock() // a reload changes the seeds and keys of the gossip it sees
	defer n.reloadMu.Unlock()
	old := n.gossip()
	join := n.live.Load().Join
	seeds := slices.Clone(join)
	for _, m := range old.Members() {
		if m.State == membership.StateAlive || m.State == membership.StateSuspect {
			seeds = append(seeds, m.Gossip.String())
		}
	}
	if err := old.Leave(2 * time.Second); err != nil {
		n.log.Warn("leaving with the old address", "err", err)
	}
	_ = old.Shutdown()
	c, err := n.newGossip(ctx, seeds)
	if err != nil {
		// Keep the stopped member in place: the watchdog stops pinging
		// and systemd restarts us.
		n.log.Error("rejoining the gossip with the new address", "err", err)
		return
	}
	n.cluster.Store(c)
	if len(join) > 0 {
		_ = c.SetSeeds(join) // keep only the configured seeds for later rejoins
	}
	select {
	case n.swapped <- struct{}{}:
	default:
	}
}
