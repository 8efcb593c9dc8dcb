package kernelvx

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/weftnet/weft/encap"
)

// Defaults.
const (
	// DefaultName is the VXLAN device's name. flannel calls its device
	// "flannel.<VNI>"; weft's has no dot, since a dot reads as a VLAN
	// sub-interface ("eth0.100") and breaks sysctl's dotted names
	// (net.ipv6.conf.weft-vx.accept_ra), and it is not "weft0"-like so that
	// the TUN (kept for encrypted or userspace peers) can sit beside it.
	DefaultName = "weft-vx"
	// DefaultPort is the VXLAN UDP port: the Linux kernel's and flannel's
	// 8472 (not IANA's 4789), as weft's userspace VXLAN uses.
	DefaultPort = 8472
	// maxNameLen is IFNAMSIZ-1.
	maxNameLen = 15
)

// Config describes the VXLAN device.
type Config struct {
	// Name is the device's name (default DefaultName).
	Name string
	// VNI is the VXLAN network identifier, 1-16777215.
	VNI uint32
	// Port is the VXLAN UDP port (default DefaultPort).
	Port uint16
	// MTU is the device's MTU: the overlay MTU, the underlay's less
	// encap.VXLAN.Overhead.
	MTU int
	// Underlay is the local underlay address VXLAN datagrams leave from;
	// every peer's underlay address must be of its family.
	Underlay netip.Addr
	// UnderlayIndex is the index of the underlay interface.
	UnderlayIndex int
	// MAC is the VTEP MAC. Zero: encap.VTEPMAC of the first subnet, the
	// MAC weft's userspace VXLAN derives, so that a host keeps its MAC
	// when it changes data path.
	MAC encap.MAC
	// Subnets are the host's own subnets, at most one per family; the
	// device gets the first address of each as a host address (/32,
	// /128), as flannel's vxlan backend gives flannel.1 its subnet's .0.
	Subnets []netip.Prefix
}

// Peer is a host the device sends to and accepts VXLAN from.
type Peer struct {
	// Name identifies the peer in errors and logs.
	Name string
	// Subnets are the peer's subnets, at most one per family.
	Subnets []netip.Prefix
	// Underlay is the peer's underlay address; a port other than 0 or
	// the device's is refused (the kernel device sends to one port).
	Underlay netip.AddrPort
	// MAC is the peer's VTEP MAC.
	MAC encap.MAC
}

// withDefaults validates c and fills in its defaults. Errors name the
// field and the value.
func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	var errs []error
	bad := func(key string, v any, why string) {
		errs = append(errs, fmt.Errorf("kernelvx: %s %v: %s", key, v, why))
	}
	if len(c.Name) > maxNameLen || strings.ContainsAny(c.Name, "/: \t\n") || c.Name == "." || c.Name == ".." {
		bad("name", fmt.Sprintf("%q", c.Name), fmt.Sprintf("want an interface name of at most %d characters, without '/', ':' or spaces", maxNameLen))
	}
	if c.VNI == 0 || c.VNI >= 1<<24 {
		bad("vni", c.VNI, "want 1-16777215")
	}
	if c.MTU < 68 || c.MTU > 65535 {
		bad("mtu", c.MTU, "want 68-65535 (the underlay MTU less the VXLAN overhead)")
	}
	if !c.Underlay.IsValid() || c.Underlay.IsUnspecified() || c.Underlay.IsMulticast() {
		bad("underlay", c.Underlay, "want the host's unicast underlay address")
	}
	c.Underlay = c.Underlay.Unmap()
	if c.UnderlayIndex <= 0 {
		bad("underlay index", c.UnderlayIndex, "want the underlay interface's index")
	}
	subnets, err := checkSubnets(c.Subnets)
	if err != nil {
		bad("subnets", c.Subnets, err.Error())
	} else if len(subnets) == 0 {
		bad("subnets", c.Subnets, "want the host's subnet (one per family)")
	}
	c.Subnets = subnets
	if c.MAC.IsZero() && len(subnets) > 0 {
		c.MAC = encap.VTEPMAC(subnets[0])
	}
	if c.MAC[0]&1 != 0 {
		bad("mac", c.MAC, "want a unicast MAC")
	}
	return c, errors.Join(errs...)
}

// addrs are the device's addresses: each subnet's first address as a host
// prefix.
func (c Config) addrs() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(c.Subnets))
	for _, s := range c.Subnets {
		out = append(out, netip.PrefixFrom(s.Addr(), s.Addr().BitLen()))
	}
	return out
}

// checkSubnets checks a host's subnets: valid, masked, at most one per
// family. It returns them IPv4 first.
func checkSubnets(ps []netip.Prefix) ([]netip.Prefix, error) {
	var v4, v6 netip.Prefix
	for _, p := range ps {
		if !p.IsValid() || p.Addr().Is4In6() {
			return nil, fmt.Errorf("invalid prefix %v", p)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%s has host bits set (want %s)", p, p.Masked())
		}
		slot := &v4
		if p.Addr().Is6() {
			slot = &v6
		}
		if slot.IsValid() {
			return nil, fmt.Errorf("%s and %s: at most one subnet per family", *slot, p)
		}
		*slot = p
	}
	var out []netip.Prefix
	for _, p := range []netip.Prefix{v4, v6} {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out, nil
}
