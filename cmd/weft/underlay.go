package main

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/tun"
)

// watchUnderlay follows the addresses of the underlay interface. When the
// address we advertise goes away and the interface has another (DHCP
// renumbering, a moved address), the new one is advertised without a
// restart.
func (n *daemon_) watchUnderlay(ctx context.Context) {
	updates := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{
		ErrorCallback: func(err error) { n.log.Warn("watching underlay addresses", "err", err) },
	})
	if err != nil {
		n.log.Warn("cannot watch underlay addresses: an address change will need a restart", "err", err)
		return
	}
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				return
			}
			if u.LinkIndex == n.getUnderlay().Index {
				// An address change comes as a remove and an add: look
				// once both have landed.
				settle = time.After(500 * time.Millisecond)
			}
		case <-settle:
			n.checkUnderlay(ctx)
		}
	}
}

// checkUnderlay moves to a new underlay address if ours is gone.
func (n *daemon_) checkUnderlay(ctx context.Context) {
	cur := n.getUnderlay()
	u, err := tun.FindUnderlay(cur.Iface, netip.Addr{})
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
}

// restartGossip leaves with the old address and joins again with the new
// one, through the members we know and the configured seeds. Peers see us
// leave and come back at once (memberlist lets a new address replace a
// member that left).
func (n *daemon_) restartGossip(ctx context.Context) {
	old := n.gossip()
	n.mu.Lock()
	join := slices.Clone(n.s.Join)
	n.mu.Unlock()
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
