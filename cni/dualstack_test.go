package cni

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

const subnetFileDual = subnetFile1 + `WEFT_IPV6_NETWORK=fd00:10:244::/56
WEFT_IPV6_SUBNET=fd00:10:244:1::/64
WEFT_IPV6_ADDRESS=fd00:10:244:1::
`

func TestParseSubnetEnvDualStack(t *testing.T) {
	env := mustEnv(t, subnetFileDual)
	if env.Network6 != netip.MustParsePrefix("fd00:10:244::/56") || env.Subnet6 != netip.MustParsePrefix("fd00:10:244:1::/64") ||
		env.Address6 != netip.MustParseAddr("fd00:10:244:1::") || env.Subnet != netip.MustParsePrefix("10.244.1.0/24") {
		t.Errorf("dual-stack env %+v", env)
	}
	// An IPv6-only overlay repeats its one family in WEFT_IPV6_*: one family.
	only6 := "WEFT_NETWORK=fd00:10:244::/56\nWEFT_SUBNET=fd00:10:244:1::/64\nWEFT_ADDRESS=fd00:10:244:1::\nWEFT_MTU=1452\n" +
		"WEFT_IPV6_NETWORK=fd00:10:244::/56\nWEFT_IPV6_SUBNET=fd00:10:244:1::/64\nWEFT_IPV6_ADDRESS=fd00:10:244:1::\n"
	if env := mustEnv(t, only6); env.Subnet6.IsValid() || env.Subnet != netip.MustParsePrefix("fd00:10:244:1::/64") {
		t.Errorf("IPv6-only env %+v", env)
	}
	for _, c := range []struct{ name, file, want string }{
		{"no v6 address", subnetFile1 + "WEFT_IPV6_NETWORK=fd00:10:244::/56\nWEFT_IPV6_SUBNET=fd00:10:244:1::/64\n", "WEFT_IPV6_ADDRESS is missing"},
		{"v6 outside", subnetFile1 + "WEFT_IPV6_NETWORK=fd00:10:244::/56\nWEFT_IPV6_SUBNET=fd00:10:245:1::/64\nWEFT_IPV6_ADDRESS=fd00:10:245:1::\n",
			"WEFT_IPV6_SUBNET fd00:10:245:1::/64 is not inside WEFT_IPV6_NETWORK fd00:10:244::/56"},
		{"v4 as v6", subnetFile1 + "WEFT_IPV6_NETWORK=10.245.0.0/16\nWEFT_IPV6_SUBNET=10.245.1.0/24\nWEFT_IPV6_ADDRESS=10.245.1.0\n", "WEFT_IPV6_NETWORK 10.245.0.0/16 is not an IPv6 network"},
	} {
		if _, err := ParseSubnetEnv([]byte(c.file)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

// A dual-stack host's containers get an address of each family and a
// route to each network.
func TestBuildDelegateDualStack(t *testing.T) {
	n := mustConf(t, `{"cniVersion":"1.0.0","name":"weft","type":"weft"}`)
	d, err := BuildDelegate(n, mustEnv(t, subnetFileDual), "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	ipam := asJSON(t, d["ipam"]).(map[string]any)
	want := asJSON(t, map[string]any{
		"type": "host-local",
		"ranges": []any{
			[]any{map[string]any{"subnet": "10.244.1.0/24", "gateway": "10.244.1.1", "rangeStart": "10.244.1.1", "rangeEnd": "10.244.1.254"}},
			[]any{map[string]any{"subnet": "fd00:10:244:1::/64", "gateway": "fd00:10:244:1::1",
				"rangeStart": "fd00:10:244:1::1", "rangeEnd": "fd00:10:244:1:ffff:ffff:ffff:ffff"}},
		},
		"routes": []any{
			map[string]any{"dst": "10.244.0.0/16", "gw": "10.244.1.1"},
			map[string]any{"dst": "fd00:10:244::/56", "gw": "fd00:10:244:1::1"},
		},
	})
	if !reflect.DeepEqual(ipam, want) {
		t.Errorf("ipam:\n got %v\nwant %v", ipam, want)
	}
}
