package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/deploy"
	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/router"
)

// "Run it like production": the systemd notify protocol and watchdog, a
// SIGHUP reload under traffic, a real Prometheus scraping the daemons with
// the Grafana dashboard's own queries, and the subnet file other tools read.

// ---------------------------------------------------------------------------
// Helpers

// notifyMsg is one datagram the daemon sent to NOTIFY_SOCKET.
type notifyMsg struct {
	at   time.Time
	text string
}

// notifySock plays systemd's side of sd_notify: a unix datagram socket the
// daemon (in its namespace; same filesystem) sends its state changes to.
type notifySock struct {
	path string
	conn *net.UnixConn
	ch   chan notifyMsg
	seen []notifyMsg // every message next returned, for the failure log
}

func listenNotify(t *testing.T, path string) *notifySock {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("notify socket: %v", err)
	}
	s := &notifySock{path: path, conn: conn, ch: make(chan notifyMsg, 1024)}
	go func() {
		defer close(s.ch)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			s.ch <- notifyMsg{at: time.Now(), text: string(buf[:n])}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		if t.Failed() {
			var lines []string
			for _, m := range s.seen {
				lines = append(lines, fmt.Sprintf("%s %q", m.at.Format("15:04:05.000"), m.text))
			}
			t.Logf("===== notify messages received =====\n%s", strings.Join(lines, "\n"))
		}
	})
	return s
}

// next returns the next message, waiting up to timeout.
func (s *notifySock) next(timeout time.Duration) (notifyMsg, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case m, ok := <-s.ch:
		if !ok {
			return m, errors.New("notify socket closed")
		}
		s.seen = append(s.seen, m)
		return m, nil
	case <-t.C:
		return notifyMsg{}, fmt.Errorf("no notify message within %v", timeout)
	}
}

// nextState returns the next message that is not a watchdog keep-alive and
// counts the keep-alives skipped on the way.
func (s *notifySock) nextState(timeout time.Duration) (notifyMsg, int, error) {
	deadline := time.Now().Add(timeout)
	skipped := 0
	for {
		m, err := s.next(time.Until(deadline))
		if err != nil {
			return m, skipped, err
		}
		if m.text != "WATCHDOG=1" {
			return m, skipped, nil
		}
		skipped++
	}
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano() / 1000
}

// waitLogLine polls the process's log from byte offset from until a line
// containing every one of subs appears, and returns that line.
func waitLogLine(p *netlab.Proc, from int, deadline time.Time, subs ...string) (string, error) {
	var line string
	err := pollUntil(deadline, func() error {
		logs := p.Logs()
		if from > len(logs) {
			from = len(logs)
		}
		for _, l := range strings.Split(logs[from:], "\n") {
			ok := true
			for _, s := range subs {
				if !strings.Contains(l, s) {
					ok = false
					break
				}
			}
			if ok {
				line = l
				return nil
			}
		}
		if p.Exited() {
			return permanent{fmt.Errorf("%s exited (%v) before logging %q", p, p.ProcessState(), subs)}
		}
		return fmt.Errorf("no log line with %q yet", subs)
	})
	return line, err
}

// missingKeys lists the JSON keys of the status document that are absent:
// the node's, the top level's and those of the named peers.
func missingKeys(st *statusDoc, nodeKeys, topKeys, peerKeys []string, peers ...string) []string {
	var keys map[string]any
	if err := json.Unmarshal(st.raw, &keys); err != nil {
		return []string{"(not a JSON object: " + err.Error() + ")"}
	}
	var missing []string
	node, _ := keys["node"].(map[string]any)
	for _, k := range nodeKeys {
		if _, ok := node[k]; !ok {
			missing = append(missing, ".node."+k)
		}
	}
	for _, k := range topKeys {
		if _, ok := keys[k]; !ok {
			missing = append(missing, "."+k)
		}
	}
	list, _ := keys["peers"].([]any)
	for _, name := range peers {
		var p map[string]any
		for _, e := range list {
			if m, ok := e.(map[string]any); ok && m["name"] == name {
				p = m
			}
		}
		if p == nil {
			missing = append(missing, fmt.Sprintf(".peers[name=%s]", name))
			continue
		}
		for _, k := range peerKeys {
			if _, ok := p[k]; !ok {
				missing = append(missing, fmt.Sprintf(".peers[name=%s].%s", name, k))
			}
		}
	}
	return missing
}

// linkInfo returns "ip -o link show dev" and "ip -o -4 addr show dev" of ifname.
func linkInfo(h *netlab.Host, ifname string) (link, addr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := h.IP(ctx, "-o", "link", "show", "dev", ifname)
	if err != nil {
		return "", "", err
	}
	a, err := h.IP(ctx, "-o", "-4", "addr", "show", "dev", ifname)
	return string(l), string(a), err
}

var linkFlagsRe = regexp.MustCompile(`<([^>]*)>`)
var linkMTURe = regexp.MustCompile(`\smtu (\d+)\s`)

// ---------------------------------------------------------------------------
// 1. systemd notify protocol

// TestSystemdNotify: with NOTIFY_SOCKET and WATCHDOG_USEC set, the daemon
// says READY=1 only once weft0 exists and /readyz answers 200, keeps the
// watchdog fed every half interval, wraps a SIGHUP reload in RELOADING=1
// (with MONOTONIC_USEC) ... READY=1, says STOPPING=1 at SIGTERM and exits 0.
func TestSystemdNotify(t *testing.T) {
	c := newCluster(t, "a")
	a := c.by["a"]
	ns := listenNotify(t, filepath.Join(c.lab.Dir(), "notify.sock"))

	// Nothing yet: weft0 must not exist before the daemon makes it.
	if links, err := weftLinks(a.host); err != nil || len(links) != 0 {
		t.Fatalf("before the start: TUN links %v (%v)", links, err)
	}
	startAt := time.Now()
	c.startEnv(a, []string{"NOTIFY_SOCKET=" + ns.path, "WATCHDOG_USEC=1000000"})

	// READY=1 is the first message, and weft0 exists when it arrives.
	first, err := ns.next(formationTimeout)
	if err != nil {
		if a.proc.Exited() {
			t.Fatal(errExited(a))
		}
		t.Fatalf("no READY=1 within %v of the start: %v", formationTimeout, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	linkUp, linkErr := a.host.LinkExists(ctx, "weft0")
	cancel()
	checkedAt := time.Now()
	if first.text != "READY=1" {
		t.Fatalf("first notify message is %q, want READY=1", first.text)
	}
	readyAt := first.at
	t.Logf("READY=1 %v after the start", readyAt.Sub(startAt).Round(time.Millisecond))
	if linkErr != nil || !linkUp {
		t.Fatalf("READY=1 arrived but weft0 does not exist in a's namespace (checked %v later): %v",
			checkedAt.Sub(readyAt).Round(time.Millisecond), linkErr)
	}
	if err := readyz(a); err != nil {
		t.Fatalf("READY=1 arrived but /readyz is not 200: %v", err)
	}
	if _, addr, err := linkInfo(a.host, "weft0"); err != nil || !strings.Contains(addr, " "+a.overlay.String()+"/16 ") {
		t.Errorf("at READY=1, weft0 lacks its address %s/16: %q %v", a.overlay, addr, err)
	}

	// The watchdog: WATCHDOG_USEC=1s, so a keep-alive every 500 ms; at
	// least 3 in the first 3 s after READY=1, and nothing else.
	var wd []time.Time
	for {
		m, err := ns.next(time.Until(readyAt.Add(3 * time.Second)))
		if err != nil {
			break
		}
		if m.text != "WATCHDOG=1" {
			t.Fatalf("unexpected notify message after READY=1: %q", m.text)
		}
		wd = append(wd, m.at)
	}
	var gaps []string
	for i := range wd {
		prev := readyAt
		if i > 0 {
			prev = wd[i-1]
		}
		gaps = append(gaps, wd[i].Sub(prev).Round(time.Millisecond).String())
	}
	t.Logf("%d WATCHDOG=1 in the 3 s after READY=1 (gaps: %s)", len(wd), strings.Join(gaps, " "))
	if len(wd) < 3 {
		t.Fatalf("only %d WATCHDOG=1 within 3 s of READY=1 with WATCHDOG_USEC=1000000 (want >= 3, one per 500 ms); log:\n%s",
			len(wd), tail(a.proc.Logs(), 30))
	}

	// SIGHUP: RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC at the
	// reload, between our readings around it), then READY=1.
	logOff := len(a.proc.Logs())
	before := monotonicUsec()
	if err := a.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	m, _, err := ns.nextState(10 * time.Second)
	after := monotonicUsec()
	if err != nil {
		t.Fatalf("after SIGHUP: %v", err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(m.text, "\n") {
		k, v, _ := strings.Cut(line, "=")
		fields[k] = v
	}
	if fields["RELOADING"] != "1" {
		t.Fatalf("after SIGHUP the first message is %q, want RELOADING=1 and MONOTONIC_USEC=...", m.text)
	}
	usec, err := strconv.ParseInt(fields["MONOTONIC_USEC"], 10, 64)
	if err != nil {
		t.Fatalf("RELOADING message %q: MONOTONIC_USEC: %v", m.text, err)
	}
	if usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d is not between CLOCK_MONOTONIC before the SIGHUP (%d) and after the message arrived (%d)", usec, before, after)
	}
	m, _, err = ns.nextState(10 * time.Second)
	if err != nil || m.text != "READY=1" {
		t.Fatalf("after RELOADING=1: got %q (%v), want READY=1", m.text, err)
	}
	t.Logf("SIGHUP: RELOADING=1 (MONOTONIC_USEC %d, %d µs after our reading) then READY=1", usec, usec-before)
	if line, err := waitLogLine(a.proc, logOff, time.Now().Add(5*time.Second), "configuration reloaded"); err != nil {
		t.Errorf("after SIGHUP: %v", err)
	} else {
		t.Logf("a: %s", line)
	}
	// The watchdog keeps going after the reload.
	if m, err := ns.next(3 * time.Second); err != nil || m.text != "WATCHDOG=1" {
		t.Errorf("after the reload: want WATCHDOG=1 again, got %q (%v)", m.text, err)
	}

	// SIGTERM: STOPPING=1, then exit 0.
	if err := a.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	m, _, err = ns.nextState(15 * time.Second)
	if err != nil || m.text != "STOPPING=1" {
		t.Fatalf("after SIGTERM: got %q (%v), want STOPPING=1", m.text, err)
	}
	if err := a.proc.Wait(15 * time.Second); err != nil {
		t.Fatalf("after SIGTERM: %v (want exit status 0)", err)
	}
	t.Logf("SIGTERM: STOPPING=1, exit 0")
}

// ---------------------------------------------------------------------------
// 2. SIGHUP reload under traffic

// prodConfig is a weft YAML config file for n.
func prodConfig(n *node, join []string, subnet, logLevel, peers string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nnetwork: %s\nsubnet: %s\npublicIp: %s\n", n.name, overlayNetwork, subnet, n.underlay)
	fmt.Fprintf(&b, "join: [%s]\n", strings.Join(join, ", "))
	fmt.Fprintf(&b, "metricsAddr: %q\n", netip.AddrPortFrom(n.underlay, metricsPort).String())
	b.WriteString(n.files.YAML())
	fmt.Fprintf(&b, "logLevel: %s\nlogFormat: text\n", logLevel)
	if peers != "" {
		b.WriteString(peers)
	}
	return b.String()
}

// iperfIntervals summarizes iperf3 -J's per-second intervals ("1.0-2.0 s:
// 812 Mbit/s ...") and returns the lowest rate.
func iperfIntervals(raw []byte) (string, float64) {
	var doc struct {
		Intervals []struct {
			Sum struct {
				Start, End    float64
				BitsPerSecond float64 `json:"bits_per_second"`
				Retransmits   int     `json:"retransmits"`
			} `json:"sum"`
		} `json:"intervals"`
	}
	if json.Unmarshal(raw, &doc) != nil || len(doc.Intervals) == 0 {
		return "(no intervals)", 0
	}
	var parts []string
	low := -1.0
	for _, iv := range doc.Intervals {
		s := iv.Sum
		parts = append(parts, fmt.Sprintf("%.1f-%.1fs %.0f Mbit/s (%d retr)", s.Start, s.End, s.BitsPerSecond/1e6, s.Retransmits))
		if low < 0 || s.BitsPerSecond < low {
			low = s.BitsPerSecond
		}
	}
	return strings.Join(parts, "; "), low
}

// TestReloadKeepsTraffic: a SIGHUP that changes the log level and adds a
// static peer takes effect without disturbing a TCP transfer through the
// overlay; one that changes the subnet is refused and a keeps forwarding.
func TestReloadKeepsTraffic(t *testing.T) {
	c := newCluster(t, "a", "b")
	a, b := c.by["a"], c.by["b"]
	cfgPath := map[string]string{}
	for _, n := range c.nodes {
		var join []string
		for _, o := range c.nodes {
			if o != n {
				join = append(join, o.underlay.String())
			}
		}
		cfgPath[n.name] = filepath.Join(c.lab.Dir(), n.name+".yaml")
		writeFile(t, cfgPath[n.name], prodConfig(n, join, n.subnet.String(), "info", ""))
		n.args = []string{"run", "--config", cfgPath[n.name]}
	}
	c.startAll()
	c.waitFormed(formationTimeout)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := pollUntil(time.Now().Add(5*time.Second), func() error { return pingOK(ctx, a, b.overlay, 1) }); err != nil {
		t.Fatalf("before the reload, a cannot reach b: %v", err)
	}
	if strings.Contains(a.proc.Logs(), "level=DEBUG") {
		t.Errorf("a logs DEBUG lines with logLevel: info:\n%s", tail(a.proc.Logs(), 20))
	}
	if _, err := b.host.IPerf3Server(5201); err != nil {
		t.Fatal(err)
	}

	// TCP a -> b for 6 s; the reload happens 1.5 s into it.
	iperfStart := time.Now()
	iperfDone := iperfInBackground(ctx, a, b.overlay, netlab.IPerf3Options{Port: 5201, Seconds: 6})
	time.Sleep(1500 * time.Millisecond)

	// The new config: log level debug, static peer k at an address of the
	// segment that nothing uses, and that address as a second seed. A seed
	// that is down makes the gossip try it (at most every 10 s) and log the
	// failure at debug level: a DEBUG line that comes soon, where the
	// gossip's own debug lines (push/pull) may take a minute.
	const kPeers = "peers:\n  - name: k\n    subnet: 10.244.9.0/24\n    ip: 192.168.50.9\n"
	aJoin := []string{b.underlay.String(), "192.168.50.9"}
	logOff := len(a.proc.Logs())
	writeFile(t, cfgPath["a"], prodConfig(a, aJoin, a.subnet.String(), "debug", kPeers))
	hupAt := time.Now()
	if err := a.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line, err := waitLogLine(a.proc, logOff, time.Now().Add(10*time.Second), "configuration reloaded")
	if err != nil {
		t.Fatalf("SIGHUP %.1f s into the transfer: %v", hupAt.Sub(iperfStart).Seconds(), err)
	}
	t.Logf("reload %.1f s into the transfer: %s", hupAt.Sub(iperfStart).Seconds(), line)
	for _, want := range []string{"logLevel", "join", "peers"} {
		if !strings.Contains(line, want) {
			t.Errorf("the reload line does not list %q as changed: %s", want, line)
		}
	}
	reloadOff := logOff + strings.Index(a.proc.Logs()[logOff:], line)

	// The static peer is in a's status.
	var k *router.PeerStatus
	err = pollUntil(time.Now().Add(5*time.Second), func() error {
		st, err := status(a)
		if err != nil {
			return err
		}
		if k = st.Peer("k"); k == nil {
			return fmt.Errorf("a's status does not list k: %s", st.raw)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after the reload: %v", err)
	}
	if k.State != "static" || !k.Static || k.Subnet != "10.244.9.0/24" || k.Underlay != "192.168.50.9:8285" {
		t.Errorf("a's status: peer k = %+v, want state static, static true, subnet 10.244.9.0/24, underlay 192.168.50.9:8285", *k)
	}

	// The transfer went through the reload.
	out := awaitIperf(t, iperfDone, 60*time.Second, "iperf3 a -> b")
	if out.err != nil {
		t.Fatalf("iperf3 a -> b across the reload: %v", out.err)
	}
	res := out.res
	ivs, low := iperfIntervals(res.Raw)
	t.Logf("iperf3 TCP a -> b across the reload: %.1f Mbit/s received (%.1f sent), %d retransmits; lowest 1 s interval %.1f Mbit/s",
		res.ReceivedBPS/1e6, res.SentBPS/1e6, res.Retransmits, low/1e6)
	t.Logf("iperf3 intervals: %s", ivs)
	if res.SentBPS <= 0 || res.ReceivedBPS <= 0 {
		t.Errorf("iperf3 a -> b across the reload: %v", res)
	}

	// Status fields, now that traffic has flowed.
	st, err := status(a)
	if err != nil {
		t.Fatal(err)
	}
	if miss := missingKeys(st,
		[]string{"name", "subnet", "address", "underlay", "encap", "mtu", "tun", "uptimeSeconds", "ready"},
		[]string{"drops"},
		[]string{"name", "subnet", "underlay", "state", "static", "via", "txBytes", "rxBytes"}, "b", "k",
	); len(miss) > 0 {
		t.Errorf("a's status --json lacks %v:\n%s", miss, st.raw)
	}
	if pb := st.Peer("b"); pb == nil || pb.TxBytes == 0 || pb.RxBytes == 0 || pb.LastSeen.IsZero() || pb.Static || pb.State != "alive" {
		t.Errorf("a's status: peer b = %+v, want alive, not static, traffic both ways and a lastSeen", pb)
	}
	if n := st.Node; n.Name != "a" || n.Subnet != a.subnet.String() || n.Address != a.overlay.String() ||
		n.Underlay != "192.168.50.1:8285" || n.Encap != "udp" || n.TUN != "weft0" || n.MTU < 576 || !n.Ready || n.UptimeSeconds <= 0 {
		t.Errorf("a's status: node = %+v", n)
	}

	// A changed subnet needs a restart: refused, nothing changes.
	logOff = len(a.proc.Logs())
	writeFile(t, cfgPath["a"], prodConfig(a, aJoin, "10.244.7.0/24", "debug", kPeers))
	if err := a.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line, err = waitLogLine(a.proc, logOff, time.Now().Add(10*time.Second), "reload refused")
	if err != nil {
		t.Fatalf("SIGHUP with a new subnet: %v", err)
	}
	t.Logf("subnet change: %s", line)
	if !strings.Contains(line, "need a restart") || !strings.Contains(line, "changed=subnet") {
		t.Errorf("the refusal does not say a restart is needed for the subnet (want `changed=subnet`): %s", line)
	}
	if strings.Contains(a.proc.Logs()[logOff:], "configuration reloaded") {
		t.Errorf("a refused reload still logged `configuration reloaded`:\n%s", tail(a.proc.Logs()[logOff:], 20))
	}
	if st, err := status(a); err != nil {
		t.Error(err)
	} else if st.Node.Subnet != a.subnet.String() || st.Peer("k") == nil {
		t.Errorf("after the refused reload a's status has subnet %q (want %s) and k %v", st.Node.Subnet, a.subnet, st.Peer("k"))
	}
	if _, addr, err := linkInfo(a.host, "weft0"); err != nil || !strings.Contains(addr, " "+a.overlay.String()+"/16 ") {
		t.Errorf("after the refused reload weft0 lacks %s/16: %q %v", a.overlay, addr, err)
	}
	if err := pingOK(ctx, a, b.overlay, 3); err != nil {
		t.Errorf("after the refused reload: %v", err)
	}
	if a.proc.Exited() {
		t.Fatal(errExited(a))
	}

	// The new log level took effect, also for the gossip's logger made at
	// the start: DEBUG lines after the reload line. The reconnect to the
	// down seed comes within 10 s, its failure within memberlist's 10 s TCP
	// timeout (a few seconds: nothing answers ARP for it).
	line, err = waitLogLine(a.proc, reloadOff, hupAt.Add(30*time.Second), "level=DEBUG")
	if err != nil {
		t.Errorf("no DEBUG line in a's log after the reload to logLevel: debug: %v", err)
	} else {
		t.Logf("DEBUG after the reload (%v after the SIGHUP): %s", time.Since(hupAt).Round(100*time.Millisecond), line)
	}
}

// ---------------------------------------------------------------------------
// 3. Prometheus and the Grafana dashboard

const promAddr = "127.0.0.1:9090"

const aptPrometheus = "apt-get install -y --no-install-recommends prometheus (it provides prometheus and promtool; CI installs it)"

// promQuery runs an instant query against the Prometheus in h and returns
// the vector: instance -> value.
func promQuery(h *netlab.Host, expr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := h.HTTPGet(ctx, "http://"+promAddr+"/api/v1/query?query="+url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	var doc struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("query %s: HTTP %d: %v: %.300s", expr, code, err, body)
	}
	if code != 200 || doc.Status != "success" {
		return nil, fmt.Errorf("query %s: HTTP %d %s: %s", expr, code, doc.Status, doc.Error)
	}
	if doc.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: result type %q, want vector", expr, doc.Data.ResultType)
	}
	out := map[string]float64{}
	for _, r := range doc.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %v", expr, r.Value, err)
		}
		out[r.Metric["instance"]] = v
	}
	return out, nil
}

// dashboardQueries returns every PromQL string of the dashboard: panel
// targets (rows' nested panels too), annotations and template variables.
func dashboardQueries(t *testing.T) (map[string][]string, []string) {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "weft-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("weft-dashboard.json: %v", err)
	}
	byTitle := map[string][]string{} // panel title -> target exprs
	var all []string
	var walk func(v any, title string)
	walk = func(v any, title string) {
		switch v := v.(type) {
		case map[string]any:
			if s, ok := v["title"].(string); ok {
				if _, isPanel := v["targets"]; isPanel {
					title = s
				}
			}
			for k, e := range v {
				switch s, ok := e.(string); {
				case ok && (k == "expr" || k == "definition" || k == "query"):
					all = append(all, s)
					if k == "expr" && title != "" {
						byTitle[title] = append(byTitle[title], s)
					}
				default:
					walk(e, title)
				}
			}
		case []any:
			for _, e := range v {
				walk(e, title)
			}
		}
	}
	walk(doc, "")
	return byTitle, all
}

var promMetricRe = regexp.MustCompile(`\b((?:weft|process|go)_[A-Za-z0-9_]*)`)

// TestPrometheusScrapesDashboardQuery: a real Prometheus (in a's namespace)
// scrapes both daemons every second; the dashboard's overlay-throughput
// queries show the iperf3 traffic; the live /metrics passes promtool's lint
// and has every metric the dashboard uses.
func TestPrometheusScrapesDashboardQuery(t *testing.T) {
	if missing := netlab.MissingTools("prometheus", "promtool"); len(missing) > 0 {
		netlab.RequireRoot(t)
		t.Fatalf("%s not found in PATH: %s", strings.Join(missing, " and "), aptPrometheus)
	}
	c := newCluster(t, "a", "b")
	a, b := c.by["a"], c.by["b"]
	c.startAll()

	// Prometheus, meanwhile: 1 s scrapes of both daemons.
	dir := c.lab.Dir()
	promCfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, promCfg, fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: weft
    metrics_path: /metrics
    static_configs:
      - targets: ["%s", "%s"]
`, netip.AddrPortFrom(a.underlay, metricsPort), netip.AddrPortFrom(b.underlay, metricsPort)))
	if out, err := exec.Command("promtool", "check", "config", promCfg).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	prom, err := a.host.Start("prometheus",
		"--config.file="+promCfg,
		"--storage.tsdb.path="+filepath.Join(dir, "prometheus-data"),
		"--web.listen-address="+promAddr,
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before the lab's cleanup
		if t.Failed() {
			t.Logf("===== prometheus (in a) =====\n%s", tail(prom.Logs(), 60))
		}
	})

	c.waitFormed(formationTimeout)
	err = pollUntil(time.Now().Add(45*time.Second), func() error {
		if prom.Exited() {
			return permanent{fmt.Errorf("prometheus exited: %v", prom.ProcessState())}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		code, body, err := a.host.HTTPGet(ctx, "http://"+promAddr+"/-/ready")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("/-/ready: %d %s", code, bytes.TrimSpace(body))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("prometheus not ready: %v", err)
	}
	instA := netip.AddrPortFrom(a.underlay, metricsPort).String()
	instB := netip.AddrPortFrom(b.underlay, metricsPort).String()
	err = pollUntil(time.Now().Add(30*time.Second), func() error {
		up, err := promQuery(a.host, `up{job="weft"}`)
		if err != nil {
			return err
		}
		if up[instA] != 1 || up[instB] != 1 {
			return fmt.Errorf("up{job=\"weft\"} = %v", up)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("prometheus does not scrape both daemons: %v", err)
	}

	// The dashboard's overlay throughput panel.
	byTitle, allExprs := dashboardQueries(t)
	var tputExprs []string
	for title, exprs := range byTitle {
		for _, e := range exprs {
			if strings.Contains(e, "weft_tx_bytes_total") || strings.Contains(e, "weft_rx_bytes_total") {
				tputExprs = append(tputExprs, e)
				t.Logf("dashboard panel %q: %s", title, e)
			}
		}
	}
	if len(tputExprs) == 0 {
		t.Fatalf("no dashboard panel queries weft_tx_bytes_total or weft_rx_bytes_total; panels: %v", byTitle)
	}
	slices.Sort(tputExprs)
	subst := strings.NewReplacer("$__rate_interval", "10s", "${__rate_interval}", "10s", "${instance}", ".*", "$instance", ".*")

	if _, err := b.host.IPerf3Server(5201); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	iperfDone := iperfInBackground(ctx, a, b.overlay, netlab.IPerf3Options{Port: 5201, Seconds: 6})
	time.Sleep(2 * time.Second)

	// Each throughput query: the sender's tx (a) or the receiver's rx (b)
	// is non-zero while the transfer runs.
	for _, raw := range tputExprs {
		expr := subst.Replace(raw)
		if strings.Contains(expr, "$") {
			t.Fatalf("dashboard expression has an unknown variable: %s", raw)
		}
		inst := instA
		if strings.Contains(expr, "weft_rx_bytes_total") {
			inst = instB
		}
		var got map[string]float64
		err := pollUntil(time.Now().Add(15*time.Second), func() error {
			var err error
			if got, err = promQuery(a.host, expr); err != nil {
				return err
			}
			if got[inst] <= 0 {
				return fmt.Errorf("%s for instance %s is %v (all: %v)", expr, inst, got[inst], got)
			}
			return nil
		})
		if err != nil {
			t.Errorf("dashboard query during iperf3 a -> b: %v", err)
			continue
		}
		t.Logf("%s\n  = %v (Mbit/s: %s %.1f)", expr, got, inst, got[inst]/1e6)
	}
	out := <-iperfDone
	if out.err != nil {
		t.Fatalf("iperf3 a -> b: %v", out.err)
	}
	t.Logf("iperf3 a -> b: %.1f Mbit/s received, %d retransmits", out.res.ReceivedBPS/1e6, out.res.Retransmits)

	// Live /metrics: promtool's lint is clean and every metric the
	// dashboard references exists.
	var dashMetrics []string
	for _, e := range allExprs {
		for _, m := range promMetricRe.FindAllStringSubmatch(e, -1) {
			if !slices.Contains(dashMetrics, m[1]) {
				dashMetrics = append(dashMetrics, m[1])
			}
		}
	}
	slices.Sort(dashMetrics)
	t.Logf("the dashboard references %d metrics", len(dashMetrics))
	for _, n := range []*node{a, b} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code, body, err := n.host.HTTPGet(ctx, n.metricsURL("/metrics"))
		cancel()
		if err != nil || code != 200 {
			t.Fatalf("GET /metrics on %s: %d %v", n.name, code, err)
		}
		cmd := exec.Command("promtool", "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		lint, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(lint)) > 0 {
			t.Errorf("promtool check metrics on %s's /metrics: %v\n%s", n.name, err, lint)
		} else {
			t.Logf("promtool check metrics on %s's /metrics (%d bytes): clean", n.name, len(body))
		}

		fam, err := parseMetrics(body)
		if err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
		var missing []string
		contract := deploy.Metrics()
		for _, m := range dashMetrics {
			if _, ok := fam[m]; ok {
				continue
			}
			if contract[m].Only != "" {
				continue // exported only with a flag these hosts run without
			}
			found := false
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(m, suf); ok && fam[base] != nil {
					typ := fam[base].GetType()
					if typ == dto.MetricType_HISTOGRAM || (typ == dto.MetricType_SUMMARY && suf != "_bucket") {
						found = true
					}
				}
			}
			if !found {
				missing = append(missing, m)
			}
		}
		if len(missing) > 0 {
			t.Errorf("metrics the dashboard uses but %s's live /metrics lacks: %v", n.name, missing)
		}
	}
}

// ---------------------------------------------------------------------------
// 4. Subnet file

// TestSubnetFile: the subnet file holds exactly the WEFT_ variables (and,
// with --flannel-compat, flannel's), and is written once weft0 is up with
// the address it names.
func TestSubnetFile(t *testing.T) {
	c := newCluster(t, "a", "b")
	a := c.by["a"]
	a.args = append(a.args, "--flannel-compat")
	path := func(n *node) string { return n.files.SubnetFile }
	for _, n := range c.nodes {
		if _, err := os.Stat(path(n)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s exists before the start (%v)", path(n), err)
		}
	}
	c.startAll()

	// Poll both files; the moment one exists, its host's weft0 must be up
	// with the address it names.
	content := map[string]string{}
	err := pollFast(time.Now().Add(formationTimeout), func() error {
		for _, n := range c.nodes {
			if _, done := content[n.name]; done {
				continue
			}
			data, err := os.ReadFile(path(n))
			if err != nil {
				if n.proc.Exited() {
					return errExited(n)
				}
				continue
			}
			content[n.name] = string(data)
			checkSubnetFile(t, n, n == a, path(n), data)
		}
		if len(content) < len(c.nodes) {
			return fmt.Errorf("subnet files so far: %d of %d", len(content), len(c.nodes))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("no subnet file: %v", err)
	}
	if strings.Contains(content["b"], "FLANNEL_") {
		t.Errorf("b: FLANNEL_ variables without --flannel-compat:\n%s", content["b"])
	}

	// The MTU in the file is the daemon's, and no temporary file is left.
	for _, n := range c.nodes {
		st, err := status(n)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("WEFT_MTU=%d\n", st.Node.MTU); !strings.Contains(content[n.name], want) {
			t.Errorf("%s: status says mtu %d; subnet file:\n%s", n.name, st.Node.MTU, content[n.name])
		}
		left, _ := filepath.Glob(filepath.Join(n.files.Dir, "."+filepath.Base(n.files.SubnetFile)+"*"))
		if len(left) > 0 {
			t.Errorf("%s: temporary files left beside the subnet file: %v", n.name, left)
		}
	}
}

// checkSubnetFile checks a subnet file that has just appeared: weft0 is up
// with WEFT_ADDRESS, and the file holds exactly the expected variables.
func checkSubnetFile(t *testing.T, n *node, flannel bool, path string, data []byte) {
	t.Helper()
	link, addr, err := linkInfo(n.host, "weft0")
	if err != nil {
		t.Errorf("%s: the subnet file exists but weft0 does not: %v", n.name, err)
		return
	}
	wantAddr := ""
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "WEFT_ADDRESS="); ok {
			wantAddr = v
		}
	}
	if wantAddr == "" || !strings.Contains(addr, " "+wantAddr+"/16 ") {
		t.Errorf("%s: the subnet file says WEFT_ADDRESS=%s but weft0 has: %q", n.name, wantAddr, addr)
	}
	if m := linkFlagsRe.FindStringSubmatch(link); m == nil || !slices.Contains(strings.Split(m[1], ","), "UP") {
		t.Errorf("%s: the subnet file exists but weft0 is not up: %q", n.name, link)
	}
	mtu := ""
	if m := linkMTURe.FindStringSubmatch(link); m != nil {
		mtu = m[1]
	}
	t.Logf("%s: %s (weft0 up, mtu %s):\n%s", n.name, path, mtu, data)

	want := fmt.Sprintf("WEFT_NETWORK=%s\nWEFT_SUBNET=%s\nWEFT_ADDRESS=%s\nWEFT_MTU=%s\nWEFT_ENCAP=udp\n",
		overlayNetwork, n.subnet, n.overlay, mtu)
	if flannel {
		// flannel's FLANNEL_SUBNET is the subnet's first host address.
		want += fmt.Sprintf("FLANNEL_NETWORK=%s\nFLANNEL_SUBNET=%s\nFLANNEL_MTU=%s\nFLANNEL_IPMASQ=false\n",
			overlayNetwork, netip.PrefixFrom(n.overlay.Next(), n.subnet.Bits()), mtu)
	}
	if string(data) != want {
		t.Errorf("%s: subnet file\n%s\nwant exactly\n%s", n.name, data, want)
	}
	if fi, err := os.Stat(path); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o644 {
		t.Errorf("%s: subnet file mode %v, want 0644", n.name, fi.Mode())
	}
}
