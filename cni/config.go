package cni

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Defaults of the network config keys.
const (
	DefaultSubnetFile = "/run/weft/subnet.env"
	DefaultSocket     = "/run/weft/weft.sock"
	DefaultDataDir    = "/var/lib/cni/weft"
	DefaultBridge     = "cni0"
	defaultDelegate   = "bridge"
	defaultIPAM       = "host-local"
)

// ErrSubnetMoved is the plugin-specific error code (the spec leaves 100 and
// up to plugins) of a CHECK on a container whose address comes from a subnet
// the host no longer owns: the container must be recreated.
const ErrSubnetMoved uint = 100

// NetConf is the plugin's network configuration (stdin of every verb).
// Keys other than these are allowed and ignored, as CNI expects.
type NetConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`

	// SubnetFile is the file the daemon writes (its --subnet-file).
	SubnetFile string `json:"subnetFile"`
	// Socket is the daemon's control socket (its --socket), asked whether
	// it runs and is ready.
	Socket string `json:"socket"`
	// DataDir keeps the delegate config used at ADD, per container.
	DataDir string `json:"dataDir"`
	// IPMasq masquerades traffic from containers that leaves the cluster
	// network (default true). A delegate that sets ipMasq itself takes
	// over masquerading, and weft then does none.
	IPMasq *bool `json:"ipMasq"`
	// Delegate overrides keys of the generated delegate config.
	Delegate map[string]any `json:"delegate"`
	// IPAM overrides keys of the generated IPAM config.
	IPAM map[string]any `json:"ipam"`

	RawPrevResult    map[string]any       `json:"prevResult"`
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments"`
}

// masquerades reports whether weft itself masquerades for this network.
func (n *NetConf) masquerades() bool {
	if _, ok := n.Delegate["ipMasq"]; ok {
		return false
	}
	return n.IPMasq == nil || *n.IPMasq
}

// delegateType is the delegate plugin's type (bridge unless overridden).
func (n *NetConf) delegateType() string {
	if t, ok := n.Delegate["type"].(string); ok {
		return t
	}
	return defaultDelegate
}

func configError(key, format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("weft: network config key %s: %s", key, fmt.Sprintf(format, a...)), "")
}

// ParseConf decodes and checks a network config. Errors are CNI errors with
// code 7 (invalid network config) naming the key, or 6 (decoding failure).
func ParseConf(data []byte) (*NetConf, *types.Error) {
	n := &NetConf{}
	if err := json.Unmarshal(data, n); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, configError(te.Field, "want %s, got a JSON %s", jsonKind(te.Type.Kind().String()), te.Value)
		}
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("weft: decode network config: %v", err), "")
	}
	if n.Name == "" {
		return nil, configError("name", "missing")
	}
	for _, p := range []struct {
		key string
		v   *string
		def string
	}{
		{"subnetFile", &n.SubnetFile, DefaultSubnetFile},
		{"socket", &n.Socket, DefaultSocket},
		{"dataDir", &n.DataDir, DefaultDataDir},
	} {
		if *p.v == "" {
			*p.v = p.def
		}
		if !filepath.IsAbs(*p.v) {
			return nil, configError(p.key, "%q is not an absolute path", *p.v)
		}
	}
	for _, obj := range []struct {
		key string
		m   map[string]any
	}{{"delegate", n.Delegate}, {"ipam", n.IPAM}, {"delegate.ipam", nested(n.Delegate, "ipam")}} {
		if v, ok := obj.m["type"]; ok {
			if s, ok := v.(string); !ok || s == "" {
				return nil, configError(obj.key+".type", "want a plugin name, got %v", v)
			}
		}
	}
	if v, ok := n.Delegate["ipam"]; ok {
		if _, ok := v.(map[string]any); !ok {
			return nil, configError("delegate.ipam", "want an object, got %v", v)
		}
	}
	if v, ok := n.Delegate["ipMasq"]; ok {
		if _, ok := v.(bool); !ok {
			return nil, configError("delegate.ipMasq", "want a boolean, got %v", v)
		}
	}
	return n, nil
}

func nested(m map[string]any, key string) map[string]any {
	v, _ := m[key].(map[string]any)
	return v
}

func jsonKind(goKind string) string {
	switch goKind {
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "map", "struct":
		return "an object"
	case "slice":
		return "an array"
	}
	return "a " + goKind
}

// SubnetEnv is the content of the daemon's subnet file.
type SubnetEnv struct {
	Network netip.Prefix // WEFT_NETWORK: the cluster network
	Subnet  netip.Prefix // WEFT_SUBNET: this host's subnet
	Address netip.Addr   // WEFT_ADDRESS: weft0's address
	MTU     int          // WEFT_MTU
	Encap   string       // WEFT_ENCAP
	// A dual-stack host's IPv6 network, subnet and address beside the
	// IPv4 ones (WEFT_IPV6_NETWORK, WEFT_IPV6_SUBNET, WEFT_IPV6_ADDRESS;
	// invalid otherwise, and in an IPv6-only overlay, whose one family is
	// the above).
	Network6 netip.Prefix
	Subnet6  netip.Prefix
	Address6 netip.Addr
}

// ReadSubnetFile reads and parses the subnet file. A missing file is an
// error that wraps fs.ErrNotExist.
func ReadSubnetFile(path string) (SubnetEnv, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return SubnetEnv{}, err
	}
	env, err := ParseSubnetEnv(b)
	if err != nil {
		return SubnetEnv{}, fmt.Errorf("subnet file %s: %w", path, err)
	}
	return env, nil
}

// ParseSubnetEnv parses KEY=VALUE lines (# comments, blank lines and keys
// other than WEFT_* are ignored) and checks that they fit together.
func ParseSubnetEnv(data []byte) (SubnetEnv, error) {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return SubnetEnv{}, fmt.Errorf("line %q is not KEY=VALUE", line)
		}
		kv[k] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return SubnetEnv{}, err
	}
	var env SubnetEnv
	var err error
	get := func(key string) (string, error) {
		v, ok := kv[key]
		if !ok || v == "" {
			return "", fmt.Errorf("%s is missing", key)
		}
		return v, nil
	}
	prefix := func(key string) (netip.Prefix, error) {
		v, err := get(key)
		if err != nil {
			return netip.Prefix{}, err
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%s: %w", key, err)
		}
		return p.Masked(), nil
	}
	if env.Network, err = prefix("WEFT_NETWORK"); err != nil {
		return env, err
	}
	if env.Subnet, err = prefix("WEFT_SUBNET"); err != nil {
		return env, err
	}
	v, err := get("WEFT_ADDRESS")
	if err != nil {
		return env, err
	}
	if env.Address, err = netip.ParseAddr(v); err != nil {
		return env, fmt.Errorf("WEFT_ADDRESS: %w", err)
	}
	if v, err = get("WEFT_MTU"); err != nil {
		return env, err
	}
	if env.MTU, err = strconv.Atoi(v); err != nil || env.MTU < 68 || env.MTU > 65535 {
		return env, fmt.Errorf("WEFT_MTU: %q is not an MTU (68..65535)", v)
	}
	env.Encap = kv["WEFT_ENCAP"]
	if err := checkSubnet("", env.Network, env.Subnet, env.Address); err != nil {
		return env, err
	}
	if _, dual := kv["WEFT_IPV6_SUBNET"]; dual && env.Network.Addr().Is4() {
		if env.Network6, err = prefix("WEFT_IPV6_NETWORK"); err != nil {
			return env, err
		}
		if env.Subnet6, err = prefix("WEFT_IPV6_SUBNET"); err != nil {
			return env, err
		}
		if v, err = get("WEFT_IPV6_ADDRESS"); err != nil {
			return env, err
		}
		if env.Address6, err = netip.ParseAddr(v); err != nil {
			return env, fmt.Errorf("WEFT_IPV6_ADDRESS: %w", err)
		}
		if !env.Network6.Addr().Is6() {
			return env, fmt.Errorf("WEFT_IPV6_NETWORK %s is not an IPv6 network", env.Network6)
		}
		if err := checkSubnet("IPV6_", env.Network6, env.Subnet6, env.Address6); err != nil {
			return env, err
		}
	}
	return env, nil
}

// checkSubnet checks that one family's subnet, address and network (keys
// WEFT_<family>SUBNET, ...) fit together.
func checkSubnet(family string, network, subnet netip.Prefix, addr netip.Addr) error {
	if subnet.Bits() < network.Bits() || !network.Contains(subnet.Addr()) {
		return fmt.Errorf("WEFT_%sSUBNET %s is not inside WEFT_%sNETWORK %s", family, subnet, family, network)
	}
	if !subnet.Contains(addr) {
		return fmt.Errorf("WEFT_%sADDRESS %s is not inside WEFT_%sSUBNET %s", family, addr, family, subnet)
	}
	if subnet.Addr().BitLen()-subnet.Bits() < 2 {
		return fmt.Errorf("WEFT_%sSUBNET %s is too small for a bridge and containers", family, subnet)
	}
	return nil
}

// ipv6 is the IPv6 half of a dual-stack env as an env of its own (the
// zero SubnetEnv if there is none).
func (e SubnetEnv) ipv6() SubnetEnv {
	if !e.Subnet6.IsValid() {
		return SubnetEnv{}
	}
	return SubnetEnv{Network: e.Network6, Subnet: e.Subnet6, Address: e.Address6, MTU: e.MTU, Encap: e.Encap}
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	for i := range a {
		bit := i * 8
		switch {
		case bit >= p.Bits():
			a[i] = 0xff
		case bit+8 > p.Bits():
			a[i] |= 0xff >> (p.Bits() - bit)
		}
	}
	addr, _ := netip.AddrFromSlice(a)
	return addr
}

// gateway is the bridge's address: the subnet's first host address that is
// not weft0's.
func (e SubnetEnv) gateway() netip.Addr {
	g := e.Subnet.Addr().Next()
	if g == e.Address {
		g = g.Next()
	}
	return g
}

// ranges is host-local's range set over the host's subnet: every address
// but the subnet address, the broadcast address (IPv4), the gateway
// (host-local skips a range's gateway itself) and weft0's address.
func (e SubnetEnv) ranges() []any {
	first, last := e.Subnet.Addr().Next(), lastAddr(e.Subnet)
	if e.Subnet.Addr().Is4() {
		last = last.Prev()
	}
	gw := e.gateway().String()
	rng := func(start, end netip.Addr) map[string]any {
		return map[string]any{"subnet": e.Subnet.String(), "gateway": gw,
			"rangeStart": start.String(), "rangeEnd": end.String()}
	}
	if e.Address == e.Subnet.Addr() || e.Address.Compare(last) > 0 {
		return []any{rng(first, last)}
	}
	var set []any
	if e.Address.Compare(first) > 0 {
		set = append(set, rng(first, e.Address.Prev()))
	}
	if e.Address.Compare(last) < 0 {
		set = append(set, rng(e.Address.Next(), last))
	}
	return set
}

// BuildDelegate returns the delegate's config for this network and subnet,
// in CNI version cniVersion: the generated defaults, overridden by the
// config's delegate and ipam objects.
func BuildDelegate(n *NetConf, env SubnetEnv, cniVersion string) (map[string]any, error) {
	d, err := deepCopy(n.Delegate)
	if err != nil {
		return nil, fmt.Errorf("delegate: %w", err)
	}
	setDefault := func(m map[string]any, k string, v any) {
		if _, ok := m[k]; !ok {
			m[k] = v
		}
	}
	d["name"] = n.Name
	d["cniVersion"] = cniVersion
	setDefault(d, "type", defaultDelegate)
	if d["type"] == defaultDelegate {
		setDefault(d, "bridge", DefaultBridge)
		setDefault(d, "isGateway", true)
		setDefault(d, "isDefaultGateway", true)
		setDefault(d, "hairpinMode", true)
		// The bridge takes the gateway of the host's current subnet even
		// if it still has the one of a subnet the host gave up.
		setDefault(d, "forceAddress", true)
	}
	setDefault(d, "mtu", env.MTU)
	// weft masquerades itself (see masquerades); the bridge plugin's
	// ipMasq would also hide container addresses from other hosts.
	setDefault(d, "ipMasq", false)

	ipam, err := deepCopy(n.IPAM)
	if err != nil {
		return nil, fmt.Errorf("ipam: %w", err)
	}
	for k, v := range nested(d, "ipam") {
		ipam[k] = v
	}
	setDefault(ipam, "type", defaultIPAM)
	if ipam["type"] == defaultIPAM {
		_, hasSubnet := ipam["subnet"]
		_, hasRanges := ipam["ranges"]
		route := map[string]any{"dst": env.Network.String()}
		routes := []any{route}
		var route6 map[string]any
		if env.Subnet6.IsValid() {
			// Dual stack: an address of each family, a route to each
			// network.
			route6 = map[string]any{"dst": env.Network6.String()}
			routes = append(routes, route6)
		}
		if !hasSubnet && !hasRanges {
			ranges := []any{env.ranges()}
			// With the gateway named: the bridge plugin's CHECK (before
			// v1.2) looks routes up by gateway and misses a route without.
			route["gw"] = env.gateway().String()
			if route6 != nil {
				ranges = append(ranges, env.ipv6().ranges())
				route6["gw"] = env.ipv6().gateway().String()
			}
			ipam["ranges"] = ranges
		}
		setDefault(ipam, "routes", routes)
	}
	d["ipam"] = ipam
	return d, nil
}

// deepCopy copies a decoded JSON object (nil gives an empty one).
func deepCopy(m map[string]any) (map[string]any, error) {
	out := map[string]any{}
	if m == nil {
		return out, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}
