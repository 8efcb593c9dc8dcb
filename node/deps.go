package node

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/kernelvx"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/tun"
)

// Deps is everything a node takes from the operating system. SystemDeps
// returns the real ones; tests pass fakes.
type Deps struct {
	// OpenTUN creates the TUN device with its address and MTU, up.
	OpenTUN func(cfg tun.Config, log *slog.Logger) (TUN, error)
	// Listen opens a data-plane UDP socket; with reusePort, one of a
	// SO_REUSEPORT group on addr.
	Listen func(addr netip.AddrPort, batch int, offload, reusePort bool) (Socket, error)
	// Kernel finds the underlay and installs routes.
	Kernel Kernel
	// VXLAN opens what the kernel data path takes from the kernel (its
	// VXLAN device, peer filter and probe: kernel.go). The node opens it
	// once at start, in every mode: a start in userspace mode removes what
	// a kernel-mode run left. nil: no kernel data path (--datapath kernel
	// fails, auto takes the userspace one).
	VXLAN func() (VXLANKernel, error)
	// Now is the clock (subnet claims, reclaim times).
	Now func() time.Time
	// Logger receives the node's logs.
	Logger *slog.Logger
	// SetLogging applies a reloaded log format and level (nil: ignored).
	SetLogging func(format string, level slog.Level)
	// Notify tells the service manager about the node's state (sd_notify:
	// "READY=1", "RELOADING=1", "STOPPING=1", "WATCHDOG=1"); nil: nobody.
	Notify func(state string)
	// Watchdog is how often the service manager wants WATCHDOG=1 (0: off).
	Watchdog time.Duration
	// Version and Revision identify the build in status and metrics.
	Version, Revision string
}

// TUN is the node's TUN device.
type TUN interface {
	// Queues are the device's queues, one per worker.
	Queues() []router.Device
	// MultiQueueErr says why the device has one queue when more were
	// asked for (nil otherwise).
	MultiQueueErr() error
	// BatchSize is the most packets one read returns.
	BatchSize() int
	// SetAddress replaces the device's address old with next.
	SetAddress(next, old netip.Prefix) error
	// VNetHdr reports whether the device runs with virtio-net offloads.
	VNetHdr() bool
	// Close closes every queue; the kernel removes the link.
	Close() error
}

// Socket is the node's data-plane socket.
type Socket interface {
	router.Conn
	GSO() bool
	GRO() bool
	// Syscalls counts the sendmmsg and recvmmsg calls made.
	Syscalls() (sendmmsg, recvmmsg uint64)
	// LocalAddr is the socket's bound address and port.
	LocalAddr() netip.AddrPort
	// SteerBySourcePort makes the socket's SO_REUSEPORT group give a
	// datagram to the socket whose index is its source port modulo n.
	SteerBySourcePort(n int) error
}

// Kernel is the node's view of the kernel's interfaces and routes.
type Kernel interface {
	// FindUnderlay finds the underlay interface and address (see tun.FindUnderlay).
	FindUnderlay(iface string, want netip.Addr) (tun.Underlay, error)
	// WatchAddrs calls changed whenever an address of the link with index
	// ifindex comes or goes, until ctx ends. It returns at once, with an
	// error, if it cannot watch.
	WatchAddrs(ctx context.Context, ifindex int, changed func()) error
	ReplaceRoute(tun.Route) error
	DeleteRoute(tun.Route) error
	// OurRoutes lists the routes carrying weft's protocol number.
	OurRoutes() ([]tun.Route, error)
}

// VXLANKernel is the kernel data path's view of the kernel: the VXLAN
// device, its routes, neighbour and forwarding entries and the peer
// filter (package kernelvx), and the watchdog's probe through them.
type VXLANKernel interface {
	kernelvx.Kernel
	// ProbeVXLAN sends p's datagram into the kernel's VXLAN path as
	// peer p.From would, and reports, within timeout, whether its inner
	// packet was delivered (nil) or why not.
	ProbeVXLAN(p VXLANProbe, timeout time.Duration) error
	// Close releases what it holds (netlink sockets).
	Close() error
}

// SystemDeps are the real operating system's: a TUN device with offloads,
// a batched UDP socket, netlink, nftables.
func SystemDeps(log *slog.Logger) Deps {
	return Deps{
		OpenTUN: func(cfg tun.Config, log *slog.Logger) (TUN, error) {
			d, err := tun.Open(cfg, log)
			if err != nil {
				return nil, err
			}
			return tunDevice{d}, nil
		},
		Listen: func(addr netip.AddrPort, batch int, offload, reusePort bool) (Socket, error) {
			listen := encap.Listen
			if reusePort {
				listen = encap.ListenReusePort
			}
			c, err := listen(addr, batch, offload)
			if err != nil {
				return nil, err
			}
			return udpSocket{c}, nil
		},
		Kernel: netlinkKernel{},
		VXLAN: func() (VXLANKernel, error) {
			k, err := kernelvx.NewSystem()
			if err != nil {
				return nil, err
			}
			return systemVXLAN{k}, nil
		},
		Now:    time.Now,
		Logger: log,
	}
}

type tunDevice struct{ *tun.Device }

func (d tunDevice) Queues() []router.Device {
	qs := d.Device.Queues()
	out := make([]router.Device, len(qs))
	for i, q := range qs {
		out[i] = q
	}
	return out
}

type udpSocket struct{ *encap.Conn }

func (s udpSocket) Syscalls() (uint64, uint64) {
	return s.Stats.Sendmmsg.Load(), s.Stats.Recvmmsg.Load()
}

type netlinkKernel struct{}

func (netlinkKernel) FindUnderlay(iface string, want netip.Addr) (tun.Underlay, error) {
	return tun.FindUnderlay(iface, want)
}
func (netlinkKernel) ReplaceRoute(r tun.Route) error  { return tun.ReplaceRoute(r) }
func (netlinkKernel) DeleteRoute(r tun.Route) error   { return tun.DeleteRoute(r) }
func (netlinkKernel) OurRoutes() ([]tun.Route, error) { return tun.OurRoutes() }

func (netlinkKernel) WatchAddrs(ctx context.Context, ifindex int, changed func()) error {
	updates := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-updates:
			if !ok {
				return nil
			}
			if u.LinkIndex == ifindex {
				changed()
			}
		}
	}
}
