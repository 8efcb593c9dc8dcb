package kernelvx

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The peer filter, as `nft list table inet weft_vx` shows it (PORT the
// VXLAN port, NET4 and NET6 the addresses of this host's subnets, M4 and
// M6 their masks):
//
//	table inet weft_vx {
//		counter unknown_peer { }
//		counter spoofed { }
//		counter not_local { }
//		counter slow_path { }
//		set peers4 { type ipv4_addr }
//		set peers6 { type ipv6_addr }
//		set src4_4 { type ipv4_addr . ipv4_addr; flags interval }
//		set src4_6 { type ipv4_addr . ipv6_addr; flags interval }
//		set src6_4 { type ipv6_addr . ipv4_addr; flags interval }
//		set src6_6 { type ipv6_addr . ipv6_addr; flags interval }
//		set fast4_4 { type ipv4_addr . ipv4_addr }
//		set fast6_4 { type ipv6_addr . ipv4_addr }
//		set fast4_6 { type ipv4_addr . ipv6_addr }
//		set fast6_6 { type ipv6_addr . ipv6_addr }
//		chain input {
//			type filter hook input priority filter; policy accept;
//			udp dport PORT jump vxlan
//		}
//		chain vxlan {
//			@th,224,16 0x800 @th,368,32 & M4 == NET4 ip saddr . @th,336,32 & M4 @fast4_4 accept
//			@th,224,16 0x800 @th,368,32 & M4 == NET4 ip6 saddr . @th,336,32 & M4 @fast6_4 accept
//			@th,224,16 0x86dd @th,432,128 & M6 == NET6 ip saddr . @th,304,128 & M6 @fast4_6 accept
//			@th,224,16 0x86dd @th,432,128 & M6 == NET6 ip6 saddr . @th,304,128 & M6 @fast6_6 accept
//			ip saddr != @peers4 counter name "unknown_peer" drop
//			ip6 saddr != @peers6 counter name "unknown_peer" drop
//			@th,224,16 0x800 ip saddr . @th,336,32 != @src4_4 counter name "spoofed" drop
//			@th,224,16 0x86dd ip saddr . @th,304,128 != @src4_6 counter name "spoofed" drop
//			@th,224,16 0x800 ip6 saddr . @th,336,32 != @src6_4 counter name "spoofed" drop
//			@th,224,16 0x86dd ip6 saddr . @th,304,128 != @src6_6 counter name "spoofed" drop
//			@th,224,16 0x800 @th,368,32 & M4 != NET4 counter name "not_local" drop
//			@th,224,16 0x86dd @th,432,128 & M6 != NET6 counter name "not_local" drop
//			counter name "slow_path"
//		}
//	}
//
// The inner frame sits at a fixed offset from the UDP header: 8 bytes of
// UDP, 8 of VXLAN, then the inner Ethernet header, whose EtherType is at
// byte 28 (bit 224); the inner IPv4 source is at byte 42 (8+8+14+12) and
// its destination at 46, the inner IPv6 source at byte 38 (8+8+14+8) and
// its destination at 54.
//
// The fast rules come first and take what a healthy cluster sends with
// one hash lookup: a fast set holds, for each peer, its subnet of the
// family if that subnet has the length of ours (one pool: every subnet),
// keyed by outer source . subnet address; the rule masks the inner source
// to that length, so the lookup checks "a peer sent it, and the inner
// source lies in that peer's subnet", and the masked compare before it
// checks "the inner destination lies in ours". The rules after them
// decide what the fast ones did not take, and count each drop by its
// reason: the src sets are keyed by outer source . inner source, the
// inner part a range (a peer's subnet of any length), the not_local rules
// check the inner destination (a host without a subnet of a family drops
// every inner packet of it), and slow_path counts what they let through
// (a frame that is not IP, a peer subnet of another length). A datagram
// too short to hold the inner addresses matches neither fast nor spoofed
// rules (the inner packet it carries is malformed, and the kernel drops
// it). The input hook sees a datagram after reassembly and before the
// VXLAN device does.

// FilterTable is the name of the peer filter's nftables table (family
// inet). It holds nothing else: Cleanup deletes it whole.
const FilterTable = "weft_vx"

const (
	filterChain      = "input"
	vxlanChain       = "vxlan"
	counterUnknown   = "unknown_peer"
	counterSpoofed   = "spoofed"
	counterNotLocal  = "not_local"
	counterSlowPath  = "slow_path"
	innerEtherOffset = 8 + 8 + 12 // UDP, VXLAN, Ethernet addresses
	innerIPv4Src     = 8 + 8 + 14 + 12
	innerIPv4Dst     = innerIPv4Src + 4
	innerIPv6Src     = 8 + 8 + 14 + 8
	innerIPv6Dst     = innerIPv6Src + 16
	// Registers: a 16-byte register (1) holds the outer source; a
	// concatenation's next field starts at the next 32-bit register
	// (NFT_REG32_00 is 8, so 9 after an IPv4 address, 12 after IPv6).
	regOuter       = 1
	regInnerAfter4 = 9
	regInnerAfter6 = 12
)

// setDef is one set of the filter.
type setDef struct {
	name         string
	outer, inner netip.Addr // zero values of the families of the key's parts (inner invalid: no second part)
	fast         bool       // a fast set: inner part exact (a subnet's address), derived from the others
}

var (
	zero4 = netip.IPv4Unspecified()
	zero6 = netip.IPv6Unspecified()

	peerSets   = []setDef{{name: "peers4", outer: zero4}, {name: "peers6", outer: zero6}}
	sourceSets = []setDef{
		{name: "src4_4", outer: zero4, inner: zero4},
		{name: "src4_6", outer: zero4, inner: zero6},
		{name: "src6_4", outer: zero6, inner: zero4},
		{name: "src6_6", outer: zero6, inner: zero6},
	}
	// fastSets, in the order of their rules: inner IPv4 first (the
	// common case).
	fastSets = []setDef{
		{name: "fast4_4", outer: zero4, inner: zero4, fast: true},
		{name: "fast6_4", outer: zero6, inner: zero4, fast: true},
		{name: "fast4_6", outer: zero4, inner: zero6, fast: true},
		{name: "fast6_6", outer: zero6, inner: zero6, fast: true},
	}
	// readSets are the sets FilterSets reads back; the fast ones are
	// derived from them.
	readSets = slices.Concat(peerSets, sourceSets)
	allSets  = slices.Concat(peerSets, sourceSets, fastSets)
)

func addrType(a netip.Addr) nftables.SetDatatype {
	if a.Is4() {
		return nftables.TypeIPAddr
	}
	return nftables.TypeIP6Addr
}

func (d setDef) set(t *nftables.Table) *nftables.Set {
	s := &nftables.Set{Table: t, Name: d.name, KeyType: addrType(d.outer)}
	if d.inner.IsValid() {
		s.KeyType = nftables.MustConcatSetType(addrType(d.outer), addrType(d.inner))
		s.Interval, s.Concatenation = !d.fast, true
	}
	return s
}

// elements encodes the part of fs that belongs in the set; a fast set
// takes the sources of peers in fs.Peers whose prefix has the length of
// this host's subnet of the inner family (fastBits: 4 then 6, -1 for
// none).
func (d setDef) elements(fs FilterSets, fastBits [2]int) []nftables.SetElement {
	var out []nftables.SetElement
	if d.fast {
		bits := fastBits[famIndex(d.inner)]
		for _, s := range fs.Sources {
			if s.Peer.Is4() != d.outer.Is4() || s.Prefix.Addr().Is4() != d.inner.Is4() || s.Prefix.Bits() != bits || !slices.Contains(fs.Peers, s.Peer) {
				continue
			}
			out = append(out, nftables.SetElement{Key: append(s.Peer.AsSlice(), s.Prefix.Masked().Addr().AsSlice()...)})
		}
		return out
	}
	if !d.inner.IsValid() {
		for _, p := range fs.Peers {
			if p.Is4() == d.outer.Is4() {
				out = append(out, nftables.SetElement{Key: p.AsSlice()})
			}
		}
		return out
	}
	for _, s := range fs.Sources {
		if s.Peer.Is4() != d.outer.Is4() || s.Prefix.Addr().Is4() != d.inner.Is4() {
			continue
		}
		first, last := s.Prefix.Masked().Addr(), lastAddr(s.Prefix)
		out = append(out, nftables.SetElement{
			Key:    append(s.Peer.AsSlice(), first.AsSlice()...),
			KeyEnd: append(s.Peer.AsSlice(), last.AsSlice()...),
		})
	}
	return out
}

// decode adds the set's elements to fs. An element that is not of the
// form this package writes is decoded as an invalid Source, so that the
// sets compare unequal and are rewritten.
func (d setDef) decode(els []nftables.SetElement, fs *FilterSets) {
	ol := d.outer.BitLen() / 8
	for _, e := range els {
		if !d.inner.IsValid() {
			a, _ := netip.AddrFromSlice(e.Key)
			fs.Peers = append(fs.Peers, a)
			continue
		}
		il := d.inner.BitLen() / 8
		end := e.KeyEnd
		if len(end) == 0 {
			end = e.Key
		}
		if len(e.Key) != ol+il || len(end) != ol+il {
			fs.Sources = append(fs.Sources, Source{})
			continue
		}
		peer, _ := netip.AddrFromSlice(e.Key[:ol])
		peerEnd, _ := netip.AddrFromSlice(end[:ol])
		first, _ := netip.AddrFromSlice(e.Key[ol:])
		last, _ := netip.AddrFromSlice(end[ol:])
		src := Source{Peer: peer, Prefix: rangePrefix(first, last)}
		if peerEnd != peer {
			src.Prefix = netip.Prefix{}
		}
		fs.Sources = append(fs.Sources, src)
	}
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		host := p.Bits() - 8*i // network bits left in this byte
		switch {
		case host <= 0:
			b[i] = 0xff
		case host < 8:
			b[i] |= 0xff >> host
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// rangePrefix is the prefix whose addresses are first to last (an invalid
// prefix if there is none).
func rangePrefix(first, last netip.Addr) netip.Prefix {
	for bits := 0; bits <= first.BitLen(); bits++ {
		p := netip.PrefixFrom(first, bits)
		if p.Masked().Addr() == first && lastAddr(p) == last {
			return p
		}
	}
	return netip.Prefix{}
}

// conn returns a Conn for one transaction: a batch that failed half-built
// is dropped with it rather than sent with the next.
func (s *System) conn() (*nftables.Conn, error) {
	c, err := nftables.New(s.nftOpts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	return c, nil
}

func (s *System) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: FilterTable}
}

// connTable returns a Conn for one transaction and whether the filter's
// table is there.
func (s *System) connTable() (*nftables.Conn, bool, error) {
	c, err := s.conn()
	if err != nil {
		return nil, false, err
	}
	exists, err := tableExists(c)
	return c, exists, err
}

// tableExists reports whether the filter's table is there.
func tableExists(c *nftables.Conn) (bool, error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == FilterTable {
			return true, nil
		}
	}
	return false, nil
}

// FilterEnsure implements Kernel: one transaction deletes the table if it
// is there and builds it anew, with the elements it held.
func (s *System) FilterEnsure(port uint16, local []netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, exists, err := s.connTable()
	if err != nil {
		return err
	}
	t := s.table()
	var keep FilterSets
	if exists {
		// A table of another layout (another weft version) keeps nothing.
		keep, _ = s.readSets(c)
		c.DelTable(t)
	}
	fastBits := fastBitsOf(local)
	c.AddTable(t)
	input := c.AddChain(&nftables.Chain{
		Name:     filterChain,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookInput,
		Priority: nftables.ChainPriorityFilter,
	})
	vx := c.AddChain(&nftables.Chain{Name: vxlanChain, Table: t})
	for _, name := range []string{counterUnknown, counterSpoofed, counterNotLocal, counterSlowPath} {
		c.AddObj(&nftables.NamedObj{Table: t, Name: name, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
	}
	sets := map[string]*nftables.Set{}
	for _, d := range allSets {
		set := d.set(t)
		if err := c.AddSet(set, d.elements(keep, fastBits)); err != nil {
			return fmt.Errorf("nftables set %s: %w", d.name, err)
		}
		sets[d.name] = set
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: input, Exprs: append(udpPort(port), &expr.Verdict{Kind: expr.VerdictJump, Chain: vxlanChain})})
	for _, d := range fastSets {
		for _, p := range local {
			if p.Addr().Is4() == d.inner.Is4() {
				c.AddRule(&nftables.Rule{Table: t, Chain: vx, Exprs: fastRule(d, sets[d.name], p, fastBits[famIndex(d.inner)])})
			}
		}
	}
	for _, d := range peerSets {
		exprs := append(outerIs(d.outer), loadOuterSource(d.outer))
		exprs = append(exprs, lookupNot(sets[d.name]), countAs(counterUnknown), &expr.Verdict{Kind: expr.VerdictDrop})
		c.AddRule(&nftables.Rule{Table: t, Chain: vx, Exprs: exprs})
	}
	for _, d := range sourceSets {
		exprs := append(outerIs(d.outer), innerIs(d.inner)...)
		exprs = append(exprs, loadOuterSource(d.outer), loadInnerSource(d.outer, d.inner),
			lookupNot(sets[d.name]), countAs(counterSpoofed), &expr.Verdict{Kind: expr.VerdictDrop})
		c.AddRule(&nftables.Rule{Table: t, Chain: vx, Exprs: exprs})
	}
	for _, inner := range []netip.Addr{zero4, zero6} {
		c.AddRule(&nftables.Rule{Table: t, Chain: vx, Exprs: notLocal(inner, local)})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: vx, Exprs: []expr.Any{countAs(counterSlowPath)}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table inet %s: %w", FilterTable, err)
	}
	s.fastBits = fastBits
	return nil
}

// famIndex is 0 for an IPv4 address, 1 for IPv6.
func famIndex(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// fastBitsOf is the length of the first subnet of each family in local
// (IPv4 then IPv6), -1 for a family without one.
func fastBitsOf(local []netip.Prefix) [2]int {
	bits := [2]int{-1, -1}
	for _, p := range local {
		if f := famIndex(p.Addr()); bits[f] < 0 {
			bits[f] = p.Bits()
		}
	}
	return bits
}

// fastRule accepts a VXLAN datagram whose inner packet (of d's inner
// family) is to local, from a source that d (of length bits) holds for
// the outer source.
func fastRule(d setDef, set *nftables.Set, local netip.Prefix, bits int) []expr.Any {
	exprs := append(outerIs(d.outer), innerIs(d.inner)...)
	exprs = append(exprs, innerDestinationIn(local)...)
	n := uint32(d.inner.BitLen() / 8)
	reg := innerRegister(d.outer)
	return append(exprs,
		loadOuterSource(d.outer),
		loadInnerSource(d.outer, d.inner),
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: n, Mask: net.CIDRMask(bits, d.inner.BitLen()), Xor: make([]byte, n)},
		&expr.Lookup{SourceRegister: regOuter, SetName: set.Name, SetID: set.ID},
		&expr.Verdict{Kind: expr.VerdictAccept},
	)
}

// notLocal drops VXLAN datagrams carrying an inner packet of the family of
// inner whose destination lies outside this host's subnets of that family.
func notLocal(inner netip.Addr, local []netip.Prefix) []expr.Any {
	exprs := innerIs(inner)
	for _, p := range local {
		if p.Addr().Is4() != inner.Is4() {
			continue
		}
		exprs = append(exprs, innerDestinationMasked(p)...)
		exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: p.Masked().Addr().AsSlice()})
	}
	return append(exprs, countAs(counterNotLocal), &expr.Verdict{Kind: expr.VerdictDrop})
}

// innerIs matches an inner frame of the family of inner (its EtherType).
func innerIs(inner netip.Addr) []expr.Any {
	etherType := uint16(unix.ETH_P_IP)
	if inner.Is6() {
		etherType = unix.ETH_P_IPV6
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: innerEtherOffset, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(etherType)},
	}
}

// innerDestinationMasked loads the inner destination (of p's family),
// masked to p's length, into register 1.
func innerDestinationMasked(p netip.Prefix) []expr.Any {
	off := uint32(innerIPv4Dst)
	if p.Addr().Is6() {
		off = innerIPv6Dst
	}
	n := uint32(p.Addr().BitLen() / 8)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()), Xor: make([]byte, n)},
	}
}

// innerDestinationIn matches an inner destination in p.
func innerDestinationIn(p netip.Prefix) []expr.Any {
	return append(innerDestinationMasked(p), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

// outerIs matches an outer packet of outer's family.
func outerIs(outer netip.Addr) []expr.Any {
	proto := byte(unix.NFPROTO_IPV4)
	if outer.Is6() {
		proto = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// udpPort matches UDP datagrams to port.
func udpPort(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// loadOuterSource loads the outer source address into regOuter.
func loadOuterSource(outer netip.Addr) expr.Any {
	if outer.Is4() {
		return &expr.Payload{DestRegister: regOuter, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
	}
	return &expr.Payload{DestRegister: regOuter, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16}
}

// innerRegister is where the inner source goes, after the outer source.
func innerRegister(outer netip.Addr) uint32 {
	if outer.Is4() {
		return regInnerAfter4
	}
	return regInnerAfter6
}

// loadInnerSource loads the inner source (of inner's family) into the
// register after the outer source's.
func loadInnerSource(outer, inner netip.Addr) expr.Any {
	off := uint32(innerIPv4Src)
	if inner.Is6() {
		off = innerIPv6Src
	}
	return &expr.Payload{DestRegister: innerRegister(outer), Base: expr.PayloadBaseTransportHeader, Offset: off, Len: uint32(inner.BitLen() / 8)}
}

func lookupNot(set *nftables.Set) expr.Any {
	return &expr.Lookup{SourceRegister: regOuter, SetName: set.Name, SetID: set.ID, Invert: true}
}

func countAs(name string) expr.Any {
	return &expr.Objref{Type: int(nftables.ObjTypeCounter), Name: name}
}

// readSets reads every set of the filter.
func (s *System) readSets(c *nftables.Conn) (FilterSets, error) {
	var fs FilterSets
	t := s.table()
	for _, d := range readSets {
		els, err := c.GetSetElements(d.set(t))
		if err != nil {
			return FilterSets{}, fmt.Errorf("read nftables set %s: %w", d.name, err)
		}
		d.decode(els, &fs)
	}
	return fs, nil
}

// FilterSets implements Kernel.
func (s *System) FilterSets() (FilterSets, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, exists, err := s.connTable()
	if err != nil {
		return FilterSets{}, err
	}
	if !exists {
		return FilterSets{}, fmt.Errorf("nftables table inet %s: %w", FilterTable, ErrNotExist)
	}
	return s.readSets(c)
}

// FilterReplace implements Kernel: one transaction flushes every set and
// fills it anew. The fast sets take the subnet lengths of this System's
// last FilterEnsure; a System that has not built the filter leaves them
// empty (the slow rules still decide, at their cost).
func (s *System) FilterReplace(fs FilterSets) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.conn()
	if err != nil {
		return err
	}
	t := s.table()
	for _, d := range allSets {
		set := d.set(t)
		c.FlushSet(set)
		if els := d.elements(fs, s.fastBits); len(els) > 0 {
			if err := c.SetAddElements(set, els); err != nil {
				return fmt.Errorf("nftables set %s: %w", d.name, err)
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("update nftables table inet %s: %w", FilterTable, err)
	}
	return nil
}

// FilterCounters implements Kernel.
func (s *System) FilterCounters() (FilterCounters, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.conn()
	if err != nil {
		return FilterCounters{}, err
	}
	objs, err := c.GetObjects(s.table())
	if errors.Is(err, unix.ENOENT) {
		return FilterCounters{}, fmt.Errorf("nftables table inet %s: %w", FilterTable, ErrNotExist)
	}
	if err != nil {
		return FilterCounters{}, fmt.Errorf("read nftables counters: %w", err)
	}
	var fc FilterCounters
	for _, o := range objs {
		co, ok := o.(*nftables.CounterObj)
		if !ok {
			continue
		}
		switch co.Name {
		case counterUnknown:
			fc.UnknownPeer = Counter{Packets: co.Packets, Bytes: co.Bytes}
		case counterSpoofed:
			fc.Spoofed = Counter{Packets: co.Packets, Bytes: co.Bytes}
		case counterNotLocal:
			fc.NotLocal = Counter{Packets: co.Packets, Bytes: co.Bytes}
		case counterSlowPath:
			fc.SlowPath = Counter{Packets: co.Packets, Bytes: co.Bytes}
		}
	}
	return fc, nil
}

// FilterDelete implements Kernel.
func (s *System) FilterDelete() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, exists, err := s.connTable()
	if err != nil || !exists {
		return err
	}
	c.DelTable(s.table())
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete nftables table inet %s: %w", FilterTable, err)
	}
	return nil
}
