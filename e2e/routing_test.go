package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// Direct routing and host-gw: four weft hosts on two L2 segments joined by
// a router namespace.
//
//	segment 1 192.168.61.0/24: a=.1 (10.244.1.0/24), b=.2 (10.244.2.0/24), router=.254
//	segment 2 192.168.62.0/24: c=.1 (10.244.3.0/24), d=.2 (10.244.4.0/24), router=.254
//
// The hosts reach the other segment through the router (a route for that
// segment only, never a default route); everyone joins a. Only the router
// forwards: the weft hosts keep ip_forward=0, since a direct route delivers
// to the peer's own overlay address (local on its weft0), nothing is
// forwarded on their behalf.

// routeProto is the routing protocol number weft marks its kernel routes
// with ("ip route show proto 87").
const routeProto = "87"

// topo is a lab whose weft nodes may sit on several segments, plus hosts
// that run no weft (a router, a kernel VTEP). It reuses cluster for the weft
// nodes (start, waitFormed, dump); extra hosts are dumped too on failure.
type topo struct {
	*cluster
	segs  map[string]*netlab.Segment
	extra []extraHost
}

type extraHost struct {
	host *netlab.Host
	// cmds are run in the host and logged on failure (argv).
	cmds [][]string
}

// newTopo creates an empty lab torn down by t.Cleanup: on failure the
// daemons' logs and every host's network state are dumped first; after
// Close, no namespace of the lab may remain.
func newTopo(t *testing.T, tools ...string) *topo {
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
	tp := &topo{
		cluster: &cluster{t: t, lab: lab, by: map[string]*node{}},
		segs:    map[string]*netlab.Segment{},
	}
	t.Cleanup(func() {
		if t.Failed() {
			tp.dump()
			tp.dumpExtra()
		}
		nss := lab.Namespaces()
		if err := lab.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
		for _, ns := range nss {
			if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
				t.Errorf("namespace %s still exists after the lab was closed", ns)
			}
		}
	})
	return tp
}

func (tp *topo) segment(name, prefix string) *netlab.Segment {
	tp.t.Helper()
	s, err := tp.lab.Segment(name, netip.MustParsePrefix(prefix))
	if err != nil {
		tp.t.Fatal(err)
	}
	tp.segs[name] = s
	return s
}

// addNode creates host name on seg with underlay address addr (a /24) and
// subnet 10.244.<idx>.0/24. Its weft flags are runArgs(join) plus extra.
func (tp *topo) addNode(name string, seg *netlab.Segment, addr string, idx int, join []string, extra ...string) *node {
	tp.t.Helper()
	h, err := tp.lab.Host(name)
	if err != nil {
		tp.t.Fatal(err)
	}
	n := &node{
		name:     name,
		idx:      idx,
		host:     h,
		underlay: netip.MustParseAddr(addr),
		subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(idx), 0}), 24),
		overlay:  netip.AddrFrom4([4]byte{10, 244, byte(idx), 0}),
		sock:     filepath.Join(tp.lab.Dir(), name+".sock"),
	}
	if _, err := h.Attach(seg, netip.PrefixFrom(n.underlay, 24)); err != nil {
		tp.t.Fatal(err)
	}
	n.args = append(runArgs(n, join), extra...)
	tp.nodes = append(tp.nodes, n)
	tp.by[name] = n
	return n
}

// addExtra records a host without weft whose state is dumped on failure.
func (tp *topo) addExtra(h *netlab.Host, cmds ...[]string) {
	tp.extra = append(tp.extra, extraHost{host: h, cmds: cmds})
}

func (tp *topo) dumpExtra() {
	for _, e := range tp.extra {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmds := append([][]string{{"ip", "-br", "addr"}, {"ip", "route"}}, e.cmds...)
		for _, c := range cmds {
			out, err := e.host.Run(ctx, c[0], c[1:]...)
			if err != nil {
				tp.t.Logf("===== %s: %s: %v", e.host.Name(), strings.Join(c, " "), err)
				continue
			}
			tp.t.Logf("===== %s: %s =====\n%s", e.host.Name(), strings.Join(c, " "), out)
		}
		cancel()
	}
	// The weft nodes' direct routes and neighbours, which dump() omits.
	for _, n := range tp.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, _ := n.host.IP(ctx, "route", "show", "proto", routeProto)
		nb, _ := n.host.IP(ctx, "neigh")
		cancel()
		tp.t.Logf("===== %s: ip route show proto %s =====\n%s===== %s: ip neigh =====\n%s", n.name, routeProto, r, n.name, nb)
	}
}

// twoSegments builds the topology described at the top of this file. Each
// weft node gets extra as additional flags. Daemons are not started.
func twoSegments(t *testing.T, extra ...string) *topo {
	t.Helper()
	tp := newTopo(t, "sysctl")
	s1 := tp.segment("seg61", "192.168.61.0/24")
	s2 := tp.segment("seg62", "192.168.62.0/24")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := tp.lab.Host("r")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Attach(s1, netip.MustParsePrefix("192.168.61.254/24")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Attach(s2, netip.MustParsePrefix("192.168.62.254/24")); err != nil {
		t.Fatal(err)
	}
	if out, err := r.Run(ctx, "sysctl", "-w", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatalf("router: %v: %s", err, out)
	}
	tp.addExtra(r, []string{"sysctl", "net.ipv4.ip_forward"})

	seed := []string{"192.168.61.1"}
	// a is the seed: it joins nobody.
	tp.addNode("a", s1, "192.168.61.1", 1, nil, extra...)
	tp.addNode("b", s1, "192.168.61.2", 2, seed, extra...)
	tp.addNode("c", s2, "192.168.62.1", 3, seed, extra...)
	tp.addNode("d", s2, "192.168.62.2", 4, seed, extra...)
	for _, n := range tp.nodes {
		other, gw := "192.168.62.0/24", "192.168.61.254"
		if strings.HasPrefix(n.underlay.String(), "192.168.62.") {
			other, gw = "192.168.61.0/24", "192.168.62.254"
		}
		// Only the other segment, never a default route.
		if _, err := n.host.IP(ctx, "route", "add", other, "via", gw); err != nil {
			t.Fatal(err)
		}
	}
	// The underlay works before weft starts: a reaches d through the router.
	if err := pingOK(ctx, tp.by["a"], tp.by["d"].underlay, 1); err != nil {
		t.Fatalf("underlay a -> d through the router: %v", err)
	}
	return tp
}

// onLink reports whether two nodes share a segment (192.168.6X.0/24).
func onLink(x, y *node) bool {
	return netip.PrefixFrom(x.underlay, 24).Masked() == netip.PrefixFrom(y.underlay, 24).Masked()
}

// peerRoute is a peer's routing as reported by "weft status --json".
type peerRoute struct {
	Name     string `json:"name"`
	Subnet   string `json:"subnet"`
	Underlay string `json:"underlay"`
	State    string `json:"state"`
	Static   bool   `json:"static"`
	Via      string `json:"via"`
	Reason   string `json:"reason"`
}

type routeDoc struct {
	Peers []peerRoute       `json:"peers"`
	Drops map[string]uint64 `json:"drops"`
}

// routesOf returns n's status with the routing fields (via, reason, static).
func routesOf(n *node) (map[string]peerRoute, *routeDoc, *statusDoc, error) {
	st, err := status(n)
	if err != nil {
		return nil, nil, nil, err
	}
	var doc routeDoc
	if err := json.Unmarshal(st.raw, &doc); err != nil {
		return nil, nil, st, fmt.Errorf("weft status --json on %s: %v", n.name, err)
	}
	m := map[string]peerRoute{}
	for _, p := range doc.Peers {
		m[p.Name] = p
	}
	return m, &doc, st, nil
}

// directRoutes returns n's routes of protocol 87 (weft's), keyed by
// destination, each with its whole "ip route" line.
func directRoutes(n *node) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n.host.IP(ctx, "-4", "route", "show", "proto", routeProto)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			m[f[0]] = strings.TrimSpace(line)
		}
	}
	return m, nil
}

// checkDirectRoutes requires n's weft routes to be exactly one per on-link
// peer: "<peer subnet> via <peer underlay> dev eth0 ... src <n's overlay>".
func checkDirectRoutes(n *node, peers []*node) error {
	got, err := directRoutes(n)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, p := range peers {
		if p == n || !onLink(n, p) {
			continue
		}
		dst := p.subnet.String()
		want[dst] = true
		line, ok := got[dst]
		if !ok {
			return fmt.Errorf("%s has no direct route to %s's subnet %s; proto %s routes: %v", n.name, p.name, dst, routeProto, got)
		}
		f := " " + line + " "
		for _, part := range []string{" via " + p.underlay.String() + " ", " dev eth0 ", " src " + n.overlay.String() + " "} {
			if !strings.Contains(f, part) {
				return fmt.Errorf("%s: route to %s is %q, want it to contain %q", n.name, dst, line, strings.TrimSpace(part))
			}
		}
	}
	for dst, line := range got {
		if !want[dst] {
			return fmt.Errorf("%s has an unexpected proto %s route (only on-link peers get one): %q", n.name, routeProto, line)
		}
	}
	return nil
}

// metricValue returns the value of the sample "series" (name with its
// labels exactly as exposed, e.g. `weft_routes{kind="direct"}`).
func metricValue(body []byte, series string) (float64, bool) {
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			return 0, false
		}
		return v, true
	}
	return 0, false
}

func metrics(ctx context.Context, n *node) ([]byte, error) {
	code, body, err := n.host.HTTPGet(ctx, n.metricsURL("/metrics"))
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("GET /metrics on %s: %d", n.name, code)
	}
	return body, nil
}

// stopNode sends SIGTERM and requires exit status 0 within 15 s; it returns
// when the process exited.
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

// TestDirectRouting: with --direct-routing, peers on the same segment are
// reached by kernel routes (proto 87) through the underlay, the others
// through the tunnel; the routes follow membership and go at shutdown.
func TestDirectRouting(t *testing.T) {
	tp := twoSegments(t, "--direct-routing")
	tp.startAll()
	tp.waitFormed(formationTimeout)
	a, b, c, d := tp.by["a"], tp.by["b"], tp.by["c"], tp.by["d"]

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Every node: a direct route to its on-link peer, none to the others
	// (they go through weft0's /16). Routes may lag "alive" a little.
	for _, n := range tp.nodes {
		if err := pollUntil(time.Now().Add(5*time.Second), func() error {
			return checkDirectRoutes(n, tp.nodes)
		}); err != nil {
			t.Errorf("direct routes: %v", err)
		}
	}
	ra, _ := directRoutes(a)
	rc, _ := directRoutes(c)
	t.Logf("proto %s routes on a: %v; on c: %v", routeProto, ra, rc)
	if _, ok := ra[b.subnet.String()]; !ok {
		t.Errorf("a has no direct route to b's subnet %s: %v", b.subnet, ra)
	}
	if _, ok := rc[d.subnet.String()]; !ok {
		t.Errorf("c has no direct route to d's subnet %s: %v", d.subnet, rc)
	}
	if t.Failed() {
		t.FailNow()
	}

	// The kernel picks the direct route for b and weft0 for c.
	for _, tc := range []struct {
		dst  *node
		want string
	}{{b, "via 192.168.61.2 dev eth0"}, {c, "dev weft0"}} {
		out, err := a.host.IP(ctx, "route", "get", tc.dst.overlay.String())
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("on a, ip route get %s = %q (%v), want %q", tc.dst.overlay, strings.TrimSpace(string(out)), err, tc.want)
		}
	}

	if n := pingPairs(t, ctx, false, tp.nodes, func(_, _ *node) bool { return true }); n != 12 {
		t.Fatalf("pinged %d ordered pairs, want 12", n)
	}

	// Status on a: b direct, c and d tunnel.
	want := map[string]string{"b": "direct", "c": "tunnel", "d": "tunnel"}
	if err := pollUntil(time.Now().Add(5*time.Second), func() error {
		peers, _, st, err := routesOf(a)
		if err != nil {
			return err
		}
		for name, via := range want {
			p, ok := peers[name]
			if !ok || p.Via != via || p.State != "alive" {
				return fmt.Errorf("status of a: peer %s is %+v, want alive via %s\n%s", name, p, via, st.raw)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// b leaves: a drops its direct route to b's subnet, and b's own
	// routes are gone at its shutdown.
	sigAt := stopNode(t, b)
	exitedAt := time.Now()
	if err := pollUntil(sigAt.Add(3*time.Second), func() error {
		got, err := directRoutes(a)
		if err != nil {
			return err
		}
		if line, ok := got[b.subnet.String()]; ok {
			return fmt.Errorf("a still has %q", line)
		}
		return nil
	}); err != nil {
		t.Errorf("a kept its direct route to b's subnet %s for more than 3 s after b's SIGTERM (b exited after %v): %v",
			b.subnet, exitedAt.Sub(sigAt).Round(time.Millisecond), err)
	} else {
		t.Logf("a removed its direct route to %s %v after b's SIGTERM", b.subnet, time.Since(sigAt).Round(time.Millisecond))
	}
	if got, err := directRoutes(b); err != nil || len(got) != 0 {
		t.Errorf("b left proto %s routes behind at shutdown: %v (%v)", routeProto, got, err)
	}
	// The tunnelled peers are unaffected.
	if err := pingOK(ctx, a, c.overlay, 2); err != nil {
		t.Errorf("after b left, a -> c: %v", err)
	}

	stopNode(t, a)
	if got, err := directRoutes(a); err != nil || len(got) != 0 {
		t.Errorf("a left proto %s routes behind at shutdown: %v (%v)", routeProto, got, err)
	}
	// c still has its direct route to d; stopping c must remove it too.
	if got, err := directRoutes(c); err != nil || got[d.subnet.String()] == "" {
		t.Errorf("before its shutdown c should still route %s directly: %v (%v)", d.subnet, got, err)
	}
	stopNode(t, c)
	if got, err := directRoutes(c); err != nil || len(got) != 0 {
		t.Errorf("c left proto %s routes behind at shutdown: %v (%v)", routeProto, got, err)
	}
}

// TestHostGW: with --encap none there is no tunnel: on-link peers are
// reached by kernel routes, the others are not routed at all (and status
// says why).
func TestHostGW(t *testing.T) {
	tp := twoSegments(t, "--encap", "none")
	tp.startAll()
	tp.waitFormed(formationTimeout)
	a, c := tp.by["a"], tp.by["c"]

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, n := range tp.nodes {
		if err := pollUntil(time.Now().Add(5*time.Second), func() error {
			return checkDirectRoutes(n, tp.nodes)
		}); err != nil {
			t.Errorf("direct routes: %v", err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if n := pingPairs(t, ctx, false, tp.nodes, onLink); n != 4 {
		t.Fatalf("pinged %d on-link ordered pairs, want 4", n)
	}

	// a's status: b direct, c and d not routed, with a reason.
	if err := pollUntil(time.Now().Add(5*time.Second), func() error {
		peers, _, st, err := routesOf(a)
		if err != nil {
			return err
		}
		if p := peers["b"]; p.Via != "direct" {
			return fmt.Errorf("status of a: b is %+v, want via direct\n%s", p, st.raw)
		}
		for _, name := range []string{"c", "d"} {
			p, ok := peers[name]
			if !ok || p.Via != "none" {
				return fmt.Errorf("status of a: %s is %+v, want via none\n%s", name, p, st.raw)
			}
			if !strings.Contains(strings.ToLower(p.Reason), "on-link") {
				return fmt.Errorf("status of a: %s has reason %q, want one that mentions on-link\n%s", name, p.Reason, st.raw)
			}
		}
		t.Logf("status of a: c: via %s, reason %q", peers["c"].Via, peers["c"].Reason)
		return nil
	}); err != nil {
		t.Error(err)
	}

	// a -> c is not routed: weft0 takes the packet (the /16) and drops it.
	res, err := a.host.Ping(ctx, c.overlay, 2)
	if err == nil && res.Received > 0 {
		t.Errorf("host-gw: a reached c's overlay address %s across the router: %v", c.overlay, res)
	} else {
		t.Logf("a -> c (not on-link) fails as it should: %v %v", res, err)
	}

	body, err := metrics(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := metricValue(body, `weft_routes{kind="direct"}`); !ok || v != 1 {
		t.Errorf(`/metrics on a: weft_routes{kind="direct"} = %v (present %v), want 1`, v, ok)
	}
	if v, ok := metricValue(body, `weft_dropped_packets_total{reason="no_route"}`); !ok || v < 1 {
		t.Errorf(`/metrics on a: weft_dropped_packets_total{reason="no_route"} = %v (present %v), want >= 1 after the ping to c`, v, ok)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "weft_routes") || strings.HasPrefix(line, `weft_dropped_packets_total{reason="no_route"}`) {
			t.Logf("metrics on a: %s", line)
		}
	}
}
