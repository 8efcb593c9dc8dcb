package e2e

// The helpers every e2e test uses: the lab and its weft nodes, starting
// them, one polling loop, the daemon's status (node.Status) and metrics
// (parsed with expfmt), pings, iperf3 and failure dumps.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/internal/weftrun"
	"github.com/weftnet/weft/lease"
	weftnode "github.com/weftnet/weft/node"
	"github.com/weftnet/weft/router"
)

const (
	overlayNetwork = "10.244.0.0/16"
	underlayNet    = "192.168.50.0/24"
	metricsPort    = 9586
	dataPort       = 8285

	// Generous but bounded: a shared 2-core machine can be slow.
	formationTimeout = 30 * time.Second
	pollInterval     = 100 * time.Millisecond
)

var overlayPrefix = netip.MustParsePrefix(overlayNetwork)

// ---------------------------------------------------------------------------
// The lab and its nodes.

// node is one weft daemon in its own namespace.
type node struct {
	name     string
	idx      int
	host     *netlab.Host
	underlay netip.Addr   // e.g. 192.168.50.<idx>
	subnet   netip.Prefix // 10.244.<idx>.0/24 (invalid: automatic)
	overlay  netip.Addr   // 10.244.<idx>.0, the address of weft0
	// Dual stack: the IPv6 network, subnet and address (invalid: none).
	network6 netip.Prefix
	subnet6  netip.Prefix
	overlay6 netip.Addr
	files    weftrun.Files
	sock     string // files.Socket
	args     []string
	proc     *netlab.Proc   // current incarnation
	procs    []*netlab.Proc // every incarnation, for log dumps
}

func (n *node) metricsURL(path string) string {
	return "http://" + netip.AddrPortFrom(n.underlay, metricsPort).String() + path
}

// spec is what makes n's command line n's, with join as seeds.
func (n *node) spec(join []string) weftrun.Node {
	return weftrun.Node{
		Name:        n.name,
		Network:     overlayPrefix,
		Subnet:      n.subnet,
		Network6:    n.network6,
		Subnet6:     n.subnet6,
		PublicIP:    n.underlay,
		Join:        join,
		MetricsAddr: netip.AddrPortFrom(n.underlay, metricsPort),
		LogLevel:    "debug",
	}
}

// runArgs is n's "weft run" command line with join as seeds: its files in
// its own directory of the lab (weftrun), never the host's, and the lab's
// gossip key (a --gossip-key-file in extra wins).
func runArgs(n *node, join []string, extra ...string) []string {
	return weftrun.RunArgs(n.files, n.spec(join), extra...)
}

// insecureArgs is runArgs without a gossip key: --insecure-gossip.
func insecureArgs(n *node, join []string, extra ...string) []string {
	spec := n.spec(join)
	spec.InsecureGossip = true
	return weftrun.RunArgs(n.files, spec, extra...)
}

// noKeyArgs is runArgs with neither a gossip key nor --insecure-gossip,
// which weft refuses.
func noKeyArgs(n *node, join []string, extra ...string) []string {
	args := insecureArgs(n, join, extra...)
	return slices.DeleteFunc(args, func(a string) bool { return a == "--insecure-gossip" })
}

// cluster is a lab with weft nodes on one or more segments, plus hosts that
// run no weft (a router, a kernel VTEP, a stranger), dumped on failure too.
type cluster struct {
	t     *testing.T
	lab   *netlab.Lab
	seg   *netlab.Segment // the segment of newCluster
	segs  map[string]*netlab.Segment
	nodes []*node
	by    map[string]*node
	extra []extraHost
}

type extraHost struct {
	host *netlab.Host
	cmds [][]string // run in the host and logged on failure (argv)
}

// newLab creates an empty lab torn down by t.Cleanup: on failure the
// daemons' logs and every host's network state are dumped first; after
// Close, no namespace of the lab may remain.
func newLab(t *testing.T, tools ...string) *cluster {
	t.Helper()
	netlab.RequireRoot(t)
	netlab.RequireTools(t, append([]string{"iperf3", "ip", "ping", "ss"}, tools...)...)
	if weftBin == "" {
		t.Fatal("weft binary was not built (TestMain)")
	}
	lab, err := netlab.New("e2e")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, lab: lab, by: map[string]*node{}, segs: map[string]*netlab.Segment{}}
	t.Cleanup(func() {
		if t.Failed() {
			c.dump()
		}
		nss := lab.Namespaces()
		if err := lab.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
		// A race-built daemon reports a data race on stderr when it
		// happens, whether or not it then exits non-zero.
		for _, p := range lab.Procs() {
			if logs := p.Logs(); strings.Contains(logs, "WARNING: DATA RACE") {
				i := strings.Index(logs, "WARNING: DATA RACE")
				t.Errorf("%s: the race detector found a data race:\n%s", p.Describe(), logs[i:min(len(logs), i+6000)])
			}
		}
		for _, ns := range nss {
			if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
				t.Errorf("namespace %s still exists after the lab was closed", ns)
			}
		}
	})
	return c
}

// newCluster builds hosts name[i] with underlay 192.168.50.<i+1>/24 and
// subnet 10.244.<i+1>.0/24 on one segment, each joining all the others.
// Daemons are not started.
func newCluster(t *testing.T, names ...string) *cluster {
	t.Helper()
	c := newLab(t)
	c.seg = c.segment("lan0", underlayNet)
	for i, name := range names {
		c.addNode(name, c.seg, netip.AddrFrom4([4]byte{192, 168, 50, byte(i + 1)}), i+1)
	}
	for _, n := range c.nodes {
		n.args = runArgs(n, otherUnderlays(c.nodes, n))
	}
	return c
}

func (c *cluster) segment(name, prefix string) *netlab.Segment {
	c.t.Helper()
	s, err := c.lab.Segment(name, netip.MustParsePrefix(prefix))
	if err != nil {
		c.t.Fatal(err)
	}
	c.segs[name] = s
	return s
}

// addNode creates host name on seg with underlay address addr (a /24, or
// a /64 for IPv6),
// subnet 10.244.<idx>.0/24 and its files in the lab's directory. Its
// command line is left to the caller (runArgs).
func (c *cluster) addNode(name string, seg *netlab.Segment, addr netip.Addr, idx int) *node {
	c.t.Helper()
	h, err := c.lab.Host(name)
	if err != nil {
		c.t.Fatal(err)
	}
	files, err := weftrun.FilesIn(c.lab.Dir(), name)
	if err != nil {
		c.t.Fatal(err)
	}
	n := &node{
		name:     name,
		idx:      idx,
		host:     h,
		underlay: addr,
		subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(idx), 0}), 24),
		files:    files,
		sock:     files.Socket,
	}
	n.overlay = n.subnet.Addr()
	bits := 24
	if addr.Is6() {
		bits = 64
	}
	if _, err := h.Attach(seg, netip.PrefixFrom(addr, bits)); err != nil {
		c.t.Fatal(err)
	}
	c.nodes = append(c.nodes, n)
	c.by[name] = n
	return n
}

// addExtra records a host without weft whose state is dumped on failure.
func (c *cluster) addExtra(h *netlab.Host, cmds ...[]string) {
	c.extra = append(c.extra, extraHost{host: h, cmds: cmds})
}

// start starts (or restarts) the node's daemon with its flags.
func (c *cluster) start(n *node) { c.startEnv(n, nil) }

// startEnv is start with extra environment variables.
func (c *cluster) startEnv(n *node, env []string) {
	c.t.Helper()
	p, err := n.host.StartEnv(env, weftBin, n.args...)
	if err != nil {
		c.t.Fatal(err)
	}
	n.proc = p
	n.procs = append(n.procs, p)
}

func (c *cluster) startAll() {
	c.t.Helper()
	for _, n := range c.nodes {
		c.start(n)
	}
}

// waitFormed waits until every node's /readyz answers 200 and its status
// lists every other node as alive.
func (c *cluster) waitFormed(timeout time.Duration) {
	c.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for _, n := range c.nodes {
		others := otherNames(c.nodes, n)
		err := pollUntil(deadline, func() error {
			if n.proc.Exited() {
				return errExited(n)
			}
			if err := readyz(n); err != nil {
				return err
			}
			st, err := status(n)
			if err != nil {
				return err
			}
			for _, name := range others {
				p := st.Peer(name)
				if p == nil {
					return fmt.Errorf("status of %s does not list peer %s yet: %s", n.name, name, st.summary())
				}
				if !alive(p) {
					return fmt.Errorf("status of %s: peer %s is %q: %s", n.name, name, p.State, st.summary())
				}
			}
			return nil
		})
		if err != nil {
			c.t.Fatalf("cluster did not form within %v: %v", timeout, err)
		}
	}
	c.t.Logf("cluster of %d formed in %v", len(c.nodes), time.Since(start).Round(time.Millisecond))
}

func otherNames(nodes []*node, n *node) []string {
	var out []string
	for _, o := range nodes {
		if o != n {
			out = append(out, o.name)
		}
	}
	return out
}

func otherUnderlays(nodes []*node, n *node) []string {
	var out []string
	for _, o := range nodes {
		if o != n {
			out = append(out, o.underlay.String())
		}
	}
	return out
}

// stopNode sends SIGTERM and requires exit status 0 within 15 s; it returns
// when the signal was sent.
func stopNode(t *testing.T, n *node) time.Time {
	t.Helper()
	sigAt := time.Now()
	if err := n.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := n.proc.Wait(15 * time.Second)
	if errors.Is(err, netlab.ErrNotExited) {
		t.Fatalf("weft on %s still running 15 s after SIGTERM", n.name)
	}
	if err != nil {
		t.Fatalf("weft on %s after SIGTERM: %v (want exit status 0)", n.name, err)
	}
	t.Logf("%s exited 0, %v after SIGTERM", n.name, time.Since(sigAt).Round(time.Millisecond))
	return sigAt
}

// runWeft runs the weft binary to completion (bounded to 10 s) in n's
// namespace and returns its exit code, stdout and stderr.
func runWeft(t *testing.T, n *node, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := n.host.Command(ctx, weftBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("weft %s did not exit within 10 s (it should have failed fast)\nstderr: %s", strings.Join(args, " "), tail(stderr.String(), 50))
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	default:
		t.Fatalf("running weft: %v", err)
		return -1, "", ""
	}
}

// writeFile replaces path atomically (lease.WriteFileAtomic), so that a
// daemon never reads half a file.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := lease.WriteFileAtomic(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// Polling.

var errPollTimeout = errors.New("timed out")

// permanent marks an error that makes pollUntil give up at once.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// pollUntil calls f every pollInterval until it returns nil or the deadline
// passes; it then returns the last error. An error wrapped in permanent
// (e.g. the daemon exited) stops the polling immediately.
func pollUntil(deadline time.Time, f func() error) error {
	return pollEvery(pollInterval, deadline, f)
}

// pollFast is pollUntil with a 10 ms interval, for catching a moment.
func pollFast(deadline time.Time, f func() error) error {
	return pollEvery(10*time.Millisecond, deadline, f)
}

func pollEvery(interval time.Duration, deadline time.Time, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		var perm permanent
		if errors.As(err, &perm) {
			return perm.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: last error: %v", errPollTimeout, err)
		}
		time.Sleep(interval)
	}
}

func errExited(n *node) error {
	return permanent{fmt.Errorf("weft on %s exited: %v; last log lines:\n%s", n.name, n.proc.ProcessState(), tail(n.proc.Logs(), 20))}
}

func readyz(n *node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	code, body, err := n.host.HTTPGet(ctx, n.metricsURL("/readyz"))
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("%s /readyz: %d %s", n.name, code, bytes.TrimSpace(body))
	}
	return nil
}

// waitReady waits until n's /readyz answers 200.
func waitReady(n *node, timeout time.Duration) error {
	return pollUntil(time.Now().Add(timeout), func() error {
		if n.proc.Exited() {
			return errExited(n)
		}
		return readyz(n)
	})
}

// ---------------------------------------------------------------------------
// Status: "weft status --json" is a node.Status.

// statusDoc is a node's status with the JSON it was decoded from.
type statusDoc struct {
	weftnode.Status
	raw []byte
}

// status runs "weft status --json" in the node's namespace.
func status(n *node) (*statusDoc, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := n.host.Command(ctx, weftBin, "status", "--socket", n.sock, "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("weft status on %s: %v: %s%s", n.name, err, bytes.TrimSpace(stderr.Bytes()), bytes.TrimSpace(stdout.Bytes()))
	}
	doc := &statusDoc{raw: stdout.Bytes()}
	if err := json.Unmarshal(doc.raw, &doc.Status); err != nil {
		return nil, fmt.Errorf("weft status --json on %s: %v: %q", n.name, err, stdout.String())
	}
	return doc, nil
}

func (s *statusDoc) summary() string {
	var parts []string
	for _, p := range s.Peers {
		part := fmt.Sprintf("%s(%s %s %s via=%s", p.Name, p.State, p.Subnet, p.Underlay, p.Via)
		if p.Reason != "" {
			part += " reason=" + p.Reason
		}
		parts = append(parts, part+")")
	}
	return fmt.Sprintf("node %s subnet %s: peers [%s]", s.Node.Name, s.Node.Subnet, strings.Join(parts, " "))
}

// peers returns the status's peers by name.
func (s *statusDoc) peers() map[string]router.PeerStatus {
	m := make(map[string]router.PeerStatus, len(s.Peers))
	for _, p := range s.Peers {
		m[p.Name] = p
	}
	return m
}

func alive(p *router.PeerStatus) bool { return strings.EqualFold(p.State, "alive") }

// gone reports whether the peer is known to be down: dead, left or failed
// (anything but alive or suspect, which still route).
func gone(p *router.PeerStatus) bool {
	s := strings.ToLower(p.State)
	return s != "alive" && s != "suspect"
}

// underlayAddr returns the peer's underlay IP, whether or not a port is given.
func underlayAddr(p *router.PeerStatus) (netip.Addr, error) {
	if ap, err := netip.ParseAddrPort(p.Underlay); err == nil {
		return ap.Addr(), nil
	}
	return netip.ParseAddr(p.Underlay)
}

// seesAlive requires st to list every name as an alive peer reached through
// the tunnel.
func seesAlive(st *statusDoc, names ...string) error {
	for _, name := range names {
		p := st.Peer(name)
		switch {
		case p == nil:
			return fmt.Errorf("%s does not list %s: %s", st.Node.Name, name, st.summary())
		case !alive(p):
			return fmt.Errorf("%s lists %s as %q: %s", st.Node.Name, name, p.State, st.summary())
		case p.Via != router.ViaTunnel:
			return fmt.Errorf("%s does not route %s (via %q, reason %q): %s", st.Node.Name, name, p.Via, p.Reason, st.summary())
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Metrics, parsed by expfmt.

// metricSet is a /metrics page: family name -> family.
type metricSet map[string]*dto.MetricFamily

func parseMetrics(body []byte) (metricSet, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return fams, nil
}

// value returns the value of the counter, gauge or untyped sample of family
// name whose labels are exactly labels (name, value, name, value...).
func (m metricSet) value(name string, labels ...string) (float64, bool) {
	f := m[name]
	if f == nil {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, s := range f.GetMetric() {
		if len(s.GetLabel()) != len(want) {
			continue
		}
		match := true
		for _, l := range s.GetLabel() {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case s.Counter != nil:
			return s.Counter.GetValue(), true
		case s.Gauge != nil:
			return s.Gauge.GetValue(), true
		case s.Untyped != nil:
			return s.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// metrics is n's /metrics, parsed, and the page as served.
func metrics(ctx context.Context, n *node) (metricSet, []byte, error) {
	code, body, err := n.host.HTTPGet(ctx, n.metricsURL("/metrics"))
	if err != nil {
		return nil, nil, err
	}
	if code != 200 {
		return nil, nil, fmt.Errorf("GET /metrics on %s: %d", n.name, code)
	}
	m, err := parseMetrics(body)
	if err != nil {
		return nil, body, fmt.Errorf("%s: %w", n.name, err)
	}
	return m, body, nil
}

// ---------------------------------------------------------------------------
// Pings and iperf3.

// pingOK pings dst from n count times and requires every reply.
func pingOK(ctx context.Context, n *node, dst netip.Addr, count int) error {
	res, err := n.host.Ping(ctx, dst, count)
	if err != nil {
		return err
	}
	if res.Received != count {
		return fmt.Errorf("ping %s -> %s: %d/%d received", n.name, dst, res.Received, res.Sent)
	}
	return nil
}

// pingWithin pings dst from src once per try until a reply comes or
// within passes.
func pingWithin(ctx context.Context, src *node, dst netip.Addr, within time.Duration) error {
	return pollUntil(time.Now().Add(within), func() error {
		if src.proc != nil && src.proc.Exited() {
			return errExited(src)
		}
		return pingOK(ctx, src, dst, 1)
	})
}

// pingPairs pings every ordered pair (src, dst) for which ok(src, dst): the
// first reply may take up to 5 s (routes being programmed), then 3 of 3
// must be answered; with exact, also no more than 3 sent (none lost).
func pingPairs(t *testing.T, ctx context.Context, exact bool, nodes []*node, ok func(src, dst *node) bool) int {
	t.Helper()
	return pingPairsTo(t, ctx, exact, nodes, ok, func(n *node) netip.Addr { return n.overlay })
}

// pingPairsTo is pingPairs to the address addr gives for each node (its
// IPv6 overlay address, say).
func pingPairsTo(t *testing.T, ctx context.Context, exact bool, nodes []*node, ok func(src, dst *node) bool, addr func(*node) netip.Addr) int {
	t.Helper()
	pairs := 0
	for _, src := range nodes {
		for _, dst := range nodes {
			if src == dst || !ok(src, dst) {
				continue
			}
			pairs++
			start := time.Now()
			if err := pollUntil(time.Now().Add(5*time.Second), func() error {
				return pingOK(ctx, src, addr(dst), 1)
			}); err != nil {
				t.Fatalf("overlay %s -> %s (%s) never answered: %v", src.name, dst.name, addr(dst), err)
			}
			if d := time.Since(start); d > time.Second {
				t.Logf("note: first overlay ping %s -> %s took %v", src.name, dst.name, d.Round(time.Millisecond))
			}
			res, err := src.host.Ping(ctx, addr(dst), 3)
			if err != nil {
				t.Fatalf("ping %s -> %s (%s): %v", src.name, dst.name, addr(dst), err)
			}
			if res.Received != 3 || (exact && res.Sent != 3) {
				t.Fatalf("ping %s -> %s (%s): %d/%d received\n%s", src.name, dst.name, addr(dst), res.Received, res.Sent, res.Output)
			}
			t.Logf("ping %s -> %s (%s): %v", src.name, dst.name, addr(dst), res)
		}
	}
	return pairs
}

// pingAll pings every ordered pair of nodes concurrently (one goroutine per
// source): each pair must answer within the given time, then 2 of 2.
func pingAll(ctx context.Context, nodes []*node, within time.Duration) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, src := range nodes {
		wg.Go(func() {
			for _, dst := range nodes {
				if dst == src {
					continue
				}
				err := pingWithin(ctx, src, dst.overlay, within)
				if err == nil {
					err = pingOK(ctx, src, dst.overlay, 2)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("overlay %s -> %s (%s): %v", src.name, dst.name, dst.overlay, err))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errs
}

// iperfOut is the result of an iperf3 transfer run in the background.
type iperfOut struct {
	res netlab.IPerf3Result
	err error
}

// iperfInBackground starts an iperf3 client on n towards dst (a server must
// be listening) and returns the channel its result arrives on. The
// goroutine ends when the client does, bounded by ctx.
func iperfInBackground(ctx context.Context, n *node, dst netip.Addr, o netlab.IPerf3Options) <-chan iperfOut {
	done := make(chan iperfOut, 1)
	go func() {
		res, err := n.host.IPerf3Client(ctx, dst, o)
		done <- iperfOut{res, err}
	}()
	return done
}

// awaitIperf waits up to within for a background iperf3 transfer, and
// fails the test if it has not finished by then.
func awaitIperf(t *testing.T, done <-chan iperfOut, within time.Duration, what string) iperfOut {
	t.Helper()
	select {
	case out := <-done:
		return out
	case <-time.After(within):
		t.Fatalf("%s did not finish within %v", what, within)
		return iperfOut{}
	}
}

// iperfCheck runs a 3 s iperf3 TCP transfer from client to dst, served by
// server, and requires data to have been sent and received; what names the
// transfer in messages.
func iperfCheck(t *testing.T, ctx context.Context, client, server *netlab.Host, dst netip.Addr, what string) {
	t.Helper()
	if _, err := server.IPerf3Server(5201); err != nil {
		t.Fatal(err)
	}
	res, err := client.IPerf3Client(ctx, dst, netlab.IPerf3Options{Port: 5201, Seconds: 3})
	if err != nil {
		t.Fatalf("iperf3 %s: %v", what, err)
	}
	if res.SentBPS <= 0 || res.ReceivedBPS <= 0 {
		t.Fatalf("iperf3 %s: %v", what, res)
	}
	t.Logf("iperf3 TCP %s (3 s): %.1f Mbit/s received (%.1f sent, %d retransmits)",
		what, res.ReceivedBPS/1e6, res.SentBPS/1e6, res.Retransmits)
}

// ---------------------------------------------------------------------------
// Links, logs and failure dumps.

// weftLinks returns the interfaces of h whose name starts with "weft".
func weftLinks(h *netlab.Host) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	links, err := h.Links(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l, "weft") {
			out = append(out, l)
		}
	}
	return out, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= n {
		return s
	}
	return "... (" + strconv.Itoa(len(lines)-n) + " earlier lines omitted)\n" + strings.Join(lines[len(lines)-n:], "\n")
}

func countLines(s, substr string) int {
	n := 0
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

func grepLines(s string, re *regexp.Regexp, max int) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if re.MatchString(line) {
			out = append(out, line)
			if len(out) == max {
				break
			}
		}
	}
	return out
}

// dump logs every daemon's output, each host's addresses and routes, the
// weft nodes' direct routes and neighbours, and the extra hosts' commands.
func (c *cluster) dump() {
	t := c.t
	for _, n := range c.nodes {
		for i, p := range n.procs {
			t.Logf("===== %s: weft incarnation %d: %s =====\n%s", n.name, i+1, p.Describe(), tail(p.Logs(), 300))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		addr, _ := n.host.IP(ctx, "-br", "addr")
		route, _ := n.host.IP(ctx, "route")
		direct, _ := n.host.IP(ctx, "route", "show", "proto", routeProto)
		neigh, _ := n.host.IP(ctx, "neigh")
		cancel()
		t.Logf("===== %s: ip -br addr =====\n%s===== %s: ip route =====\n%s===== %s: ip route show proto %s =====\n%s===== %s: ip neigh =====\n%s",
			n.name, addr, n.name, route, n.name, routeProto, direct, n.name, neigh)
		if n.proc != nil && !n.proc.Exited() {
			if st, err := status(n); err == nil {
				t.Logf("===== %s: weft status --json =====\n%s", n.name, st.raw)
			} else {
				t.Logf("===== %s: weft status: %v", n.name, err)
			}
		}
	}
	for _, e := range c.extra {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for _, cmd := range append([][]string{{"ip", "-br", "addr"}, {"ip", "route"}}, e.cmds...) {
			out, err := e.host.Run(ctx, cmd[0], cmd[1:]...)
			if err != nil {
				t.Logf("===== %s: %s: %v", e.host.Name(), strings.Join(cmd, " "), err)
				continue
			}
			t.Logf("===== %s: %s =====\n%s", e.host.Name(), strings.Join(cmd, " "), out)
		}
		cancel()
	}
	t.Logf("(set NETLAB_KEEP=1 to keep the full logs in %s)", c.lab.Dir())
}

// routeProto is the routing protocol number weft marks its kernel routes
// with ("ip route show proto 87").
const routeProto = "87"

// startTcpdump starts tcpdump in h on ifname with args (filter and
// options), and returns once it is listening, so that nothing sent after
// it returns is missed.
func startTcpdump(t *testing.T, h *netlab.Host, ifname string, wait time.Duration, args ...string) *netlab.Proc {
	t.Helper()
	p, err := h.Start("tcpdump", append([]string{"-i", ifname}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := pollUntil(time.Now().Add(wait), func() error {
		if strings.Contains(p.Logs(), "listening on "+ifname) {
			return nil
		}
		if p.Exited() {
			return permanent{fmt.Errorf("tcpdump exited: %s", p.Logs())}
		}
		return errors.New("tcpdump is not listening yet")
	}); err != nil {
		t.Fatal(err)
	}
	return p
}
