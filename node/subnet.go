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

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/router"
)

// chooseSubnet settles where our subnet comes from: the settings, the lease
// kept in the state directory, or (fresh is true) a tentative free one that
// settleSubnet confirms once the cluster's subnets are known.
func (n *Node) chooseSubnet() (fresh bool, err error) {
	s := n.s
	if !s.AutoSubnet {
		n.local = n.localFor(s.Subnet, n.d.Now().UnixMilli())
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
	sub, err := n.freeSubnet()
	if err != nil {
		return false, fmt.Errorf("choose a subnet in %s: %w", s.Network, err)
	}
	n.local = n.localFor(sub, n.d.Now().UnixMilli())
	return true, nil
}

// freeSubnet picks, at random, a subnet of the pool that nobody holds.
func (n *Node) freeSubnet() (netip.Prefix, error) {
	return n.s.Pool.Free(n.takenSubnets(), rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
}

// takenSubnets are the subnets no fresh lease may overlap: every peer's
// that is alive, or was seen within the reclaim time, and the static peers'.
func (n *Node) takenSubnets() []netip.Prefix {
	var taken []netip.Prefix
	for _, p := range n.live.Load().Peers {
		taken = append(taken, p.Subnet)
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
		taken = append(taken, m.Meta.Subnet)
	}
	return taken
}

// settleSubnet waits briefly for the first join, so that a fresh subnet is
// chosen knowing the cluster's, and moves off the tentative one if taken.
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
	l := n.getLocal()
	if !slices.ContainsFunc(n.takenSubnets(), l.Subnet.Overlaps) {
		n.log.Info("took a free subnet", "subnet", l.Subnet)
		return
	}
	sub, err := n.freeSubnet()
	if err != nil {
		n.log.Error("no free subnet left; keeping the tentative one", "subnet", l.Subnet, "err", err)
		return
	}
	n.setLocal(n.localFor(sub, n.d.Now().UnixMilli()))
	n.log.Info("took a free subnet", "subnet", sub)
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
	if err := n.gossip().UpdateMeta(n.meta()); err != nil {
		n.log.Error("advertising our new subnet", "err", err)
	}
}

func (n *Node) saveLease() error {
	if !n.s.AutoSubnet {
		return nil
	}
	l := n.getLocal()
	if err := lease.Save(n.s.StateDir, lease.Lease{Network: n.s.Network, Subnet: l.Subnet, Claimed: l.Claimed}); err != nil {
		return fmt.Errorf("keep the subnet lease in --state-dir %s: %w", n.s.StateDir, err)
	}
	return nil
}

// moveSubnet takes another free subnet after we lost a conflict for ours:
// new TUN address, new metadata, new lease, new subnet file.
func (n *Node) moveSubnet(c router.Conflict) {
	old := n.getLocal()
	sub, err := n.freeSubnet()
	if err != nil {
		n.log.Error("lost a subnet conflict but no free subnet is left", "subnet", old.Subnet, "winner", c.Winner, "err", err)
		return
	}
	l := n.localFor(sub, n.d.Now().UnixMilli())
	if err := n.dev.SetAddress(n.tunPrefix(l), n.tunPrefix(old)); err != nil {
		n.log.Error("moving the TUN to the new subnet", "err", err)
		return
	}
	n.setLocal(l)
	n.rt.SetLocal(l)
	if err := n.saveLease(); err != nil {
		n.log.Error("saving the subnet lease", "err", err)
	}
	if err := n.writeSubnetFile(); err != nil {
		n.log.Error("writing the subnet file", "err", err)
	}
	n.log.Warn("lost a subnet conflict: moved to a free subnet", "old", old.Subnet, "new", l.Subnet, "winner", c.Winner)
}

// writeSubnetFile writes the file other tools read (flannel's subnet.env),
// atomically.
func (n *Node) writeSubnetFile() error {
	l := n.getLocal()
	var b strings.Builder
	fmt.Fprintf(&b, "WEFT_NETWORK=%s\nWEFT_SUBNET=%s\nWEFT_ADDRESS=%s\nWEFT_MTU=%d\nWEFT_ENCAP=%s\n",
		n.s.Network, l.Subnet, l.Addr, n.mtu, n.s.Encap)
	if n.s.FlannelCompat {
		// flannel writes the subnet's first host address: the CNI bridge's.
		fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\nFLANNEL_SUBNET=%s\nFLANNEL_MTU=%d\nFLANNEL_IPMASQ=false\n",
			n.s.Network, netip.PrefixFrom(l.Subnet.Addr().Next(), l.Subnet.Bits()), n.mtu)
	}
	if err := os.MkdirAll(filepath.Dir(n.s.SubnetFile), 0o755); err != nil {
		return fmt.Errorf("subnet file --subnet-file: %w", err)
	}
	if err := lease.WriteFileAtomic(n.s.SubnetFile, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("subnet file --subnet-file: %w", err)
	}
	return nil
}
