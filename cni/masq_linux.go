package cni

import (
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ip"
)

// kernelMasq masquerades with the reference plugins' helpers (iptables, or
// nftables where iptables is missing), in the runtime's network namespace.
// Given an address with the cluster network's prefix length, they send
// packets from that address to outside the cluster network through
// MASQUERADE and leave traffic inside the cluster network alone.
type kernelMasq struct{}

func ipNets(ps []netip.Prefix) []*net.IPNet {
	out := make([]*net.IPNet, 0, len(ps))
	for _, p := range ps {
		out = append(out, &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	return out
}

func (kernelMasq) Setup(ps []netip.Prefix, network, ifName, containerID string) error {
	return ip.SetupIPMasqForNetworks(nil, ipNets(ps), network, ifName, containerID)
}

func (kernelMasq) Teardown(ps []netip.Prefix, network, ifName, containerID string) error {
	return ip.TeardownIPMasqForNetworks(ipNets(ps), network, ifName, containerID)
}

func (kernelMasq) GC(network string, valid []types.GCAttachment) error {
	return ip.GCIPMasqForNetwork(network, valid)
}
