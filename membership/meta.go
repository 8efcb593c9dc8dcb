package membership

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/family"
)

// Meta is what each host advertises in memberlist node metadata.
//
// A Meta is valid (see Validate) when:
//   - Encap is a registered encapsulation (encap.Kind.Valid);
//   - Subnets holds one or two prefixes; the first is a valid prefix in
//     canonical form: host bits are zero (10.244.3.0/24, not
//     10.244.3.7/24) and it is not an IPv4-mapped IPv6 prefix (use the
//     IPv4 form);
//   - Underlay is a valid, specified address without zone and not
//     IPv4-mapped IPv6;
//   - Port is non-zero unless Encap has no tunnel (none);
//   - VNI fits in 24 bits;
//   - the second subnet, if any, is a canonical IPv6 prefix, and the first
//     is then an IPv4 one (a dual-stack host).
//
// VNI and VTEPMAC are carried as given for every encap; by convention they
// are zero unless Encap has VTEPs (encap.Kind.HasVTEP: vxlan).
type Meta struct {
	// Subnets are the overlay subnets this host owns: one of either
	// family, e.g. 10.244.3.0/24, or a dual-stack host's IPv4 and IPv6
	// ones, IPv4 first.
	Subnets  []netip.Prefix
	Underlay netip.Addr // underlay (public) IP for the data plane
	Port     uint16     // data-plane UDP port
	Encap    encap.Kind // its value is the encapsulation's byte on the wire (encap's registry)
	VNI      uint32     // 24-bit, vxlan only (0 otherwise)
	VTEPMAC  [6]byte    // vxlan VTEP MAC (zero otherwise)
	Claimed  int64      // unix milliseconds when this host claimed its subnet (earlier claim wins a conflict)
	// PartialChecksums: the host sends inner TCP and UDP checksums left
	// partial to peers that advertise it too, and takes them from such
	// peers (the outer UDP checksum protects the bytes on the wire).
	PartialChecksums bool
	// Encryption is an optional section after the record (metaext.go).
	Encryption Encryption
	// Networks are the cluster networks the host runs with (--network),
	// one per family, IPv4 first (none from a weft older than them); an optional
	// section after the record (metaext.go) that every weft since it was
	// added advertises, so that a host of another cluster, or a host
	// configured with another network, is told apart and refused.
	Networks []netip.Prefix
	// Proof is the host's signature over this metadata with its
	// certificate's key (proof.go); an optional section, zero without
	// --cert.
	Proof Proof
}

// MetaVersion is the first byte of an encoded single-stack Meta, and
// MetaVersionDualStack of a dual-stack one (two Subnets). A single-stack
// host keeps writing version 1, which every weft reads; a weft that knows
// only version 1 refuses a dual-stack peer's record with "unsupported
// version 2 (want 1)".
const (
	MetaVersion          = 1
	MetaVersionDualStack = 2
)

// Wire layout of version 1 (all integers big endian):
//
//	off  len  field
//	0    1    version (= MetaVersion)
//	1    1    encap (the encap.Kind value)
//	2    1    flags: bit 0 = subnet is IPv6, bit 1 = underlay is IPv6,
//	          bit 2 = partial checksums (a capability); other bits must be 0
//	3    1    subnet prefix length
//	4    4|16 subnet address
//	.    4|16 underlay address
//	.    2    port
//	.    3    VNI
//	.    6    VTEP MAC
//	.    8    claimed (int64, two's complement)
//
// Version 2 (= MetaVersionDualStack) is version 1 with the IPv6 subnet
// after the first (IPv4) one:
//
//	.    1    IPv6 subnet prefix length
//	.    16   IPv6 subnet address
//
// Every field has exactly one encoding, so the format is canonical.
const (
	flagSubnet6   = 1 << 0
	flagUnderlay6 = 1 << 1
	flagPartial   = 1 << 2
	flagsKnown    = flagSubnet6 | flagUnderlay6 | flagPartial

	metaHeaderLen = 4
	metaTailLen   = 2 + 3 + 6 + 8
	metaSubnet6   = 1 + 16 // version 2's second subnet
)

// MetaMinSize is the size of an encoded Meta with IPv4 subnet and underlay;
// MetaMaxSize of a dual-stack one over an IPv6 underlay, the largest. Both
// are far below memberlist's 512-byte metadata limit.
const (
	MetaMinSize = metaHeaderLen + 4 + 4 + metaTailLen
	MetaMaxSize = metaHeaderLen + 4 + metaSubnet6 + 16 + metaTailLen
)

// ErrInvalidMeta is wrapped by every error returned by the Meta codec and by
// Validate, so callers can test for it with errors.Is.
var ErrInvalidMeta = errors.New("invalid node metadata")

func metaErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidMeta}, args...)...)
}

// Validate reports why m cannot be advertised, or nil if it can.
func (m Meta) Validate() error {
	if !m.Encap.Valid() {
		return metaErrorf("unknown encap %d", uint8(m.Encap))
	}
	if len(m.Subnets) > 2 {
		return metaErrorf("%d subnets: at most two, an IPv4 and an IPv6 one", len(m.Subnets))
	}
	sub := family.First(m.Subnets)
	if !sub.IsValid() {
		return metaErrorf("subnet %v is not a valid prefix", sub)
	}
	if sub.Addr().Is4In6() {
		return metaErrorf("subnet %v is an IPv4-mapped IPv6 prefix; use the IPv4 form", sub)
	}
	if masked := sub.Masked(); masked != sub {
		return metaErrorf("subnet %v has host bits set (want %v)", sub, masked)
	}
	if len(m.Subnets) == 2 {
		switch sub6 := m.Subnets[1]; {
		case !sub6.Addr().Is6() || sub6.Addr().Is4In6():
			return metaErrorf("IPv6 subnet %v is not an IPv6 prefix", sub6)
		case sub6.Masked() != sub6:
			return metaErrorf("IPv6 subnet %v has host bits set (want %v)", sub6, sub6.Masked())
		case !sub.Addr().Is4():
			return metaErrorf("IPv6 subnet %v beside subnet %v: a dual-stack host's first subnet is IPv4", sub6, sub)
		}
	}
	if err := checkUnderlay(m.Underlay); err != nil {
		return err
	}
	if m.Port == 0 && m.Encap.Tunnel() {
		return metaErrorf("data-plane port is 0 with encap %v", m.Encap)
	}
	if m.VNI >= 1<<24 {
		return metaErrorf("VNI %d does not fit in 24 bits", m.VNI)
	}
	if err := m.Proof.validate(); err != nil {
		return err
	}
	if err := m.Encryption.validate(); err != nil {
		return err
	}
	return m.validateNetworks()
}

func checkUnderlay(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return metaErrorf("underlay address is not set")
	case a.Zone() != "":
		return metaErrorf("underlay address %v has a zone", a)
	case a.Is4In6():
		return metaErrorf("underlay address %v is IPv4-mapped IPv6; use the IPv4 form", a)
	case a.IsUnspecified():
		return metaErrorf("underlay address %v is unspecified", a)
	}
	return nil
}

// AppendBinary appends the encoding of m to b (encoding.BinaryAppender).
func (m Meta) AppendBinary(b []byte) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return b, err
	}
	var flags byte
	if m.Subnets[0].Addr().Is6() {
		flags |= flagSubnet6
	}
	if m.Underlay.Is6() {
		flags |= flagUnderlay6
	}
	if m.PartialChecksums {
		flags |= flagPartial
	}
	// Version 1 carries one subnet, version 2 a second (IPv6) one after
	// the first.
	version := byte(MetaVersion)
	if len(m.Subnets) == 2 {
		version = MetaVersionDualStack
	}
	b = append(b, version, byte(m.Encap), flags)
	for _, sub := range m.Subnets {
		b = append(b, byte(sub.Bits()))
		b = append(b, sub.Addr().AsSlice()...)
	}
	b = append(b, m.Underlay.AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, m.Port)
	b = append(b, byte(m.VNI>>16), byte(m.VNI>>8), byte(m.VNI))
	b = append(b, m.VTEPMAC[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Claimed))
	return m.appendSections(b), nil
}

// MarshalBinary encodes m compactly; the first byte is MetaVersion. It fails
// if m is not valid (see Validate).
func (m Meta) MarshalBinary() ([]byte, error) {
	b, err := m.AppendBinary(make([]byte, 0, MetaMaxSize+2+sectionEncryptionLen+2+sectionNetworksMax+2+sectionProofLen))
	if err != nil {
		return nil, err
	}
	return b, nil
}

// UnmarshalBinary decodes b strictly: an unknown version, a short or long
// input, reserved flag bits, an out-of-range prefix length or any field that
// makes the result invalid is an error naming the problem. On error *m is
// left unchanged. It never panics.
func (m *Meta) UnmarshalBinary(b []byte) error {
	if len(b) == 0 {
		return metaErrorf("empty")
	}
	if b[0] != MetaVersion && b[0] != MetaVersionDualStack {
		return metaErrorf("unsupported version %d (want %d or %d)", b[0], MetaVersion, MetaVersionDualStack)
	}
	dual := b[0] == MetaVersionDualStack
	if len(b) < metaHeaderLen {
		return metaErrorf("truncated: have %d bytes, header needs %d", len(b), metaHeaderLen)
	}
	kind, flags, bits := encap.Kind(b[1]), b[2], int(b[3])
	if flags&^flagsKnown != 0 {
		return metaErrorf("reserved flag bits set (flags 0x%02x)", flags)
	}
	subnetLen, underlayLen := 4, 4
	if flags&flagSubnet6 != 0 {
		subnetLen = 16
	}
	if flags&flagUnderlay6 != 0 {
		underlayLen = 16
	}
	want := metaHeaderLen + subnetLen + underlayLen + metaTailLen
	if dual {
		want += metaSubnet6
	}
	if len(b) < want {
		return metaErrorf("truncated: have %d bytes, want %d", len(b), want)
	}

	p := b[metaHeaderLen:]
	subnetAddr, _ := netip.AddrFromSlice(p[:subnetLen]) // length is 4 or 16: cannot fail
	p = p[subnetLen:]
	if bits > subnetAddr.BitLen() {
		return metaErrorf("subnet prefix length %d exceeds %d", bits, subnetAddr.BitLen())
	}
	var subnet6 netip.Prefix
	if dual {
		bits6 := int(p[0])
		if bits6 > 128 {
			return metaErrorf("IPv6 subnet prefix length %d exceeds 128", bits6)
		}
		subnet6 = netip.PrefixFrom(netip.AddrFrom16([16]byte(p[1:17])), bits6)
		p = p[metaSubnet6:]
	}
	underlay, _ := netip.AddrFromSlice(p[:underlayLen])
	p = p[underlayLen:]

	var out Meta
	out.Subnets = []netip.Prefix{netip.PrefixFrom(subnetAddr, bits)}
	if dual {
		out.Subnets = append(out.Subnets, subnet6)
	}
	out.Underlay = underlay
	out.Encap = kind
	out.Port = binary.BigEndian.Uint16(p)
	out.VNI = uint32(p[2])<<16 | uint32(p[3])<<8 | uint32(p[4])
	copy(out.VTEPMAC[:], p[5:11])
	out.Claimed = int64(binary.BigEndian.Uint64(p[11:19]))
	out.PartialChecksums = flags&flagPartial != 0
	if err := parseSections(b[want:], want, &out); err != nil {
		return err
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*m = out
	return nil
}
