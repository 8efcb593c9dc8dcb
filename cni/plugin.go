package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/node"
)

// Versions are the CNI spec versions the plugin speaks.
var Versions = []string{"1.0.0", "1.1.0"}

// Masquerader sets up and removes source NAT for container addresses.
type Masquerader interface {
	// Setup masquerades traffic from each prefix's address to anywhere
	// outside the prefix.
	Setup(ipns []netip.Prefix, network, ifName, containerID string) error
	Teardown(ipns []netip.Prefix, network, ifName, containerID string) error
	GC(network string, valid []types.GCAttachment) error
}

// StatusFunc asks the daemon at socket for its status.
type StatusFunc func(ctx context.Context, socket string) (node.Status, error)

// Plugin is the CNI plugin. Its fields are the seams the tests replace.
type Plugin struct {
	Exec    invoke.Exec // runs delegate plugins
	Status  StatusFunc  // asks the daemon
	Masq    Masquerader
	Stdout  io.Writer     // where results go
	Timeout time.Duration // bounds each verb
}

// New returns the plugin as a runtime runs it.
func New() *Plugin {
	return &Plugin{
		Exec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}},
		Status: func(ctx context.Context, socket string) (node.Status, error) {
			return node.FetchStatus(ctx, socket, "")
		},
		Masq:    kernelMasq{},
		Stdout:  os.Stdout,
		Timeout: 60 * time.Second,
	}
}

// Funcs are the plugin's verbs for skel.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.StatusCmd, GC: p.GC}
}

// Main runs the plugin for the verb in CNI_COMMAND, printing a result or a
// CNI error as JSON on stdout, and returns the process's exit code.
func Main(weftVersion string) int {
	about := "weft CNI plugin " + weftVersion
	if e := skel.PluginMainFuncsWithError(New().Funcs(), version.PluginSupports(Versions...), about); e != nil {
		if err := e.Print(); err != nil {
			fmt.Fprintln(os.Stderr, "weft: writing the error JSON to stdout:", err)
		}
		return 1
	}
	return 0
}

func (p *Plugin) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), p.Timeout)
}

// readSubnet reads the subnet file; code is the CNI error code to return
// when it is missing.
func readSubnet(n *NetConf, code uint) (SubnetEnv, *types.Error) {
	env, err := ReadSubnetFile(n.SubnetFile)
	if errors.Is(err, fs.ErrNotExist) {
		return env, types.NewError(code, fmt.Sprintf("weft: subnet file %s does not exist: weft is not running or not ready on this host (network config key subnetFile)", n.SubnetFile), "")
	}
	if err != nil {
		return env, types.NewError(types.ErrInternal, "weft: "+err.Error(), "")
	}
	return env, nil
}

// daemonReady checks that the daemon answers on its socket, is ready and
// runs with the subnet of the file.
func (p *Plugin) daemonReady(ctx context.Context, n *NetConf, env SubnetEnv, code uint) *types.Error {
	st, err := p.Status(ctx, n.Socket)
	if err != nil {
		return types.NewError(code, fmt.Sprintf("weft: weft is not running on this host (network config key socket): %v", err), "")
	}
	if !st.Node.Ready {
		return types.NewError(code, fmt.Sprintf("weft: weft on this host (socket %s) is not ready yet", n.Socket), "")
	}
	if st.Node.Subnet != env.Subnet.String() {
		return types.NewError(code, fmt.Sprintf("weft: subnet file %s says %s but weft runs with %s: the subnet is moving", n.SubnetFile, env.Subnet, st.Node.Subnet), "")
	}
	return nil
}

// delegateVersion is the CNI version to speak with the delegate: the
// config's, or 1.0.0 when the delegate (Debian's plugins, say) does not
// support 1.1.0. The result is converted back to the config's version.
func (p *Plugin) delegateVersion(ctx context.Context, typ, want, cniPath string) (string, error) {
	if want == "1.0.0" {
		return want, nil
	}
	path, err := p.Exec.FindInPath(typ, filepath.SplitList(cniPath))
	if err != nil {
		return "", fmt.Errorf("delegate plugin %s: %w", typ, err)
	}
	info, err := invoke.GetVersionInfo(ctx, path, p.Exec)
	if err != nil {
		return "", fmt.Errorf("delegate plugin %s: version: %w", typ, err)
	}
	for _, v := range []string{want, "1.0.0"} {
		if slices.Contains(info.SupportedVersions(), v) {
			return v, nil
		}
	}
	return "", types.NewError(types.ErrIncompatibleCNIVersion,
		fmt.Sprintf("weft: delegate plugin %s supports CNI %v, none of %v", path, info.SupportedVersions(), Versions), "")
}

// Add attaches the container: delegate ADD, then masquerading.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	n, cerr := ParseConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	env, cerr := readSubnet(n, types.ErrTryAgainLater)
	if cerr != nil {
		return cerr
	}
	ctx, cancel := p.context()
	defer cancel()
	if cerr := p.daemonReady(ctx, n, env, types.ErrTryAgainLater); cerr != nil {
		return cerr
	}
	typ := n.delegateType()
	dver, err := p.delegateVersion(ctx, typ, n.CNIVersion, args.Path)
	if err != nil {
		return err
	}
	d, err := BuildDelegate(n, env, dver)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return err
	}
	store := Store{Dir: n.DataDir}
	st := &State{Name: n.Name, ContainerID: args.ContainerID, IfName: args.IfName,
		Network: env.Network.String(), Subnet: env.Subnet.String(), Delegate: raw}
	// Kept before the delegate runs, so that the DEL a runtime sends after
	// a failed ADD undoes whatever the delegate did.
	if err := store.Save(st); err != nil {
		return err
	}
	res, err := invoke.DelegateAdd(ctx, typ, raw, p.Exec)
	if err != nil {
		return err
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return fmt.Errorf("delegate %s result: %w", typ, err)
	}
	if n.masquerades() {
		for _, ip := range r.IPs {
			a, ok := netip.AddrFromSlice(ip.Address.IP)
			if !ok {
				continue
			}
			a = a.Unmap()
			ipn := netip.PrefixFrom(a, a.BitLen())
			if env.Network.Contains(a) {
				ipn = netip.PrefixFrom(a, env.Network.Bits())
			} else if env.Network6.Contains(a) {
				ipn = netip.PrefixFrom(a, env.Network6.Bits())
			} else if ones, _ := ip.Address.Mask.Size(); ones > 0 {
				ipn = netip.PrefixFrom(a, ones)
			}
			st.Masq = append(st.Masq, ipn.String())
		}
		if err := p.Masq.Setup(prefixes(st.Masq), n.Name, args.IfName, args.ContainerID); err != nil {
			return p.undoAdd(ctx, store, typ, raw, st, fmt.Errorf("ipMasq: %w", err))
		}
	}
	if err := store.Save(st); err != nil {
		return p.undoAdd(ctx, store, typ, raw, st, err)
	}
	out, err := r.GetAsVersion(n.CNIVersion)
	if err != nil {
		return err
	}
	return out.PrintTo(p.Stdout)
}

// undoAdd takes back a half-done ADD and returns cause. The state goes
// once the delegate has undone its part; until then the runtime's DEL
// retries that.
func (p *Plugin) undoAdd(ctx context.Context, store Store, typ string, raw []byte, st *State, cause error) error {
	errs := []error{cause}
	if len(st.Masq) > 0 {
		errs = append(errs, p.Masq.Teardown(prefixes(st.Masq), nameOf(raw), st.IfName, st.ContainerID))
	}
	st.Masq = nil
	if err := invoke.DelegateDel(ctx, typ, raw, p.Exec); err != nil {
		errs = append(errs, err, store.Save(st))
	} else {
		errs = append(errs, store.Remove(st.ContainerID, st.IfName))
	}
	return errors.Join(errs...)
}

func prefixes(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// delegateInfo is what DEL and CHECK need of a kept delegate config.
type delegateInfo struct {
	Type       string `json:"type"`
	Name       string `json:"name"`
	CNIVersion string `json:"cniVersion"`
}

func nameOf(raw []byte) string {
	var d delegateInfo
	_ = json.Unmarshal(raw, &d)
	return d.Name
}

// Del detaches the container with the config kept at ADD; it needs neither
// the subnet file nor the daemon. Without kept state there is nothing to do.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	n, cerr := ParseConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	ctx, cancel := p.context()
	defer cancel()
	store := Store{Dir: n.DataDir}
	st, ok, err := store.Load(args.ContainerID, args.IfName)
	if err != nil || !ok {
		return err
	}
	return p.release(store, st, func(typ string, raw []byte) error {
		return invoke.DelegateDel(ctx, typ, raw, p.Exec)
	})
}

// release removes the masquerading and runs the delegate's DEL (del) of a
// kept state, then forgets the state.
func (p *Plugin) release(store Store, st *State, del func(typ string, raw []byte) error) error {
	var d delegateInfo
	if err := json.Unmarshal(st.Delegate, &d); err != nil || d.Type == "" {
		return fmt.Errorf("kept delegate config of %s/%s is unreadable: %v", st.ContainerID, st.IfName, err)
	}
	if len(st.Masq) > 0 {
		if err := p.Masq.Teardown(prefixes(st.Masq), d.Name, st.IfName, st.ContainerID); err != nil {
			return fmt.Errorf("ipMasq teardown: %w", err)
		}
		// Recorded before the delegate runs: if it fails, the DEL the
		// runtime retries has only the delegate's part left to do.
		st.Masq = nil
		if err := store.Save(st); err != nil {
			return err
		}
	}
	if err := del(d.Type, st.Delegate); err != nil {
		return err
	}
	return store.Remove(st.ContainerID, st.IfName)
}

// Check verifies the container with the kept config and that the host's
// subnet has not moved away from the container's address.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	n, cerr := ParseConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	st, ok, err := Store{Dir: n.DataDir}.Load(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	if !ok {
		return types.NewError(types.ErrInternal, fmt.Sprintf("weft: no state kept for container %s interface %s in %s (network config key dataDir): it was not added by this network", args.ContainerID, args.IfName, n.DataDir), "")
	}
	if env, err := ReadSubnetFile(n.SubnetFile); err == nil && env.Subnet.String() != st.Subnet {
		return types.NewError(ErrSubnetMoved, fmt.Sprintf("weft: the host's subnet moved from %s to %s; this container's address is from %s: recreate the container", st.Subnet, env.Subnet, st.Subnet), "")
	}
	var d map[string]any
	if err := json.Unmarshal(st.Delegate, &d); err != nil {
		return fmt.Errorf("kept delegate config: %w", err)
	}
	if n.RawPrevResult != nil {
		prev, err := convertPrevResult(n, d["cniVersion"])
		if err != nil {
			return err
		}
		d["prevResult"] = prev
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return err
	}
	ctx, cancel := p.context()
	defer cancel()
	typ, _ := d["type"].(string)
	return invoke.DelegateCheck(ctx, typ, raw, p.Exec)
}

// convertPrevResult gives the runtime's prevResult in the delegate's version.
func convertPrevResult(n *NetConf, dver any) (map[string]any, error) {
	v, _ := dver.(string)
	pc := &types.PluginConf{CNIVersion: n.CNIVersion, RawPrevResult: n.RawPrevResult}
	if err := version.ParsePrevResult(pc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "weft: prevResult: "+err.Error(), "")
	}
	r, err := pc.PrevResult.GetAsVersion(v)
	if err != nil {
		return nil, fmt.Errorf("prevResult as CNI %s: %w", v, err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// StatusCmd (CNI STATUS, 1.1) reports ready only while the subnet file
// exists and the daemon answers on its socket and is ready.
func (p *Plugin) StatusCmd(args *skel.CmdArgs) error {
	n, cerr := ParseConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	env, cerr := readSubnet(n, types.ErrPluginNotAvailable)
	if cerr != nil {
		return cerr
	}
	ctx, cancel := p.context()
	defer cancel()
	if cerr := p.daemonReady(ctx, n, env, types.ErrPluginNotAvailable); cerr != nil {
		return cerr
	}
	return nil
}

// GC (CNI 1.1) releases every kept attachment of this network that is not
// among the valid ones, with its kept config, then lets the masquerading helpers and, if it
// speaks 1.1.0, the delegate collect what they can.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	n, cerr := ParseConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	ctx, cancel := p.context()
	defer cancel()
	valid := map[types.GCAttachment]bool{}
	for _, a := range n.ValidAttachments {
		valid[a] = true
	}
	store := Store{Dir: n.DataDir}
	states, err := store.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range states {
		if st.Name != n.Name || valid[types.GCAttachment{ContainerID: st.ContainerID, IfName: st.IfName}] {
			continue
		}
		err := p.release(store, st, func(typ string, raw []byte) error {
			path, err := p.Exec.FindInPath(typ, filepath.SplitList(args.Path))
			if err != nil {
				return err
			}
			return invoke.ExecPluginWithoutResult(ctx, path, raw, &invoke.Args{
				Command: "DEL", ContainerID: st.ContainerID, IfName: st.IfName, Path: args.Path,
			}, p.Exec)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("gc %s/%s: %w", st.ContainerID, st.IfName, err))
		}
	}
	if err := p.Masq.GC(n.Name, n.ValidAttachments); err != nil {
		errs = append(errs, fmt.Errorf("gc ipMasq: %w", err))
	}
	if env, err := ReadSubnetFile(n.SubnetFile); err == nil {
		typ := n.delegateType()
		if dver, err := p.delegateVersion(ctx, typ, n.CNIVersion, args.Path); err == nil && dver == "1.1.0" {
			d, err := BuildDelegate(n, env, dver)
			if err == nil {
				d["cni.dev/valid-attachments"] = n.ValidAttachments
				var raw []byte
				if raw, err = json.Marshal(d); err == nil {
					err = invoke.DelegateGC(ctx, typ, raw, p.Exec)
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("gc delegate %s: %w", typ, err))
			}
		}
	}
	return errors.Join(errs...)
}
