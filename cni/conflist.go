package cni

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
)

// DefaultBinDirs are where runtimes look for CNI plugins: the upstream
// default and Debian's.
const DefaultBinDirs = "/opt/cni/bin:/usr/lib/cni"

// Exit codes of Command, as the weft command's.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// Conflist is a network configuration list for /etc/cni/net.d.
type Conflist struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

// weftPlugin is the weft entry of a conflist (field order is output order).
type weftPlugin struct {
	Type       string `json:"type"`
	SubnetFile string `json:"subnetFile"`
	Socket     string `json:"socket"`
	DataDir    string `json:"dataDir"`
	IPMasq     bool   `json:"ipMasq"`
}

type portmapPlugin struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
	SNAT         bool            `json:"snat"`
}

// ConflistOptions are the settings of a generated conflist.
type ConflistOptions struct {
	Name, SubnetFile, Socket, DataDir, CNIVersion string
	IPMasq                                        bool
}

// NewConflist is the conflist for opts: weft, then portmap for the
// runtime's port mappings.
func NewConflist(o ConflistOptions) Conflist {
	return Conflist{
		CNIVersion: o.CNIVersion,
		Name:       o.Name,
		Plugins: []any{
			weftPlugin{Type: "weft", SubnetFile: o.SubnetFile, Socket: o.Socket, DataDir: o.DataDir, IPMasq: o.IPMasq},
			portmapPlugin{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}, SNAT: true},
		},
	}
}

// Command runs "weft cni SUBCOMMAND": conflist.
func Command(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "conflist" {
		fmt.Fprintln(stderr, "usage: weft cni conflist [flags]   (print a conflist for /etc/cni/net.d; -h lists the flags)")
		return exitUsage
	}
	fs := flag.NewFlagSet("weft cni conflist", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o ConflistOptions
	fs.StringVar(&o.Name, "name", "weft", "network name")
	fs.StringVar(&o.SubnetFile, "subnet-file", DefaultSubnetFile, "the daemon's subnet file (its --subnet-file)")
	fs.StringVar(&o.Socket, "socket", DefaultSocket, "the daemon's control socket (its --socket)")
	fs.StringVar(&o.DataDir, "data-dir", DefaultDataDir, "where the plugin keeps each container's delegate config")
	fs.BoolVar(&o.IPMasq, "ip-masq", true, "masquerade container traffic that leaves the cluster network")
	fs.StringVar(&o.CNIVersion, "cni-version", "", "CNI version of the list, 1.0.0 or 1.1.0 (default: 1.1.0 if the portmap plugin found in --cni-bin-dir speaks it, else 1.0.0)")
	binDirs := fs.String("cni-bin-dir", DefaultBinDirs, "plugin directories searched for portmap (colon-separated)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "weft cni conflist: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if o.CNIVersion == "" {
		o.CNIVersion = probeVersion(ctx, "portmap", filepath.SplitList(*binDirs))
	}
	if !slices.Contains(Versions, o.CNIVersion) {
		fmt.Fprintf(stderr, "weft cni conflist: --cni-version %q: want one of %v\n", o.CNIVersion, Versions)
		return exitUsage
	}
	for flagName, p := range map[string]string{"subnet-file": o.SubnetFile, "socket": o.Socket, "data-dir": o.DataDir} {
		if !filepath.IsAbs(p) {
			fmt.Fprintf(stderr, "weft cni conflist: --%s %q: want an absolute path\n", flagName, p)
			return exitUsage
		}
	}
	b, err := json.MarshalIndent(NewConflist(o), "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "weft cni conflist: %v\n", err)
		return exitFailure
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", b); err != nil {
		fmt.Fprintf(stderr, "weft cni conflist: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// probeVersion is the highest of Versions the named plugin found in dirs
// supports; 1.0.0 when it is not found or does not say.
func probeVersion(ctx context.Context, plugin string, dirs []string) string {
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: io.Discard}, PluginDecoder: version.PluginDecoder{}}
	path, err := exec.FindInPath(plugin, dirs)
	if err != nil {
		return "1.0.0"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := invoke.GetVersionInfo(ctx, path, exec)
	if err == nil && slices.Contains(info.SupportedVersions(), "1.1.0") {
		return "1.1.0"
	}
	return "1.0.0"
}
