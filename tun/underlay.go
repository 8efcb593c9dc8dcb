package tun

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Underlay describes the interface that carries weft's tunnel traffic.
type Underlay struct {
	Iface string
	Index int
	MTU   int
	Addr  netip.Addr
	// OnLink holds the prefixes of the interface's addresses: a peer whose
	// underlay address lies in one of them is on the same L2 segment.
	OnLink []netip.Prefix
	// Addrs are the interface's global addresses of Addr's family.
	Addrs []netip.Addr
}

// IsOnLink reports whether a is directly reachable on the underlay segment.
func (u Underlay) IsOnLink(a netip.Addr) bool {
	for _, p := range u.OnLink {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// FindUnderlay finds the underlay interface and address. With iface set, it
// is that interface (and want, if valid, must be one of its addresses);
// otherwise it is the interface holding want, or, with neither, the
// interface of the default route. An unspecified want (0.0.0.0 or ::) asks
// for any address of its family; an invalid one for an IPv4 address, or
// an IPv6 one if the interface has no IPv4 address (an IPv6-only underlay).
func FindUnderlay(iface string, want netip.Addr) (Underlay, error) {
	var link netlink.Link
	var err error
	pinned := want.IsValid() && !want.IsUnspecified()
	switch {
	case iface != "":
		if link, err = netlink.LinkByName(iface); err != nil {
			return Underlay{}, fmt.Errorf("interface %q: %w", iface, err)
		}
	case pinned:
		if link, err = linkWithAddr(want); err != nil {
			return Underlay{}, err
		}
	default:
		if link, err = defaultRouteLink(); err != nil {
			return Underlay{}, err
		}
	}
	families := []bool{false, true} // IPv4 first, then IPv6
	if want.IsValid() {
		families = []bool{want.Is6()}
	}
	var u Underlay
	for _, v6 := range families {
		if u, err = underlayOf(link, want, pinned, v6); err != nil || u.Addr.IsValid() {
			break
		}
	}
	if err != nil {
		return Underlay{}, err
	}
	if !u.Addr.IsValid() {
		return Underlay{}, fmt.Errorf("interface %s has no usable address", u.Iface)
	}
	return u, nil
}

// underlayOf is link as the underlay with its addresses of one family.
func underlayOf(link netlink.Link, want netip.Addr, pinned, v6 bool) (Underlay, error) {
	u := Underlay{Iface: link.Attrs().Name, Index: link.Attrs().Index, MTU: link.Attrs().MTU}
	family := netlink.FAMILY_V4
	if v6 {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(link, family)
	if err != nil {
		return Underlay{}, fmt.Errorf("addresses of %s: %w", u.Iface, err)
	}
	for _, a := range addrs {
		p := ipNetToPrefix(a.IPNet)
		if a.Scope != unix.RT_SCOPE_UNIVERSE || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		u.OnLink = append(u.OnLink, p.Masked())
		u.Addrs = append(u.Addrs, p.Addr())
		if !u.Addr.IsValid() && (!pinned || p.Addr() == want) {
			u.Addr = p.Addr()
		}
	}
	if pinned && u.Addr != want {
		// The advertised address need not be local (a NAT or a VIP in
		// front of the host); tunnel traffic still leaves through iface.
		u.Addr = want
	}
	return u, nil
}

func linkWithAddr(a netip.Addr) (netlink.Link, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, ad := range addrs {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok && ip.Unmap() == a {
			return netlink.LinkByIndex(ad.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no interface has address %s", a)
}

func defaultRouteLink() (netlink.Link, error) {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if (r.Dst == nil || isDefault(r.Dst.String())) && r.LinkIndex > 0 {
				return netlink.LinkByIndex(r.LinkIndex)
			}
		}
	}
	return nil, errors.New("no default route: set --iface or --public-ip")
}

func isDefault(s string) bool { return s == "0.0.0.0/0" || s == "::/0" }
