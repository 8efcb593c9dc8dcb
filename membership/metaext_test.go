package membership

import (
	"bytes"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestMetaEncryptionSection(t *testing.T) {
	for name, m := range validMetas() {
		plain := mustMarshal(t, m)
		m.Encryption = Encryption{Cipher: 1}
		for i := range m.Encryption.Key {
			m.Encryption.Key[i] = byte(i + 1)
		}
		b := mustMarshal(t, m)
		if len(b) != len(plain)+2+33 || !bytes.Equal(b[:len(plain)], plain) {
			t.Fatalf("%s: the section is not a trailer of the plain record: %x", name, b)
		}
		var got Meta
		if err := got.UnmarshalBinary(b); err != nil || !reflect.DeepEqual(got, m) {
			t.Fatalf("%s: round trip: %+v, %v", name, got, err)
		}
		if len(b) > 512 {
			t.Fatalf("%s: %d bytes, over memberlist's limit", name, len(b))
		}
	}
	m := validMetas()["v4 udp"]
	base := mustMarshal(t, m)
	key := bytes.Repeat([]byte{7}, 32)
	for _, tt := range []struct {
		name string
		sec  []byte
		want string
	}{
		{"no cipher", append([]byte{1, 33, 0}, key...), "without a cipher"},
		{"zero key", append([]byte{1, 33, 2}, make([]byte, 32)...), "all-zero key"},
		{"short", []byte{1, 33, 1, 2}, "truncated"},
		{"wrong length", append([]byte{1, 32}, key...), "wrong length"},
		{"unknown", []byte{9, 0}, "unknown section"},
		{"repeated", append(append([]byte{1, 33, 1}, key...), append([]byte{1, 33, 1}, key...)...), "out of order"},
	} {
		var got Meta
		err := got.UnmarshalBinary(append(bytes.Clone(base), tt.sec...))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !reflect.DeepEqual(got, Meta{}) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	bad := m
	bad.Encryption.Cipher = 1
	if _, err := bad.MarshalBinary(); err == nil {
		t.Error("marshaled an encryption section with a zero key")
	}
}

func TestMetaNetworksSection(t *testing.T) {
	n4, n6 := netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/48")
	for name, m := range validMetas() {
		plain := mustMarshal(t, m)
		switch {
		case len(m.Subnets) == 2:
			m.Networks = []netip.Prefix{netip.PrefixFrom(m.Subnets[0].Addr(), 8).Masked(), netip.PrefixFrom(m.Subnets[1].Addr(), 32).Masked()}
		default:
			if n := netip.PrefixFrom(m.Subnets[0].Addr(), m.Subnets[0].Bits()-2).Masked(); n.IsValid() { // none for a /0 or /1
				m.Networks = []netip.Prefix{n}
			}
		}
		b := mustMarshal(t, m)
		if !bytes.Equal(b[:len(plain)], plain) {
			t.Fatalf("%s: the section is not a trailer of the plain record: %x", name, b)
		}
		var got Meta
		if err := got.UnmarshalBinary(b); err != nil || !reflect.DeepEqual(got, m) {
			t.Fatalf("%s: round trip: %+v, %v", name, got, err)
		}
	}
	m := validMetas()["v4 udp"]
	m.Subnets = []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")}
	m.Networks = []netip.Prefix{n4}
	if _, err := m.MarshalBinary(); err != nil {
		t.Fatalf("a subnet inside its network: %v", err)
	}
	base := mustMarshal(t, validMetas()["v4 udp"])
	sub := validMetas()["v4 udp"].Subnets[0]
	sec := func(ps ...netip.Prefix) []byte {
		var v []byte
		for _, p := range ps {
			v = append(append(v, byte(p.Bits())), p.Addr().AsSlice()...)
		}
		return append([]byte{sectionNetworks, byte(len(v))}, v...)
	}
	for _, tt := range []struct {
		name string
		sec  []byte
		want string
	}{
		{"outside", sec(netip.MustParsePrefix("10.9.0.0/16")), "not inside"},
		{"longer than the subnet", sec(netip.PrefixFrom(sub.Addr(), 32)), "not inside"},
		{"host bits", sec(netip.PrefixFrom(sub.Addr().Next(), 8)), "not a canonical prefix"},
		{"IPv6 first", sec(n6, n4), "wrong length"},
		{"bad prefix length", []byte{sectionNetworks, 5, 33, 10, 0, 0, 0}, "prefix length"},
		{"odd length", []byte{sectionNetworks, 6, 8, 10, 0, 0, 0, 0}, "wrong length"},
		{"two IPv4", []byte{sectionNetworks, 10, 8, 10, 0, 0, 0, 8, 10, 0, 0, 0}, "wrong length"},
	} {
		var got Meta
		err := got.UnmarshalBinary(append(bytes.Clone(base), tt.sec...))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !reflect.DeepEqual(got, Meta{}) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestInside(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tt := range []struct {
		sub, n string
		want   bool
	}{
		{"10.244.3.0/24", "10.244.0.0/16", true},
		{"10.244.0.0/16", "10.244.0.0/16", true},
		{"10.0.0.0/8", "10.244.0.0/16", false},
		{"10.9.0.0/24", "10.244.0.0/16", false},
		{"0.0.0.0/1", "10.244.0.0/16", false},
		{"169.254.169.254/32", "10.244.0.0/16", false},
		{"fd00:10:244:1::/64", "10.244.0.0/16", false},
		{"fd00:10:244:1::/64", "fd00:10:244::/48", true},
	} {
		if got := Inside(p(tt.sub), p(tt.n)); got != tt.want {
			t.Errorf("Inside(%s, %s) = %v", tt.sub, tt.n, got)
		}
	}
}
