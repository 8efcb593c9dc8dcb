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

// Route is a kernel route weft owns: Dst via Via (a gateway on the link
// LinkIndex), or Dst straight onto LinkIndex when Via is invalid.
type Route struct {
	Dst       netip.Prefix
	Via       netip.Addr
	Src       netip.Addr // preferred source (our overlay address), optional
	LinkIndex int
}

func (r Route) String() string {
	if r.Via.IsValid() {
		return fmt.Sprintf("%s via %s dev #%d", r.Dst, r.Via, r.LinkIndex)
	}
	return fmt.Sprintf("%s dev #%d", r.Dst, r.LinkIndex)
}

func (r Route) netlink() *netlink.Route {
	nr := &netlink.Route{
		Dst:       prefixToIPNet(r.Dst),
		LinkIndex: r.LinkIndex,
		Protocol:  RouteProtocol,
		Scope:     netlink.SCOPE_UNIVERSE,
	}
	if r.Src.IsValid() {
		nr.Src = r.Src.AsSlice()
	}
	switch {
	case r.Via.IsValid() && r.Via.Is6() != r.Dst.Addr().Is6():
		// A gateway of the other family (an IPv4 overlay over an IPv6
		// underlay, or the reverse): RTA_VIA, as "ip route ... via inet6".
		family := netlink.FAMILY_V4
		if r.Via.Is6() {
			family = netlink.FAMILY_V6
		}
		nr.Via = &netlink.Via{AddrFamily: family, Addr: r.Via.AsSlice()}
	case r.Via.IsValid():
		nr.Gw = r.Via.AsSlice()
	default:
		nr.Scope = netlink.SCOPE_LINK
	}
	return nr
}

// ReplaceRoute installs r, replacing any route to the same destination.
func ReplaceRoute(r Route) error {
	if err := netlink.RouteReplace(r.netlink()); err != nil {
		return fmt.Errorf("install route %s: %w", r, err)
	}
	return nil
}

// DeleteRoute removes r; a route that is already gone is not an error.
func DeleteRoute(r Route) error {
	if err := netlink.RouteDel(r.netlink()); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("remove route %s: %w", r, err)
	}
	return nil
}

// OurRoutes lists the routes in the main table that carry RouteProtocol.
func OurRoutes() ([]Route, error) {
	filter := &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	var out []Route
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(family, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, nr := range rs {
			if nr.Dst == nil {
				continue
			}
			r := Route{Dst: ipNetToPrefix(nr.Dst), LinkIndex: nr.LinkIndex}
			if a, ok := netip.AddrFromSlice(nr.Gw); ok {
				r.Via = a.Unmap()
			} else if via, ok := nr.Via.(*netlink.Via); ok {
				if a, ok := netip.AddrFromSlice(via.Addr); ok {
					r.Via = a.Unmap()
				}
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// Cleanup removes what a run of weft left in the kernel: the TUN link named
// tunName and every route carrying RouteProtocol. It is what start-up does
// before creating anything, and what `weft run --cleanup` does after a crash.
func Cleanup(tunName string, log *slog.Logger) error {
	errs := []error{removeStaleLink(tunName, log)}
	routes, err := OurRoutes()
	errs = append(errs, err)
	for _, r := range routes {
		log.Info("removing stale route", "route", r.String())
		errs = append(errs, DeleteRoute(r))
	}
	return errors.Join(errs...)
}

func ipNetToPrefix(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}
