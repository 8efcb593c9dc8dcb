// Package family reads weft's dual-stack lists: the networks, subnets,
// pools and addresses that a host has one of per IP family, at most two,
// IPv4 first (config checks that once; the metadata decoder and the node's
// peer checks check what comes from other hosts). A single-stack list holds
// one element of either family.
//
// It maps a list onto the two names the user sees (the status fields, the
// log keys and the flags keep "subnet" and "subnet6"): First is the one
// called subnet, Second the one called subnet6, which only a dual-stack
// list has.
package family

import "net/netip"

// First is the list's first prefix: the IPv4 one in dual stack, the only
// one in single stack (the zero Prefix if the list is empty).
func First(ps []netip.Prefix) netip.Prefix {
	if len(ps) == 0 {
		return netip.Prefix{}
	}
	return ps[0]
}

// Second is a dual-stack list's IPv6 prefix beside the IPv4 first (the
// zero Prefix in single stack).
func Second(ps []netip.Prefix) netip.Prefix {
	if len(ps) < 2 {
		return netip.Prefix{}
	}
	return ps[1]
}

// Of is the prefix of the list in the IPv6 family if v6, else in the IPv4
// one (the zero Prefix if the list has none of that family).
func Of(ps []netip.Prefix, v6 bool) netip.Prefix {
	for _, p := range ps {
		if p.IsValid() && p.Addr().Is6() == v6 {
			return p
		}
	}
	return netip.Prefix{}
}

// AddrOf is Of for a list of addresses.
func AddrOf(as []netip.Addr, v6 bool) netip.Addr {
	for _, a := range as {
		if a.IsValid() && a.Is6() == v6 {
			return a
		}
	}
	return netip.Addr{}
}
