package pki

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// This file holds the RFC 3779 (section 2.2.3) IPAddrBlocks codec: a
// strict DER decoder of the whole syntax (SAFIs, inherit, prefixes and
// ranges), so that any well-formed extension is read and then refused by
// name, and the weft profile on top of it (prefixes only, no SAFI, no
// inherit), with its encoder.

// Address family identifiers (IANA), RFC 3779 section 2.2.3.3.
const (
	afiIPv4 = 1
	afiIPv6 = 2
)

// maxBlockEntries bounds the prefixes and ranges the generic decoder reads
// from one extension: far above anything weft writes (maxGrants), small
// enough that a hostile certificate costs little to refuse.
const maxBlockEntries = 256

// addrFamily is one decoded IPAddressFamily.
type addrFamily struct {
	afi     uint16
	safi    int // -1: absent
	inherit bool
	entries []addrEntry // in the order of the encoding (ascending)
}

// addrEntry is one IPAddressOrRange: a prefix, or a range [min, max] that
// is no prefix. min and max are set for both.
type addrEntry struct {
	prefix   netip.Prefix // valid for a prefix only
	min, max netip.Addr
}

func (e addrEntry) isRange() bool { return !e.prefix.IsValid() }

func (e addrEntry) String() string {
	if e.isRange() {
		return e.min.String() + "-" + e.max.String()
	}
	return e.prefix.String()
}

func afiBits(afi uint16) int {
	if afi == afiIPv4 {
		return 32
	}
	return 128
}

func afiName(afi uint16) string {
	if afi == afiIPv4 {
		return "IPv4"
	}
	return "IPv6"
}

// decodeAddrBlocks decodes a DER IPAddrBlocks and checks every rule of RFC
// 3779 section 2.2.3 that its syntax can break: DER itself (cryptobyte
// refuses indefinite and non-minimal lengths), known AFIs (IPv4, IPv6)
// with an optional one-byte SAFI, families sorted by addressFamily without
// duplicates, address lists non-empty and sorted with no two entries
// overlapping or adjacent, prefixes and range bounds with zero padding
// bits, range bounds minimal (trailing zero bits cut from min, trailing one
// bits from max) and no range that a single prefix could express.
func decodeAddrBlocks(der []byte) ([]addrFamily, error) {
	in := cryptobyte.String(der)
	var blocks cryptobyte.String
	if !in.ReadASN1(&blocks, cbasn1.SEQUENCE) {
		return nil, errors.New("not a DER SEQUENCE of address families")
	}
	if !in.Empty() {
		return nil, errors.New("trailing data after the address families")
	}
	if blocks.Empty() {
		return nil, errors.New("no address family")
	}
	var fams []addrFamily
	var prevAF []byte
	total := 0
	for !blocks.Empty() {
		var fam cryptobyte.String
		if !blocks.ReadASN1(&fam, cbasn1.SEQUENCE) {
			return nil, fmt.Errorf("address family %d: not a DER SEQUENCE", len(fams)+1)
		}
		var af []byte
		if !fam.ReadASN1Bytes(&af, cbasn1.OCTET_STRING) {
			return nil, fmt.Errorf("address family %d: addressFamily is not a DER OCTET STRING", len(fams)+1)
		}
		if len(af) != 2 && len(af) != 3 {
			return nil, fmt.Errorf("address family %d: addressFamily has %d bytes, want 2 (AFI) or 3 (AFI and SAFI)", len(fams)+1, len(af))
		}
		f := addrFamily{afi: binary.BigEndian.Uint16(af), safi: -1}
		if f.afi != afiIPv4 && f.afi != afiIPv6 {
			return nil, fmt.Errorf("address family %d: AFI %d, want 1 (IPv4) or 2 (IPv6)", len(fams)+1, f.afi)
		}
		if len(af) == 3 {
			f.safi = int(af[2])
		}
		if prevAF != nil && bytes.Compare(prevAF, af) >= 0 {
			return nil, fmt.Errorf("address family %d: %s is not sorted after the family before it, or repeats it", len(fams)+1, afiName(f.afi))
		}
		prevAF = af
		switch {
		case fam.PeekASN1Tag(cbasn1.NULL):
			var null cryptobyte.String
			if !fam.ReadASN1(&null, cbasn1.NULL) || !null.Empty() {
				return nil, fmt.Errorf("%s: malformed inherit NULL", afiName(f.afi))
			}
			f.inherit = true
		default:
			var list cryptobyte.String
			if !fam.ReadASN1(&list, cbasn1.SEQUENCE) {
				return nil, fmt.Errorf("%s: ipAddressChoice is neither inherit nor a SEQUENCE of addresses", afiName(f.afi))
			}
			var err error
			if f.entries, err = decodeAddrList(list, f.afi, &total); err != nil {
				return nil, fmt.Errorf("%s: %w", afiName(f.afi), err)
			}
		}
		if !fam.Empty() {
			return nil, fmt.Errorf("%s: trailing data in the address family", afiName(f.afi))
		}
		fams = append(fams, f)
	}
	return fams, nil
}

func decodeAddrList(list cryptobyte.String, afi uint16, total *int) ([]addrEntry, error) {
	if list.Empty() {
		return nil, errors.New("empty address list")
	}
	var out []addrEntry
	for !list.Empty() {
		if *total++; *total > maxBlockEntries {
			return nil, fmt.Errorf("more than %d addresses and ranges", maxBlockEntries)
		}
		var e addrEntry
		switch {
		case list.PeekASN1Tag(cbasn1.BIT_STRING):
			var bits cryptobyte.String
			if !list.ReadASN1(&bits, cbasn1.BIT_STRING) {
				return nil, fmt.Errorf("prefix %d: malformed BIT STRING", len(out)+1)
			}
			addr, n, err := decodeAddrBits(bits, afi, false)
			if err != nil {
				return nil, fmt.Errorf("prefix %d: %w", len(out)+1, err)
			}
			e.prefix = netip.PrefixFrom(addr, n)
			e.min, e.max = addr, lastAddr(e.prefix)
		case list.PeekASN1Tag(cbasn1.SEQUENCE):
			var rng, minBits, maxBits cryptobyte.String
			if !list.ReadASN1(&rng, cbasn1.SEQUENCE) ||
				!rng.ReadASN1(&minBits, cbasn1.BIT_STRING) || !rng.ReadASN1(&maxBits, cbasn1.BIT_STRING) || !rng.Empty() {
				return nil, fmt.Errorf("range %d: not a DER SEQUENCE of two BIT STRINGs", len(out)+1)
			}
			lo, nlo, err := decodeAddrBits(minBits, afi, false)
			if err != nil {
				return nil, fmt.Errorf("range %d: min: %w", len(out)+1, err)
			}
			hi, nhi, err := decodeAddrBits(maxBits, afi, true)
			if err != nil {
				return nil, fmt.Errorf("range %d: max: %w", len(out)+1, err)
			}
			if nlo > 0 && !bitAt(lo, nlo-1) {
				return nil, fmt.Errorf("range %d: min %s keeps trailing zero bits (RFC 3779 2.1.2: cut them)", len(out)+1, lo)
			}
			if nhi > 0 && bitAt(hi, nhi-1) {
				return nil, fmt.Errorf("range %d: max %s keeps trailing one bits (RFC 3779 2.1.2: cut them)", len(out)+1, hi)
			}
			if lo.Compare(hi) > 0 {
				return nil, fmt.Errorf("range %d: min %s is above max %s", len(out)+1, lo, hi)
			}
			if p, ok := rangePrefix(lo, hi); ok {
				return nil, fmt.Errorf("range %d: %s-%s is the prefix %s and must be encoded as one", len(out)+1, lo, hi, p)
			}
			e.min, e.max = lo, hi
		default:
			return nil, fmt.Errorf("entry %d: neither a prefix (BIT STRING) nor a range (SEQUENCE)", len(out)+1)
		}
		if len(out) > 0 {
			prev := out[len(out)-1]
			if prev.max.Compare(e.min) >= 0 {
				return nil, fmt.Errorf("%s is not sorted after %s, or overlaps it", e, prev)
			}
			if prev.max.Next() == e.min {
				return nil, fmt.Errorf("%s and %s are adjacent and must be merged (RFC 3779 2.2.3.6)", prev, e)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// decodeAddrBits reads the contents of an IPAddress BIT STRING: the address
// its bits begin, the bits after them filled with ones if fillOnes (a
// range's max) or zeros, and the number of bits.
func decodeAddrBits(bits cryptobyte.String, afi uint16, fillOnes bool) (netip.Addr, int, error) {
	var unused uint8
	if !bits.ReadUint8(&unused) {
		return netip.Addr{}, 0, errors.New("empty BIT STRING")
	}
	if unused > 7 || len(bits) == 0 && unused != 0 {
		return netip.Addr{}, 0, fmt.Errorf("BIT STRING with %d unused bits in %d bytes", unused, len(bits))
	}
	if len(bits) > 0 && bits[len(bits)-1]&(1<<unused-1) != 0 {
		return netip.Addr{}, 0, errors.New("BIT STRING padding bits are not zero (DER)")
	}
	n := len(bits)*8 - int(unused)
	width := afiBits(afi)
	if n > width {
		return netip.Addr{}, 0, fmt.Errorf("%d bits, more than an %s address has", n, afiName(afi))
	}
	var buf [16]byte
	fill := byte(0)
	if fillOnes {
		fill = 0xff
	}
	for i := range width / 8 {
		buf[i] = fill
	}
	copy(buf[:], bits)
	if fillOnes && unused > 0 {
		buf[len(bits)-1] |= 1<<unused - 1
	}
	if afi == afiIPv4 {
		return netip.AddrFrom4([4]byte(buf[:4])), n, nil
	}
	return netip.AddrFrom16(buf), n, nil
}

// bitAt reports bit i (0 = most significant) of a.
func bitAt(a netip.Addr, i int) bool {
	b := a.AsSlice()
	return b[i/8]&(0x80>>(i%8)) != 0
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// rangePrefix returns the prefix whose addresses are exactly lo..hi, if one
// is.
func rangePrefix(lo, hi netip.Addr) (netip.Prefix, bool) {
	for bits := 0; bits <= lo.BitLen(); bits++ {
		p := netip.PrefixFrom(lo, bits)
		if p.Masked().Addr() == lo && lastAddr(p) == hi {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// decodeGrants decodes an extension value in the weft profile: IPAddrBlocks
// with no SAFI, no inherit and no ranges, as encodeGrants writes it. The
// prefixes come back IPv4 first, each family ascending.
func decodeGrants(der []byte) ([]netip.Prefix, error) {
	fams, err := decodeAddrBlocks(der)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, f := range fams {
		switch {
		case f.safi >= 0:
			return nil, fmt.Errorf("%s: a SAFI (%d), which weft certificates do not use", afiName(f.afi), f.safi)
		case f.inherit:
			return nil, fmt.Errorf("%s: inherit, which weft certificates do not use", afiName(f.afi))
		}
		for _, e := range f.entries {
			if e.isRange() {
				return nil, fmt.Errorf("%s: the range %s, which weft certificates do not use (prefixes only)", afiName(f.afi), e)
			}
			out = append(out, e.prefix)
		}
	}
	return out, nil
}

// canonicalPrefixes checks a list of prefixes for the extension (valid, no
// host bits, no zone, no IPv4-mapped IPv6, no two overlapping or adjacent)
// and returns it sorted as RFC 3779 wants it: IPv4 first, each family by
// address. what names an element in errors ("subnet", "pool", "grant"; it
// takes a plural s).
func canonicalPrefixes(what string, ps []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		switch {
		case !p.IsValid():
			return nil, fmt.Errorf("%s %q: not a valid CIDR prefix", what, p)
		case p.Addr().Zone() != "":
			return nil, fmt.Errorf("%s %s: has a zone", what, p)
		case p.Addr().Is4In6():
			return nil, fmt.Errorf("%s %s: an IPv4-mapped IPv6 prefix; write it as IPv4", what, p)
		case p.Masked() != p:
			return nil, fmt.Errorf("%s %s: host bits are set (did you mean %s?)", what, p, p.Masked())
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if a.Addr().Is4() != b.Addr().Is4() {
			if a.Addr().Is4() {
				return -1
			}
			return 1
		}
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	for i := 1; i < len(out); i++ {
		a, b := out[i-1], out[i]
		if a.Addr().Is4() != b.Addr().Is4() {
			continue
		}
		if a.Overlaps(b) {
			return nil, fmt.Errorf("%ss %s and %s overlap", what, a, b)
		}
		if lastAddr(a).Next() == b.Addr() {
			return nil, fmt.Errorf("%ss %s and %s are adjacent: RFC 3779 would merge them into a range, which weft does not use; grant one covering prefix or leave a gap", what, a, b)
		}
	}
	return out, nil
}

// encodeGrants encodes prefixes as DER IPAddrBlocks in the weft profile.
// The prefixes must be canonical (see canonicalPrefixes); it sorts them.
func encodeGrants(ps []netip.Prefix) ([]byte, error) {
	ps, err := canonicalPrefixes("grant", ps)
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, errors.New("no grant to encode")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, afi := range []uint16{afiIPv4, afiIPv6} {
			var fam []netip.Prefix
			for _, p := range ps {
				if p.Addr().Is4() == (afi == afiIPv4) {
					fam = append(fam, p)
				}
			}
			if len(fam) == 0 {
				continue
			}
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1OctetString(binary.BigEndian.AppendUint16(nil, afi))
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					for _, p := range fam {
						addPrefixBits(b, p)
					}
				})
			})
		}
	})
	return b.Bytes()
}

// addPrefixBits adds p as an IPAddress BIT STRING: its p.Bits() leading
// bits, in as few bytes as hold them, the rest of the last byte zero.
func addPrefixBits(b *cryptobyte.Builder, p netip.Prefix) {
	n := p.Bits()
	nbytes := (n + 7) / 8
	b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) {
		b.AddUint8(uint8(nbytes*8 - n))
		b.AddBytes(p.Addr().AsSlice()[:nbytes])
	})
}
