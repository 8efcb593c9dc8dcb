// Package weftrun builds the command line of a weft daemon that a test, a
// benchmark or the demo starts, so that every such daemon keeps all of its
// files (control socket, subnet file, state directory) inside its caller's
// temporary directory and never touches the host's own weft files under
// /run/weft and /var/lib/weft (HostPaths).
//
// Every caller goes through RunArgs, whose first argument is the daemon's
// Files: a daemon cannot be started without them. weft refuses to run
// without a gossip key, so the daemons of one caller's directory share one
// (GossipKeyIn), as a cluster's hosts do.
package weftrun

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/weftnet/weft/internal/keyfile"
)

// HostPaths are where a weft daemon writes when it is not told otherwise
// (the defaults of --socket, --subnet-file and --state-dir): the host's own
// weft files, which nothing started by a test may touch.
var HostPaths = []string{"/run/weft", "/var/lib/weft"}

// Files are the paths one daemon writes, all inside Dir.
type Files struct {
	Dir        string // the daemon's own directory
	Socket     string // --socket: the control socket for weft status
	SubnetFile string // --subnet-file
	StateDir   string // --state-dir: the automatic subnet's lease
	// GossipKey is the lab's shared gossip key file (GossipKeyIn of the
	// parent directory): --gossip-key-file.
	GossipKey string
}

// GossipKeyIn returns parent/gossip.key, the gossip key file every daemon
// of parent shares, and writes it with a fresh key (mode 0600) if it does
// not exist yet. It is safe to call again, and from several goroutines: the
// first writer's key stays.
func GossipKeyIn(parent string) (string, error) {
	path := filepath.Join(parent, "gossip.key")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("weftrun: gossip key: %w", err)
	}
	err := keyfile.WriteAtomic(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), true)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("weftrun: gossip key: %w", err)
	}
	return path, nil
}

// FilesIn returns the files of daemon name in parent/name and creates that
// directory. parent is the caller's temporary directory (a netlab lab's
// Dir, say), removed with it.
func FilesIn(parent, name string) (Files, error) {
	if parent == "" || name == "" || strings.ContainsRune(name, filepath.Separator) {
		return Files{}, fmt.Errorf("weftrun: files of daemon %q in %q: want a directory and a plain name", name, parent)
	}
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Files{}, fmt.Errorf("weftrun: %w", err)
	}
	key, err := GossipKeyIn(parent)
	if err != nil {
		return Files{}, err
	}
	return Files{
		Dir:        dir,
		Socket:     filepath.Join(dir, "weft.sock"),
		SubnetFile: filepath.Join(dir, "subnet.env"),
		StateDir:   filepath.Join(dir, "state"),
		GossipKey:  key,
	}, nil
}

// Flags are the flags that keep the daemon's files in f.
func (f Files) Flags() []string {
	return []string{"--socket", f.Socket, "--subnet-file", f.SubnetFile, "--state-dir", f.StateDir}
}

// YAML is the same as Flags, and the lab's gossip key, as config file keys
// (one per line), for a daemon started with --config.
func (f Files) YAML() string {
	y := fmt.Sprintf("socket: %s\nsubnetFile: %s\nstateDir: %s\n",
		strconv.Quote(f.Socket), strconv.Quote(f.SubnetFile), strconv.Quote(f.StateDir))
	if f.GossipKey != "" {
		y += fmt.Sprintf("gossipKeyFile: %s\n", strconv.Quote(f.GossipKey))
	}
	return y
}

// Node is what distinguishes one daemon of a lab from another.
type Node struct {
	Name    string
	Network netip.Prefix
	Subnet  netip.Prefix // invalid: choose one automatically
	// Network6 and Subnet6 make a dual-stack daemon: the IPv6 network
	// beside Network, and its subnet (invalid: automatic).
	Network6    netip.Prefix
	Subnet6     netip.Prefix
	PublicIP    netip.Addr     // invalid: follow the underlay interface (see Extra)
	Join        []string       // seeds, host[:port]
	MetricsAddr netip.AddrPort // invalid: weft's default (127.0.0.1:9586 in the daemon's namespace)
	LogLevel    string         // empty: info
	// InsecureGossip runs the daemon without a gossip key
	// (--insecure-gossip) instead of with the lab's (Files.GossipKey).
	InsecureGossip bool
	// PKIDir is the daemon's --pki-dir (InstallPKI writes it); empty:
	// no CA.
	PKIDir string
}

// RunArgs returns the arguments of "weft run" (without the program name)
// for daemon n with its files in f and the lab's gossip key (or
// --insecure-gossip if n asks), then extra. A --gossip-key-file in extra
// wins over the lab's (the later flag does).
func RunArgs(f Files, n Node, extra ...string) []string {
	if f.Dir == "" || f.Socket == "" || f.SubnetFile == "" || f.StateDir == "" {
		// A programming error: the zero Files would mean the host's paths.
		panic("weftrun: RunArgs without Files (use FilesIn)")
	}
	args := []string{"run", "--name", n.Name, "--network", n.Network.String()}
	if n.Network6.IsValid() {
		args = append(args, "--network", n.Network6.String())
	}
	if n.Subnet.IsValid() {
		args = append(args, "--subnet", n.Subnet.String())
	}
	if n.Subnet6.IsValid() {
		args = append(args, "--subnet", n.Subnet6.String())
	}
	if n.PublicIP.IsValid() {
		args = append(args, "--public-ip", n.PublicIP.String())
	}
	if len(n.Join) > 0 {
		args = append(args, "--join", strings.Join(n.Join, ","))
	}
	if n.MetricsAddr.IsValid() {
		args = append(args, "--metrics-addr", n.MetricsAddr.String())
	}
	level := n.LogLevel
	if level == "" {
		level = "info"
	}
	args = append(args, f.Flags()...)
	switch {
	case n.InsecureGossip:
		args = append(args, "--insecure-gossip")
	case f.GossipKey != "":
		args = append(args, "--gossip-key-file", f.GossipKey)
	default:
		panic("weftrun: RunArgs with Files without a GossipKey (use FilesIn)")
	}
	if n.PKIDir != "" {
		args = append(args, "--pki-dir", n.PKIDir)
	}
	args = append(args, "--log-level", level, "--log-format", "text")
	return append(args, extra...)
}
