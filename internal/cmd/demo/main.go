// Command demo shows weft at work on this machine: three hosts (network
// namespaces) on one virtual switch, a weft daemon in each, an overlay
// 10.244.0.0/16 across them; then the peer table, the ping round-trip time
// between every pair of hosts over the overlay, and an iperf3 TCP figure;
// then a container on each host, made by weft as its CNI plugin, and ping
// and iperf3 between containers on different hosts.
//
//	sudo make demo
//	sudo go run ./internal/cmd/demo [-weft bin/weft] [-seconds 5]
//
// Everything lives in namespaces and a temporary directory it creates
// (internal/netlab), each daemon's files included (internal/weftrun): no
// traffic leaves them, and the host's own /run/weft and /var/lib/weft are
// left alone (checked at the end). All of it is removed on exit, on failure
// and on Ctrl-C (a second Ctrl-C exits at once; netlab's reaper then removes
// the namespaces).
//
// To add a step, write a method of demo and call it from run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/fsnap"
	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/internal/weftrun"
	weftnode "github.com/weftnet/weft/node"
	"github.com/weftnet/weft/pki"
)

const (
	metricsPort = 9586
	iperfPort   = 5201
	formTimeout = 30 * time.Second
)

var (
	network  = netip.MustParsePrefix("10.244.0.0/16")
	underlay = netip.MustParsePrefix("192.168.50.0/24")
)

// host is one namespace host running weft.
type host struct {
	name     string
	ns       *netlab.Host
	underlay netip.Addr   // 192.168.50.<i>
	subnet   netip.Prefix // 10.244.<i>.0/24
	files    weftrun.Files
	proc     *netlab.Proc
}

// overlay is the host's overlay address: the first of its subnet, weft0's.
func (h *host) overlay() netip.Addr { return h.subnet.Addr() }

type demo struct {
	weft    string // the weft binary
	seconds int    // iperf3 duration
	lab     *netlab.Lab
	hosts   []*host
	ctrs    []*container
}

func main() {
	os.Exit(run())
}

func run() int {
	var d demo
	flag.StringVar(&d.weft, "weft", "", "weft binary to run (default: build ./cmd/weft)")
	flag.IntVar(&d.seconds, "seconds", 5, "length of the iperf3 transfer")
	flag.Parse()
	if flag.NArg() > 0 || d.seconds < 1 || d.seconds > 60 {
		flag.Usage()
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (it creates network namespaces and TUN devices); run: sudo make demo")
		return 1
	}
	if missing := netlab.MissingTools("ip", "ping", "iperf3", "ss"); len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "demo: missing tools: %s\n  install them with: apt-get install -y iproute2 iputils-ping iperf3\n", strings.Join(missing, " "))
		return 1
	}

	// Ctrl-C cancels ctx: every step stops, the deferred cleanup runs. Once
	// ctx is done a second Ctrl-C is no longer caught and ends the program.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)

	before, err := fsnap.Take(weftrun.HostPaths...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	err = d.run(ctx)
	if cerr := d.close(err != nil && ctx.Err() == nil); err == nil {
		err = cerr
	}
	if err == nil {
		err = hostFilesUntouched(before)
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "demo: interrupted; cleaned up.")
		return 130
	case err != nil:
		fmt.Fprintln(os.Stderr, "demo: FAILED:", err)
		return 1
	}
	fmt.Println("cleaned up: namespaces, processes and files removed.")
	return 0
}

// run is the demo, step by step.
func (d *demo) run(ctx context.Context) error {
	if err := d.build(ctx); err != nil {
		return err
	}
	if err := d.network("a", "b", "c"); err != nil {
		return err
	}
	if err := d.startWeft(ctx); err != nil {
		return err
	}
	if err := d.status(ctx, d.hosts[0]); err != nil {
		return err
	}
	if err := d.ping(ctx); err != nil {
		return err
	}
	if err := d.iperf(ctx, d.hosts[0], d.hosts[1]); err != nil {
		return err
	}
	return d.containers(ctx)
}

// build compiles ./cmd/weft unless -weft names a binary.
func (d *demo) build(ctx context.Context) error {
	if d.weft != "" {
		abs, err := filepath.Abs(d.weft)
		if err != nil {
			return fmt.Errorf("weft binary: %w", err)
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("weft binary: %w", err)
		}
		d.weft = abs
		return nil
	}
	dir, err := os.MkdirTemp("", "weft-demo-bin-")
	if err != nil {
		return err
	}
	d.weft = filepath.Join(dir, "weft")
	fmt.Println("building weft ...")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go" // sudo often drops it from PATH
	}
	out, err := exec.CommandContext(ctx, goTool, "build", "-o", d.weft, "./cmd/weft").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("go build ./cmd/weft (run the demo from the repository): %v\n%s", err, out)
	}
	return nil
}

// network creates the lab: a switch and one host per name, host i with
// underlay 192.168.50.<i> and subnet 10.244.<i>.0/24.
func (d *demo) network(names ...string) error {
	lab, err := netlab.New("wdemo")
	if err != nil {
		return err
	}
	d.lab = lab
	seg, err := lab.Segment("lan0", underlay)
	if err != nil {
		return err
	}
	var where []string
	for i, name := range names {
		ns, err := lab.Host(name)
		if err != nil {
			return err
		}
		files, err := weftrun.FilesIn(lab.Dir(), name)
		if err != nil {
			return err
		}
		h := &host{
			name:     name,
			ns:       ns,
			underlay: netip.AddrFrom4([4]byte{192, 168, 50, byte(i + 1)}),
			subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 0}), 24),
			files:    files,
		}
		if _, err := ns.Attach(seg, netip.PrefixFrom(h.underlay, underlay.Bits())); err != nil {
			return err
		}
		d.hosts = append(d.hosts, h)
		where = append(where, h.name+"="+h.underlay.String())
	}
	fmt.Printf("weft demo: %d hosts, each a network namespace, on one virtual switch; weft routes an overlay between them\n", len(names))
	fmt.Printf("hosts: %s (namespaces %s-*)\n", strings.Join(where, " "), lab.ID())
	return nil
}

// startWeft starts weft on every host, each joining the others, and waits
// until each is ready and sees all the others alive.
func (d *demo) startWeft(ctx context.Context) error {
	// A cluster CA of the demo's own, in its temporary directory: each
	// host shows a certificate for its name and subnet, and believes only
	// peers that show one.
	ca, err := weftrun.NewCA("weft demo CA")
	if err != nil {
		return err
	}
	var names []string
	for _, h := range d.hosts {
		pkiDir := filepath.Join(h.files.Dir, "pki")
		if err := weftrun.InstallPKI(pkiDir, h.name, []*pki.CA{ca}, ca, weftrun.Grant{Subnets: []netip.Prefix{h.subnet}}); err != nil {
			return err
		}
		var join []string
		for _, o := range d.hosts {
			if o != h {
				join = append(join, o.underlay.String())
			}
		}
		args := weftrun.RunArgs(h.files, weftrun.Node{
			Name:        h.name,
			Network:     network,
			Subnet:      h.subnet,
			PublicIP:    h.underlay,
			Join:        join,
			MetricsAddr: netip.AddrPortFrom(h.underlay, metricsPort),
			PKIDir:      pkiDir,
		})
		p, err := h.ns.Start(d.weft, args...)
		if err != nil {
			return err
		}
		h.proc = p
		names = append(names, h.name)
	}
	fmt.Printf("starting weft on %s (overlay %s), each with a certificate from the demo's CA; waiting for the cluster to form ...\n", strings.Join(names, ", "), network)
	fmt.Printf("  e.g. on a: weft %s\n", strings.Join(d.hosts[0].proc.Args(), " "))
	start := time.Now()
	deadline := start.Add(formTimeout)
	for _, h := range d.hosts {
		for {
			err := d.formed(ctx, h)
			if err == nil {
				break
			}
			if h.proc.Exited() {
				return fmt.Errorf("weft on %s exited (%v)", h.name, h.proc.ProcessState())
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the cluster did not form within %v: %w", formTimeout, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	fmt.Printf("cluster formed in %.1f s\n\n", time.Since(start).Seconds())
	return nil
}

// formed asks h's daemon (over its control socket) whether it is ready and
// sees every other host alive.
func (d *demo) formed(ctx context.Context, h *host) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := weftnode.FetchStatus(ctx, h.files.Socket, "")
	if err != nil {
		return err
	}
	if !st.Node.Ready {
		return fmt.Errorf("weft on %s is not ready", h.name)
	}
	for _, o := range d.hosts {
		if o == h {
			continue
		}
		if p := st.Peer(o.name); p == nil || p.State != "alive" {
			return fmt.Errorf("weft on %s does not see %s alive yet", h.name, o.name)
		}
	}
	return nil
}

// status prints "weft status" as run on h.
func (d *demo) status(ctx context.Context, h *host) error {
	fmt.Printf("== weft status on %s ==\n", h.name)
	out, err := h.ns.Run(ctx, d.weft, "status", "--socket", h.files.Socket)
	if err != nil {
		return err
	}
	fmt.Printf("%s\n", strings.TrimRight(string(out), "\n"))
	fmt.Println()
	return nil
}

// ping pings every ordered pair of hosts over the overlay.
func (d *demo) ping(ctx context.Context) error {
	const count = 3
	fmt.Printf("== overlay ping: %d pings from each host to each other one ==\n", count)
	var failed []string
	for _, src := range d.hosts {
		for _, dst := range d.hosts {
			if src == dst {
				continue
			}
			res, err := src.ns.Ping(ctx, dst.overlay(), count)
			if err != nil {
				return err
			}
			if res.Received == 0 {
				fmt.Printf("  %s -> %s  %-11s NO REPLY\n", src.name, dst.name, dst.overlay())
				failed = append(failed, src.name+" -> "+dst.name)
				continue
			}
			fmt.Printf("  %s -> %s  %-11s %d/%d replies  avg RTT %.3f ms\n",
				src.name, dst.name, dst.overlay(), res.Received, res.Sent, float64(res.RTTAvg.Microseconds())/1000)
		}
	}
	fmt.Println()
	if len(failed) > 0 {
		return fmt.Errorf("no ping reply over the overlay for %s", strings.Join(failed, ", "))
	}
	return nil
}

// iperf measures TCP from client to server over the overlay.
func (d *demo) iperf(ctx context.Context, client, server *host) error {
	fmt.Printf("== iperf3 TCP %s -> %s over the overlay (%d s) ==\n", client.name, server.name, d.seconds)
	if _, err := server.ns.IPerf3Server(iperfPort); err != nil {
		return err
	}
	res, err := client.ns.IPerf3Client(ctx, server.overlay(), netlab.IPerf3Options{Port: iperfPort, Seconds: d.seconds})
	if err != nil {
		return err
	}
	fmt.Printf("  %s -> %s: %.0f Mbit/s received, %d retransmits\n\n", client.name, server.name, res.ReceivedBPS/1e6, res.Retransmits)
	return nil
}

// close stops every process and removes the lab and the built binary. After
// a failure it first shows the end of each daemon's log.
func (d *demo) close(failed bool) error {
	if failed {
		for _, h := range d.hosts {
			if h.proc != nil {
				fmt.Fprintf(os.Stderr, "---- last lines of weft on %s ----\n%s\n", h.name, lastLines(h.proc.Logs(), 15))
			}
		}
	}
	var errs []error
	if d.lab != nil {
		if err := d.lab.Close(); err != nil {
			errs = append(errs, fmt.Errorf("cleanup: %w", err))
		}
	}
	if d.weft != "" && strings.HasPrefix(filepath.Base(filepath.Dir(d.weft)), "weft-demo-bin-") {
		if err := os.RemoveAll(filepath.Dir(d.weft)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// hostFilesUntouched checks that the host's own weft files are as they were.
func hostFilesUntouched(before fsnap.Snapshot) error {
	after, err := fsnap.Take(weftrun.HostPaths...)
	if err != nil {
		return err
	}
	if diff := fsnap.Diff(before, after); len(diff) > 0 {
		return fmt.Errorf("the host's own weft files changed during the demo:\n  %s", strings.Join(diff, "\n  "))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
