// Package cni is weft's CNI plugin: the weft binary, installed as "weft" in
// a CNI plugin directory and run by a container runtime (containerd, CRI-O,
// Podman, nerdctl, ...), attaches containers to the host's weft subnet.
//
// Like flannel's CNI plugin it is a meta plugin. It reads the subnet file the
// daemon writes (WEFT_NETWORK, WEFT_SUBNET, WEFT_ADDRESS, WEFT_MTU,
// WEFT_ENCAP), builds a configuration for the reference "bridge" plugin with
// "host-local" IPAM over the host's subnet, and delegates to it. The
// configuration used at ADD is kept per container in the data directory, so
// DEL works after the subnet file changed or while the daemon is down.
// Masquerading of traffic that leaves the cluster network is done here,
// with the reference plugins' ipmasq helpers, so that traffic between
// containers on different hosts keeps its source address.
//
// Command handles "weft cni conflist", which prints a ready conflist.
package cni
