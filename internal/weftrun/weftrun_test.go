package weftrun

import (
	"encoding/base64"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRunArgsKeepFilesInTheDirectory(t *testing.T) {
	parent := t.TempDir()
	f, err := FilesIn(parent, "a")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(f.Dir); err != nil || !fi.IsDir() {
		t.Fatalf("FilesIn did not create %s: %v", f.Dir, err)
	}
	args := RunArgs(f, Node{
		Name:        "a",
		Network:     netip.MustParsePrefix("10.244.0.0/16"),
		Subnet:      netip.MustParsePrefix("10.244.1.0/24"),
		PublicIP:    netip.MustParseAddr("192.168.50.1"),
		Join:        []string{"192.168.50.2", "192.168.50.3"},
		MetricsAddr: netip.MustParseAddrPort("192.168.50.1:9586"),
	}, "--encap", "vxlan")
	want := map[string]string{
		"--socket":          filepath.Join(parent, "a", "weft.sock"),
		"--subnet-file":     filepath.Join(parent, "a", "subnet.env"),
		"--state-dir":       filepath.Join(parent, "a", "state"),
		"--name":            "a",
		"--subnet":          "10.244.1.0/24",
		"--join":            "192.168.50.2,192.168.50.3",
		"--metrics-addr":    "192.168.50.1:9586",
		"--log-level":       "info",
		"--encap":           "vxlan",
		"--gossip-key-file": filepath.Join(parent, "gossip.key"),
	}
	if args[0] != "run" {
		t.Fatalf("args start with %q, want run: %q", args[0], args)
	}
	for flag, v := range want {
		i := slices.Index(args, flag)
		if i < 0 || i+1 >= len(args) || args[i+1] != v {
			t.Errorf("%s: want %q in %q", flag, v, args)
		}
	}
	for _, a := range args {
		for _, host := range HostPaths {
			if strings.HasPrefix(a, host) {
				t.Errorf("argument %q is under the host's %s", a, host)
			}
		}
	}
}

func TestRunArgsAutomaticSubnet(t *testing.T) {
	f, err := FilesIn(t.TempDir(), "b")
	if err != nil {
		t.Fatal(err)
	}
	args := RunArgs(f, Node{Name: "b", Network: netip.MustParsePrefix("10.244.0.0/16")})
	for _, flag := range []string{"--subnet", "--public-ip", "--join", "--metrics-addr"} {
		if slices.Contains(args, flag) {
			t.Errorf("%s given without a value for it: %q", flag, args)
		}
	}
}

func TestRunArgsWithoutFilesPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("RunArgs with the zero Files did not panic")
		}
	}()
	RunArgs(Files{}, Node{Name: "a"})
}

func TestFilesInRefusesBadNames(t *testing.T) {
	for _, tc := range []struct{ parent, name string }{{"", "a"}, {t.TempDir(), ""}, {t.TempDir(), "a/b"}} {
		if _, err := FilesIn(tc.parent, tc.name); err == nil {
			t.Errorf("FilesIn(%q, %q) did not fail", tc.parent, tc.name)
		}
	}
}

func TestFilesYAML(t *testing.T) {
	f, err := FilesIn(t.TempDir(), "a")
	if err != nil {
		t.Fatal(err)
	}
	y := f.YAML()
	for _, key := range []string{"socket: \"" + f.Socket + "\"\n", "subnetFile: \"" + f.SubnetFile + "\"\n", "stateDir: \"" + f.StateDir + "\"\n"} {
		if !strings.Contains(y, key) {
			t.Errorf("YAML lacks %q:\n%s", key, y)
		}
	}
}

// The daemons of one directory share one gossip key, written once, mode
// 0600; RunArgs passes it unless the node asks for --insecure-gossip, and
// the YAML names it.
func TestGossipKeyShared(t *testing.T) {
	parent := t.TempDir()
	a, err := FilesIn(parent, "a")
	if err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(a.GossipKey)
	if err != nil {
		t.Fatal(err)
	}
	b, err := FilesIn(parent, "b")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(b.GossipKey)
	if a.GossipKey != filepath.Join(parent, "gossip.key") || b.GossipKey != a.GossipKey || string(again) != string(first) {
		t.Fatalf("keys of a and b: %s %q, %s %q; want one shared file", a.GossipKey, first, b.GossipKey, again)
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(first))); err != nil || len(k) != 32 {
		t.Errorf("key %q: %d bytes, %v; want 32", first, len(k), err)
	}
	if fi, err := os.Stat(a.GossipKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v, want 0600", fi.Mode(), err)
	}
	if other, _ := FilesIn(t.TempDir(), "a"); other.GossipKey == a.GossipKey {
		t.Errorf("another directory shares the key file")
	}

	n := Node{Name: "a", Network: netip.MustParsePrefix("10.244.0.0/16")}
	args := RunArgs(a, n)
	if i := slices.Index(args, "--gossip-key-file"); i < 0 || args[i+1] != a.GossipKey || slices.Contains(args, "--insecure-gossip") {
		t.Errorf("RunArgs: %q, want --gossip-key-file %s", args, a.GossipKey)
	}
	n.InsecureGossip = true
	args = RunArgs(a, n)
	if slices.Contains(args, "--gossip-key-file") || !slices.Contains(args, "--insecure-gossip") {
		t.Errorf("RunArgs with InsecureGossip: %q", args)
	}
	if y := a.YAML(); !strings.Contains(y, "gossipKeyFile: \""+a.GossipKey+"\"\n") {
		t.Errorf("YAML lacks the gossip key:\n%s", y)
	}
}
