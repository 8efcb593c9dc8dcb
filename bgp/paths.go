// Package bgp announces a weft host's subnets to the physical network with
// an embedded BGP speaker (gobgp), as Calico's BIRD does.
//
// Its core is a pure function, Paths, from what the node knows (ready or
// not, its subnets, the cluster networks, its underlay addresses) to the
// set of routes it announces; Diff turns two such sets into the updates to
// send. Speaker is the glue to gobgp: sessions, announcements, status.
package bgp

import (
	"cmp"
	"net/netip"
	"slices"
)

// State is what the announcements depend on.
type State struct {
	// Ready: the node is up (the TUN, the data path and the gossip are
	// running). A host that is not ready announces nothing: the router
	// must not send it traffic it cannot deliver.
	Ready bool
	// Subnets are this host's own subnets (one per family).
	Subnets []netip.Prefix
	// Networks are the cluster networks; announced as aggregates only with
	// AnnounceNetwork.
	Networks        []netip.Prefix
	AnnounceNetwork bool
	// NextHop4 and NextHop6 are this host's underlay addresses of each
	// family: a prefix is announced only with a next hop of its own
	// family (invalid: that family is not announced).
	NextHop4, NextHop6 netip.Addr
}

// Path is one announced route.
type Path struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
}

func (p Path) String() string { return p.Prefix.String() + " via " + p.NextHop.String() }

// Paths is the set of routes to announce in state s, sorted and without
// duplicates.
func Paths(s State) []Path {
	if !s.Ready {
		return nil
	}
	var out []Path
	add := func(p netip.Prefix) {
		if !p.IsValid() {
			return
		}
		p = p.Masked()
		nh := s.NextHop4
		if p.Addr().Is6() {
			nh = s.NextHop6
		}
		if !nh.IsValid() || nh.Is6() != p.Addr().Is6() {
			return
		}
		out = append(out, Path{Prefix: p, NextHop: nh})
	}
	for _, p := range s.Subnets {
		add(p)
	}
	if s.AnnounceNetwork {
		for _, p := range s.Networks {
			add(p)
		}
	}
	slices.SortFunc(out, comparePaths)
	return slices.Compact(out)
}

func comparePaths(a, b Path) int {
	return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()), a.NextHop.Compare(b.NextHop))
}

// Diff says what changes from the announced set old to next: the paths to
// add (new, or with another next hop) and the prefixes to withdraw (gone
// from next). A prefix whose next hop changes is only added: the new path
// replaces the old one in one update.
func Diff(old, next []Path) (add, withdraw []Path) {
	byPrefix := make(map[netip.Prefix]Path, len(next))
	for _, p := range next {
		byPrefix[p.Prefix] = p
	}
	for _, p := range old {
		if _, ok := byPrefix[p.Prefix]; !ok {
			withdraw = append(withdraw, p)
		}
	}
	was := make(map[netip.Prefix]Path, len(old))
	for _, p := range old {
		was[p.Prefix] = p
	}
	for _, p := range next {
		if w, ok := was[p.Prefix]; !ok || w != p {
			add = append(add, p)
		}
	}
	return add, withdraw
}
