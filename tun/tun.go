// Package tun opens weft's TUN device with the kernel's offloads on,
// configures its link, address and MTU through netlink, manages the kernel
// routes weft installs, and removes what it made.
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
	"os"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
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
	// Addr is the device's address with the prefix length of the whole
	// overlay network (flannel0 style), e.g. 10.244.1.0/16: the kernel then
	// routes the whole network through the device.
	Addr netip.Prefix
	// NoOffload opens the device without the virtio-net header: no TSO/USO
	// superpackets, no GRO, one packet per read and write (flannel udp's
	// design, for comparison and for kernels with broken offloads).
	NoOffload bool
}

// Device is an open TUN device. It reads and writes batches of packets
// (wireguard's tun.Device) with virtio-net offloads: reads split TSO/USO
// superpackets into MTU-sized segments, writes coalesce with GRO.
type Device struct {
	wgtun.Device
	name  string
	index int
	log   *slog.Logger
	poll  *poller // nil without offloads
}

// poller asks the kernel whether the TUN's queue holds a packet, without
// blocking and without taking the descriptor out of Go's poller (which
// os.File.Fd would do). Its fields are preallocated so that a check
// allocates nothing; only the reading goroutine uses it.
type poller struct {
	raw   syscall.RawConn
	fds   [1]unix.PollFd
	ready bool
	check func(fd uintptr) // p.run, bound once
}

func newPoller(f *os.File) (*poller, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	p := &poller{raw: raw}
	p.check = p.run
	return p, nil
}

func (p *poller) run(fd uintptr) {
	p.fds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	n, err := unix.Poll(p.fds[:], 0)
	p.ready = err == nil && n > 0 && p.fds[0].Revents&unix.POLLIN != 0
}

// Readable reports whether a Read would return at once. Only the goroutine
// that reads may call it. Without offloads it is always false: that mode
// is the one-packet-per-system-call design, kept as it is for comparison.
func (d *Device) Readable() bool {
	if d.poll == nil {
		return false
	}
	if err := d.poll.raw.Control(d.poll.check); err != nil {
		return false
	}
	return d.poll.ready
}

// Open creates the TUN device, gives it its address and MTU and brings it
// up. A stale TUN link of the same name (from a run that crashed) is
// removed first. On error nothing it created is left behind.
func Open(cfg Config, log *slog.Logger) (*Device, error) {
	if err := removeStaleLink(cfg.Name, log); err != nil {
		return nil, err
	}
	var wd wgtun.Device
	var err error
	if cfg.NoOffload {
		wd, err = createPlainTUN(cfg.Name, cfg.MTU)
	} else {
		wd, err = wgtun.CreateTUN(cfg.Name, cfg.MTU)
	}
	if err != nil {
		return nil, fmt.Errorf("create TUN device %q: %w", cfg.Name, err)
	}
	d := &Device{Device: wd, name: cfg.Name, log: log}
	if nt, ok := wd.(interface{ File() *os.File }); ok && !cfg.NoOffload {
		p, err := newPoller(nt.File())
		if err != nil {
			wd.Close()
			return nil, fmt.Errorf("poll TUN device %q: %w", cfg.Name, err)
		}
		d.poll = p
	}
	go func() {
		for range wd.Events() { // drained so the device's listeners never block
		}
	}()
	if err := d.configure(cfg); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Device) configure(cfg Config) error {
	link, err := netlink.LinkByName(cfg.Name)
	if err != nil {
		return fmt.Errorf("find TUN link %q: %w", cfg.Name, err)
	}
	d.index = link.Attrs().Index
	if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
		return fmt.Errorf("set MTU %d on %s: %w", cfg.MTU, cfg.Name, err)
	}
	// No IPv6 link-local address: a TUN has no neighbours, and the
	// kernel's router solicitations would only be dropped as no_route.
	_ = netlink.LinkSetIP6AddrGenMode(link, addrGenModeNone)
	addr := &netlink.Addr{IPNet: prefixToIPNet(cfg.Addr)}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("add address %s to %s: %w", cfg.Addr, cfg.Name, err)
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
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: prefixToIPNet(next)}); err != nil {
		return fmt.Errorf("add address %s to %s: %w", next, d.name, err)
	}
	return nil
}

// Name is the device's interface name.
func (d *Device) Name() string { return d.name }

// VNetHdr reports whether the device runs with virtio-net offloads.
func (d *Device) VNetHdr() bool { return d.BatchSize() > 1 }

// Close closes the device. The kernel removes a non-persistent TUN link when
// its last file descriptor closes; if the link is somehow still there, it is
// deleted.
func (d *Device) Close() error {
	err := d.Device.Close()
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

// createPlainTUN opens a TUN device without IFF_VNET_HDR; wireguard's tun
// then reads and writes one packet per call.
func createPlainTUN(name string, mtu int) (wgtun.Device, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return wgtun.CreateTUNFromFile(os.NewFile(uintptr(fd), "/dev/net/tun"), mtu)
}
