package config

import (
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/family"
)

func TestParseDualStack(t *testing.T) {
	s, _, _, err := Parse([]string{"--name", "a", "--insecure-gossip", "--network", "fd00:10:244::/56", "--network", "10.244.0.0/16",
		"--subnet", "fd00:10:244:1::/64,10.244.1.0/24", "--peer", "name=k,subnet=10.244.9.0/24,subnet6=fd00:10:244:9::/64,ip=192.0.2.9"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if family.First(s.Networks) != netip.MustParsePrefix("10.244.0.0/16") || family.Second(s.Networks) != netip.MustParsePrefix("fd00:10:244::/56") ||
		family.First(s.Subnets) != netip.MustParsePrefix("10.244.1.0/24") || family.Second(s.Subnets) != netip.MustParsePrefix("fd00:10:244:1::/64") || s.AutoSubnet {
		t.Errorf("networks %s %s, subnets %s %s (IPv4 first)", family.First(s.Networks), family.Second(s.Networks), family.First(s.Subnets), family.Second(s.Subnets))
	}
	if p := s.Live.Peers[0]; family.Second(p.Subnets) != netip.MustParsePrefix("fd00:10:244:9::/64") {
		t.Errorf("static peer %+v", p)
	}

	// Automatic: a pool per family, /24 and /64 by default; bounds go to
	// the pool of their family.
	s, _, _, err = Parse([]string{"--name", "a", "--insecure-gossip", "--network", "10.244.0.0/16,fd00:10:244::/56", "--subnet-min", "fd00:10:244:10::", "--subnet-len", "25"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !s.AutoSubnet || s.Pools[0].Bits != 25 || s.Pools[1].Bits != 64 || s.Pools[1].Network != family.Second(s.Networks) || s.Pools[1].Min != netip.MustParseAddr("fd00:10:244:10::") || s.Pools[0].Min.IsValid() {
		t.Errorf("pools %+v %+v", s.Pools[0], s.Pools[1])
	}
	s, _, _, err = Parse([]string{"--name", "a", "--insecure-gossip", "--network", "10.244.0.0/16,fd00:10:244::/48", "--subnet-len6", "56"}, io.Discard)
	if err != nil || s.Pools[1].Bits != 56 || s.Pools[0].Bits != 24 {
		t.Errorf("--subnet-len6 56: %+v, %v", s.Pools[1], err)
	}
	// IPv6 only: --subnet-len or --subnet-len6.
	for _, flag := range []string{"--subnet-len", "--subnet-len6"} {
		s, _, _, err = Parse([]string{"--name", "a", "--insecure-gossip", "--network", "fd00:10:244::/48", flag, "60"}, io.Discard)
		if err != nil || s.Pools[0].Bits != 60 || family.Second(s.Networks).IsValid() {
			t.Errorf("IPv6 only, %s 60: %+v, %v", flag, s.Pools[0], err)
		}
	}

	// The config file: a list, or a single string as before.
	p := writeConfig(t, "name: a\nnetwork: [10.244.0.0/16, \"fd00:10:244::/56\"]\nsubnet: [10.244.1.0/24, \"fd00:10:244:1::/64\"]\nsubnetLen6: 64\n")
	if s, _, _, err = Parse([]string{"--config", p, "--insecure-gossip"}, io.Discard); err != nil || family.Second(s.Subnets) != netip.MustParsePrefix("fd00:10:244:1::/64") {
		t.Errorf("YAML lists: %+v, %v", s, err)
	}
	p = writeConfig(t, "name: a\nnetwork: 10.244.0.0/16\nsubnet: \"\"\nsubnetMin: \"\"\n")
	if s, _, _, err = Parse([]string{"--config", p, "--insecure-gossip"}, io.Discard); err != nil || !s.AutoSubnet {
		t.Errorf("YAML empty strings: %+v, %v", s, err)
	}
	p = writeConfig(t, "name: a\nnetwork: 10.244.0.0/16\nsubnet: 10.244.1.0/24\n")
	if s, _, _, err = Parse([]string{"--config", p, "--insecure-gossip"}, io.Discard); err != nil || family.First(s.Subnets) != netip.MustParsePrefix("10.244.1.0/24") || family.Second(s.Networks).IsValid() {
		t.Errorf("YAML strings: %+v, %v", s, err)
	}
}

// TestParseDualStackErrors: the messages name the flag or key and the value.
func TestParseDualStackErrors(t *testing.T) {
	dual := []string{"--name", "a", "--network", "10.244.0.0/16", "--network", "fd00:10:244::/56"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--network", "10.244.0.0/16,10.245.0.0/16"},
			`invalid --network "10.245.0.0/16": a second IPv4 network beside 10.244.0.0/16: give one network per family`},
		{[]string{"--network", "fd00:1::/56,fd00:2::/56"},
			`invalid --network "fd00:2::/56": a second IPv6 network beside fd00:1::/56: give one network per family`},
		{[]string{"--network", "10.244.0.0/16,fd00::/56,10.1.0.0/16"}, `invalid --network "10.1.0.0/16": at most two networks: one IPv4 and one IPv6`},
		{append(dual, "--subnet", "10.244.1.0/24,fd00:10:245:1::/64"), `invalid --subnet "fd00:10:245:1::/64": not inside the network fd00:10:244::/56`},
		{append(dual, "--subnet", "10.245.1.0/24,fd00:10:244:1::/64"), `invalid --subnet "10.245.1.0/24": not inside the network 10.244.0.0/16`},
		{append(dual, "--subnet", "10.244.1.0/24"), `missing --subnet for the network fd00:10:244::/56: give a subnet for each network, or none (automatic)`},
		{append(dual, "--subnet", "10.244.1.0/24,10.244.2.0/24"), `invalid --subnet "10.244.2.0/24": a second IPv4 subnet beside 10.244.1.0/24: give one subnet per network`},
		{[]string{"--network", "10.244.0.0/16", "--subnet", "fd00:10:244:1::/64"},
			`invalid --subnet "fd00:10:244:1::/64": an IPv6 subnet, but the overlay has no IPv6 network (--network 10.244.0.0/16)`},
		{[]string{"--network", "fd00:10:244::/56", "--subnet", "10.244.1.0/24"},
			`invalid --subnet "10.244.1.0/24": an IPv4 subnet, but the overlay has no IPv4 network (--network fd00:10:244::/56)`},
		{[]string{"--network", "10.244.0.0/16", "--subnet-len6", "64"}, `invalid --subnet-len6 "64": the overlay has no IPv6 network (--network 10.244.0.0/16)`},
		{append(dual, "--subnet-len6", "48"), `invalid --subnet-len6 "48": subnet length /48 must be longer than the network's /56`},
		{append(dual, "--subnet-min", "fd00:10:245::"), `invalid --subnet-min "fd00:10:245::": subnet minimum fd00:10:245:: is outside fd00:10:244::/56`},
		{append(dual, "--subnet-max", "10.244.9.0,10.244.10.0"), `invalid --subnet-max "10.244.10.0": a second bound of its family beside "10.244.9.0"`},
		{append(dual, "--subnet", "10.244.1.0/24,fd00:10:244:1::/64", "--peer", "name=k,subnet=10.244.9.0/24,subnet6=10.244.10.0/24,ip=192.0.2.9"),
			`subnet6 10.244.10.0/24: want an IPv6 subnet beside an IPv4 subnet`},
		{append(dual, "--subnet", "10.244.1.0/24,fd00:10:244:1::/64", "--peer", "name=k,subnet=fd00:10:245:9::/64,ip=192.0.2.9"),
			`subnet fd00:10:245:9::/64 is not inside the network fd00:10:244::/56`},
	} {
		_, _, _, err := Parse(tc.args, io.Discard)
		var ue *UsageError
		if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v:\n got %v\nwant usage error containing %q", tc.args, err, tc.want)
		}
	}
	p := writeConfig(t, "name: a\nnetwork: [10.244.0.0/16, 10.245.0.0/16]\n")
	if _, _, _, err := Parse([]string{"--config", p}, io.Discard); err == nil ||
		!strings.Contains(err.Error(), `invalid network (in `+p+`) "10.245.0.0/16": a second IPv4 network beside 10.244.0.0/16`) {
		t.Errorf("config file: %v", err)
	}
}
