package cni

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

const subnetFile1 = `WEFT_NETWORK=10.244.0.0/16
WEFT_SUBNET=10.244.1.0/24
WEFT_ADDRESS=10.244.1.0
WEFT_MTU=1472
WEFT_ENCAP=udp
FLANNEL_NETWORK=10.244.0.0/16
FLANNEL_SUBNET=10.244.1.1/24
`

func TestParseSubnetEnv(t *testing.T) {
	env, err := ParseSubnetEnv([]byte("# written by weft\n" + subnetFile1))
	if err != nil {
		t.Fatal(err)
	}
	want := SubnetEnv{
		Network: netip.MustParsePrefix("10.244.0.0/16"),
		Subnet:  netip.MustParsePrefix("10.244.1.0/24"),
		Address: netip.MustParseAddr("10.244.1.0"),
		MTU:     1472,
		Encap:   "udp",
	}
	if env != want {
		t.Fatalf("got %+v, want %+v", env, want)
	}
	for _, c := range []struct{ name, file, want string }{
		{"no network", "WEFT_SUBNET=10.244.1.0/24\nWEFT_ADDRESS=10.244.1.0\nWEFT_MTU=1472\n", "WEFT_NETWORK is missing"},
		{"bad subnet", "WEFT_NETWORK=10.244.0.0/16\nWEFT_SUBNET=10.244.1.0\nWEFT_ADDRESS=10.244.1.0\nWEFT_MTU=1472\n", "WEFT_SUBNET"},
		{"no address", "WEFT_NETWORK=10.244.0.0/16\nWEFT_SUBNET=10.244.1.0/24\nWEFT_MTU=1472\n", "WEFT_ADDRESS is missing"},
		{"bad mtu", "WEFT_NETWORK=10.244.0.0/16\nWEFT_SUBNET=10.244.1.0/24\nWEFT_ADDRESS=10.244.1.0\nWEFT_MTU=12\n", "WEFT_MTU"},
		{"subnet outside", "WEFT_NETWORK=10.244.0.0/16\nWEFT_SUBNET=10.9.1.0/24\nWEFT_ADDRESS=10.9.1.0\nWEFT_MTU=1472\n", "not inside WEFT_NETWORK"},
		{"address outside", "WEFT_NETWORK=10.244.0.0/16\nWEFT_SUBNET=10.244.1.0/24\nWEFT_ADDRESS=10.244.2.0\nWEFT_MTU=1472\n", "not inside WEFT_SUBNET"},
		{"tiny subnet", "WEFT_NETWORK=10.244.0.0/16\nWEFT_SUBNET=10.244.1.0/31\nWEFT_ADDRESS=10.244.1.0\nWEFT_MTU=1472\n", "too small"},
		{"garbage", "hello\n", "not KEY=VALUE"},
	} {
		if _, err := ParseSubnetEnv([]byte(c.file)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

func mustConf(t *testing.T, s string) *NetConf {
	t.Helper()
	n, err := ParseConf([]byte(s))
	if err != nil {
		t.Fatalf("ParseConf(%s): %v", s, err)
	}
	return n
}

func mustEnv(t *testing.T, s string) SubnetEnv {
	t.Helper()
	env, err := ParseSubnetEnv([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// asJSON normalises a value through JSON for comparisons.
func asJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBuildDelegateDefaults(t *testing.T) {
	n := mustConf(t, `{"cniVersion":"1.0.0","name":"weft","type":"weft"}`)
	if n.SubnetFile != DefaultSubnetFile || n.Socket != DefaultSocket || n.DataDir != DefaultDataDir || !n.masquerades() {
		t.Errorf("defaults: %+v masquerades=%v", n, n.masquerades())
	}
	d, err := BuildDelegate(n, mustEnv(t, subnetFile1), "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	want := asJSON(t, map[string]any{
		"cniVersion":       "1.0.0",
		"name":             "weft",
		"type":             "bridge",
		"bridge":           "cni0",
		"isGateway":        true,
		"isDefaultGateway": true,
		"hairpinMode":      true,
		"forceAddress":     true,
		"ipMasq":           false,
		"mtu":              1472,
		"ipam": map[string]any{
			"type": "host-local",
			"ranges": []any{[]any{map[string]any{
				"subnet": "10.244.1.0/24", "gateway": "10.244.1.1",
				"rangeStart": "10.244.1.1", "rangeEnd": "10.244.1.254",
			}}},
			"routes": []any{map[string]any{"dst": "10.244.0.0/16", "gw": "10.244.1.1"}},
		},
	})
	if got := asJSON(t, d); !reflect.DeepEqual(got, want) {
		t.Errorf("delegate:\n got %v\nwant %v", got, want)
	}
}

func TestBuildDelegateOverrides(t *testing.T) {
	n := mustConf(t, `{"cniVersion":"1.1.0","name":"pods","type":"weft",
		"ipam":{"dataDir":"/tmp/x","routes":[{"dst":"0.0.0.0/0"}]},
		"delegate":{"bridge":"weftbr0","hairpinMode":false,"mtu":1400,"ipMasq":true,"name":"ignored","cniVersion":"0.3.1",
			"ipam":{"dataDir":"/tmp/y"}}}`)
	if n.masquerades() {
		t.Error("a delegate with ipMasq must take masquerading over from weft")
	}
	d, err := BuildDelegate(n, mustEnv(t, subnetFile1), "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"name": "pods", "cniVersion": "1.0.0", "bridge": "weftbr0", "hairpinMode": false,
		"mtu": float64(1400), "ipMasq": true, "isGateway": true,
	} {
		if got := asJSON(t, d).(map[string]any)[k]; got != want {
			t.Errorf("delegate %s = %v, want %v", k, got, want)
		}
	}
	ipam := d["ipam"].(map[string]any)
	if ipam["dataDir"] != "/tmp/y" {
		t.Errorf("delegate.ipam overrides ipam: dataDir %v", ipam["dataDir"])
	}
	if got := asJSON(t, ipam["routes"]); !reflect.DeepEqual(got, asJSON(t, []any{map[string]any{"dst": "0.0.0.0/0"}})) {
		t.Errorf("routes %v", got)
	}
	if _, ok := ipam["ranges"]; !ok {
		t.Error("ranges still generated when only dataDir and routes are given")
	}
	// Building must not change the parsed config.
	if n.Delegate["name"] != "ignored" {
		t.Error("BuildDelegate mutated the config's delegate object")
	}

	// A user's own subnet or ranges replace the generated ones; another
	// IPAM type gets no host-local defaults.
	n = mustConf(t, `{"cniVersion":"1.0.0","name":"w","ipam":{"subnet":"10.244.1.0/25"}}`)
	d, _ = BuildDelegate(n, mustEnv(t, subnetFile1), "1.0.0")
	if _, ok := d["ipam"].(map[string]any)["ranges"]; ok {
		t.Error("ranges generated although ipam.subnet is given")
	}
	n = mustConf(t, `{"cniVersion":"1.0.0","name":"w","ipam":{"type":"static"}}`)
	d, _ = BuildDelegate(n, mustEnv(t, subnetFile1), "1.0.0")
	if got := asJSON(t, d["ipam"]); !reflect.DeepEqual(got, map[string]any{"type": "static"}) {
		t.Errorf("static ipam got defaults: %v", got)
	}
	// Another delegate type gets no bridge defaults.
	n = mustConf(t, `{"cniVersion":"1.0.0","name":"w","delegate":{"type":"ptp"}}`)
	d, _ = BuildDelegate(n, mustEnv(t, subnetFile1), "1.0.0")
	if _, ok := d["isGateway"]; ok || d["type"] != "ptp" || d["mtu"] != 1472 {
		t.Errorf("ptp delegate: %v", d)
	}
}

func TestRangesAvoidWeftAddress(t *testing.T) {
	for _, c := range []struct {
		env  string
		want [][2]string // rangeStart, rangeEnd
		gw   string
	}{
		{"WEFT_NETWORK=10.244.0.0/16\nWEFT_SUBNET=10.244.1.0/24\nWEFT_ADDRESS=10.244.1.0\nWEFT_MTU=1472\n",
			[][2]string{{"10.244.1.1", "10.244.1.254"}}, "10.244.1.1"},
		// weft0 on the first host address: the gateway moves up, the
		// range leaves weft0's address out.
		{"WEFT_NETWORK=10.244.0.0/16\nWEFT_SUBNET=10.244.1.0/24\nWEFT_ADDRESS=10.244.1.1\nWEFT_MTU=1472\n",
			[][2]string{{"10.244.1.2", "10.244.1.254"}}, "10.244.1.2"},
		{"WEFT_NETWORK=10.244.0.0/16\nWEFT_SUBNET=10.244.1.0/24\nWEFT_ADDRESS=10.244.1.100\nWEFT_MTU=1472\n",
			[][2]string{{"10.244.1.1", "10.244.1.99"}, {"10.244.1.101", "10.244.1.254"}}, "10.244.1.1"},
		{"WEFT_NETWORK=fd00:244::/48\nWEFT_SUBNET=fd00:244:0:3::/64\nWEFT_ADDRESS=fd00:244:0:3::\nWEFT_MTU=1452\n",
			[][2]string{{"fd00:244:0:3::1", "fd00:244:0:3:ffff:ffff:ffff:ffff"}}, "fd00:244:0:3::1"},
	} {
		env := mustEnv(t, c.env)
		var got [][2]string
		for _, r := range env.ranges() {
			m := r.(map[string]any)
			got = append(got, [2]string{m["rangeStart"].(string), m["rangeEnd"].(string)})
			if m["gateway"] != c.gw || m["subnet"] != env.Subnet.String() {
				t.Errorf("%s: range %v: want gateway %s", env.Subnet, m, c.gw)
			}
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s with weft0 %s: ranges %v, want %v", env.Subnet, env.Address, got, c.want)
		}
	}
}

func TestParseConfErrors(t *testing.T) {
	for _, c := range []struct {
		conf string
		code uint
		want string
	}{
		{`{"cniVersion":"1.0.0","name":"w","ipMasq":"yes"}`, types.ErrInvalidNetworkConfig, "key ipMasq: want a boolean"},
		{`{"cniVersion":"1.0.0","name":"w","subnetFile":7}`, types.ErrInvalidNetworkConfig, "key subnetFile: want a string"},
		{`{"cniVersion":"1.0.0","name":"w","subnetFile":"run/subnet.env"}`, types.ErrInvalidNetworkConfig, `key subnetFile: "run/subnet.env" is not an absolute path`},
		{`{"cniVersion":"1.0.0","name":"w","socket":"weft.sock"}`, types.ErrInvalidNetworkConfig, "key socket:"},
		{`{"cniVersion":"1.0.0","name":"w","dataDir":"x"}`, types.ErrInvalidNetworkConfig, "key dataDir:"},
		{`{"cniVersion":"1.0.0","name":"w","delegate":"bridge"}`, types.ErrInvalidNetworkConfig, "key delegate: want an object"},
		{`{"cniVersion":"1.0.0","name":"w","delegate":{"type":3}}`, types.ErrInvalidNetworkConfig, "key delegate.type:"},
		{`{"cniVersion":"1.0.0","name":"w","delegate":{"ipam":[]}}`, types.ErrInvalidNetworkConfig, "key delegate.ipam: want an object"},
		{`{"cniVersion":"1.0.0","name":"w","delegate":{"ipMasq":"on"}}`, types.ErrInvalidNetworkConfig, "key delegate.ipMasq: want a boolean"},
		{`{"cniVersion":"1.0.0","name":"w","ipam":{"type":""}}`, types.ErrInvalidNetworkConfig, "key ipam.type:"},
		{`{"cniVersion":"1.0.0"}`, types.ErrInvalidNetworkConfig, "key name: missing"},
		{`{"cniVersion":`, types.ErrDecodingFailure, "decode network config"},
	} {
		_, err := ParseConf([]byte(c.conf))
		if err == nil {
			t.Errorf("%s: accepted", c.conf)
			continue
		}
		if err.Code != c.code || !strings.Contains(err.Msg, c.want) {
			t.Errorf("%s: code %d %q, want code %d and %q", c.conf, err.Code, err.Msg, c.code, c.want)
		}
	}
	// Keys the plugin does not know are CNI's business (runtimeConfig,
	// capabilities, args): accepted.
	mustConf(t, `{"cniVersion":"1.0.0","name":"w","runtimeConfig":{"portMappings":[]},"args":{"x":1},"ipMasq":false}`)
}
