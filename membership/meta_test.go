package membership

import (
	"bytes"
	"errors"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/weftnet/weft/encap"
)

func validMetas() map[string]Meta {
	mac := [6]byte{0x02, 0x42, 0xac, 0x11, 0x00, 0x02}
	return map[string]Meta{
		"v4 udp": {
			Subnets:  []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")},
			Underlay: netip.MustParseAddr("192.0.2.10"),
			Port:     8285,
			Encap:    encap.UDP,
			Claimed:  1_700_000_000_123,
		},
		"v4 udp partial checksums": {
			Subnets:          []netip.Prefix{netip.MustParsePrefix("10.244.4.0/24")},
			Underlay:         netip.MustParseAddr("192.0.2.11"),
			Port:             8285,
			Encap:            encap.UDP,
			PartialChecksums: true,
		},
		"v4 vxlan": {
			Subnets:  []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
			Underlay: netip.MustParseAddr("198.51.100.7"),
			Port:     8472,
			Encap:    encap.VXLAN,
			VNI:      1<<24 - 1,
			VTEPMAC:  mac,
			Claimed:  math.MaxInt64,
		},
		"v4 none port 0": {
			Subnets:  []netip.Prefix{netip.MustParsePrefix("10.244.7.0/24")},
			Underlay: netip.MustParseAddr("203.0.113.1"),
			Encap:    encap.None,
			Claimed:  math.MinInt64,
		},
		"v6 vxlan": {
			Subnets:  []netip.Prefix{netip.MustParsePrefix("fd00:10:244:3::/64")},
			Underlay: netip.MustParseAddr("2001:db8::10"),
			Port:     4789,
			Encap:    encap.VXLAN,
			VNI:      42,
			VTEPMAC:  mac,
			Claimed:  1,
		},
		"v6 subnet v4 underlay udp": {
			Subnets:  []netip.Prefix{netip.MustParsePrefix("fd00::/128")},
			Underlay: netip.MustParseAddr("192.0.2.1"),
			Port:     65535,
			Encap:    encap.UDP,
		},
		"dual stack v4 underlay": {
			Subnets:          []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("fd00:10:244:3::/64")},
			Underlay:         netip.MustParseAddr("192.0.2.3"),
			Port:             8472,
			Encap:            encap.VXLAN,
			VNI:              1,
			VTEPMAC:          [6]byte{0x02, 0x57, 10, 244, 3, 0},
			Claimed:          1700000000000,
			PartialChecksums: true,
		},
		"dual stack v6 underlay": {
			Subnets:  []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("fd00:10:244:300::/56")},
			Underlay: netip.MustParseAddr("fd00:50::3"),
			Port:     8285,
			Encap:    encap.UDP,
		},
		"v4 subnet v6 underlay none": {
			Subnets:  []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")},
			Underlay: netip.MustParseAddr("::1"),
			Encap:    encap.None,
			Port:     1,
		},
	}
}

func TestMetaRoundTrip(t *testing.T) {
	for name, m := range validMetas() {
		t.Run(name, func(t *testing.T) {
			b, err := m.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			want := metaHeaderLen + m.Subnets[0].Addr().BitLen()/8 + m.Underlay.BitLen()/8 + metaTailLen
			version := byte(MetaVersion)
			if len(m.Subnets) == 2 {
				want += 17
				version = MetaVersionDualStack
			}
			if len(b) != want {
				t.Errorf("encoded length = %d, want %d", len(b), want)
			}
			if b[0] != version {
				t.Errorf("first byte = %d, want version %d", b[0], version)
			}
			var got Meta
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
			}
			b2, err := got.MarshalBinary()
			if err != nil || !bytes.Equal(b, b2) {
				t.Fatalf("re-marshal = %x, %v; want %x", b2, err, b)
			}
			prefix := []byte("xyz")
			ab, err := m.AppendBinary(prefix)
			if err != nil || !bytes.Equal(ab, append([]byte("xyz"), b...)) {
				t.Fatalf("AppendBinary = %x, %v", ab, err)
			}
		})
	}
}

func TestMetaSize(t *testing.T) {
	largest := Meta{
		Subnets:  []netip.Prefix{netip.MustParsePrefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120")},
		Underlay: netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
		Port:     math.MaxUint16,
		Encap:    encap.VXLAN,
		VNI:      1<<24 - 1,
		VTEPMAC:  [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		Claimed:  math.MaxInt64,
	}
	b, err := largest.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 55 {
		t.Errorf("max-size single-stack Meta encodes to %d bytes, want 55", len(b))
	}
	// The largest of all: dual stack over an IPv6 underlay.
	largest.Subnets = []netip.Prefix{netip.MustParsePrefix("255.255.255.255/32"), netip.MustParsePrefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")}
	if b, err = largest.MarshalBinary(); err != nil {
		t.Fatal(err)
	}
	if len(b) != MetaMaxSize {
		t.Errorf("max-size dual-stack Meta encodes to %d bytes, want 60 (MetaMaxSize %d)", len(b), MetaMaxSize)
	}
	if MetaMaxSize != 60 || MetaMinSize != 31 {
		t.Errorf("MetaMinSize, MetaMaxSize = %d, %d; want 31, 60", MetaMinSize, MetaMaxSize)
	}
	if len(b) >= 512 {
		t.Errorf("max-size Meta is %d bytes, memberlist limit is 512", len(b))
	}
	b, err = validMetas()["v4 udp"].MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 31 {
		t.Errorf("IPv4 Meta encodes to %d bytes, want 31", len(b))
	}
}

func TestMetaMarshalInvalid(t *testing.T) {
	base := validMetas()["v4 vxlan"]
	tests := []struct {
		name   string
		modify func(*Meta)
		want   string
	}{
		{"zero", func(m *Meta) { *m = Meta{} }, "unknown encap 0"},
		{"encap 0", func(m *Meta) { m.Encap = 0 }, "unknown encap 0"},
		{"encap 4", func(m *Meta) { m.Encap = 4 }, "unknown encap 4"},
		{"no subnet", func(m *Meta) { m.Subnets = []netip.Prefix{{}} }, "not a valid prefix"},
		{"host bits", func(m *Meta) { m.Subnets = []netip.Prefix{netip.MustParsePrefix("10.244.3.7/24")} }, "host bits set (want 10.244.3.0/24)"},
		{"4in6 subnet", func(m *Meta) { m.Subnets = []netip.Prefix{netip.MustParsePrefix("::ffff:10.244.3.0/120")} }, "IPv4-mapped"},
		{"no underlay", func(m *Meta) { m.Underlay = netip.Addr{} }, "underlay address is not set"},
		{"unspecified underlay", func(m *Meta) { m.Underlay = netip.IPv4Unspecified() }, "unspecified"},
		{"unspecified v6 underlay", func(m *Meta) { m.Underlay = netip.IPv6Unspecified() }, "unspecified"},
		{"zone", func(m *Meta) { m.Underlay = netip.MustParseAddr("fe80::1%eth0") }, "has a zone"},
		{"4in6 underlay", func(m *Meta) { m.Underlay = netip.MustParseAddr("::ffff:192.0.2.1") }, "IPv4-mapped"},
		{"port 0 vxlan", func(m *Meta) { m.Port = 0 }, "port is 0 with encap vxlan"},
		{"port 0 udp", func(m *Meta) { m.Port, m.Encap = 0, encap.UDP }, "port is 0 with encap udp"},
		{"vni 2^24", func(m *Meta) { m.VNI = 1 << 24 }, "VNI 16777216 does not fit in 24 bits"},
		{"v4 second subnet", func(m *Meta) { m.Subnets = append(m.Subnets[:1:1], netip.MustParsePrefix("10.245.0.0/24")) }, "IPv6 subnet 10.245.0.0/24 is not an IPv6 prefix"},
		{"second subnet host bits", func(m *Meta) { m.Subnets = append(m.Subnets[:1:1], netip.MustParsePrefix("fd00::1/64")) }, "IPv6 subnet fd00::1/64 has host bits set (want fd00::/64)"},
		{"two v6 subnets", func(m *Meta) {
			m.Subnets = []netip.Prefix{netip.MustParsePrefix("fd00:1::/64"), netip.MustParsePrefix("fd00:2::/64")}
		}, "a dual-stack host's first subnet is IPv4"},
		{"three subnets", func(m *Meta) {
			m.Subnets = []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("fd00:1::/64"), netip.MustParsePrefix("fd00:2::/64")}
		}, "3 subnets: at most two"},
		{"three networks", func(m *Meta) {
			m.Networks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("fe00::/8")}
		}, "3 networks: at most two"},
		{"an invalid network", func(m *Meta) { m.Networks = []netip.Prefix{{}} }, "network 1 is not a valid prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base
			tt.modify(&m)
			b, err := m.MarshalBinary()
			if err == nil {
				t.Fatalf("MarshalBinary(%+v) = %x, want error containing %q", m, b, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidMeta) {
				t.Fatalf("error %q does not contain %q or wrap ErrInvalidMeta", err, tt.want)
			}
			if m.Validate() == nil {
				t.Fatal("Validate accepted what MarshalBinary rejects")
			}
		})
	}
}

func mustMarshal(t testing.TB, m Meta) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMetaUnmarshalInvalid(t *testing.T) {
	v4 := mustMarshal(t, validMetas()["v4 vxlan"])
	v6 := mustMarshal(t, validMetas()["v6 vxlan"])
	dual := mustMarshal(t, validMetas()["dual stack v4 underlay"])
	const offBits6 = 8 // in the dual-stack record over IPv4
	// patch returns a copy of b with b[i] = v.
	patch := func(b []byte, i int, v byte) []byte {
		b = bytes.Clone(b)
		b[i] = v
		return b
	}
	// Offsets in the IPv4/IPv4 record.
	const (
		offEncap    = 1
		offFlags    = 2
		offBits     = 3
		offSubnet   = 4
		offUnderlay = 8
		offPort     = 12
	)
	v4in6Subnet := func() []byte {
		b := bytes.Clone(v6)
		copy(b[offSubnet:], netip.MustParseAddr("::ffff:10.244.0.0").AsSlice())
		b[offBits] = 112
		return b
	}()

	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"nil", nil, "empty"},
		{"empty", []byte{}, "empty"},
		{"version 0", patch(v4, 0, 0), "unsupported version 0 (want 1 or 2)"},
		{"version 1 as 2", patch(v4, 0, 2), "truncated: have 31 bytes, want 48"},
		{"version 2 as 1", patch(dual, 0, 1), "17 trailing bytes after 31-byte record"},
		{"version 3", patch(dual, 0, 3), "unsupported version 3 (want 1 or 2)"},
		{"v6 subnet prefix length 129", patch(dual, offBits6, 129), "IPv6 subnet prefix length 129 exceeds 128"},
		{"v6 subnet host bits", patch(dual, offBits6, 8), "IPv6 subnet fd00:10:244:3::/8 has host bits set (want fd00::/8)"},
		{"dual with a v6 first subnet", func() []byte {
			m := validMetas()["v6 vxlan"]
			b := mustMarshal(t, m)
			b[0] = MetaVersionDualStack
			second := append([]byte{64}, netip.MustParseAddr("fd00:1::").AsSlice()...)
			return append(b[:4+16:4+16], append(second, b[4+16:]...)...)
		}(), "a dual-stack host's first subnet is IPv4"},
		{"version 255", []byte{255}, "unsupported version 255"},
		{"trailing byte", append(bytes.Clone(v4), 0), "1 trailing bytes after 31-byte record"},
		{"trailing junk v6", append(bytes.Clone(v6), "junkjunk"...), "8 trailing bytes after 55-byte record"},
		{"v4 record flagged v6", patch(v4, offFlags, flagSubnet6), "truncated: have 31 bytes, want 43"},
		{"reserved flags", patch(v4, offFlags, 0x80), "reserved flag bits set (flags 0x80)"},
		{"prefix length 33", patch(v4, offBits, 33), "subnet prefix length 33 exceeds 32"},
		{"prefix length 255", patch(v4, offBits, 255), "subnet prefix length 255 exceeds 32"},
		{"v6 prefix length 129", patch(v6, offBits, 129), "subnet prefix length 129 exceeds 128"},
		{"host bits", patch(v4, offSubnet+3, 1), "host bits set"},
		{"encap 0", patch(v4, offEncap, 0), "unknown encap 0"},
		{"encap 9", patch(v4, offEncap, 9), "unknown encap 9"},
		{"unspecified underlay", func() []byte {
			b := bytes.Clone(v4)
			copy(b[offUnderlay:], []byte{0, 0, 0, 0})
			return b
		}(), "underlay address 0.0.0.0 is unspecified"},
		{"port 0", func() []byte {
			b := bytes.Clone(v4)
			b[offPort], b[offPort+1] = 0, 0
			return b
		}(), "port is 0"},
		{"4in6 subnet", v4in6Subnet, "IPv4-mapped"},
	}
	for _, rec := range []struct {
		name string
		b    []byte
	}{{"v4", v4}, {"v6", v6}, {"dual", dual}} {
		for n := 1; n < len(rec.b); n++ {
			want := "truncated"
			tests = append(tests, struct {
				name string
				in   []byte
				want string
			}{rec.name + " truncated at " + strconv.Itoa(n), rec.b[:n], want})
		}
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sentinel := validMetas()["v4 udp"]
			m := sentinel
			err := m.UnmarshalBinary(tt.in)
			if err == nil {
				t.Fatalf("UnmarshalBinary(%x) = %+v, want error containing %q", tt.in, m, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("UnmarshalBinary(%x) error %q, want it to contain %q", tt.in, err, tt.want)
			}
			if !errors.Is(err, ErrInvalidMeta) {
				t.Errorf("error %q does not wrap ErrInvalidMeta", err)
			}
			if !reflect.DeepEqual(m, sentinel) {
				t.Errorf("failed UnmarshalBinary modified the receiver: %+v", m)
			}
		})
	}
}

func TestEncapAndStateString(t *testing.T) {
	for e, want := range map[encap.Kind]string{encap.UDP: "udp", encap.VXLAN: "vxlan", encap.None: "none", 7: "encap(7)"} {
		if got := e.String(); got != want {
			t.Errorf("Encap(%d).String() = %q, want %q", uint8(e), got, want)
		}
	}
	for s, want := range map[State]string{StateAlive: "alive", StateSuspect: "suspect", StateDead: "dead", StateLeft: "left", 9: "state(9)"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", uint8(s), got, want)
		}
	}
}

// FuzzMetaUnmarshal checks that UnmarshalBinary never panics, that what it
// accepts is valid, and that the encoding is canonical: re-marshaling an
// accepted input yields the same bytes.
func FuzzMetaUnmarshal(f *testing.F) {
	for _, m := range validMetas() {
		f.Add(mustMarshal(f, m))
		// With the networks section (the claims' check decodes it).
		m.Networks = []netip.Prefix{netip.PrefixFrom(m.Subnets[0].Addr(), m.Subnets[0].Bits()/2).Masked()}
		if len(m.Subnets) == 2 {
			m.Networks = append(m.Networks, netip.PrefixFrom(m.Subnets[1].Addr(), 32).Masked())
		}
		f.Add(mustMarshal(f, m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Meta
		if err := m.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrInvalidMeta) {
				t.Fatalf("error %q does not wrap ErrInvalidMeta", err)
			}
			if !reflect.DeepEqual(m, Meta{}) {
				t.Fatalf("failed UnmarshalBinary modified the receiver: %+v", m)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted %x but Validate says: %v", b, err)
		}
		out, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted %x but MarshalBinary fails: %v", b, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("not canonical: %x decodes to %+v which encodes to %x", b, m, out)
		}
	})
}

// TestFuzzSeedCorpus keeps the checked-in seed corpus honest: files named
// valid_* must decode, invalid_* must not.
func TestFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzMetaUnmarshal")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var valid, invalid int
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" {
			t.Fatalf("%s: not a fuzz corpus file", e.Name())
		}
		lit, ok := strings.CutPrefix(lines[1], "[]byte(")
		lit, ok2 := strings.CutSuffix(lit, ")")
		if !ok || !ok2 {
			t.Fatalf("%s: want a []byte value, got %q", e.Name(), lines[1])
		}
		s, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		var m Meta
		err = m.UnmarshalBinary([]byte(s))
		switch {
		case strings.HasPrefix(e.Name(), "valid_"):
			valid++
			if err != nil {
				t.Errorf("%s: %v", e.Name(), err)
			}
		case strings.HasPrefix(e.Name(), "invalid_"):
			invalid++
			if err == nil {
				t.Errorf("%s: decoded to %+v, want an error", e.Name(), m)
			}
		}
	}
	if valid == 0 || invalid == 0 {
		t.Errorf("corpus has %d valid and %d invalid seeds, want some of each", valid, invalid)
	}
}
