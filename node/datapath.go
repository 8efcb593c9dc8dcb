package node

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/encap"
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

// DatapathMode is the data path engine a node is asked to run (--datapath).
type DatapathMode string

// Data path modes. The zero value is DatapathUserspace.
const (
	// DatapathUserspace is weft's own data path (userspace.go), for every
	// encapsulation, with or without encryption: the default, so that an
	// upgrade never changes a running cluster's data path unasked.
	DatapathUserspace DatapathMode = "userspace"
	// DatapathKernel is the kernel's VXLAN device, programmed by weft
	// (kernel.go): plaintext VXLAN only. The node fails to start if the
	// kernel cannot carry it.
	DatapathKernel DatapathMode = "kernel"
	// DatapathAuto picks the kernel where the configuration allows it
	// (plaintext VXLAN, none of the userspace path's own features) and the
	// kernel can create a VXLAN device, and the userspace path otherwise;
	// the log, the status and weft_datapath say which and why.
	DatapathAuto DatapathMode = "auto"
)

// DatapathModes lists the modes, as --datapath takes them.
var DatapathModes = []DatapathMode{DatapathUserspace, DatapathKernel, DatapathAuto}

// KernelObstacle is a setting the kernel data path cannot honour.
type KernelObstacle struct {
	// Flag and Key name the setting (the flag without its dashes, and the
	// config key); Value is what it is set to.
	Flag, Key, Value string
	// Why says what the kernel's VXLAN device lacks.
	Why string
}

func (o KernelObstacle) String() string {
	s := "--" + o.Flag
	if o.Value != "" {
		s += " " + o.Value
	}
	return s + ": " + o.Why
}

// KernelObstacles lists what in s keeps the kernel data path out, in a
// fixed order: encryption, an encapsulation other than vxlan, direct
// routing, per-peer metrics, a static peer on a port of its own. None:
// the kernel's VXLAN device can carry s. config refuses --datapath kernel
// with any of them (a usage error naming both settings); --datapath auto
// takes the userspace path and says which.
func KernelObstacles(s Settings) []KernelObstacle {
	var out []KernelObstacle
	if s.Encrypt {
		out = append(out, KernelObstacle{Flag: "encrypt", Key: "encrypt", Why: "the kernel's VXLAN device does not encrypt; encrypted peers need the userspace data path"})
	}
	if s.Encap != encap.VXLAN {
		out = append(out, KernelObstacle{Flag: "encap", Key: "encap", Value: s.Encap.String(),
			Why: "the kernel data path is the kernel's VXLAN device: it carries --encap vxlan only"})
	}
	if s.DirectRouting {
		out = append(out, KernelObstacle{Flag: "direct-routing", Key: "directRouting",
			Why: "a direct route and the VXLAN device's route to an on-link peer would claim one destination; direct routing needs the userspace data path"})
	}
	if s.PerPeerMetrics {
		out = append(out, KernelObstacle{Flag: "per-peer-metrics", Key: "perPeerMetrics",
			Why: "the kernel counts traffic per device, not per peer; per-peer counters need the userspace data path"})
	}
	for i, p := range s.Live.Peers {
		if p.Port != 0 && p.Port != s.Port {
			out = append(out, KernelObstacle{Flag: "peer", Key: fmt.Sprintf("peers[%d]", i), Value: fmt.Sprintf("%s (port %d)", p.Name, p.Port),
				Why: fmt.Sprintf("the kernel's VXLAN device sends to one port, this host's (%d); a peer on a port of its own needs the userspace data path", s.Port)})
		}
	}
	return out
}
