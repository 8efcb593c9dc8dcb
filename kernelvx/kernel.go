package kernelvx

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/encap"
)

// Kernel is everything this package asks of the operating system: rtnetlink
// for the VXLAN link, its addresses, routes, neighbours and forwarding
// database, and nftables for the peer filter. NewKernel returns the real
// one; Fake records the state in memory for tests.
//
// Every method names the link by its index, lists only what is on that
// link, and treats removing what is already gone as success.
type Kernel interface {
	// LinkByName returns the link called name, or an error wrapping
	// ErrNotExist when there is none.
	LinkByName(name string) (Link, error)
	// LinkAdd creates a VXLAN link (down) and returns its index.
	LinkAdd(l Link) (int, error)
	// LinkDel removes the link, and with it every address, route,
	// neighbour and FDB entry on it.
	LinkDel(index int) error
	// LinkSetUp brings the link up.
	LinkSetUp(index int) error
	// LinkStats returns the link's traffic counters.
	LinkStats(index int) (Stats, error)

	// AddrList lists the link's addresses, IPv6 link-local ones excepted.
	AddrList(index int) ([]netip.Prefix, error)
	// AddrReplace adds p to the link (an IPv6 one without duplicate
	// address detection), or refreshes it if present.
	AddrReplace(index int, p netip.Prefix) error
	// AddrDel removes p from the link.
	AddrDel(index int, p netip.Prefix) error

	// RouteList lists the routes in the main table through the link that
	// carry RouteProtocol.
	RouteList(index int) ([]Route, error)
	// RouteReplace installs r with RouteProtocol, replacing any route to
	// the same destination.
	RouteReplace(r Route) error
	// RouteDel removes r.
	RouteDel(r Route) error

	// NeighList lists the link's permanent IPv4 and IPv6 neighbour entries
	// (the kernel's own, learned entries are not listed).
	NeighList(index int) ([]Neigh, error)
	// NeighSet adds or replaces a permanent neighbour entry.
	NeighSet(n Neigh) error
	// NeighDel removes a neighbour entry.
	NeighDel(n Neigh) error

	// FDBList lists the VXLAN device's forwarding database (family
	// AF_BRIDGE, "bridge fdb show dev NAME").
	FDBList(index int) ([]FDB, error)
	// FDBSet adds or replaces a permanent FDB entry.
	FDBSet(f FDB) error
	// FDBDel removes an FDB entry.
	FDBDel(f FDB) error

	// FilterEnsure (re)builds the peer filter for the VXLAN UDP port and
	// this host's subnets (local) in one atomic transaction, keeping the
	// elements its sets already hold (so that a restart does not cut off
	// the current peers) and starting its counters from zero.
	FilterEnsure(port uint16, local []netip.Prefix) error
	// FilterSets reads the filter's sets; an error wrapping ErrNotExist
	// when there is no filter.
	FilterSets() (FilterSets, error)
	// FilterReplace replaces the contents of the filter's sets with s in
	// one atomic transaction.
	FilterReplace(s FilterSets) error
	// FilterCounters reads the filter's drop counters.
	FilterCounters() (FilterCounters, error)
	// FilterDelete removes the filter; no filter is not an error.
	FilterDelete() error
}

// ErrNotExist is wrapped by Kernel.LinkByName and Kernel.FilterSets when
// there is no such link or filter.
var ErrNotExist = errors.New("does not exist")

// KindVXLAN is Link.Kind of a VXLAN device.
const KindVXLAN = "vxlan"

// Link is the part of a link this package sets and compares.
type Link struct {
	Name          string
	Index         int    // set by the kernel
	Kind          string // "vxlan", or another link type ("dummy", ...)
	VNI           uint32
	Port          uint16     // destination UDP port
	Local         netip.Addr // the underlay source address
	UnderlayIndex int        // the underlay interface ("dev" in ip-link)
	MAC           encap.MAC
	MTU           int
	Learning      bool
	Up            bool // administratively up (not compared)
}

// differs says how l, an existing link, differs from want (the empty
// string when it does not); Index and Up are not compared.
func (l Link) differs(want Link) string {
	type field struct {
		name      string
		got, want any
	}
	for _, f := range []field{
		{"type", l.Kind, want.Kind},
		{"vni", l.VNI, want.VNI},
		{"port", l.Port, want.Port},
		{"local", l.Local, want.Local},
		{"dev", l.UnderlayIndex, want.UnderlayIndex},
		{"mac", l.MAC, want.MAC},
		{"mtu", l.MTU, want.MTU},
		{"learning", l.Learning, want.Learning},
	} {
		if f.got != f.want {
			return fmt.Sprintf("%s %v, want %v", f.name, f.got, f.want)
		}
	}
	return ""
}

// Stats are a link's traffic counters.
type Stats struct {
	RxPackets, RxBytes   uint64
	TxPackets, TxBytes   uint64
	RxDropped, TxDropped uint64
}

// Route is a route to a peer's subnet through the VXLAN link: Dst via Via,
// onlink (the gateway is not in any of the link's prefixes).
type Route struct {
	Dst       netip.Prefix
	Via       netip.Addr
	LinkIndex int
}

func (r Route) String() string {
	return fmt.Sprintf("%s via %s dev #%d onlink", r.Dst, r.Via, r.LinkIndex)
}

// Neigh is a permanent neighbour entry: IP is at MAC on the link.
type Neigh struct {
	IP        netip.Addr
	MAC       encap.MAC
	LinkIndex int
}

func (n Neigh) String() string {
	return fmt.Sprintf("%s lladdr %s dev #%d permanent", n.IP, n.MAC, n.LinkIndex)
}

// FDB is a permanent forwarding database entry of the VXLAN device: frames
// to MAC go in a VXLAN datagram to Dst.
type FDB struct {
	MAC       encap.MAC
	Dst       netip.Addr
	LinkIndex int
}

func (f FDB) String() string {
	return fmt.Sprintf("%s dst %s dev #%d self permanent", f.MAC, f.Dst, f.LinkIndex)
}

// FilterSets is the peer filter's data: the underlay addresses VXLAN is
// accepted from, and, for each, the inner source prefixes it may carry.
type FilterSets struct {
	Peers   []netip.Addr
	Sources []Source
}

// Source allows inner packets from Prefix in VXLAN datagrams from Peer.
type Source struct {
	Peer   netip.Addr
	Prefix netip.Prefix
}

func (s Source) String() string { return s.Peer.String() + " . " + s.Prefix.String() }

func (s Source) compare(o Source) int {
	return cmp.Or(s.Peer.Compare(o.Peer), s.Prefix.Addr().Compare(o.Prefix.Addr()), cmp.Compare(s.Prefix.Bits(), o.Prefix.Bits()))
}

// canonical returns s sorted and without duplicates, so that two
// FilterSets with the same contents compare Equal.
func (s FilterSets) canonical() FilterSets {
	out := FilterSets{
		Peers:   slices.Clone(s.Peers),
		Sources: slices.Clone(s.Sources),
	}
	slices.SortFunc(out.Peers, netip.Addr.Compare)
	out.Peers = slices.Compact(out.Peers)
	slices.SortFunc(out.Sources, Source.compare)
	out.Sources = slices.Compact(out.Sources)
	return out
}

// Equal reports whether s and o hold the same elements, in any order.
func (s FilterSets) Equal(o FilterSets) bool {
	a, b := s.canonical(), o.canonical()
	return slices.Equal(a.Peers, b.Peers) && slices.Equal(a.Sources, b.Sources)
}

// Counter is a packet and byte count.
type Counter struct {
	Packets, Bytes uint64
}

// FilterCounters are the peer filter's drop counters, by the reason of
// weft_dropped_packets_total they feed.
type FilterCounters struct {
	// UnknownPeer counts VXLAN datagrams from an address that is not a
	// peer's underlay address (reason="unknown_peer").
	UnknownPeer Counter
	// Spoofed counts VXLAN datagrams from a peer whose inner IPv4 or IPv6
	// source is outside that peer's subnets (reason="spoofed").
	Spoofed Counter
	// NotLocal counts VXLAN datagrams whose inner IPv4 or IPv6
	// destination is outside this host's subnets (reason="not_local"):
	// the kernel would otherwise route them on, a relay for any peer.
	NotLocal Counter
	// SlowPath counts VXLAN datagrams the filter let through that its
	// fast rules did not take (frames that are not IP, a peer's subnet of
	// a length other than ours): each cost an interval lookup or more.
	SlowPath Counter
}

func (c FilterCounters) add(o FilterCounters) FilterCounters {
	return FilterCounters{
		UnknownPeer: Counter{c.UnknownPeer.Packets + o.UnknownPeer.Packets, c.UnknownPeer.Bytes + o.UnknownPeer.Bytes},
		Spoofed:     Counter{c.Spoofed.Packets + o.Spoofed.Packets, c.Spoofed.Bytes + o.Spoofed.Bytes},
		NotLocal:    Counter{c.NotLocal.Packets + o.NotLocal.Packets, c.NotLocal.Bytes + o.NotLocal.Bytes},
		SlowPath:    Counter{c.SlowPath.Packets + o.SlowPath.Packets, c.SlowPath.Bytes + o.SlowPath.Bytes},
	}
}
