package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/router"
)

// chooseSubnet settles where our subnets come from: the settings, the
// lease kept in the state directory, or (fresh is true) tentative free ones
// that settleSubnet confirms once the cluster's subnets are known. A
// dual-stack host has one of each family, both explicit or both automatic.
func (n *Node) chooseSubnet() (fresh bool, err error) {
	s := n.s
	if !s.AutoSubnet {
		n.local = n.localFor(s.Subnets, n.d.Now().UnixMilli())
		return false, nil
	}
	l, err := lease.Load(s.StateDir)
	if err != nil {
		n.log.Warn("ignoring unreadable subnet lease", "err", err)
	}
	leased := family.First(l.Subnets)
	if leased.IsValid() && n.leaseFits(l) {
		n.local = n.localFor(l.Subnets, l.Claimed)
		n.log.Info("keeping the subnet leased before", "subnet", leased, "subnet6", prefixString(family.Second(l.Subnets)), "state_dir", s.StateDir)
		return false, nil
	}
	if leased.IsValid() {
		n.log.Warn("subnet lease does not fit the configured network, taking a new one", "lease", leased, "network", family.First(s.Networks))
	}
	subs := make([]netip.Prefix, len(s.Pools))
	for i, pool := range s.Pools {
		if subs[i], err = n.freeSubnet(pool); err != nil {
			return false, fmt.Errorf("choose a subnet in %s: %w", s.Networks[i], err)
		}
	}
	n.local = n.localFor(subs, n.d.Now().UnixMilli())
	return true, nil
}

// leaseFits reports whether a kept lease is one of ours under the current
// settings: the same networks, subnets of the pools.
func (n *Node) leaseFits(l lease.Lease) bool {
	s := n.s
	if !slices.Equal(l.Networks, s.Networks) || len(l.Subnets) != len(s.Pools) {
		return false
	}
	for i, pool := range s.Pools {
		if !pool.Contains(l.Subnets[i]) {
			return false
		}
	}
	return true
}

// freeSubnet picks, at random, a subnet of pool that nobody holds.
// Also excluded are the subnets in avoid (one just lost: the winner's
// metadata may not have reached us yet).
func (n *Node) freeSubnet(pool lease.Pool, avoid ...netip.Prefix) (netip.Prefix, error) {
	return pool.Free(append(n.takenSubnets(), avoid...), rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
}

// takenSubnets are the subnets no fresh lease may overlap: every peer's
// that is alive, or was seen within the reclaim time, and the static
// peers', of both families.
func (n *Node) takenSubnets() []netip.Prefix {
	var taken []netip.Prefix
	for _, p := range n.live.Load().Peers {
		taken = append(taken, p.Subnets...)
	}
	c := n.gossip()
	if c == nil {
		return taken
	}
	now := n.d.Now()
	for _, m := range c.Members() {
		if m.MetaErr != nil {
			continue
		}
		gone := m.State == membership.StateDead || m.State == membership.StateLeft
		if gone && now.Sub(m.Since) > n.s.SubnetReclaim {
			continue
		}
		taken = append(taken, m.Meta.Subnets...)
	}
	return taken
}

// settleSubnet waits briefly for the first join, so that a fresh subnet is
// chosen knowing the cluster's, and moves off a tentative one if taken
// (each family on its own).
func (n *Node) settleSubnet(ctx context.Context) {
	if len(n.live.Load().Join) > 0 {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		deadline := time.After(5 * time.Second)
	wait:
		for !n.anyAlive() {
			select {
			case <-ctx.Done():
				return
			case <-deadline:
				break wait
			case <-t.C:
			}
		}
	}
	taken := n.takenSubnets()
	subs := slices.Clone(n.getLocal().Subnets)
	moved := false
	for i, cur := range subs {
		if !slices.ContainsFunc(taken, cur.Overlaps) {
			continue
		}
		next, err := n.freeSubnet(n.s.Pools[i])
		if err != nil {
			n.log.Error("no free subnet left; keeping the tentative one", "subnet", cur, "err", err)
			continue
		}
		subs[i], moved = next, true
	}
	if moved {
		n.setLocal(n.localFor(subs, n.d.Now().UnixMilli()))
	}
	n.log.Info("took a free subnet", "subnet", family.First(subs), "subnet6", prefixString(family.Second(subs)))
}

func (n *Node) anyAlive() bool {
	for _, m := range n.gossip().Members() {
		if m.State == membership.StateAlive {
			return true
		}
	}
	return false
}

func (n *Node) setLocal(l router.Local) {
	n.mu.Lock()
	n.local = l
	n.mu.Unlock()
	if err := n.gossip().UpdateMeta(n.advertised()); err != nil {
		n.log.Error("advertising our new subnet", "err", err)
	}
	n.syncBGP() // the new subnet announced, the old withdrawn
}

func (n *Node) saveLease() error { return n.saveLeaseOf(n.getLocal()) }

func (n *Node) saveLeaseOf(l router.Local) error {
	if !n.s.AutoSubnet {
		return nil
	}
	kept := lease.Lease{Networks: n.s.Networks, Subnets: l.Subnets, Claimed: l.Claimed}
	if err := lease.Save(n.s.StateDir, kept); err != nil {
		return fmt.Errorf("keep the subnet lease in --state-dir %s: %w", n.s.StateDir, err)
	}
	return nil
}

// moveSubnet takes another free subnet after we lost a conflict for ours
// (of the family the conflict is about): new TUN address, new metadata,
// new lease, new subnet file.
func (n *Node) moveSubnet(c router.Conflict) {
	old := n.getLocal()
	i := max(0, slices.Index(old.Subnets, c.Subnet)) // the conflict's family (the first if it names neither)
	next, err := n.freeSubnet(n.s.Pools[i], old.Subnets[i])
	if err != nil {
		n.log.Error("lost a subnet conflict but no free subnet is left", "subnet", old.Subnets[i], "winner", c.Winner, "err", err)
		return
	}
	lost := old.Subnets[i]
	subs := slices.Clone(old.Subnets)
	subs[i] = next
	l := n.localFor(subs, n.d.Now().UnixMilli())
	if err := n.dp.SetAddress(n.tunPrefixes(l)[i], n.tunPrefixes(old)[i]); err != nil {
		n.log.Error("moving the TUN to the new subnet", "err", err)
		return
	}
	// The lease and the subnet file first: once the status says we moved,
	// both say so too.
	if err := n.saveLeaseOf(l); err != nil {
		n.log.Error("saving the subnet lease", "err", err)
	}
	if err := n.writeSubnetFileOf(l); err != nil {
		n.log.Error("writing the subnet file", "err", err)
	}
	n.setLocal(l)
	n.dp.SetLocal(l)
	n.log.Warn("lost a subnet conflict: moved to a free subnet", "old", lost, "new", next, "winner", c.Winner)
}

// writeSubnetFile writes the file other tools read (flannel's subnet.env),
// atomically.
func (n *Node) writeSubnetFile() error { return n.writeSubnetFileOf(n.getLocal()) }

func (n *Node) writeSubnetFileOf(l router.Local) error {
	var b strings.Builder
	network, sub := family.First(n.s.Networks), family.First(l.Subnets)
	fmt.Fprintf(&b, "WEFT_NETWORK=%s\nWEFT_SUBNET=%s\nWEFT_ADDRESS=%s\nWEFT_MTU=%d\nWEFT_ENCAP=%s\n",
		network, sub, family.AddrOf(l.Addrs, sub.Addr().Is6()), n.mtu, n.s.Encap)
	// The IPv6 network, subnet and address (dual stack: the second; IPv6
	// only: the same as above).
	net6, sub6, addr6 := family.Of(n.s.Networks, true), family.Of(l.Subnets, true), family.AddrOf(l.Addrs, true)
	if net6.IsValid() {
		fmt.Fprintf(&b, "WEFT_IPV6_NETWORK=%s\nWEFT_IPV6_SUBNET=%s\nWEFT_IPV6_ADDRESS=%s\n", net6, sub6, addr6)
	}
	if n.s.FlannelCompat {
		// As flannel writes them: FLANNEL_NETWORK and FLANNEL_SUBNET for
		// IPv4, FLANNEL_IPV6_* for IPv6, each subnet with its first host
		// address (the CNI bridge's).
		if network.Addr().Is4() {
			fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\nFLANNEL_SUBNET=%s\n", network, netip.PrefixFrom(sub.Addr().Next(), sub.Bits()))
		}
		if net6.IsValid() {
			fmt.Fprintf(&b, "FLANNEL_IPV6_NETWORK=%s\nFLANNEL_IPV6_SUBNET=%s\n", net6, netip.PrefixFrom(sub6.Addr().Next(), sub6.Bits()))
		}
		fmt.Fprintf(&b, "FLANNEL_MTU=%d\nFLANNEL_IPMASQ=false\n", n.mtu)
	}
	if err := os.MkdirAll(filepath.Dir(n.s.SubnetFile), 0o755); err != nil {
		return fmt.Errorf("subnet file --subnet-file: %w", err)
	}
	if err := lease.WriteFileAtomic(n.s.SubnetFile, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("subnet file --subnet-file: %w", err)
	}
	return nil
}
