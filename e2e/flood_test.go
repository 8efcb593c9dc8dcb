package e2e

// Forged traffic: a stranger floods a host's data port while real traffic
// flows; every datagram is counted under its drop reason and none reaches
// the TUN.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// TestGarbageFloodWhileTransferring: while TCP flows a -> b over the
// overlay, a stranger x on the same bridge (not a member, no weft) sends up
// to 500,000 forged datagrams at b's data port: garbage and well-formed
// packets from its own address, and, with a raw socket forging a's underlay
// address as the outer source, packets whose inner source is not in a's
// subnet, whose inner destination is not in b's subnet, or that are not IP
// at all. None may reach b's TUN; each is counted under its drop reason;
// the transfer completes; b stays small and logs no line per packet.
//
// What this cannot stop, by design: a stranger on the underlay who forges a
// peer's outer address AND an inner source inside that peer's subnet is
// indistinguishable from the peer (the UDP encapsulation carries no
// authentication), so b accepts such packets and writes them to its TUN.
// The test sends none of those.
func TestGarbageFloodWhileTransferring(t *testing.T) {
	netlab.RequireTools(t, "tcpdump", "cat")
	c := newCluster(t, "a", "b")
	a, b := c.by["a"], c.by["b"]
	xAddr := netip.MustParseAddr("192.168.50.99")
	x, err := c.lab.Host("x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Attach(c.seg, netip.PrefixFrom(xAddr, 24)); err != nil {
		t.Fatal(err)
	}
	c.startAll()
	c.waitFormed(formationTimeout)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := pingWithin(ctx, a, b.overlay, 5*time.Second); err != nil {
		t.Fatalf("a cannot reach b: %v", err)
	}
	if err := pingOK(ctx, &node{name: "x", host: x}, b.underlay, 1); err != nil {
		t.Fatalf("x cannot reach b's underlay address: %v", err)
	}

	// Watch b's TUN for anything to or from UDP port 9. A control packet
	// sent by a through the tunnel proves the capture sees what arrives.
	dump := startTcpdump(t, b.host, "weft0", 15*time.Second, "-nn", "-l", "-c", "100000", "udp port 9")
	const controls = 3
	var sent map[string]int
	if err := runTrustHelperIn(ctx, a.host, "udp-send", udpSendSpec{
		LocalPort: controlSrcPort, To: netip.AddrPortFrom(b.overlay, floodDstPort), Count: controls, Payload: controlTag,
	}, &sent); err != nil {
		t.Fatal(err)
	}
	controlLine := fmt.Sprintf("%s.%d > %s.%d:", a.overlay, controlSrcPort, b.overlay, floodDstPort)
	if err := pollUntil(time.Now().Add(10*time.Second), func() error {
		if got := countLines(dump.Logs(), controlLine); got < controls {
			return fmt.Errorf("tcpdump on b's weft0 saw %d of %d control packets from a", got, controls)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v:\n%s", err, dump.Logs())
	}

	// Counters before.
	reasons := []string{"unknown_peer", "spoofed", "not_local", "malformed"}
	readCounters := func() (map[string]float64, error) {
		ms, _, err := metrics(ctx, b)
		if err != nil {
			return nil, err
		}
		m := map[string]float64{}
		for _, r := range reasons {
			v, ok := ms.value("weft_dropped_packets_total", "reason", r)
			if !ok {
				return nil, fmt.Errorf(`b's /metrics has no weft_dropped_packets_total{reason=%q}`, r)
			}
			m[r] = v
		}
		v, ok := ms.value("weft_rx_packets_total")
		if !ok {
			return nil, errors.New("b's /metrics has no weft_rx_packets_total")
		}
		m["rx"] = v
		return m, nil
	}
	// Datagrams lost on the way (veth backlog, b's socket buffer), an upper
	// bound on what never reached b's forwarding loop.
	readLost := func() (uint64, error) {
		sock, err := udpSocketDrops(ctx, b.host, dataPort)
		if err != nil {
			return 0, err
		}
		_, xTx, err := linkDrops(ctx, x.NS(), "eth0")
		if err != nil {
			return 0, err
		}
		_, swTx, err := linkDrops(ctx, c.lab.SwitchNS(), "b-eth0")
		if err != nil {
			return 0, err
		}
		_, bRx, err := linkDrops(ctx, b.host.NS(), "eth0")
		if err != nil {
			return 0, err
		}
		return sock + xTx + swTx + bRx, nil
	}
	before, err := readCounters()
	if err != nil {
		t.Fatal(err)
	}
	lostBefore, err := readLost()
	if err != nil {
		t.Fatal(err)
	}
	logOffset := len(b.proc.Logs())

	// The transfer, and one second into it the flood.
	if _, err := b.host.IPerf3Server(5201); err != nil {
		t.Fatal(err)
	}
	iperfDone := iperfInBackground(ctx, a, b.overlay, netlab.IPerf3Options{Port: 5201, Seconds: 10})
	time.Sleep(time.Second)
	spec := floodSpec{
		Target:  netip.AddrPortFrom(b.underlay, dataPort),
		Spoof:   a.underlay,
		PeerNet: a.subnet,
		Dst:     b.overlay,
		// Outside a's subnet: another subnet of the network, b's own, and
		// an address outside the overlay (TEST-NET-1).
		SpoofSrcs: []netip.Addr{netip.MustParseAddr("10.244.200.7"), b.overlay.Next(), netip.MustParseAddr("192.0.2.1")},
		// Outside b's subnet: nobody's subnet, a's own, and TEST-NET-2.
		ForeignDsts: []netip.Addr{netip.MustParseAddr("10.244.3.5"), a.overlay.Next(), netip.MustParseAddr("198.51.100.7")},
		Count:       500_000,
		Duration:    9 * time.Second,
		Seed:        uint64(time.Now().UnixNano()),
	}
	floodCtx, floodCancel := context.WithTimeout(ctx, 30*time.Second) // hard bound on the helper process
	var rep floodReport
	floodStart := time.Now()
	err = runTrustHelperIn(floodCtx, x, "flood", spec, &rep)
	floodCancel()
	if err != nil {
		t.Fatalf("flood from x: %v", err)
	}
	t.Logf("x sent %d datagrams in %.1f s (%.0f/s, stopped by %s): sent %v, failed %v %v",
		rep.total(), rep.Seconds, float64(rep.total())/rep.Seconds, rep.Stop, rep.Sent, rep.Failed, rep.FirstErr)
	floodLogs := b.proc.Logs()[logOffset:]

	ip := awaitIperf(t, iperfDone, 60*time.Second, "iperf3 after the flood's end")
	if ip.err != nil {
		t.Errorf("iperf3 a -> b during the flood: %v", ip.err)
	} else if ip.res.ReceivedBPS <= 0 {
		t.Errorf("iperf3 a -> b during the flood: %v", ip.res)
	} else {
		t.Logf("iperf3 TCP a -> b during the flood: %v", ip.res)
	}

	// Let b's forwarding loop drain its socket before reading counters.
	time.Sleep(time.Second)
	after, err := readCounters()
	if err != nil {
		t.Fatal(err)
	}
	lostAfter, err := readLost()
	if err != nil {
		t.Fatal(err)
	}
	d := map[string]float64{}
	for k := range after {
		d[k] = after[k] - before[k]
	}
	lost := float64(lostAfter - lostBefore)
	sentFor := map[string]float64{} // drop reason -> datagrams sent that must get it
	var sentAll, countedAll float64
	for kind, n := range rep.Sent {
		sentFor[floodReasons[kind]] += float64(n)
		sentAll += float64(n)
	}
	for _, r := range reasons {
		countedAll += d[r]
	}
	t.Logf("b's drops during the flood: unknown_peer +%.0f (of %.0f sent from x's own address, %d of them empty), spoofed +%.0f (of %.0f), not_local +%.0f (of %.0f), malformed +%.0f (of %.0f, %d of them empty); rx +%.0f; lost before weft read them (socket + veth drops, all traffic) %.0f",
		d["unknown_peer"], sentFor["unknown_peer"], rep.Sent[kindEmpty], d["spoofed"], sentFor["spoofed"], d["not_local"], sentFor["not_local"],
		d["malformed"], sentFor["malformed"], rep.Sent[kindSpoofedEmpty], d["rx"], lost)

	// Every datagram x sent, empty ones included, is counted under its
	// reason: at most what was sent of its kinds, and at least that minus
	// what the kernel dropped before weft could read it (which also counts
	// the transfer's own losses, so this is a lower bound).
	for _, r := range reasons {
		got, sent := d[r], sentFor[r]
		switch {
		case sent == 0:
			t.Errorf("x sent no datagram that must be dropped as %s: %v", r, rep.Sent)
		case got > sent:
			t.Errorf("%s drops +%.0f exceed the %.0f datagrams of its kinds x sent", r, got, sent)
		case got < sent-lost:
			t.Errorf("%s drops +%.0f, want at least %.0f (%.0f sent minus %.0f lost on the way): %.0f datagrams were not counted", r, got, sent-lost, sent, lost, sent-lost-got)
		}
	}
	if countedAll < sentAll-lost || countedAll > sentAll {
		t.Errorf("b counted %.0f of the %.0f datagrams x sent (%.0f lost on the way)", countedAll, sentAll, lost)
	} else {
		t.Logf("b counted %.0f of the %.0f datagrams x sent; %.0f lost on the way", countedAll, sentAll, lost)
	}
	for _, kind := range []string{kindEmpty, kindSpoofedEmpty} {
		if rep.Sent[kind] == 0 {
			t.Errorf("x sent no %s datagram: %v %v", kind, rep.Failed, rep.FirstErr)
		}
	}
	if d["rx"] <= 0 {
		t.Errorf("b wrote no packet to its TUN during the transfer (weft_rx_packets_total +%.0f)", d["rx"])
	}

	// Nothing forged reached b's TUN: stop the capture and read it.
	if err := dump.Stop(5 * time.Second); err != nil {
		t.Logf("tcpdump: %v", err)
	}
	capture := dump.Logs()
	var leaked []string
	for _, line := range strings.Split(capture, "\n") {
		if strings.Contains(line, " > ") && strings.Contains(line, "UDP") && !strings.Contains(line, controlLine) {
			leaked = append(leaked, line)
		}
	}
	if len(leaked) > 0 {
		t.Errorf("%d forged packets reached b's TUN, e.g.:\n%s", len(leaked), strings.Join(leaked[:min(len(leaked), 10)], "\n"))
	}
	if got := countLines(capture, controlLine); got != controls {
		t.Errorf("tcpdump saw %d control packets, want %d", got, controls)
	}
	if m := regexp.MustCompile(`(\d+) packets? dropped by kernel`).FindStringSubmatch(capture); m == nil || m[1] != "0" {
		t.Errorf("tcpdump's capture is not complete: %q", strings.TrimSpace(capture[max(0, len(capture)-300):]))
	}
	t.Logf("tcpdump on b's weft0 (udp port 9): %d control packets, %d forged; %s", controls, len(leaked),
		strings.Join(grepLines(capture, regexp.MustCompile(`packets (captured|received by filter|dropped by kernel)`), 3), "; "))

	// b's memory and log.
	hwm, err := procStatusKB(b.proc.PID(), "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	rss, _ := procStatusKB(b.proc.PID(), "VmRSS")
	t.Logf("b's weft: peak RSS (VmHWM) %.1f MiB, RSS now %.1f MiB", float64(hwm)/1024, float64(rss)/1024)
	limit := int64(64 * 1024)
	if weftRace {
		limit *= 8 // the race detector's shadow memory: 5-10x, says its documentation
	}
	if hwm >= limit {
		t.Errorf("b's weft peak RSS %.1f MiB, want < %d MiB (race build: %v)", float64(hwm)/1024, limit/1024, weftRace)
	}
	floodRe := regexp.MustCompile(`(?i)unknown_peer|spoof|not_local|malformed|dropped|` + regexp.QuoteMeta(xAddr.String()) + `|` + regexp.QuoteMeta(a.underlay.String()) + `:` + strconv.Itoa(dataPort))
	mentions := grepLines(floodLogs, floodRe, 100)
	lines := len(strings.Split(strings.TrimRight(floodLogs, "\n"), "\n"))
	t.Logf("b logged %d line(s) during the %.1f s flood, %d of them about dropped or forged datagrams", lines, time.Since(floodStart).Seconds(), len(mentions))
	if len(mentions) > 3 {
		t.Errorf("b logged %d lines about the flood, want at most a few summary lines:\n%s", len(mentions), strings.Join(mentions[:min(len(mentions), 20)], "\n"))
	}
	if lines > 300 {
		t.Errorf("b logged %d lines during the flood:\n%s", lines, tail(floodLogs, 30))
	}
	if b.proc.Exited() || a.proc.Exited() {
		t.Fatalf("a daemon exited during the flood: a %v, b %v", a.proc.ProcessState(), b.proc.ProcessState())
	}
	if err := pingOK(ctx, a, b.overlay, 2); err != nil {
		t.Errorf("after the flood, a -> b: %v", err)
	}
}

// procStatusKB returns a "kB" field (VmHWM, VmRSS) of /proc/<pid>/status.
func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// udpSocketDrops returns the kernel's drop counter of the UDP socket(s)
// bound to port in h (the last column of /proc/net/udp{,6}).
func udpSocketDrops(ctx context.Context, h *netlab.Host, port int) (uint64, error) {
	var total uint64
	found := false
	hexPort := fmt.Sprintf(":%04X", port)
	for _, file := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		out, err := h.Run(ctx, "cat", file)
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(out), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 13 || !strings.HasSuffix(f[1], hexPort) {
				continue
			}
			d, err := strconv.ParseUint(f[len(f)-1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %q: %v", file, line, err)
			}
			total += d
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("no UDP socket on port %d in %s", port, h.Name())
	}
	return total, nil
}

// linkDrops returns the rx and tx drop counters of ifname in namespace ns.
func linkDrops(ctx context.Context, ns, ifname string) (rx, tx uint64, err error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-s", "-j", "link", "show", "dev", ifname).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("ip -n %s -s link show %s: %v", ns, ifname, err)
	}
	var links []struct {
		Stats struct {
			RX struct {
				Dropped uint64 `json:"dropped"`
			} `json:"rx"`
			TX struct {
				Dropped uint64 `json:"dropped"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return 0, 0, fmt.Errorf("ip -s -j link show %s: %v: %s", ifname, err, out)
	}
	return links[0].Stats.RX.Dropped, links[0].Stats.TX.Dropped, nil
}
