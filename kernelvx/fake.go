package kernelvx

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/weftnet/weft/encap"
)

// Fake is an in-memory Kernel for tests: it keeps links with their
// addresses, routes, neighbour and FDB entries, and a peer filter, as the
// kernel would after each call, and logs every call that changes them.
// Foreign state (an administrator's route, a learned neighbour entry, a
// link of another type) can be seeded to see what Reconcile and Ensure do
// with it, and any method can be made to fail.
type Fake struct {
	mu     sync.Mutex
	next   int
	links  map[int]*fakeLink
	filter *fakeFilter
	ops    []string
	fail   map[string]error
}

type fakeLink struct {
	Link
	stats  Stats
	addrs  []netip.Prefix
	routes map[netip.Prefix]fakeRoute
	neighs map[netip.Addr]fakeNeigh
	fdb    map[encap.MAC]FDB
}

type fakeRoute struct {
	Route
	proto string // "weft" for RouteProtocol
}

type fakeNeigh struct {
	Neigh
	state string // "permanent", or a learned state ("reachable", ...)
}

type fakeFilter struct {
	port     uint16
	local    []netip.Prefix
	sets     FilterSets
	counters FilterCounters
}

var _ Kernel = (*Fake)(nil)

// NewFake returns a Fake with no links (indexes start at 10) and no filter.
func NewFake() *Fake {
	return &Fake{next: 10, links: map[int]*fakeLink{}, fail: map[string]error{}}
}

// FailOn makes every later call of the Kernel method op (such as
// "LinkSetUp") fail with err; a nil err clears it.
func (f *Fake) FailOn(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.fail, op)
		return
	}
	f.fail[op] = err
}

// Ops returns the changing calls made since the last Ops, one line each.
func (f *Fake) Ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

// AddLink seeds a link (of any Kind) and returns its index.
func (f *Fake) AddLink(l Link) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addLink(l)
}

// AddForeignRoute seeds a route through a link that does not carry weft's
// protocol (proto is what `ip route` would show, e.g. "static").
func (f *Fake) AddForeignRoute(r Route, proto string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.links[r.LinkIndex]; l != nil {
		l.routes[r.Dst] = fakeRoute{r, proto}
	}
}

// AddLearnedNeigh seeds a neighbour entry the kernel learned itself
// (state is "reachable", "stale", "failed", ...).
func (f *Fake) AddLearnedNeigh(n Neigh, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.links[n.LinkIndex]; l != nil {
		l.neighs[n.IP] = fakeNeigh{n, state}
	}
}

// SetStats sets a link's traffic counters.
func (f *Fake) SetStats(index int, s Stats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.links[index]; l != nil {
		l.stats = s
	}
}

// CountDrops adds to the filter's counters, as dropped datagrams would.
func (f *Fake) CountDrops(c FilterCounters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.filter != nil {
		f.filter.counters = f.filter.counters.add(c)
	}
}

// Dump returns the whole state, one sorted line per link, address, route,
// neighbour, FDB entry, filter and filter element, in the words of
// ip(8), bridge(8) and nft(8):
//
//	link weft-vx #10 vxlan vni 1 port 8472 local 192.0.2.1 dev #2 mac 02:57:0a:63:01:00 mtu 1450 up
//	addr weft-vx 10.99.1.0/32
//	route 10.99.2.0/24 via 10.99.2.0 dev weft-vx onlink proto weft
//	neigh 10.99.2.0 lladdr 02:57:0a:63:02:00 dev weft-vx permanent
//	fdb 02:57:0a:63:02:00 dst 192.0.2.2 dev weft-vx self permanent
//	filter udp dport 8472 local [10.99.1.0/24 fd99:1::/64]
//	filter peer 192.0.2.2
//	filter source 192.0.2.2 . 10.99.2.0/24
func (f *Fake) Dump() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.links {
		up := "down"
		if l.Up {
			up = "up"
		}
		line := fmt.Sprintf("link %s #%d %s", l.Name, l.Index, l.Kind)
		if l.Kind == KindVXLAN {
			line += fmt.Sprintf(" vni %d port %d local %s dev #%d mac %s mtu %d", l.VNI, l.Port, l.Local, l.UnderlayIndex, l.MAC, l.MTU)
			if l.Learning {
				line += " learning"
			}
		}
		out = append(out, line+" "+up)
		for _, a := range l.addrs {
			out = append(out, fmt.Sprintf("addr %s %s", l.Name, a))
		}
		for _, r := range l.routes {
			out = append(out, fmt.Sprintf("route %s via %s dev %s onlink proto %s", r.Dst, r.Via, l.Name, r.proto))
		}
		for _, n := range l.neighs {
			out = append(out, fmt.Sprintf("neigh %s lladdr %s dev %s %s", n.IP, n.MAC, l.Name, n.state))
		}
		for _, e := range l.fdb {
			out = append(out, fmt.Sprintf("fdb %s dst %s dev %s self permanent", e.MAC, e.Dst, l.Name))
		}
	}
	if f.filter != nil {
		out = append(out, fmt.Sprintf("filter udp dport %d local %v", f.filter.port, f.filter.local))
		for _, p := range f.filter.sets.Peers {
			out = append(out, "filter peer "+p.String())
		}
		for _, s := range f.filter.sets.Sources {
			out = append(out, "filter source "+s.String())
		}
	}
	slices.Sort(out)
	return out
}

func (f *Fake) addLink(l Link) int {
	f.next++
	l.Index = f.next
	f.links[l.Index] = &fakeLink{
		Link:   l,
		routes: map[netip.Prefix]fakeRoute{},
		neighs: map[netip.Addr]fakeNeigh{},
		fdb:    map[encap.MAC]FDB{},
	}
	return l.Index
}

// readOnly are the Kernel methods that change nothing (not logged).
var readOnly = map[string]bool{
	"LinkByName": true, "LinkStats": true, "AddrList": true, "RouteList": true, "NeighList": true,
	"FDBList": true, "FilterSets": true, "FilterCounters": true,
}

// call returns the failure set for op, if any, and otherwise logs op if
// it changes state.
func (f *Fake) call(op string, args ...any) error {
	if err := f.fail[op]; err != nil {
		return err
	}
	if !readOnly[op] {
		f.ops = append(f.ops, strings.TrimSpace(op+" "+fmt.Sprint(args...)))
	}
	return nil
}

func (f *Fake) link(index int) (*fakeLink, error) {
	l := f.links[index]
	if l == nil {
		return nil, fmt.Errorf("link #%d: %w", index, syscall.ENODEV)
	}
	return l, nil
}

// LinkByName implements Kernel.
func (f *Fake) LinkByName(name string) (Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkByName"); err != nil {
		return Link{}, err
	}
	for _, l := range f.links {
		if l.Name == name {
			return l.Link, nil
		}
	}
	return Link{}, fmt.Errorf("link %s: %w", name, ErrNotExist)
}

// LinkAdd implements Kernel.
func (f *Fake) LinkAdd(l Link) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkAdd", l.Name); err != nil {
		return 0, err
	}
	for _, o := range f.links {
		if o.Name == l.Name {
			return 0, fmt.Errorf("link %s: %w", l.Name, syscall.EEXIST)
		}
	}
	l.Up = false
	return f.addLink(l), nil
}

// LinkDel implements Kernel.
func (f *Fake) LinkDel(index int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkDel", index); err != nil {
		return err
	}
	if _, err := f.link(index); err != nil {
		return err
	}
	delete(f.links, index)
	return nil
}

// LinkSetUp implements Kernel.
func (f *Fake) LinkSetUp(index int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkSetUp", index); err != nil {
		return err
	}
	l, err := f.link(index)
	if err != nil {
		return err
	}
	l.Up = true
	return nil
}

// LinkStats implements Kernel.
func (f *Fake) LinkStats(index int) (Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkStats"); err != nil {
		return Stats{}, err
	}
	l, err := f.link(index)
	if err != nil {
		return Stats{}, err
	}
	return l.stats, nil
}

// AddrList implements Kernel.
func (f *Fake) AddrList(index int) ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("AddrList"); err != nil {
		return nil, err
	}
	l, err := f.link(index)
	if err != nil {
		return nil, err
	}
	return slices.Clone(l.addrs), nil
}

// AddrReplace implements Kernel.
func (f *Fake) AddrReplace(index int, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("AddrReplace", p); err != nil {
		return err
	}
	l, err := f.link(index)
	if err != nil {
		return err
	}
	if !slices.Contains(l.addrs, p) {
		l.addrs = append(l.addrs, p)
	}
	return nil
}

// AddrDel implements Kernel.
func (f *Fake) AddrDel(index int, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("AddrDel", p); err != nil {
		return err
	}
	l, err := f.link(index)
	if err != nil {
		return err
	}
	l.addrs = slices.DeleteFunc(l.addrs, func(a netip.Prefix) bool { return a == p })
	return nil
}

// RouteList implements Kernel.
func (f *Fake) RouteList(index int) ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("RouteList"); err != nil {
		return nil, err
	}
	l, err := f.link(index)
	if err != nil {
		return nil, err
	}
	var out []Route
	for _, r := range l.routes {
		if r.proto == "weft" {
			out = append(out, r.Route)
		}
	}
	return out, nil
}

// RouteReplace implements Kernel.
func (f *Fake) RouteReplace(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("RouteReplace", r); err != nil {
		return err
	}
	l, err := f.link(r.LinkIndex)
	if err != nil {
		return err
	}
	l.routes[r.Dst] = fakeRoute{r, "weft"}
	return nil
}

// RouteDel implements Kernel.
func (f *Fake) RouteDel(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("RouteDel", r); err != nil {
		return err
	}
	l, err := f.link(r.LinkIndex)
	if err != nil {
		return err
	}
	delete(l.routes, r.Dst)
	return nil
}

// NeighList implements Kernel.
func (f *Fake) NeighList(index int) ([]Neigh, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("NeighList"); err != nil {
		return nil, err
	}
	l, err := f.link(index)
	if err != nil {
		return nil, err
	}
	var out []Neigh
	for _, n := range l.neighs {
		if n.state == "permanent" {
			out = append(out, n.Neigh)
		}
	}
	return out, nil
}

// NeighSet implements Kernel.
func (f *Fake) NeighSet(n Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("NeighSet", n); err != nil {
		return err
	}
	l, err := f.link(n.LinkIndex)
	if err != nil {
		return err
	}
	l.neighs[n.IP] = fakeNeigh{n, "permanent"}
	return nil
}

// NeighDel implements Kernel.
func (f *Fake) NeighDel(n Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("NeighDel", n); err != nil {
		return err
	}
	l, err := f.link(n.LinkIndex)
	if err != nil {
		return err
	}
	delete(l.neighs, n.IP)
	return nil
}

// FDBList implements Kernel.
func (f *Fake) FDBList(index int) ([]FDB, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("FDBList"); err != nil {
		return nil, err
	}
	l, err := f.link(index)
	if err != nil {
		return nil, err
	}
	return slices.Collect(maps.Values(l.fdb)), nil
}

// FDBSet implements Kernel.
func (f *Fake) FDBSet(e FDB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("FDBSet", e); err != nil {
		return err
	}
	l, err := f.link(e.LinkIndex)
	if err != nil {
		return err
	}
	l.fdb[e.MAC] = e
	return nil
}

// FDBDel implements Kernel.
func (f *Fake) FDBDel(e FDB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("FDBDel", e); err != nil {
		return err
	}
	l, err := f.link(e.LinkIndex)
	if err != nil {
		return err
	}
	if l.fdb[e.MAC].Dst == e.Dst { // the kernel removes one destination of the MAC
		delete(l.fdb, e.MAC)
	}
	return nil
}

// FilterEnsure implements Kernel.
func (f *Fake) FilterEnsure(port uint16, local []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("FilterEnsure", port, local); err != nil {
		return err
	}
	var sets FilterSets
	if f.filter != nil {
		sets = f.filter.sets
	}
	f.filter = &fakeFilter{port: port, local: slices.Clone(local), sets: sets}
	return nil
}

// FilterSets implements Kernel.
func (f *Fake) FilterSets() (FilterSets, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("FilterSets"); err != nil {
		return FilterSets{}, err
	}
	if f.filter == nil {
		return FilterSets{}, fmt.Errorf("peer filter: %w", ErrNotExist)
	}
	return f.filter.sets.canonical(), nil
}

// FilterReplace implements Kernel.
func (f *Fake) FilterReplace(s FilterSets) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s = s.canonical()
	if err := f.call("FilterReplace", fmt.Sprintf("%d peers %d sources", len(s.Peers), len(s.Sources))); err != nil {
		return err
	}
	if f.filter == nil {
		return fmt.Errorf("peer filter: %w", ErrNotExist)
	}
	f.filter.sets = s
	return nil
}

// FilterCounters implements Kernel.
func (f *Fake) FilterCounters() (FilterCounters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("FilterCounters"); err != nil {
		return FilterCounters{}, err
	}
	if f.filter == nil {
		return FilterCounters{}, fmt.Errorf("peer filter: %w", ErrNotExist)
	}
	return f.filter.counters, nil
}

// FilterDelete implements Kernel.
func (f *Fake) FilterDelete() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("FilterDelete"); err != nil {
		return err
	}
	f.filter = nil
	return nil
}
