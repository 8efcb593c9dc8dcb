package node

import (
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/router"
)

// Datapath is the engine that carries the overlay's packets: the userspace
// one (userspace.go: a TUN device with a queue per worker, the router's
// forwarding workers and their UDP sockets), or another that programs the
// kernel instead (issue 25: the kernel's VXLAN device, with a route, a
// neighbour and an FDB entry per peer). The node opens one at start
// (openDataPath), running, and reaches it only through these methods: the
// control plane calls them per peer-set change, move, status request,
// watchdog tick or handshake, never per packet, so an engine's hot path is
// its own.
//
// Its metrics are its own (it is a prometheus.Collector, registered once).
type Datapath interface {
	prometheus.Collector
	// SetPeers brings the engine in line with the peer set (routes, table,
	// direct routes) and returns the subnet conflicts found.
	SetPeers(peers []router.Peer) []router.Conflict
	// SetAddress replaces the device's address old with next (a subnet
	// move), and SetLocal then gives the engine our new identity.
	SetAddress(next, old netip.Prefix) error
	SetLocal(l router.Local) []router.Conflict
	// Status fills the engine's part of st: the node's workers and
	// offloads, the peers, the drops and the totals.
	Status(st *Status)
	// Drops are the drop counters by reason.
	Drops() map[string]uint64
	// Tunnel reports whether the engine receives datagrams on the data
	// port (false with host-gw): the watchdog then probes the inbound
	// path too, and handshakes can be sent (WriteOne).
	Tunnel() bool
	// WaitProbes reports whether the engine saw the watchdog's probe
	// nonce within timeout, on the way out (and in, if inbound).
	WaitProbes(nonce uint64, inbound bool, timeout time.Duration) bool
	// WriteOne sends b from the data port to dst (seal handshakes).
	WriteOne(b []byte, dst netip.AddrPort) error
	// Failed is closed if the engine stops on its own; Err says why.
	Failed() <-chan struct{}
	Err() error
	// Close removes the routes the engine installed, then closes it and
	// waits for its goroutines.
	Close()
}
