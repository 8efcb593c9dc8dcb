package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/internal/weftrun"
	"github.com/weftnet/weft/kernelvx"
	weftnode "github.com/weftnet/weft/node"
	"github.com/weftnet/weft/router"
)

// The two hosts: underlay on a veth pair, overlay subnets as flannel would
// hand them out.
var (
	underlayA = netip.MustParseAddr("192.168.60.1")
	underlayB = netip.MustParseAddr("192.168.60.2")
	overlayA  = netip.MustParseAddr("10.244.1.0")
	overlayB  = netip.MustParseAddr("10.244.2.0")
	// The IPv6 underlay of the *6 paths, on the same veth pair (added
	// without DAD only when such a path runs; the overlay stays IPv4).
	underlay6A = netip.MustParseAddr("fd00:60::1")
	underlay6B = netip.MustParseAddr("fd00:60::2")
)

const (
	overlayNet  = "10.244.0.0/16"
	subnetA     = "10.244.1.0/24"
	subnetB     = "10.244.2.0/24"
	metricsPort = 9586
	pprofPort   = 9587

	// Kernel VXLAN baseline, as flannel's vxlan backend sets it up.
	kvxlanDev  = "vxlan0"
	kvxlanVNI  = "1"
	kvxlanPort = "8472"
	kvxlanMTU  = "1450"
	// Over IPv6 the outer header is 20 bytes longer (70 in all, as
	// flannel's vxlan backend computes it for an IPv6 underlay).
	kvxlanMTU6 = "1430"
	kvxlanMACA = "02:00:0a:f4:01:00"
	kvxlanMACB = "02:00:0a:f4:02:00"

	formationTimeout = 30 * time.Second
	setupCmdTimeout  = 20 * time.Second
	daemonStopWait   = 8 * time.Second
)

type pathKind int

const (
	kindVeth pathKind = iota
	kindKVXLAN
	kindWeft
	kindWireguardGo
)

// pathDef is one data path the benchmark measures.
type pathDef struct {
	Name string
	Desc string
	Kind pathKind
	Args []string   // weft run flags that select the mode
	Via  router.Via // the route weft must report for the peer before measuring
	// BusyPoll: also pass --busy-poll with the -busy-poll duration.
	BusyPoll bool
	// Extra paths run only when -paths names them (or "all").
	Extra bool
	// V6: the underlay is IPv6 (underlay6A/B), the overlay IPv4 as
	// everywhere.
	V6 bool
	// Workers is the worker count the daemons must report (0: the
	// default, the number of CPUs; --offload=false implies 1).
	Workers int
	// KernelPath: weft runs the kernel data path (no workers of its own;
	// its VXLAN device must be gone after it stops).
	KernelPath bool
}

// pathDefs, in the order they run.
var pathDefs = []pathDef{
	{Name: "veth", Desc: "raw veth pair: iperf3 straight to b's underlay address (the ceiling)", Kind: kindVeth},
	{Name: "kvxlan", Desc: "kernel VXLAN device, VNI 1, port 8472, MTU 1450 (flannel's vxlan backend)", Kind: kindKVXLAN},
	{Name: "kvxlan6", Desc: "kernel VXLAN device over an IPv6 underlay (fd00:60::/64), MTU 1430 (only when named)", Kind: kindKVXLAN,
		V6: true, Extra: true},
	{Name: "weft-udp-nooff", Desc: "weft --encap udp --offload=false: flannel's udp design, one packet per syscall", Kind: kindWeft,
		Args: []string{"--encap", "udp", "--offload=false"}, Via: "tunnel", Workers: 1},
	{Name: "weft-udp", Desc: "weft --encap udp: TUN offloads, UDP GSO/GRO, batched syscalls", Kind: kindWeft,
		Args: []string{"--encap", "udp"}, Via: "tunnel"},
	{Name: "weft-udp6", Desc: "weft --encap udp over an IPv6 underlay (fd00:60::/64, MTU 1452), against kvxlan6 (only when named)", Kind: kindWeft,
		Args: []string{"--encap", "udp"}, Via: "tunnel", V6: true, Extra: true},
	{Name: "weft-udp-w1", Desc: "weft --encap udp --workers 1: one forwarding worker, one socket on the data port (the design before workers)", Kind: kindWeft,
		Args: []string{"--encap", "udp", "--workers", "1"}, Via: "tunnel", Workers: 1},
	{Name: "weft-udp-bp", Desc: "weft --encap udp --busy-poll D (-busy-poll, default 50us): each worker spins on its TUN queue after a batch", Kind: kindWeft,
		Args: []string{"--encap", "udp"}, Via: "tunnel", BusyPoll: true},
	{Name: "weft-udp-fullcsum", Desc: "weft --encap udp --partial-checksums=false: full inner checksums in software, for an A/B of partial checksums (only when named)", Kind: kindWeft,
		Args: []string{"--encap", "udp", "--partial-checksums=false"}, Via: "tunnel", Extra: true},
	{Name: "weft-vxlan", Desc: "weft --encap vxlan (port 8472), same data path as weft-udp with a VXLAN header", Kind: kindWeft,
		Args: []string{"--encap", "vxlan"}, Via: "tunnel"},
	{Name: "weft-direct", Desc: "weft --encap udp --direct-routing: the on-link peer is reached by a plain kernel route", Kind: kindWeft,
		Args: []string{"--encap", "udp", "--direct-routing"}, Via: "direct"},
	{Name: "weft-kernel", Desc: "weft --encap vxlan --datapath kernel: the kernel's VXLAN device programmed by weft from gossip, behind its nftables peer filter", Kind: kindWeft,
		Args: []string{"--encap", "vxlan", "--datapath", "kernel"}, Via: "tunnel", KernelPath: true},
	encryptedPath,
	encryptedChaChaPath,
	wireguardPath,
}

// defaultWorkers says whether the path runs weft's default worker count
// (no --workers flag).
func (p pathDef) defaultWorkers() bool {
	for _, a := range p.Args {
		if a == "--workers" || strings.HasPrefix(a, "--workers=") {
			return false
		}
	}
	return true
}

// underlays are a's and b's underlay addresses on path p.
func (p pathDef) underlays() (a, b netip.Addr) {
	if p.V6 {
		return underlay6A, underlay6B
	}
	return underlayA, underlayB
}

func allPathNames() []string {
	var names []string
	for _, p := range pathDefs {
		names = append(names, p.Name)
	}
	return names
}

// defaultPathNames are the paths of a run without -paths.
func defaultPathNames() []string {
	var names []string
	for _, p := range pathDefs {
		if !p.Extra {
			names = append(names, p.Name)
		}
	}
	return names
}

func pathByName(name string) (pathDef, bool) {
	for _, p := range pathDefs {
		if p.Name == name {
			return p, true
		}
	}
	return pathDef{}, false
}

// parsePaths validates -paths and returns the names in the canonical order.
func parsePaths(s string) ([]string, error) {
	want := map[string]bool{}
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if n == "all" {
			for _, p := range pathDefs {
				want[p.Name] = true
			}
			continue
		}
		if _, ok := pathByName(n); !ok {
			return nil, fmt.Errorf("-paths: unknown path %q (want %s)", n, strings.Join(allPathNames(), ", "))
		}
		want[n] = true
	}
	var out []string
	for _, p := range pathDefs {
		if want[p.Name] {
			out = append(out, p.Name)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-paths: no path selected")
	}
	return out, nil
}

// ---- kernel VXLAN -------------------------------------------------------

type vtep struct {
	h        *netlab.Host
	dev      string // underlay interface
	local    netip.Addr
	addr     netip.Addr // overlay address on vxlan0
	mac      string
	peerNet  string
	peerAddr netip.Addr
	peerMAC  string
	peerIP   netip.Addr
	mtu      string
}

// setupKVXLAN creates vxlan0 on both hosts exactly as flannel's vxlan
// backend does (no learning, static neighbour and FDB entries), over path
// p's underlay (IPv4 or IPv6: local and the FDB's dst are of its family).
func (b *bench) setupKVXLAN(ctx context.Context, p pathDef) error {
	ua, ub := p.underlays()
	mtu := kvxlanMTU
	if p.V6 {
		mtu = kvxlanMTU6
	}
	for _, v := range []vtep{
		{b.a, b.ifA, ua, overlayA, kvxlanMACA, subnetB, overlayB, kvxlanMACB, ub, mtu},
		{b.b, b.ifB, ub, overlayB, kvxlanMACB, subnetA, overlayA, kvxlanMACA, ua, mtu},
	} {
		ctx, cancel := context.WithTimeout(ctx, setupCmdTimeout)
		cmds := [][]string{
			{"link", "add", kvxlanDev, "type", "vxlan", "id", kvxlanVNI, "dstport", kvxlanPort, "local", v.local.String(), "dev", v.dev, "nolearning"},
			{"link", "set", kvxlanDev, "mtu", v.mtu, "address", v.mac, "up"},
			{"addr", "add", v.addr.String() + "/32", "dev", kvxlanDev},
			{"route", "add", v.peerNet, "via", v.peerAddr.String(), "dev", kvxlanDev, "onlink"},
			{"neigh", "add", v.peerAddr.String(), "lladdr", v.peerMAC, "dev", kvxlanDev, "nud", "permanent"},
		}
		for _, c := range cmds {
			if _, err := v.h.IP(ctx, c...); err != nil {
				cancel()
				return err
			}
		}
		_, err := v.h.Run(ctx, "bridge", "fdb", "append", v.peerMAC, "dev", kvxlanDev, "dst", v.peerIP.String())
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// teardownKVXLAN deletes vxlan0 (and with it its routes, neighbours and
// FDB entries) on both hosts and checks that it is gone.
func (b *bench) teardownKVXLAN() error {
	var errs []error
	for _, h := range []*netlab.Host{b.a, b.b} {
		ctx, cancel := context.WithTimeout(context.Background(), setupCmdTimeout)
		if ok, _ := h.LinkExists(ctx, kvxlanDev); ok {
			if _, err := h.IP(ctx, "link", "del", kvxlanDev); err != nil {
				errs = append(errs, err)
			}
		}
		if ok, _ := h.LinkExists(ctx, kvxlanDev); ok {
			errs = append(errs, fmt.Errorf("[%s] %s still exists after ip link del", h.Name(), kvxlanDev))
		}
		cancel()
	}
	return errors.Join(errs...)
}

// ---- weft ---------------------------------------------------------------

type daemon struct {
	host     *netlab.Host
	name     string // weft node name = host name
	peer     string
	underlay netip.Addr
	subnet   string
	files    weftrun.Files
	args     []string
	proc     *netlab.Proc
}

func (d *daemon) metricsAddr() string {
	return netip.AddrPortFrom(d.underlay, metricsPort).String()
}

// pprofAddr is where the daemon serves pprof with -profile: loopback in
// its namespace.
func (d *daemon) pprofAddr() string {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), pprofPort).String()
}

// newDaemons returns the two daemons of path p, their files (socket,
// subnet file, state) in the lab's directory: weftrun's command line, as
// the e2e tests and the demo use it.
func (b *bench) newDaemons(p pathDef) ([]*daemon, error) {
	mk := func(h *netlab.Host, name, peer string, underlay, peerUnderlay netip.Addr, subnet string) (*daemon, error) {
		files, err := weftrun.FilesIn(b.lab.Dir(), p.Name+"-"+name)
		if err != nil {
			return nil, err
		}
		d := &daemon{host: h, name: name, peer: peer, underlay: underlay, subnet: subnet, files: files}
		extra := append([]string(nil), p.Args...)
		if p.BusyPoll {
			extra = append(extra, "--busy-poll", b.opts.BusyPoll)
		}
		if b.opts.Profile {
			// pprof has its own listener, on loopback in the daemon's
			// namespace, where the bench asks (netlab.Host.HTTPGet).
			extra = append(extra, "--pprof-addr", d.pprofAddr())
		}
		d.args = weftrun.RunArgs(files, weftrun.Node{
			Name:        name,
			Network:     netip.MustParsePrefix(overlayNet),
			Subnet:      netip.MustParsePrefix(subnet),
			PublicIP:    underlay,
			Join:        []string{peerUnderlay.String()},
			MetricsAddr: netip.AddrPortFrom(underlay, metricsPort),
			LogLevel:    "warn",
		}, extra...)
		return d, nil
	}
	ua, ub := p.underlays()
	a, err := mk(b.a, "a", "b", ua, ub, subnetA)
	if err != nil {
		return nil, err
	}
	bd, err := mk(b.b, "b", "a", ub, ua, subnetB)
	if err != nil {
		return nil, err
	}
	return []*daemon{a, bd}, nil
}

// startWeft starts both daemons and waits until each is ready and lists
// the other as alive, routed the expected way.
func (b *bench) startWeft(ctx context.Context, p pathDef, ds []*daemon) error {
	for _, d := range ds {
		proc, err := d.host.Start(b.weftBin, d.args...)
		if err != nil {
			return err
		}
		d.proc = proc
	}
	deadline := time.Now().Add(formationTimeout)
	for _, d := range ds {
		var last error
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			if d.proc.Exited() {
				return daemonExitError(d)
			}
			last = d.formed(ctx, p.Via)
			if last == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("weft on %s not ready within %v: %v", d.name, formationTimeout, last)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func (d *daemon) formed(ctx context.Context, via router.Via) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	code, _, err := httpGetWithin(cctx, d.host, "http://"+d.metricsAddr()+"/readyz", 2*time.Second)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("GET /readyz: %d", code)
	}
	st, err := d.status(cctx)
	if err != nil {
		return err
	}
	for _, p := range st.Peers {
		if p.Name != d.peer {
			continue
		}
		if p.State != "alive" {
			return fmt.Errorf("peer %s is %q", p.Name, p.State)
		}
		if p.Via != via {
			return fmt.Errorf("peer %s is routed via %q (want %q) %s", p.Name, p.Via, via, p.Reason)
		}
		return nil
	}
	return fmt.Errorf("status does not list peer %s yet", d.peer)
}

// status asks the daemon for its status over its control socket (a unix
// socket in the lab's directory, reachable from any namespace).
func (d *daemon) status(ctx context.Context) (weftnode.Status, error) {
	st, err := weftnode.FetchStatus(ctx, d.files.Socket, "")
	if err != nil {
		return st, fmt.Errorf("weft status on %s: %w", d.name, err)
	}
	return st, nil
}

func daemonExitError(d *daemon) error {
	logs := strings.TrimSpace(d.proc.Logs())
	if strings.Contains(logs, "flag provided but not defined") {
		return fmt.Errorf("weft on %s exited %d: this weft does not support a flag yet: %s", d.name, d.proc.ExitCode(), lastLines(logs, 3))
	}
	return fmt.Errorf("weft on %s exited (%v): %s", d.name, d.proc.ProcessState(), lastLines(logs, 10))
}

// stopWeft stops the daemons with SIGTERM, one after the other (a leaves
// the cluster while b still listens, as in a rolling restart), and checks
// that they exited 0 and took their TUN device and routes with them.
// Problems are returned as daemon issues (text to report), not as
// measurement failures. logMark gets, per daemon, the length of its log
// before the shutdown began.
func (b *bench) stopWeft(ds []*daemon) (issues []string, logMark []int) {
	logMark = make([]int, len(ds))
	for i, d := range ds {
		if d.proc != nil {
			logMark[i] = len(d.proc.Logs())
		}
	}
	for _, d := range ds {
		if d.proc == nil {
			continue
		}
		if d.proc.Exited() {
			continue // reported as a failure by whoever noticed
		}
		t0 := time.Now()
		err := d.proc.Stop(daemonStopWait)
		switch {
		case err != nil:
			issues = append(issues, fmt.Sprintf("weft on %s: stop with SIGTERM: %v", d.name, err))
		case time.Since(t0) > 4*time.Second:
			issues = append(issues, fmt.Sprintf("weft on %s took %v to exit after SIGTERM", d.name, time.Since(t0).Round(time.Millisecond)))
		}
	}
	// Leftovers would break the next path: report and remove them.
	for _, d := range ds {
		ctx, cancel := context.WithTimeout(context.Background(), setupCmdTimeout)
		for _, dev := range []string{"weft0", kernelvx.DefaultName} {
			if ok, _ := d.host.LinkExists(ctx, dev); ok {
				issues = append(issues, fmt.Sprintf("weft on %s left its device %s behind after exiting", d.name, dev))
				_, _ = d.host.IP(ctx, "link", "del", dev)
			}
		}
		if out, err := d.host.Run(ctx, "nft", "list", "table", "inet", kernelvx.FilterTable); err == nil && len(out) > 0 {
			issues = append(issues, fmt.Sprintf("weft on %s left its nftables table %s behind after exiting", d.name, kernelvx.FilterTable))
			_, _ = d.host.Run(ctx, "nft", "delete", "table", "inet", kernelvx.FilterTable)
		}
		if out, err := d.host.IP(ctx, "-4", "route", "show", "root", overlayNet); err == nil && len(strings.TrimSpace(string(out))) > 0 {
			issues = append(issues, fmt.Sprintf("weft on %s left routes behind after exiting: %s", d.name, strings.Join(strings.Fields(string(out)), " ")))
			_, _ = d.host.IP(ctx, "-4", "route", "flush", "root", overlayNet)
		}
		cancel()
	}
	return issues, logMark
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
