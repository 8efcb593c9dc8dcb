package router

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/gaissmai/bart"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/seal"
)

// Peer is another host of the overlay as the control plane sees it.
type Peer struct {
	Name string
	// Subnets are the peer's subnets: one of either family, or a
	// dual-stack peer's IPv4 and IPv6 ones, IPv4 first.
	Subnets  []netip.Prefix
	Underlay netip.AddrPort // data-plane address
	MAC      encap.MAC      // VTEP MAC (vxlan)
	State    string         // alive, suspect, dead, left, static, or pending (its certificate on its way)
	Static   bool
	Claimed  int64 // unix ms of the subnet claim; earlier wins a conflict
	// PartialChecksums: the peer takes inner TCP and UDP checksums left
	// partial (a weft that advertises the capability), trusting the outer
	// UDP checksum. False for kernel VTEPs, static peers and older wefts:
	// they get complete checksums, and theirs are verified.
	PartialChecksums bool
	// Incompatible, if set, says why the peer cannot be routed (another
	// encapsulation, undecodable metadata, ...), and Refused is that
	// reason's label.
	Incompatible string
	Refused      Refusal
	// Secure seals what is sent to the peer and opens what it sends (nil:
	// plaintext; see secure.go).
	Secure *seal.Peer
}

// routable reports whether traffic may flow to and from the peer.
func (p *Peer) routable() bool {
	return p.Static || p.State == "alive" || p.State == "suspect"
}

// owns reports whether a lies in one of the peer's subnets (the inbound
// spoofing check, per family).
func (p *Peer) owns(a netip.Addr) bool { return contains(p.Subnets, a) }

// isLocal reports whether a lies in one of our subnets.
func (t *Table) isLocal(a netip.Addr) bool { return contains(t.local, a) }

func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Via says how a peer is reached.
type Via string

// How peers are reached.
const (
	ViaTunnel Via = "tunnel" // through the TUN and the UDP socket
	ViaDirect Via = "direct" // a plain kernel route via its underlay address
	ViaNone   Via = "none"   // not routed: see the peer's Reason
)

// entry is a routable peer as the forwarding loops see it.
type entry struct {
	peer  Peer
	ep    encap.Endpoint
	via   Via
	stats *peerStats
}

// Table is an immutable snapshot of where every overlay address lives.
// Forwarding loops load it once per batch through an atomic pointer.
type Table struct {
	local   []netip.Prefix // our subnets (Local.Subnets)
	codec   encap.Codec    // the encapsulation, for our identity (VTEP MAC, addresses answered)
	lpm     bart.Table[*entry]
	byAddr  map[netip.Addr]*entry
	entries []*entry
}

// Conflict records a peer refused a route because its subnet overlaps one
// held by another host.
type Conflict struct {
	Loser, Winner string // names; "" is this host
	Subnet        netip.Prefix
}

func (c Conflict) String() string {
	name := func(s string) string {
		if s == "" {
			return "this host"
		}
		return fmt.Sprintf("peer %q", s)
	}
	return fmt.Sprintf("%s claims %s, which overlaps the subnet of %s (held or claimed earlier)", name(c.Loser), c.Subnet, name(c.Winner))
}

// judge is what the table builder knows of the past, for the conflict
// rules. A peer that held its subnets in the previous table (an incumbent)
// keeps them against any newcomer, whatever claim time the newcomer
// advertises; among newcomers the earlier claim wins, then the smaller
// name. Our own subnet is always ours in the table; we give it up (the
// Conflict names us the loser, and an automatic subnet moves) only to a
// peer that wins by the claim rule and that we saw before our claim had
// settled (early): a host that joins later cannot take our subnet by
// dating its claim back.
type judge struct {
	incumbent func(*Peer) bool
	early     func(*Peer) bool
}

// buildTable resolves overlaps and indexes the routable peers of a host
// with no history (every peer judged by its claim): see judge.
func buildTable(local []netip.Prefix, localClaimed int64, localName string, peers []Peer) (*Table, []Conflict, map[string]string) {
	t, c, r, _ := buildTableWith(local, localClaimed, localName, peers, judge{})
	return t, c, r
}

// buildTableWith builds the table for a host with up to two subnets, one
// per family (Local.Subnets). A peer is routed with both of
// its subnets or not at all: one that overlaps a claim in either family is
// refused, and the Conflict names the subnet at fault. Two peers that
// advertise one underlay address are both marked: the one judged first
// (the incumbent) keeps it, the other is refused. It returns the refusal
// label of every peer refused.
func buildTableWith(local []netip.Prefix, localClaimed int64, localName string, peers []Peer, j judge) (*Table, []Conflict, map[string]string, map[string]Refusal) {
	if j.incumbent == nil {
		j.incumbent = func(*Peer) bool { return false }
	}
	if j.early == nil {
		j.early = func(*Peer) bool { return true }
	}
	t := &Table{local: local, byAddr: make(map[netip.Addr]*entry)}
	reasons := make(map[string]string)
	refused := make(map[string]Refusal)
	cands := make([]*Peer, 0, len(peers))
	for i := range peers {
		p := &peers[i]
		switch {
		case p.Incompatible != "":
			reasons[p.Name] = p.Incompatible
			refused[p.Name] = cmp.Or(p.Refused, RefusedInvalidMeta)
		case !p.routable():
			reasons[p.Name] = p.State
		case !family.First(p.Subnets).IsValid() || !p.Underlay.IsValid():
			reasons[p.Name] = "invalid metadata"
			refused[p.Name] = RefusedInvalidMeta
		default:
			cands = append(cands, p)
		}
	}
	incumbent := make(map[*Peer]bool, len(cands))
	for _, p := range cands {
		incumbent[p] = j.incumbent(p)
	}
	slices.SortFunc(cands, func(a, b *Peer) int {
		if incumbent[a] != incumbent[b] {
			if incumbent[a] {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.Claimed, b.Claimed), cmp.Compare(a.Name, b.Name))
	})
	type claim struct {
		name string
		pfx  netip.Prefix
	}
	accepted := make([]claim, 0, len(local)+len(cands))
	for _, sub := range local {
		accepted = append(accepted, claim{"", sub})
	}
	var conflicts []Conflict
	for _, p := range cands {
		var winner *claim
		var theirs netip.Prefix
	find:
		for _, sub := range p.Subnets {
			for i := range accepted {
				if accepted[i].pfx.Overlaps(sub) {
					winner, theirs = &accepted[i], sub
					break find
				}
			}
		}
		if winner != nil {
			c := Conflict{Loser: p.Name, Winner: winner.name, Subnet: theirs}
			if winner.name == "" && j.early(p) && (p.Claimed < localClaimed || (p.Claimed == localClaimed && p.Name < localName)) {
				c = Conflict{Loser: "", Winner: p.Name, Subnet: winner.pfx}
			}
			conflicts = append(conflicts, c)
			reasons[p.Name] = "subnet conflict"
			refused[p.Name] = RefusedSubnetConflict
			continue
		}
		addr := p.Underlay.Addr()
		if other := t.byAddr[addr]; other != nil {
			reasons[p.Name] = fmt.Sprintf("underlay address conflict: %s is %q's, routed first", addr, other.peer.Name)
			refused[p.Name] = RefusedUnderlay
			reasons[other.peer.Name] = fmt.Sprintf("underlay address conflict: %q advertises %s too (refused)", p.Name, addr)
			continue
		}
		e := &entry{peer: *p, ep: encap.NewEndpoint(p.Underlay), via: ViaTunnel}
		for _, sub := range p.Subnets {
			accepted = append(accepted, claim{p.Name, sub})
			t.lpm.Insert(sub, e)
		}
		t.entries = append(t.entries, e)
		t.byAddr[addr] = e
	}
	return t, conflicts, reasons, refused
}

// lookup returns the peer that owns dst.
func (t *Table) lookup(dst netip.Addr) *entry {
	e, _ := t.lpm.Lookup(dst)
	return e
}
