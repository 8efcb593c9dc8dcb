package family

import (
	"net/netip"
	"testing"
)

func TestFamilies(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")
	for _, tt := range []struct {
		name                    string
		list                    []netip.Prefix
		first, second, of4, of6 netip.Prefix
	}{
		{"empty", nil, netip.Prefix{}, netip.Prefix{}, netip.Prefix{}, netip.Prefix{}},
		{"IPv4 only", []netip.Prefix{v4}, v4, netip.Prefix{}, v4, netip.Prefix{}},
		{"IPv6 only", []netip.Prefix{v6}, v6, netip.Prefix{}, netip.Prefix{}, v6},
		{"dual stack", []netip.Prefix{v4, v6}, v4, v6, v4, v6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := First(tt.list); got != tt.first {
				t.Errorf("First = %v, want %v", got, tt.first)
			}
			if got := Second(tt.list); got != tt.second {
				t.Errorf("Second = %v, want %v", got, tt.second)
			}
			if got := Of(tt.list, false); got != tt.of4 {
				t.Errorf("Of(IPv4) = %v, want %v", got, tt.of4)
			}
			if got := Of(tt.list, true); got != tt.of6 {
				t.Errorf("Of(IPv6) = %v, want %v", got, tt.of6)
			}
			var addrs []netip.Addr
			for _, p := range tt.list {
				addrs = append(addrs, p.Addr())
			}
			if got := AddrOf(addrs, false); got != tt.of4.Addr() {
				t.Errorf("AddrOf(IPv4) = %v, want %v", got, tt.of4.Addr())
			}
			if got := AddrOf(addrs, true); got != tt.of6.Addr() {
				t.Errorf("AddrOf(IPv6) = %v, want %v", got, tt.of6.Addr())
			}
		})
	}
}
