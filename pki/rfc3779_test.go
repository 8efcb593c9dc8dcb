package pki

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// TestPrefixVectors encodes and decodes single prefixes (RFC 3779 section
// 2.1.1: an IPAddress is a BIT STRING of the prefix's leading bits, in as
// few octets as hold them, the first octet counting the unused bits of the
// last). Each vector is worked out by hand in its comment.
func TestPrefixVectors(t *testing.T) {
	tests := []struct {
		prefix string
		der    string
	}{
		// 32 bits: 4 octets 0a 05 00 04, no unused bit.
		{"10.5.0.4/32", "03 05 00 0a 05 00 04"},
		// 23 bits: 3 octets 0a 05 00, the last bit of the third unused.
		{"10.5.0.0/23", "03 04 01 0a 05 00"},
		// 128 bits: all 16 octets.
		{"2001:0:200:3::1/128", "03 11 00 20 01 00 00 02 00 00 03 00 00 00 00 00 00 00 01"},
		// 39 bits: 5 octets 20 01 00 00 02, one unused bit.
		{"2001:0:200::/39", "03 06 01 20 01 00 00 02"},
		// 0 bits: no octet, no unused bit.
		{"0.0.0.0/0", "03 01 00"},
		{"::/0", "03 01 00"},
		// 14 bits: 0a f4 (1111 0100), the low 2 bits unused and zero.
		{"10.244.0.0/14", "03 03 02 0a f4"},
		// 22 bits: 67 79 28 (0010 1000), 2 unused bits.
		{"103.121.40.0/22", "03 04 02 67 79 28"},
		{"2403:63c0::/32", "03 05 00 24 03 63 c0"},
		{"fd00:1::/64", "03 09 00 fd 00 00 01 00 00 00 00"},
	}
	for _, tt := range tests {
		p := netip.MustParsePrefix(tt.prefix)
		want := unhex(t, tt.der)
		var b cryptobyte.Builder
		addPrefixBits(&b, p)
		if got := b.BytesOrPanic(); !bytes.Equal(got, want) {
			t.Errorf("encode %s = % x, want % x", p, got, want)
		}
		in := cryptobyte.String(want)
		var bits cryptobyte.String
		if !in.ReadASN1(&bits, cbasn1.BIT_STRING) {
			t.Fatalf("%s: vector is not a BIT STRING", p)
		}
		afi := uint16(afiIPv6)
		if p.Addr().Is4() {
			afi = afiIPv4
		}
		addr, n, err := decodeAddrBits(bits, afi, false)
		if err != nil || netip.PrefixFrom(addr, n) != p {
			t.Errorf("decode % x = %s/%d, %v; want %s", want, addr, n, err, p)
		}
	}
}

// TestRangeVectors decodes address ranges (RFC 3779 section 2.1.2: a range
// that is no prefix is a SEQUENCE of min, with its trailing zero bits cut,
// and max, with its trailing one bits cut). Worked out by hand.
func TestRangeVectors(t *testing.T) {
	tests := []struct {
		name     string
		der      string
		min, max string
	}{
		// min 10.2.48.0 = 0a 02 30 00: trailing zeros cut after the 1 of
		// 0x30 (0011 0000) leave 20 bits: 0a 02 30, 4 unused.
		// max 10.2.64.255 = 0a 02 40 ff: the eight trailing ones cut leave
		// 24 bits: 0a 02 40 (0x40 ends in a zero).
		{"IPv4 across a /20 and a /24", "30 0c 03 04 04 0a 02 30 03 04 00 0a 02 40", "10.2.48.0", "10.2.64.255"},
		// min 10.5.0.4: 0x04 = 0000 0100, 30 bits: 0a 05 00 04, 2 unused.
		// max 10.5.0.23: 0x17 = 0001 0111, three ones cut: 29 bits,
		// 0a 05 00 10, 3 unused.
		{"IPv4 4 to 23", "30 0e 03 05 02 0a 05 00 04 03 05 03 0a 05 00 10", "10.5.0.4", "10.5.0.23"},
		// min 0.0.0.0: every bit is a trailing zero: 0 bits.
		// max 0.0.0.2 ends in a zero bit: all 32 bits.
		{"IPv4 from zero", "30 0a 03 01 00 03 05 00 00 00 00 02", "0.0.0.0", "0.0.0.2"},
		// max 0.0.0.255: its eight trailing ones cut leave 24 zero bits,
		// 00 00 00, as RFC 3779 erratum 2537 (verified) spells out: a max
		// need not keep a one bit. min 0.0.0.1 keeps all 32.
		{"IPv4 max of zero bits (erratum 2537)", "30 0d 03 05 00 00 00 00 01 03 04 00 00 00 00", "0.0.0.1", "0.0.0.255"},
		// min 2001:db8:0:1:: : 64 bits up to the 1 of ...0001.
		// max 2001:db8:0:2:ffff:ffff:ffff:ffff: 64 ones cut, and ...0002
		// ends in a zero: 64 bits.
		{"IPv6 two /64s", "30 16 03 09 00 20 01 0d b8 00 00 00 01 03 09 00 20 01 0d b8 00 00 00 02", "2001:db8:0:1::", "2001:db8:0:2:ffff:ffff:ffff:ffff"},
	}
	for _, tt := range tests {
		afi := uint16(afiIPv4)
		if netip.MustParseAddr(tt.min).Is6() {
			afi = afiIPv6
		}
		// Wrap the range in IPAddrBlocks to read it with the decoder.
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1OctetString([]byte{0, byte(afi)})
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(unhex(t, tt.der)) })
			})
		})
		fams, err := decodeAddrBlocks(b.BytesOrPanic())
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		e := fams[0].entries[0]
		if !e.isRange() || e.min.String() != tt.min || e.max.String() != tt.max {
			t.Errorf("%s: decoded %s (range %v), want %s-%s", tt.name, e, e.isRange(), tt.min, tt.max)
		}
		if _, err := decodeGrants(b.BytesOrPanic()); err == nil {
			t.Errorf("%s: the weft profile accepted a range", tt.name)
		}
	}
}

// appendixB is the first example of RFC 3779 appendix B: a critical
// extension granting the IPv4 unicast (SAFI 1) prefixes 10.0.32/20,
// 10.0.64/24, 10.1/16, 10.2.48/20 and 10.2.64/24 (adjacent, so the range
// 10.2.48.0-10.2.64.255) and 10.3/16, and inheriting IPv6. Reproduced from
// the RFC's annotated hex dump; its lengths add up, and TestOpenSSLReadsAppendixB
// has openssl print it.
const appendixB = `
30 46
   06 08 2b 06 01 05 05 07 01 07
   01 01 ff
   04 37
      30 35
         30 2b
            04 03 00 01 01
            30 24
               03 04 04 0a 00 20
               03 04 00 0a 00 40
               03 03 00 0a 01
               30 0c
                  03 04 04 0a 02 30
                  03 04 00 0a 02 40
               03 03 00 0a 03
         30 06
            04 02 00 02
            05 00`

func TestAppendixB(t *testing.T) {
	var ext pkix.Extension
	if rest, err := asn1.Unmarshal(unhex(t, appendixB), &ext); err != nil || len(rest) > 0 {
		t.Fatalf("the extension: %v (%d bytes left)", err, len(rest))
	}
	if !ext.Id.Equal(oidIPAddrBlocks) || !ext.Critical {
		t.Fatalf("extension %v critical %v, want %v critical", ext.Id, ext.Critical, oidIPAddrBlocks)
	}
	fams, err := decodeAddrBlocks(ext.Value)
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) != 2 {
		t.Fatalf("%d families, want 2", len(fams))
	}
	v4, v6 := fams[0], fams[1]
	if v4.afi != afiIPv4 || v4.safi != 1 || v4.inherit {
		t.Errorf("first family: AFI %d SAFI %d inherit %v, want IPv4 unicast", v4.afi, v4.safi, v4.inherit)
	}
	var got []string
	for _, e := range v4.entries {
		got = append(got, e.String())
	}
	want := []string{"10.0.32.0/20", "10.0.64.0/24", "10.1.0.0/16", "10.2.48.0-10.2.64.255", "10.3.0.0/16"}
	if !slices.Equal(got, want) {
		t.Errorf("IPv4 unicast: %v, want %v", got, want)
	}
	if v6.afi != afiIPv6 || v6.safi != -1 || !v6.inherit {
		t.Errorf("second family: AFI %d SAFI %d inherit %v, want IPv6 inherit", v6.afi, v6.safi, v6.inherit)
	}
	// weft uses none of SAFIs, ranges and inherit: refused, by name.
	wantErr(t, "decodeGrants(appendix B)", func() error { _, err := decodeGrants(ext.Value); return err }(), "SAFI")
}

// TestEncodeGrants checks whole extension values, worked out by hand.
func TestEncodeGrants(t *testing.T) {
	tests := []struct {
		name     string
		prefixes []string
		der      string
	}{
		{"IPv4", []string{"10.244.1.0/24"},
			"30 0e 30 0c 04 02 00 01 30 06 03 04 00 0a f4 01"},
		{"IPv6", []string{"fd00:1::/64"},
			"30 13 30 11 04 02 00 02 30 0b 03 09 00 fd 00 00 01 00 00 00 00"},
		{"both, given IPv6 first", []string{"fd00:1::/64", "10.244.1.0/24"},
			"30 21 30 0c 04 02 00 01 30 06 03 04 00 0a f4 01 30 11 04 02 00 02 30 0b 03 09 00 fd 00 00 01 00 00 00 00"},
		// The same blocks as a published RPKI certificate's.
		{"RPKI-style pair", []string{"103.121.40.0/22", "2403:63c0::/32"},
			"30 1d 30 0c 04 02 00 01 30 06 03 04 02 67 79 28 30 0d 04 02 00 02 30 07 03 05 00 24 03 63 c0"},
		{"two pools, given out of order", []string{"10.2.0.0/16", "10.0.0.0/16"},
			"30 12 30 10 04 02 00 01 30 0a 03 03 00 0a 00 03 03 00 0a 02"},
	}
	for _, tt := range tests {
		ps := prefixes(t, tt.prefixes...)
		got, err := encodeGrants(ps)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if want := unhex(t, tt.der); !bytes.Equal(got, want) {
			t.Errorf("%s: encoded\n% x\nwant\n% x", tt.name, got, want)
		}
		back, err := decodeGrants(got)
		sorted, _ := canonicalPrefixes("prefix", ps)
		if err != nil || !slices.Equal(back, sorted) {
			t.Errorf("%s: decoded %v, %v; want %v", tt.name, back, err, sorted)
		}
	}
}

func TestEncodeGrantsRefuses(t *testing.T) {
	tests := []struct {
		name     string
		prefixes []netip.Prefix
		want     string
	}{
		{"none", nil, "no grant"},
		{"host bits", []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}, "host bits are set (did you mean 10.0.0.0/24?)"},
		{"invalid", []netip.Prefix{{}}, "not a valid CIDR prefix"},
		{"IPv4-mapped", []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/120")}, "IPv4-mapped"},
		{"overlap", prefixes(t, "10.0.0.0/16", "10.0.1.0/24"), "overlap"},
		{"duplicate", prefixes(t, "10.0.0.0/16", "10.0.0.0/16"), "overlap"},
		{"adjacent", prefixes(t, "10.0.0.0/25", "10.0.0.128/25"), "adjacent"},
		{"adjacent IPv6", prefixes(t, "fd00::/64", "fd00:0:0:1::/64"), "adjacent"},
	}
	for _, tt := range tests {
		_, err := encodeGrants(tt.prefixes)
		wantErr(t, tt.name, err, tt.want)
	}
	// The same prefix length in both families is neither overlap nor
	// adjacency.
	if _, err := encodeGrants(prefixes(t, "0.0.0.0/0", "::/0")); err != nil {
		t.Errorf("both whole families: %v", err)
	}
}

// TestDecodeRefuses feeds the strict decoder encodings that break DER or
// RFC 3779's rules, each one change away from a good value.
func TestDecodeRefuses(t *testing.T) {
	tests := []struct {
		name string
		der  string
		want string
	}{
		{"good", "30 0e 30 0c 04 02 00 01 30 06 03 04 00 0a f4 01", ""},
		{"empty input", "", "not a DER SEQUENCE"},
		{"trailing data", "30 0e 30 0c 04 02 00 01 30 06 03 04 00 0a f4 01 00", "trailing data"},
		{"long-form length (not DER)", "30 81 0e 30 0c 04 02 00 01 30 06 03 04 00 0a f4 01", "not a DER SEQUENCE"},
		{"indefinite length (BER)", "30 80 30 0c 04 02 00 01 30 06 03 04 00 0a f4 01 00 00", "not a DER SEQUENCE"},
		{"no family", "30 00", "no address family"},
		{"AFI 3", "30 0e 30 0c 04 02 00 03 30 06 03 04 00 0a f4 01", "AFI 3"},
		{"1-byte addressFamily", "30 0d 30 0b 04 01 01 30 06 03 04 00 0a f4 01", "has 1 bytes"},
		{"families out of order", "30 21 30 11 04 02 00 02 30 0b 03 09 00 fd 00 00 01 00 00 00 00 30 0c 04 02 00 01 30 06 03 04 00 0a f4 01", "not sorted"},
		{"family twice", "30 1c 30 0c 04 02 00 01 30 06 03 04 00 0a f4 01 30 0c 04 02 00 01 30 06 03 04 00 0a f5 01", "repeats"},
		{"empty list", "30 08 30 06 04 02 00 01 30 00", "empty address list"},
		{"nonzero padding bit", "30 0e 30 0c 04 02 00 01 30 06 03 04 01 0a f4 01", "padding bits are not zero"},
		{"8 unused bits", "30 0e 30 0c 04 02 00 01 30 06 03 04 08 0a f4 00", "unused bits"},
		{"33 bits of IPv4", "30 10 30 0e 04 02 00 01 30 08 03 06 07 0a f4 01 00 80", "more than an IPv4 address has"},
		{"empty BIT STRING", "30 0b 30 09 04 02 00 01 30 03 03 00 05", "empty BIT STRING"},
		{"neither prefix nor range", "30 0c 30 0a 04 02 00 01 30 04 04 02 0a f4", "neither a prefix"},
		{"family trailing data", "30 10 30 0e 04 02 00 01 30 06 03 04 00 0a f4 01 05 00", "trailing data in the address family"},
		{"prefixes out of order", "30 13 30 11 04 02 00 01 30 0b 03 03 00 0a 02 03 03 00 0a 01 00", "not sorted"},
		{"prefixes overlap", "30 13 30 11 04 02 00 01 30 0b 03 03 00 0a 01 03 04 00 0a 01 05", "overlaps"},
		{"prefixes adjacent", "30 12 30 10 04 02 00 01 30 0a 03 03 00 0a 00 03 03 00 0a 01", "adjacent"},
		// 10.5.0.0-10.5.255.255: min 0a 05 (16 bits), max 0a 04 (15 bits,
		// the last one of 0x05 cut too) is the prefix 10.5/16.
		{"range that is a prefix", "30 14 30 12 04 02 00 01 30 0c 30 0a 03 03 00 0a 05 03 03 01 0a 04", "is the prefix 10.5.0.0/16 and must be encoded as one"},
		{"range min with trailing zero", "30 16 30 14 04 02 00 01 30 0e 30 0c 03 04 00 0a 02 30 03 04 00 0a 02 40", "trailing zero bits"},
		{"range max with trailing one", "30 16 30 14 04 02 00 01 30 0e 30 0c 03 04 04 0a 02 30 03 04 00 0a 02 41", "trailing one bits"},
		{"range min above max", "30 16 30 14 04 02 00 01 30 0e 30 0c 03 04 04 0a 02 30 03 04 00 0a 01 40", "above max"},
		{"range with three bounds", "30 19 30 17 04 02 00 01 30 11 30 0f 03 04 04 0a 02 30 03 04 00 0a 02 40 03 01 00", "two BIT STRINGs"},
		{"malformed inherit", "30 09 30 07 04 02 00 02 05 01 00", "malformed inherit"},
	}
	for _, tt := range tests {
		_, err := decodeAddrBlocks(unhex(t, tt.der))
		wantErr(t, tt.name, err, tt.want)
	}
}

// TestDecodeGrantsProfile: well-formed RFC 3779 that weft does not use.
func TestDecodeGrantsProfile(t *testing.T) {
	tests := []struct {
		name string
		der  string
		want string
	}{
		{"SAFI", "30 0f 30 0d 04 03 00 01 01 30 06 03 04 00 0a f4 01", "SAFI"},
		{"inherit", "30 08 30 06 04 02 00 02 05 00", "inherit"},
		{"range", "30 16 30 14 04 02 00 01 30 0e 30 0c 03 04 04 0a 02 30 03 04 00 0a 02 40", "the range 10.2.48.0-10.2.64.255"},
	}
	for _, tt := range tests {
		der := unhex(t, tt.der)
		if _, err := decodeAddrBlocks(der); err != nil {
			t.Errorf("%s: not even RFC 3779: %v", tt.name, err)
		}
		_, err := decodeGrants(der)
		wantErr(t, tt.name, err, tt.want)
	}
}

// TestGrantsRoundTrip encodes random canonical prefix sets and decodes them
// back.
func TestGrantsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		var ps []netip.Prefix
		for range 1 + rng.IntN(maxGrants) {
			var p netip.Prefix
			if rng.IntN(2) == 0 {
				var a [4]byte
				for j := range a {
					a[j] = byte(rng.Uint32())
				}
				p = netip.PrefixFrom(netip.AddrFrom4(a), rng.IntN(33)).Masked()
			} else {
				var a [16]byte
				for j := range a {
					a[j] = byte(rng.Uint32())
				}
				p = netip.PrefixFrom(netip.AddrFrom16(a), rng.IntN(129)).Masked()
			}
			ps = append(ps, p)
		}
		want, err := canonicalPrefixes("prefix", ps)
		if err != nil {
			continue // overlapping or adjacent draw
		}
		der, err := encodeGrants(ps)
		if err != nil {
			t.Fatalf("set %d %v: %v", i, ps, err)
		}
		got, err := decodeGrants(der)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("set %d: decoded %v, %v; want %v (% x)", i, got, err, want, der)
		}
	}
}

func FuzzDecodeAddrBlocks(f *testing.F) {
	for _, s := range []string{
		"30 0e 30 0c 04 02 00 01 30 06 03 04 00 0a f4 01",
		"30 21 30 0c 04 02 00 01 30 06 03 04 00 0a f4 01 30 11 04 02 00 02 30 0b 03 09 00 fd 00 00 01 00 00 00 00",
		"30 12 30 10 04 02 00 01 30 0a 03 03 00 0a 00 03 03 00 0a 02",
		"30 16 30 14 04 02 00 01 30 0e 30 0c 03 04 04 0a 02 30 03 04 00 0a 02 40",
		"30 08 30 06 04 02 00 02 05 00",
		"30 0f 30 0d 04 03 00 01 01 30 06 03 04 00 0a f4 01",
	} {
		f.Add(unhex(f, s))
	}
	var ext pkix.Extension
	if _, err := asn1.Unmarshal(unhex(f, appendixB), &ext); err != nil {
		f.Fatal(err)
	}
	f.Add(ext.Value)
	f.Fuzz(func(t *testing.T, der []byte) {
		fams, err := decodeAddrBlocks(der)
		ps, perr := decodeGrants(der)
		if err != nil {
			if perr == nil {
				t.Fatalf("the profile accepted what RFC 3779 refused (%v)", err)
			}
			return
		}
		for _, f := range fams {
			for i, e := range f.entries {
				if e.min.Compare(e.max) > 0 || i > 0 && f.entries[i-1].max.Compare(e.min) >= 0 {
					t.Fatalf("decoded entries out of order: %v", f.entries)
				}
			}
		}
		if perr != nil {
			return
		}
		// The encoding of a weft grant list is unique: what the strict
		// decoder accepts, the encoder writes back byte for byte.
		again, err := encodeGrants(ps)
		if err != nil {
			t.Fatalf("decoded %v, which does not encode: %v", ps, err)
		}
		if !bytes.Equal(again, der) {
			t.Fatalf("decoded %v from\n%s\nwhich encodes as\n%s", ps, hex.EncodeToString(der), hex.EncodeToString(again))
		}
	})
}
