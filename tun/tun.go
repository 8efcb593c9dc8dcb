// Package tun opens weft's TUN device with the kernel's offloads on and one
// queue per forwarding worker; splits the kernel's TSO/USO superpackets on
// read and coalesces segments again on write (GRO), with the checksums
// either completed or left partial for a peer that trusts the outer UDP
// checksum; falls back by itself when the kernel refuses coalesced writes;
// configures the link, address and MTU through netlink, manages the kernel
// routes weft installs, and removes what it made.
//
// It does not use golang.zx2c4.com/wireguard/tun any more: that opens one
// queue per device (no IFF_MULTI_QUEUE), always computes every checksum on
// split and verifies every one on coalesce, and copies payloads to
// coalesce them, which are the three costs this package exists to avoid.
// What else it gave (link events, MTU) weft did not use. Its tests still
// measure against it.
//
// Everything this package puts in the kernel is findable again: the link by
// its name, routes by weft's own rtnetlink protocol number (RouteProtocol).
package tun

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE (linux/if_link.h).
const addrGenModeNone = 1

// RouteProtocol marks the routes weft installs ("proto 87" in `ip route`),
// so that a later run can find and remove them.
const RouteProtocol netlink.RouteProtocol = 87

// Config describes the device to create.
type Config struct {
	Name string
	MTU  int
	// Addrs are the device's addresses, one per overlay network (IPv4
	// first in dual stack), each with the prefix length of the whole
	// network (flannel0 style), e.g. 10.244.1.0/16: the kernel then routes
	// the whole network through the device.
	Addrs []netip.Prefix
	// NoOffload opens the device without the virtio-net header: no TSO/USO
	// superpackets, no GRO, one packet per read and write (flannel udp's
	// design, for comparison and for kernels with broken offloads).
	NoOffload bool
	// Queues is how many queues to open (IFF_MULTI_QUEUE), one per
	// forwarding worker; 0 or 1 opens a single-queue device. If the kernel
	// refuses more than one, the device has one (see MultiQueueErr).
	Queues int
}

// Device is an open TUN device: one or more queues (Queues), each read and
// written in batches, with virtio-net offloads unless Config.NoOffload:
// reads split TSO/USO superpackets into MTU-sized segments and writes
// coalesce them again (GRO), both in this package (gso.go, gro.go).
//
// Device's own Read, Write, BatchSize, Readable and WriteFallback are those
// of its first queue, for a data path with one worker.
type Device struct {
	name   string
	index  int
	log    *slog.Logger
	vnet   bool
	uso    bool
	queues []*Queue
	state  *writeState
	mqErr  error
}

// Open creates the TUN device with cfg.Queues queues, gives it its address
// and MTU, brings it up and probes whether the kernel takes coalesced
// writes (see Fallback). A stale TUN link of the same name (from a run
// that crashed) is removed first. On error nothing it created is left
// behind.
func Open(cfg Config, log *slog.Logger) (*Device, error) {
	if err := removeStaleLink(cfg.Name, log); err != nil {
		return nil, err
	}
	d := &Device{name: cfg.Name, log: log, vnet: !cfg.NoOffload, state: &writeState{log: log}}
	if err := d.openQueues(cfg); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.configure(cfg); err != nil {
		d.Close()
		return nil, err
	}
	if d.vnet {
		if err := d.probeWrites(d.queues[0]); err != nil {
			log.Warn("could not probe the TUN for coalesced writes; coalescing, with the fallback on a refusal", "err", err)
		}
	}
	return d, nil
}

// tunOffloads are the offloads weft asks the TUN for; without USO (Linux
// before 6.2) it does without UDP GSO.
const (
	tunTCPOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
	tunUDPOffloads = unix.TUN_F_USO4 | unix.TUN_F_USO6
)

func (d *Device) openQueues(cfg Config) error {
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if d.vnet {
		flags |= unix.IFF_VNET_HDR
	}
	want := max(1, cfg.Queues)
	if want > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	}
	fd, err := openTUNFD(cfg.Name, flags)
	if err != nil && want > 1 {
		d.mqErr = fmt.Errorf("the kernel refused a multi-queue TUN device: %w", err)
		flags &^= unix.IFF_MULTI_QUEUE
		want = 1
		fd, err = openTUNFD(cfg.Name, flags)
	}
	if err != nil {
		return fmt.Errorf("create TUN device %q: %w", cfg.Name, err)
	}
	if d.vnet {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunTCPOffloads|tunUDPOffloads); err == nil {
			d.uso = true
		} else if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunTCPOffloads); err != nil {
			unix.Close(fd)
			return fmt.Errorf("enable TUN offloads on %q: %w", cfg.Name, err)
		}
	}
	for {
		q, err := newQueue(fd, d.vnet, d.uso, d.state)
		if err != nil {
			return err
		}
		d.queues = append(d.queues, q)
		if len(d.queues) == want {
			return nil
		}
		if fd, err = openTUNFD(cfg.Name, flags); err != nil {
			d.mqErr = fmt.Errorf("the kernel refused TUN queue %d of %d: %w", len(d.queues)+1, want, err)
			return nil
		}
	}
}

// openTUNFD opens /dev/net/tun and attaches it to the device name (creating
// it, for the first queue).
func openTUNFD(name string, flags uint16) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(flags)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETIFF %q: %w", name, err)
	}
	return fd, nil
}

// Queues are the device's queues, one per forwarding worker.
func (d *Device) Queues() []*Queue { return d.queues }

// MultiQueueErr says why the device has fewer queues than Config.Queues
// asked for (the kernel refused IFF_MULTI_QUEUE or another queue), or nil.
func (d *Device) MultiQueueErr() error { return d.mqErr }

// Read reads from the first queue (see Queue.Read).
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return d.queues[0].Read(bufs, sizes, offset)
}

// ReadMore is Queue.ReadMore on the first queue.
func (d *Device) ReadMore(bufs [][]byte, sizes []int, offset int) (int, error) {
	return d.queues[0].ReadMore(bufs, sizes, offset)
}

// Write writes to the first queue (see Queue.Write).
func (d *Device) Write(bufs [][]byte, offset int, mode Checksum) (WriteResult, error) {
	return d.queues[0].Write(bufs, offset, mode)
}

// BatchSize is the queues' batch size (see Queue.BatchSize).
func (d *Device) BatchSize() int { return d.queues[0].BatchSize() }

// Readable reports whether a Read of the first queue would return at once.
func (d *Device) Readable() bool { return d.queues[0].Readable() }

// Fallback reports how far the device backs off from coalesced writes,
// after the start-up probe or a refusal since.
func (d *Device) Fallback() Fallback { return d.state.level() }

// WriteFallback reports whether the kernel refused coalesced writes
// (weft_tun_gro_fallback).
func (d *Device) WriteFallback() bool { return d.state.level() != FallbackNone }

// USO reports whether the kernel takes UDP segmentation offload on the
// device, so that UDP datagrams are split and coalesced too.
func (d *Device) USO() bool { return d.uso }

func (d *Device) configure(cfg Config) error {
	link, err := netlink.LinkByName(cfg.Name)
	if err != nil {
		return fmt.Errorf("find TUN link %q: %w", cfg.Name, err)
	}
	d.index = link.Attrs().Index
	if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
		return fmt.Errorf("set MTU %d on %s: %w", cfg.MTU, cfg.Name, err)
	}
	if d.vnet {
		// A superpacket of no more segments than one Read holds; the
		// kernel segments a larger one itself.
		if err := netlink.LinkSetGSOMaxSegs(link, batchSize); err != nil {
			d.log.Debug("could not bound the TUN's gso_max_segs; an oversized superpacket loses its tail", "err", err)
		}
	}
	// No IPv6 link-local address: a TUN has no neighbours, and the
	// kernel's router solicitations would only be dropped as no_route.
	_ = netlink.LinkSetIP6AddrGenMode(link, addrGenModeNone)
	for _, a := range cfg.Addrs {
		if !a.IsValid() {
			continue
		}
		addr := &netlink.Addr{IPNet: prefixToIPNet(a)}
		if a.Addr().Is6() {
			// A TUN has no neighbours to detect a duplicate with.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("add address %s to %s: %w", a, cfg.Name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", cfg.Name, err)
	}
	return nil
}

// SetAddress gives the device the address next in place of old (after our
// subnet moved). The old address goes first: both lie in the network's
// prefix, and deleting a primary address also deletes its secondaries
// unless promote_secondaries is set.
func (d *Device) SetAddress(next, old netip.Prefix) error {
	link, err := netlink.LinkByIndex(d.index)
	if err != nil {
		return fmt.Errorf("find TUN link %s: %w", d.name, err)
	}
	if old.IsValid() && old != next {
		if err := netlink.AddrDel(link, &netlink.Addr{IPNet: prefixToIPNet(old)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove address %s from %s: %w", old, d.name, err)
		}
	}
	addr := &netlink.Addr{IPNet: prefixToIPNet(next)}
	if next.Addr().Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("add address %s to %s: %w", next, d.name, err)
	}
	return nil
}

// VNetHdr reports whether the device runs with virtio-net offloads.
func (d *Device) VNetHdr() bool { return d.vnet }

// Close closes the device. The kernel removes a non-persistent TUN link when
// its last file descriptor closes; if the link is somehow still there, it is
// deleted.
func (d *Device) Close() error {
	var err error
	for _, q := range d.queues {
		err = errors.Join(err, q.Close())
	}
	if link, lerr := netlink.LinkByName(d.name); lerr == nil && link.Type() == "tuntap" {
		if derr := netlink.LinkDel(link); derr != nil {
			err = errors.Join(err, fmt.Errorf("delete link %s: %w", d.name, derr))
		}
	}
	return err
}

// removeStaleLink deletes a TUN link named name. Any other kind of link with
// that name is an error: it is not ours to delete.
func removeStaleLink(name string, log *slog.Logger) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("look up link %q: %w", name, err)
	}
	if link.Type() != "tuntap" {
		return fmt.Errorf("link %q exists and is a %s device, not a TUN device: refusing to replace it", name, link.Type())
	}
	log.Warn("removing stale TUN link left by an earlier run", "link", name)
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("remove stale link %q: %w", name, err)
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
