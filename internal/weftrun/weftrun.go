// Package weftrun builds the command line of a weft daemon that a test, a
// benchmark or the demo starts, so that every such daemon keeps all of its
// files (control socket, subnet file, state directory) inside its caller's
// temporary directory and never touches the host's own weft files under
// /run/weft and /var/lib/weft (HostPaths).
//
// Every caller goes through RunArgs, whose first argument is the daemon's
// Files: a daemon cannot be started without them.
package weftrun

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	return Files{
		Dir:        dir,
		Socket:     filepath.Join(dir, "weft.sock"),
		SubnetFile: filepath.Join(dir, "subnet.env"),
		StateDir:   filepath.Join(dir, "state"),
	}, nil
}

// Flags are the flags that keep the daemon's files in f.
func (f Files) Flags() []string {
	return []string{"--socket", f.Socket, "--subnet-file", f.SubnetFile, "--state-dir", f.StateDir}
}

// YAML is the same as Flags, as config file keys (one per line), for a
// daemon started with --config.
func (f Files) YAML() string {
	return fmt.Sprintf("socket: %s\nsubnetFile: %s\nstateDir: %s\n",
		strconv.Quote(f.Socket), strconv.Quote(f.SubnetFile), strconv.Quote(f.StateDir))
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
}

// RunArgs returns the arguments of "weft run" (without the program name)
// for daemon n with its files in f, then extra.
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
	args = append(args, "--log-level", level, "--log-format", "text")
	return append(args, extra...)
}
