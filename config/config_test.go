package config

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/family"
)

// bare is a valid command line but for the gossip key; base runs without
// one, knowingly.
var (
	bare = []string{"--name", "a", "--network", "10.244.0.0/16", "--subnet", "10.244.1.0/24"}
	base = []string{"--name", "a", "--network", "10.244.0.0/16", "--subnet", "10.244.1.0/24", "--insecure-gossip"}
)

func TestParseRunDefaults(t *testing.T) {
	s, _, _, err := Parse(base, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Port != 8285 || s.Encap != encap.UDP || s.GossipPort != 7946 || s.TUN != "weft0" || s.MetricsAddr != "127.0.0.1:9586" ||
		s.VNI != 1 || !s.VTEPMAC.IsZero() || s.Socket != "/run/weft/weft.sock" || !s.Offload || s.MTU != 0 ||
		s.StateDir != "/var/lib/weft" || s.SubnetFile != "/run/weft/subnet.env" || s.AutoSubnet || s.SubnetReclaim != 24*time.Hour {
		t.Errorf("defaults: %+v", s)
	}
	s, _, _, err = Parse(append(base, "--encap", "vxlan"), io.Discard)
	if err != nil || s.Port != 8472 {
		t.Errorf("vxlan default port %d, %v", s.Port, err)
	}
}

// TestParseRunErrors: every bad input is refused with a message that names
// the flag (or the key) and the value.
func TestParseRunErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--subnet", "10.244.1.0/24"}, "missing --network: the overlay network CIDR, e.g. 10.244.0.0/16"},
		{[]string{"--network", "10.244.0.0/16", "--subnet-len", "16"}, `invalid --subnet-len "16": subnet length /16 must be longer than the network's /16`},
		{[]string{"--network", "10.244.0.0/16", "--subnet-min", "10.9.0.0"}, `invalid --subnet-min "10.9.0.0": subnet minimum 10.9.0.0 is outside 10.244.0.0/16`},
		{[]string{"--network", "10.244.0.0/16", "--subnet-min", "10.244.9.0", "--subnet-max", "10.244.2.0"}, `invalid --subnet-max "10.244.2.0": subnet minimum 10.244.9.0 is above the maximum 10.244.2.0`},
		{[]string{"--network", "10.244.0.0/16", "--subnet-max", "x"}, `invalid --subnet-max "x": not an address such as 10.244.0.0`},
		{append(base, "--subnet-reclaim", "soon"), `invalid --subnet-reclaim "soon": want a duration such as 24h or 90s`},
		{append(bare, "--gossip-key-file", "/nonexistent/key"), `invalid --gossip-key-file "/nonexistent/key": stat /nonexistent/key: no such file or directory; install the cluster's gossip key there: make it once (weft keygen > /nonexistent/key; chmod 600 /nonexistent/key) and copy the same file to every host`},
		{[]string{"--network", "10.244.0.0/33", "--subnet", "10.244.1.0/24"}, `invalid --network "10.244.0.0/33": not a CIDR such as 10.244.0.0/16`},
		{[]string{"--network", "10.244.1.0/16", "--subnet", "10.244.1.0/24"}, `invalid --network "10.244.1.0/16": host bits set (did you mean 10.244.0.0/16?)`},
		{[]string{"--network", "10.244.0.0/16", "--subnet", "10.245.1.0/24"}, `invalid --subnet "10.245.1.0/24": not inside the network 10.244.0.0/16`},
		{[]string{"--network", "10.244.0.0/16", "--subnet", "10.0.0.0/8"}, `invalid --subnet "10.0.0.0/8": not inside the network 10.244.0.0/16`},
		{append(base, "--public-ip", "1.2.3"), `invalid --public-ip "1.2.3": not an IP address`},
		{append(base, "--port", "70000"), `invalid --port "70000": want 1-65535`},
		{append(base, "--port", "x"), `invalid value "x" for flag -port`},
		{append(base, "--encap", "gre"), `invalid --encap "gre": want udp, vxlan or none`},
		{append(base, "--vni", "16777216"), `invalid --vni "16777216": want 1-16777215`},
		{append(base, "--vtep-mac", "01:00:5e:00:00:01"), `invalid --vtep-mac "01:00:5e:00:00:01": want a unicast MAC`},
		{append(base, "--gossip-port", "8285"), `invalid --gossip-port "8285": the same UDP port as the data plane (8285)`},
		{append(base, "--join", "10.0.0.1:99999"), `invalid --join "10.0.0.1:99999": port "99999": want 1-65535`},
		{append(base, "--tun", "a-very-long-interface-name"), `invalid --tun "a-very-long-interface-name": want an interface name of 1-15 characters`},
		{append(base, "--iface", "eth/0"), `invalid --iface "eth/0"`},
		{append(base, "--mtu", "100"), `invalid --mtu "100": want 576-65535`},
		{append(base, "--metrics-addr", "9586"), `invalid --metrics-addr "9586": want host:port`},
		{append(base, "--log-level", "loud"), `invalid --log-level "loud": want debug, info, warn or error`},
		{append(base, "--log-format", "xml"), `invalid --log-format "xml": want text or json`},
		{append(base, "--peer", "name=k,subnet=10.244.9.0/24"), `invalid --peer "name=k,subnet=10.244.9.0/24,ip=,mac=": ip "" is not an IP address`},
		{append(base, "--peer", "name=k,subnet=10.9.9.0/24,ip=192.0.2.9"), `subnet 10.9.9.0/24 is not inside the network 10.244.0.0/16`},
		{append(base, "--encap", "vxlan", "--peer", "name=k,subnet=10.244.9.0/24,ip=192.0.2.9"), `mac is required with encap vxlan`},
		{append(base, "--peer", "name=a,subnet=10.244.9.0/24,ip=192.0.2.9"), `name "a" is used twice`},
		{append(base, "--peer", "nom=k"), `invalid value "nom=k" for flag -peer: unknown key "nom"`},
		{append(base, "--offload", "maybe"), `invalid value "maybe" for flag -offload`},
		{append(base, "--workers", "0"), `invalid --workers "0": want 1-256 (the kernel's limit of TUN queues)`},
		{append(base, "--workers", "257"), `invalid --workers "257": want 1-256`},
		{append(base, "--workers", "two"), `invalid value "two" for flag -workers`},
		{append(base, "--busy-poll", "-5us"), `invalid --busy-poll "-5us": want a duration from 0 to 1s`},
		{append(base, "--partial-checksums", "perhaps"), `invalid value "perhaps" for flag -partial-checksums`},
		{append(base, "extra"), `unexpected argument "extra"`},
		{[]string{"--config", "/nonexistent/weft.yaml"}, `--config "/nonexistent/weft.yaml": open /nonexistent/weft.yaml: no such file or directory`},
	} {
		_, _, _, err := Parse(tc.args, io.Discard)
		var ue *UsageError
		if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v:\n got %v\nwant usage error containing %q", tc.args, err, tc.want)
		}
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "weft.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFileAndFlagOverride(t *testing.T) {
	p := writeConfig(t, `
name: a
network: 10.244.0.0/16
subnet: 10.244.1.0/24
port: 9000
join: [192.0.2.2, "192.0.2.3:7000"]
logLevel: debug
insecureGossip: true
directRouting: true
offload: false
peers:
  - {name: k, subnet: 10.244.9.0/24, ip: 192.0.2.9, mac: "02:00:00:00:00:09"}
`)
	s, _, _, err := Parse([]string{"--config", p, "--port", "9001"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Port != 9001 || s.Live.LogLevel.String() != "DEBUG" || !s.DirectRouting || s.Offload || len(s.Live.Join) != 2 || s.Live.Join[1] != "192.0.2.3:7000" {
		t.Errorf("settings %+v", s)
	}
	if len(s.Live.Peers) != 1 || family.First(s.Live.Peers[0].Subnets) != netip.MustParsePrefix("10.244.9.0/24") || s.Live.Peers[0].Port != 9001 {
		t.Errorf("peers %+v", s.Live.Peers)
	}
}

func TestConfigFileErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"network: 10.244.0.0/16\nsubnet: 10.244.1.0/24\nsubnt: x\n", "field subnt not found"},
		{"network: 10.244.0.0/16\nsubnet: 10.244.1.0/24\nport: many\n", "cannot unmarshal !!str `many` into int"},
		{"network: 10.244.0.0/16\nsubnet: 10.245.1.0/24\n", `invalid subnet (in `},
		{"network: 10.244.0.0/16\nsubnet: 10.244.1.0/24\npeers: [{name: k, subnet: bad, ip: 192.0.2.1}]\n", "invalid peers[0] (in "},
		{"network: [\n", "config file"},
	} {
		p := writeConfig(t, "name: a\n"+tc.text)
		_, _, _, err := Parse([]string{"--config", p}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %q", tc.text, err, tc.want)
		}
	}
}

func TestCheckAndCleanupFlags(t *testing.T) {
	_, check, _, err := Parse(append(base, "--check"), io.Discard)
	if err != nil || !check {
		t.Errorf("--check: %v %v", check, err)
	}
	s, _, cleanup, err := Parse([]string{"--cleanup", "--tun", "weft9"}, io.Discard)
	if err != nil || !cleanup || s.TUN != "weft9" {
		t.Errorf("--cleanup: %v %+v %v", cleanup, s, err)
	}
}

func TestDataPathSettings(t *testing.T) {
	s, _, _, err := Parse(base, io.Discard)
	if err != nil || s.Workers != runtime.NumCPU() || s.BusyPoll != 0 || !s.PartialChecksums {
		t.Fatalf("defaults: workers %d, busy poll %v, partial checksums %v, %v", s.Workers, s.BusyPoll, s.PartialChecksums, err)
	}
	s, _, _, err = Parse(append(base, "--workers", "3", "--busy-poll", "40us", "--partial-checksums=false"), io.Discard)
	if err != nil || s.Workers != 3 || s.BusyPoll != 40*time.Microsecond || s.PartialChecksums {
		t.Fatalf("set: workers %d, busy poll %v, partial checksums %v, %v", s.Workers, s.BusyPoll, s.PartialChecksums, err)
	}
	p := writeConfig(t, "name: a\nnetwork: 10.244.0.0/16\nsubnet: 10.244.1.0/24\nworkers: 0\n")
	if _, _, _, err := Parse([]string{"--config", p}, io.Discard); err == nil || !strings.Contains(err.Error(), `invalid workers (in `) {
		t.Errorf("workers: 0 in the file: %v", err)
	}
	// One packet per syscall has one worker and full checksums.
	s, _, _, _ = Parse(append(base, "--offload=false"), io.Discard)
	if s.Workers != 1 || s.PartialChecksums {
		t.Errorf("--offload=false: workers %d, partial checksums %v", s.Workers, s.PartialChecksums)
	}
	if _, _, _, err := Parse(append(base, "--offload=false", "--workers", "4"), io.Discard); err == nil || !strings.Contains(err.Error(), `invalid --workers "4": --offload=false runs one worker`) {
		t.Errorf("--offload=false --workers 4: %v", err)
	}
}

func TestAutoSubnetSettings(t *testing.T) {
	s, _, _, err := Parse([]string{"--network", "10.244.0.0/16", "--subnet-min", "10.244.10.0/24", "--subnet-max", "10.244.20.0", "--insecure-gossip"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !s.AutoSubnet || s.Pools[0].Bits != 24 || s.Pools[0].Min.String() != "10.244.10.0" || s.Pools[0].Max.String() != "10.244.20.0" {
		t.Errorf("pool %+v auto %v", s.Pools[0], s.AutoSubnet)
	}
	s, _, _, err = Parse([]string{"--network", "fd00:10::/48", "--insecure-gossip"}, io.Discard)
	if err != nil || s.Pools[0].Bits != 64 {
		t.Errorf("IPv6 default subnet length: %+v %v", s.Pools[0], err)
	}
}

func TestGossipKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	k32 := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	k16 := "AAECAwQFBgcICQoLDA0ODw=="
	good := write("good", "# primary first\n"+k32+"\n\n"+k16+"\n")
	s, _, _, err := Parse(append(bare, "--gossip-key-file", good), io.Discard)
	if err != nil || len(s.Live.GossipKeys) != 2 || len(s.Live.GossipKeys[0]) != 32 || len(s.Live.GossipKeys[1]) != 16 {
		t.Fatalf("keys %d %v", len(s.Live.GossipKeys), err)
	}
	for name, tc := range map[string]struct{ text, want string }{
		"empty":  {"# nothing\n", "no key in the file"},
		"short":  {"AAEC\n", "line 1: key is 3 bytes, want 16, 24 or 32"},
		"base64": {k32 + "\n!!!\n", "line 2 is not base64"},
	} {
		p := write(name, tc.text)
		_, _, _, err := Parse(append(bare, "--gossip-key-file", p), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "invalid --gossip-key-file") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

func TestCleanupToleratesBrokenConfig(t *testing.T) {
	p := writeConfig(t, "tun: weft7\nsubnt: typo\n")
	s, _, cleanup, err := Parse([]string{"--cleanup", "--config", p}, io.Discard)
	if err != nil || !cleanup || s.TUN != "weft7" {
		t.Errorf("--cleanup with a broken config: %+v %v", s, err)
	}
}

// --pprof-addr serves pprof on its own address; --pprof is shorthand for
// the default one; a bad value, or the metrics address, is refused naming
// the key and the value.
func TestPProfAddr(t *testing.T) {
	s, _, _, err := Parse(base, io.Discard)
	if err != nil || s.PProfAddr != "" {
		t.Errorf("default: %q %v, want off", s.PProfAddr, err)
	}
	s, _, _, err = Parse(append(base, "--pprof"), io.Discard)
	if err != nil || s.PProfAddr != "127.0.0.1:9587" {
		t.Errorf("--pprof: %q %v", s.PProfAddr, err)
	}
	s, _, _, err = Parse(append(base, "--pprof", "--pprof-addr", "127.0.0.1:7000"), io.Discard)
	if err != nil || s.PProfAddr != "127.0.0.1:7000" {
		t.Errorf("--pprof-addr over --pprof: %q %v", s.PProfAddr, err)
	}
	p := writeConfig(t, "name: a\nnetwork: 10.244.0.0/16\ninsecureGossip: true\npprofAddr: \"[::1]:7001\"\n")
	if s, _, _, err = Parse([]string{"--config", p}, io.Discard); err != nil || s.PProfAddr != "[::1]:7001" {
		t.Errorf("pprofAddr in the file: %q %v", s.PProfAddr, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(base, "--pprof-addr", "7000"), `invalid --pprof-addr "7000": want host:port, e.g. 127.0.0.1:9587`},
		{append(base, "--pprof-addr", "127.0.0.1:99999"), `invalid --pprof-addr "127.0.0.1:99999"`},
		{append(base, "--pprof-addr", "127.0.0.1:9586"), `invalid --pprof-addr "127.0.0.1:9586": the metrics address (--metrics-addr)`},
	} {
		if _, _, _, err := Parse(tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
	p = writeConfig(t, "name: a\nnetwork: 10.244.0.0/16\ninsecureGossip: true\npprofAddr: nowhere\n")
	if _, _, _, err := Parse([]string{"--config", p}, io.Discard); err == nil || !strings.Contains(err.Error(), `invalid pprofAddr (in `+p+`) "nowhere"`) {
		t.Errorf("bad pprofAddr in the file: %v", err)
	}
}
