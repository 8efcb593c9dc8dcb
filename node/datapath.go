package node

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/kernelvx"
	"github.com/weftnet/weft/router"
)

// Datapath is the engine that carries the overlay's packets: the userspace
// one (userspace.go: a TUN device with a queue per worker, the router's
// forwarding workers and their UDP sockets), or the kernel one (kernel.go:
// the kernel's VXLAN device, programmed through package kernelvx with a
// route, a neighbour and an FDB entry per peer and a peer filter). The
// node opens one at start (chooseDataPath: --datapath userspace, kernel or
// auto), running, and reaches it only through these methods: the
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
	// Tunnel reports whether weft itself receives datagrams on the data
	// port (false with host-gw, and on the kernel path, where the kernel
	// does): the watchdog then probes the inbound path too, from loopback,
	// and handshakes can be sent (WriteOne).
	Tunnel() bool
	// WaitProbes reports whether the engine saw the watchdog's probe
	// nonce within timeout, on the way out (and in, if inbound); the
	// kernel engine runs its own probe of the kernel's path as well.
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

// dpChoice is the data path a node runs and why (status, log, metric).
type dpChoice struct {
	Mode   DatapathMode // DatapathUserspace or DatapathKernel
	Reason string
}

// openVXLAN opens the kernel data path's view of the kernel (Deps.VXLAN),
// kept until shutdown. Without it a userspace start cannot remove what a
// kernel-mode run left: only --datapath kernel needs it to start.
func (n *Node) openVXLAN() error {
	if n.d.VXLAN == nil {
		return nil
	}
	vx, err := n.d.VXLAN()
	if err != nil {
		if n.s.Datapath == DatapathKernel {
			return fmt.Errorf("--datapath kernel: open netlink and nftables: %w", err)
		}
		n.log.Warn("no access to the kernel's VXLAN device and nftables: the kernel data path is unavailable", "err", err)
		return nil
	}
	n.vx = vx
	n.onStop(func() {
		if err := vx.Close(); err != nil {
			n.log.Warn("closing netlink", "err", err)
		}
	})
	return nil
}

// kernelDeviceIndex is the index of the VXLAN device a kernel-mode run
// left, if the kernel data path may adopt it (0: none).
func (n *Node) kernelDeviceIndex() int {
	if n.vx == nil || n.s.Datapath == DatapathUserspace {
		return 0
	}
	l, err := n.vx.LinkByName(n.s.VXLANDevice)
	if err != nil || l.Kind != kernelvx.KindVXLAN {
		return 0
	}
	return l.Index
}

// chooseDataPath opens the engine of the settings' mode. auto takes the
// kernel path if nothing in the configuration keeps it out
// (KernelObstacles) and it opens, and the userspace path otherwise; the
// choice and its reason go to the log, the status (node.datapath) and
// weft_datapath. Before the userspace path opens, what a kernel-mode run
// left (its device holds the VXLAN port, its filter guards it) is
// removed.
func (n *Node) chooseDataPath() (Datapath, error) {
	s := n.s
	s.Live = *n.live.Load()
	choice := dpChoice{Mode: DatapathUserspace, Reason: "--datapath userspace (the default)"}
	if s.Datapath != DatapathUserspace {
		obs := KernelObstacles(s)
		var err error
		switch {
		case len(obs) > 0 && s.Datapath == DatapathKernel:
			return nil, &ConfigError{Key: "datapath", Err: fmt.Errorf("--datapath kernel with %s", obs[0])}
		case len(obs) > 0:
			choice.Reason = "--datapath auto: " + describeObstacles(obs)
		case n.vx == nil:
			err = errors.New("no access to the kernel's VXLAN device and nftables")
		default:
			var kp *kernelPath
			if kp, err = n.openKernel(n.vx); err == nil {
				choice = dpChoice{DatapathKernel, "--datapath kernel"}
				if s.Datapath == DatapathAuto {
					choice.Reason = "--datapath auto: plaintext VXLAN, and the kernel has a VXLAN device"
				}
				n.dpc.Store(&choice)
				n.log.Info("data path chosen", "mode", choice.Mode, "reason", choice.Reason)
				return kp, nil
			}
		}
		if err != nil {
			if s.Datapath == DatapathKernel {
				return nil, fmt.Errorf("--datapath kernel: %w", err)
			}
			choice.Reason = "--datapath auto: the kernel data path is unavailable: " + err.Error()
			if !errors.Is(err, kernelvx.ErrNoVXLAN) {
				n.log.Warn("the kernel data path failed to open: taking the userspace one", "err", err)
			}
		}
	}
	n.dpc.Store(&choice)
	n.log.Info("data path chosen", "mode", choice.Mode, "reason", choice.Reason)
	n.cleanupKernel()
	return n.openUserspace()
}

// advertisePartial says whether our metadata advertises partial
// checksums: with the setting, on the userspace path only (the kernel's
// device takes no partial checksums), so not while auto has not chosen.
func (n *Node) advertisePartial() bool {
	if !n.s.PartialChecksums {
		return false
	}
	if c := n.dpc.Load(); c != nil {
		return c.Mode == DatapathUserspace
	}
	return n.s.Datapath == DatapathUserspace
}

var descDatapath = prometheus.NewDesc("weft_datapath", "1 for the data path this host runs (--datapath; auto chooses at start): userspace (weft's own, through weft0) or kernel (the kernel's VXLAN device).", []string{"mode"}, nil)

// datapathCollector exports weft_datapath.
type datapathCollector struct{ n *Node }

func (c datapathCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descDatapath }

func (c datapathCollector) Collect(ch chan<- prometheus.Metric) {
	var mode DatapathMode
	if dc := c.n.dpc.Load(); dc != nil {
		mode = dc.Mode
	}
	for _, m := range []DatapathMode{DatapathUserspace, DatapathKernel} {
		ch <- prometheus.MustNewConstMetric(descDatapath, prometheus.GaugeValue, b2f(m == mode), string(m))
	}
}
