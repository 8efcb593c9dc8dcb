package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
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

// node is one weft daemon in its own namespace.
type node struct {
	name     string
	idx      int
	host     *netlab.Host
	underlay netip.Addr   // 192.168.50.<idx>
	subnet   netip.Prefix // 10.244.<idx>.0/24
	overlay  netip.Addr   // 10.244.<idx>.0, the address of weft0
	sock     string
	args     []string
	proc     *netlab.Proc   // current incarnation
	procs    []*netlab.Proc // every incarnation, for log dumps
}

func (n *node) metricsURL(path string) string {
	return "http://" + netip.AddrPortFrom(n.underlay, metricsPort).String() + path
}

// cluster is a lab with one bridge segment and a weft node per host.
type cluster struct {
	t     *testing.T
	lab   *netlab.Lab
	seg   *netlab.Segment
	nodes []*node
	by    map[string]*node
}

// newCluster builds hosts name[i] with underlay 192.168.50.<i+1>/24 and
// subnet 10.244.<i+1>.0/24 on one segment. Daemons are not started.
// The lab is torn down by t.Cleanup; on failure, daemon logs and network
// state are dumped first.
func newCluster(t *testing.T, names ...string) *cluster {
	t.Helper()
	netlab.RequireRoot(t)
	netlab.RequireTools(t, "iperf3", "ip", "ping", "ss")
	if weftBin == "" {
		t.Fatal("weft binary was not built (TestMain)")
	}
	lab, err := netlab.New("e2e")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, lab: lab, by: map[string]*node{}}
	t.Cleanup(func() {
		if t.Failed() {
			c.dump()
		}
		if err := lab.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	c.seg, err = lab.Segment("lan0", netip.MustParsePrefix(underlayNet))
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		idx := i + 1
		h, err := lab.Host(name)
		if err != nil {
			t.Fatal(err)
		}
		n := &node{
			name:     name,
			idx:      idx,
			host:     h,
			underlay: netip.AddrFrom4([4]byte{192, 168, 50, byte(idx)}),
			subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(idx), 0}), 24),
			overlay:  netip.AddrFrom4([4]byte{10, 244, byte(idx), 0}),
			sock:     filepath.Join(lab.Dir(), name+".sock"),
		}
		if _, err := h.Attach(c.seg, netip.PrefixFrom(n.underlay, 24)); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
		c.by[name] = n
	}
	for _, n := range c.nodes {
		var join []string
		for _, o := range c.nodes {
			if o != n {
				join = append(join, o.underlay.String())
			}
		}
		n.args = runArgs(n, join)
	}
	return c
}

func runArgs(n *node, join []string) []string {
	args := []string{"run",
		"--name", n.name,
		"--network", overlayNetwork,
		"--subnet", n.subnet.String(),
		"--public-ip", n.underlay.String(),
	}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	return append(args,
		"--metrics-addr", netip.AddrPortFrom(n.underlay, metricsPort).String(),
		"--socket", n.sock,
		// Every namespace host shares this machine's filesystem: give each
		// daemon its own state directory and subnet file.
		"--state-dir", filepath.Join(filepath.Dir(n.sock), n.name+"-state"),
		"--subnet-file", filepath.Join(filepath.Dir(n.sock), n.name+"-subnet.env"),
		"--log-level", "debug",
		"--log-format", "text",
	)
}

// start starts (or restarts) the node's daemon with its flags.
func (c *cluster) start(n *node) {
	c.t.Helper()
	p, err := n.host.Start(weftBin, n.args...)
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
		var others []string
		for _, o := range c.nodes {
			if o != n {
				others = append(others, o.name)
			}
		}
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
				p := st.peer(name)
				if p == nil {
					return fmt.Errorf("status of %s does not list peer %s yet: %s", n.name, name, st.summary())
				}
				if !p.alive() {
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

// pollEvery is pollUntil with its own interval.
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

// statusDoc is the loosely parsed output of "weft status --json".
type statusDoc struct {
	Node struct {
		Name     string `json:"name"`
		Subnet   string `json:"subnet"`
		Underlay string `json:"underlay"`
	} `json:"node"`
	Peers []peerStatus `json:"peers"`
	raw   []byte
}

type peerStatus struct {
	Name     string `json:"name"`
	Subnet   string `json:"subnet"`
	Underlay string `json:"underlay"`
	State    string `json:"state"`
}

func (p *peerStatus) alive() bool { return strings.EqualFold(p.State, "alive") }

// gone reports whether the peer is known to be down: dead, left or failed
// (anything but alive or suspect, which still route).
func (p *peerStatus) gone() bool {
	s := strings.ToLower(p.State)
	return s != "alive" && s != "suspect"
}

// underlayAddr returns the peer's underlay IP, whether or not a port is given.
func (p *peerStatus) underlayAddr() (netip.Addr, error) {
	if ap, err := netip.ParseAddrPort(p.Underlay); err == nil {
		return ap.Addr(), nil
	}
	return netip.ParseAddr(p.Underlay)
}

func (s *statusDoc) peer(name string) *peerStatus {
	for i := range s.Peers {
		if s.Peers[i].Name == name {
			return &s.Peers[i]
		}
	}
	return nil
}

func (s *statusDoc) summary() string {
	var parts []string
	for _, p := range s.Peers {
		parts = append(parts, fmt.Sprintf("%s(%s %s %s)", p.Name, p.State, p.Subnet, p.Underlay))
	}
	return fmt.Sprintf("node %s: peers [%s]", s.Node.Name, strings.Join(parts, " "))
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
	if err := json.Unmarshal(stdout.Bytes(), doc); err != nil {
		return nil, fmt.Errorf("weft status --json on %s: %v: %q", n.name, err, stdout.String())
	}
	return doc, nil
}

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

// dump logs every daemon's output and each host's addresses and routes.
func (c *cluster) dump() {
	t := c.t
	for _, n := range c.nodes {
		for i, p := range n.procs {
			t.Logf("===== %s: weft incarnation %d: %s =====\n%s", n.name, i+1, p.Describe(), tail(p.Logs(), 300))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		addr, _ := n.host.IP(ctx, "-br", "addr")
		route, _ := n.host.IP(ctx, "route")
		cancel()
		t.Logf("===== %s: ip -br addr =====\n%s===== %s: ip route =====\n%s", n.name, addr, n.name, route)
		if n.proc != nil && !n.proc.Exited() {
			if st, err := status(n); err == nil {
				t.Logf("===== %s: weft status --json =====\n%s", n.name, st.raw)
			} else {
				t.Logf("===== %s: weft status: %v", n.name, err)
			}
		}
	}
	t.Logf("(set NETLAB_KEEP=1 to keep the full logs in %s)", c.lab.Dir())
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= n {
		return s
	}
	return "... (" + strconv.Itoa(len(lines)-n) + " earlier lines omitted)\n" + strings.Join(lines[len(lines)-n:], "\n")
}

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

// iperfOut is the result of an iperf3 transfer run in the background.
type iperfOut struct {
	res netlab.IPerf3Result
	err error
}

// iperfInBackground starts an iperf3 client on n towards dst (a server must
// be listening) and returns the channel its result arrives on.
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

// pingPairs pings every ordered pair (src, dst) for which ok(src, dst): the
// first reply may take up to 5 s (routes being programmed), then 3 of 3
// must be answered; with exact, also no more than 3 sent (none lost).
func pingPairs(t *testing.T, ctx context.Context, exact bool, nodes []*node, ok func(src, dst *node) bool) int {
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
				return pingOK(ctx, src, dst.overlay, 1)
			}); err != nil {
				t.Fatalf("overlay %s -> %s (%s) never answered: %v", src.name, dst.name, dst.overlay, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Logf("note: first overlay ping %s -> %s took %v", src.name, dst.name, d.Round(time.Millisecond))
			}
			res, err := src.host.Ping(ctx, dst.overlay, 3)
			if err != nil {
				t.Fatalf("ping %s -> %s (%s): %v", src.name, dst.name, dst.overlay, err)
			}
			if res.Received != 3 || (exact && res.Sent != 3) {
				t.Fatalf("ping %s -> %s (%s): %d/%d received\n%s", src.name, dst.name, dst.overlay, res.Received, res.Sent, res.Output)
			}
			t.Logf("ping %s -> %s (%s): %v", src.name, dst.name, dst.overlay, res)
		}
	}
	return pairs
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
