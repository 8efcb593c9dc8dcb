package e2e

// The parallel data path (issue 11): weft run --workers N spreads flows over
// N forwarding workers, each with its own TUN queue and sockets, and between
// weft hosts that both advertise it leaves inner checksums partial. These
// tests run real daemons in namespaces with --workers 2 and --workers 1 and
// check that bulk TCP with 1, 4 and 8 streams completes, that many
// concurrent UDP flows arrive without a single datagram reordered within a
// flow (a flow belongs to one worker), that status and metrics report the
// workers, and that a host with --partial-checksums=false still talks to
// one that has them.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// flowHelperEnv selects a helper of this test binary run inside a namespace
// (netlab's re-exec: Host.SelfCommand): "flow-send" or "flow-recv".
const flowHelperEnv = "WEFT_E2E_FLOW_HELPER"

func init() {
	mode := os.Getenv(flowHelperEnv)
	if mode == "" {
		return
	}
	os.Unsetenv(flowHelperEnv)
	os.Exit(runFlowHelper(mode, os.Args[1:]))
}

// flowMagic starts every numbered datagram: magic, flow id, sequence number
// (all big-endian uint32), then padding to the datagram's size.
const (
	flowMagic  = 0x77656674 // "weft"
	flowHeader = 12
)

// flowSendSpec: Flows flows, flow i sent from source port BasePort+i, each
// PerFlow datagrams of Size bytes in bursts of Burst with a 1 ms pause.
type flowSendSpec struct {
	To       netip.AddrPort `json:"to"`
	Flows    int            `json:"flows"`
	BasePort int            `json:"basePort"`
	PerFlow  int            `json:"perFlow"`
	Size     int            `json:"size"`
	Burst    int            `json:"burst"`
}

type flowSendReport struct {
	Sent    []int   `json:"sent"` // per flow
	Seconds float64 `json:"seconds"`
}

// flowRecvSpec: listen on Port for Flows flows of up to PerFlow datagrams;
// stop when all have arrived, Idle after the last datagram, or Timeout.
type flowRecvSpec struct {
	Port    int           `json:"port"`
	Flows   int           `json:"flows"`
	PerFlow int           `json:"perFlow"`
	Idle    time.Duration `json:"idle"`
	Timeout time.Duration `json:"timeout"`
}

type flowStat struct {
	Received   int   `json:"received"`
	Reordered  int   `json:"reordered"`  // arrived after a higher sequence number of its flow
	Duplicates int   `json:"duplicates"` // a sequence number seen before
	MaxSeq     int   `json:"maxSeq"`
	SrcPorts   []int `json:"srcPorts"` // distinct source ports the flow came from
}

type flowRecvReport struct {
	Flows     []flowStat `json:"flows"`
	Malformed int        `json:"malformed"`
	Stop      string     `json:"stop"` // "complete", "idle" or "timeout"
}

func runFlowHelper(mode string, args []string) int {
	if len(args) != 1 {
		fmt.Fprintf(os.Stderr, "flow helper %s: want one JSON argument\n", mode)
		return 2
	}
	var (
		rep any
		err error
	)
	switch mode {
	case "flow-send":
		var spec flowSendSpec
		if err = json.Unmarshal([]byte(args[0]), &spec); err == nil {
			rep, err = flowSend(spec)
		}
	case "flow-recv":
		var spec flowRecvSpec
		if err = json.Unmarshal([]byte(args[0]), &spec); err == nil {
			rep, err = flowRecv(spec)
		}
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", mode, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// flowSend sends every flow from its own goroutine and socket at once, so
// that the flows are in flight together (and spread over the TUN queues).
func flowSend(spec flowSendSpec) (flowSendReport, error) {
	rep := flowSendReport{Sent: make([]int, spec.Flows)}
	if spec.Flows < 1 || spec.Flows > 64 || spec.PerFlow < 1 || spec.PerFlow > 100000 ||
		spec.Size < flowHeader || spec.Size > 1400 || spec.Burst < 1 {
		return rep, fmt.Errorf("spec out of bounds: %+v", spec)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, spec.Flows)
	for f := range spec.Flows {
		wg.Go(func() {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: spec.BasePort + f})
			if err != nil {
				errs[f] = err
				return
			}
			defer c.Close()
			buf := make([]byte, spec.Size)
			binary.BigEndian.PutUint32(buf[0:], flowMagic)
			binary.BigEndian.PutUint32(buf[4:], uint32(f))
			for seq := range spec.PerFlow {
				if seq > 0 && seq%spec.Burst == 0 {
					time.Sleep(time.Millisecond)
				}
				binary.BigEndian.PutUint32(buf[8:], uint32(seq))
				if _, err := c.WriteToUDPAddrPort(buf, spec.To); err != nil {
					// A full socket buffer (ENOBUFS) is loss, not a
					// failure; anything else is.
					if !isNoBufs(err) {
						errs[f] = err
						return
					}
					continue
				}
				rep.Sent[f]++
			}
		})
	}
	wg.Wait()
	rep.Seconds = time.Since(start).Seconds()
	for f, err := range errs {
		if err != nil {
			return rep, fmt.Errorf("flow %d: %w", f, err)
		}
	}
	return rep, nil
}

func isNoBufs(err error) bool {
	var se syscall.Errno
	return errors.As(err, &se) && se == syscall.ENOBUFS
}

var regexpWorkers = regexp.MustCompile(`^weft_(workers|tun_multiqueue)`)

// flowRecv counts what arrives per flow and every datagram that arrives
// after a higher sequence number of the same flow.
func flowRecv(spec flowRecvSpec) (flowRecvReport, error) {
	rep := flowRecvReport{Flows: make([]flowStat, spec.Flows)}
	if spec.Flows < 1 || spec.Flows > 64 || spec.PerFlow < 1 || spec.PerFlow > 100000 || spec.Timeout <= 0 || spec.Timeout > 2*time.Minute {
		return rep, fmt.Errorf("spec out of bounds: %+v", spec)
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			// Root may exceed rmem_max: room for a burst, so that loss
			// is rare and what is measured is the order.
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 16<<20)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", ":"+strconv.Itoa(spec.Port))
	if err != nil {
		return rep, err
	}
	c := pc.(*net.UDPConn)
	defer c.Close()
	fmt.Fprintln(os.Stderr, "listening on", c.LocalAddr())

	seen := make([][]bool, spec.Flows)
	for i := range seen {
		seen[i] = make([]bool, spec.PerFlow)
		rep.Flows[i].MaxSeq = -1
	}
	ports := make([]map[int]bool, spec.Flows)
	total, want := 0, spec.Flows*spec.PerFlow
	deadline := time.Now().Add(spec.Timeout)
	buf := make([]byte, 2048)
	rep.Stop = "timeout"
	for total < want {
		next := deadline
		if total > 0 {
			if idle := time.Now().Add(spec.Idle); idle.Before(next) {
				next = idle
			}
		}
		if err := c.SetReadDeadline(next); err != nil {
			return rep, err
		}
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				if total > 0 && time.Now().Before(deadline) {
					rep.Stop = "idle"
				}
				break
			}
			return rep, err
		}
		if n < flowHeader || binary.BigEndian.Uint32(buf) != flowMagic {
			rep.Malformed++
			continue
		}
		f, seq := int(binary.BigEndian.Uint32(buf[4:])), int(binary.BigEndian.Uint32(buf[8:]))
		if f >= spec.Flows || seq >= spec.PerFlow {
			rep.Malformed++
			continue
		}
		st := &rep.Flows[f]
		if ports[f] == nil {
			ports[f] = map[int]bool{}
		}
		if p := int(from.Port()); !ports[f][p] {
			ports[f][p] = true
			st.SrcPorts = append(st.SrcPorts, p)
		}
		switch {
		case seen[f][seq]:
			st.Duplicates++
			continue
		case seq < st.MaxSeq:
			st.Reordered++
		}
		seen[f][seq] = true
		st.Received++
		total++
		st.MaxSeq = max(st.MaxSeq, seq)
	}
	if total == want {
		rep.Stop = "complete"
	}
	return rep, nil
}

// runFlowHelper runs a flow helper in h to completion (bounded by ctx) and
// decodes its JSON report into out.
func runFlowHelperIn(ctx context.Context, h *netlab.Host, mode string, spec, out any) error {
	cmd, stdout, stderr, err := flowHelperCmd(ctx, h, mode, spec)
	if err != nil {
		return err
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("[%s] helper %s: %v: %s", h.Name(), mode, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("[%s] helper %s: bad report %q: %v", h.Name(), mode, stdout.String(), err)
	}
	return nil
}

func flowHelperCmd(ctx context.Context, h *netlab.Host, mode string, spec any) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer, error) {
	arg, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, nil, err
	}
	cmd, err := h.SelfCommand(ctx, []string{flowHelperEnv + "=" + mode}, string(arg))
	if err != nil {
		return nil, nil, nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr, nil
}

// numberedFlows sends flows concurrent numbered UDP flows from src to
// dst's overlay address (receiver on dst) and fails the test on a single
// datagram reordered or duplicated within a flow, on a flow that delivered
// nothing or came from more than one source port, or when less than a
// quarter of all datagrams arrived. Loss itself is allowed and logged.
func numberedFlows(t *testing.T, ctx context.Context, src, dst *node, flows, perFlow int, what string) {
	t.Helper()
	const port = 9400
	rspec := flowRecvSpec{Port: port, Flows: flows, PerFlow: perFlow, Idle: 2 * time.Second, Timeout: 60 * time.Second}
	rcmd, rout, rerr, err := flowHelperCmd(ctx, dst.host, "flow-recv", rspec)
	if err != nil {
		t.Fatal(err)
	}
	if err := rcmd.Start(); err != nil {
		t.Fatal(err)
	}
	recvDone := make(chan error, 1)
	go func() { recvDone <- rcmd.Wait() }()
	defer func() {
		// On an early return: the receiver ends at its own idle or
		// overall timeout; ctx bounds it too.
		select {
		case <-recvDone:
		case <-time.After(70 * time.Second):
		}
	}()
	if err := pollUntil(time.Now().Add(10*time.Second), func() error {
		out, err := dst.host.Run(ctx, "ss", "-Hlun", "sport = :"+strconv.Itoa(port))
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), ":"+strconv.Itoa(port)) {
			return fmt.Errorf("receiver not listening on %s yet", dst.name)
		}
		return nil
	}); err != nil {
		t.Fatalf("flow receiver on %s: %v (%s)", dst.name, err, rerr.String())
	}

	sspec := flowSendSpec{To: netip.AddrPortFrom(dst.overlay, port), Flows: flows, BasePort: 9500, PerFlow: perFlow, Size: 256, Burst: 16}
	var srep flowSendReport
	if err := runFlowHelperIn(ctx, src.host, "flow-send", sspec, &srep); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var werr error
	select {
	case werr = <-recvDone:
		recvDone <- werr // for the deferred wait
	case <-time.After(70 * time.Second):
		t.Fatalf("%s: the flow receiver on %s did not finish", what, dst.name)
	}
	if werr != nil {
		t.Fatalf("%s: flow receiver on %s: %v: %s", what, dst.name, werr, rerr.String())
	}
	var rrep flowRecvReport
	if err := json.Unmarshal(rout.Bytes(), &rrep); err != nil {
		t.Fatalf("%s: flow receiver report %q: %v", what, rout.String(), err)
	}

	sent, got := 0, 0
	for f := range flows {
		s, r := srep.Sent[f], rrep.Flows[f]
		sent += s
		got += r.Received
		t.Logf("%s: flow %d (source port %d): sent %d, received %d (lost %d), reordered %d, duplicates %d, source ports seen %v",
			what, f, sspec.BasePort+f, s, r.Received, s-r.Received, r.Reordered, r.Duplicates, r.SrcPorts)
		if r.Reordered != 0 {
			t.Errorf("%s: flow %d: %d datagrams arrived after a higher sequence number of the same flow (want 0)", what, f, r.Reordered)
		}
		if r.Duplicates != 0 {
			t.Errorf("%s: flow %d: %d duplicate datagrams (want 0)", what, f, r.Duplicates)
		}
		if r.Received == 0 {
			t.Errorf("%s: flow %d: nothing arrived of %d datagrams", what, f, s)
		}
		if len(r.SrcPorts) > 1 || (len(r.SrcPorts) == 1 && r.SrcPorts[0] != sspec.BasePort+f) {
			t.Errorf("%s: flow %d came from source ports %v, want only %d", what, f, r.SrcPorts, sspec.BasePort+f)
		}
	}
	t.Logf("%s: %d flows, %d datagrams sent in %.2f s, %d received (%.2f%% lost), %d malformed, receiver stopped: %s",
		what, flows, sent, srep.Seconds, got, 100*float64(sent-got)/float64(max(sent, 1)), rrep.Malformed, rrep.Stop)
	if rrep.Malformed != 0 {
		t.Errorf("%s: %d datagrams arrived that the sender never sent", what, rrep.Malformed)
	}
	if got*4 < sent {
		t.Errorf("%s: only %d of %d datagrams arrived", what, got, sent)
	}
}

// iperfStreams runs a 3 s iperf3 TCP transfer with streams parallel
// streams from client to dst (a server must listen on port) and requires
// bytes to have been received.
func iperfStreams(t *testing.T, ctx context.Context, client *node, dst netip.Addr, port, streams int, what string) {
	t.Helper()
	res, err := client.host.IPerf3Client(ctx, dst, netlab.IPerf3Options{Port: port, Seconds: 3, Streams: streams})
	if err != nil {
		t.Fatalf("iperf3 %s, %d stream(s): %v", what, streams, err)
	}
	if res.SentBPS <= 0 || res.ReceivedBPS <= 0 || res.RecvBytes <= 0 {
		t.Fatalf("iperf3 %s, %d stream(s): nothing received: %v", what, streams, res)
	}
	t.Logf("iperf3 TCP %s, %d stream(s), 3 s: %.1f Mbit/s received (%.1f sent, %d retransmits)",
		what, streams, res.ReceivedBPS/1e6, res.SentBPS/1e6, res.Retransmits)
}

// checkWorkers requires n's status and /metrics to report want workers, and
// the multi-queue TUN not to have been refused.
func checkWorkers(t *testing.T, ctx context.Context, n *node, want int) {
	t.Helper()
	st, err := status(n)
	if err != nil {
		t.Fatal(err)
	}
	if st.Node.Workers != want {
		t.Errorf("weft status --json on %s: node.workers = %d, want %d\n%s", n.name, st.Node.Workers, want, st.raw)
	}
	m, body, err := metrics(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m.value("weft_workers"); !ok || v != float64(want) {
		t.Errorf("/metrics on %s: weft_workers = %v (present %v), want %d\n%s", n.name, v, ok, want,
			strings.Join(grepLines(string(body), regexpWorkers, 5), "\n"))
	}
	if v, ok := m.value("weft_tun_multiqueue_refused"); !ok || v != 0 {
		t.Errorf("/metrics on %s: weft_tun_multiqueue_refused = %v (present %v), want 0", n.name, v, ok)
	}
	t.Logf("%s: %d workers (status and weft_workers), offloads %v", n.name, st.Node.Workers, st.Node.Offloads)
}

// TestWorkers runs two weft hosts with --workers 2 and with --workers 1:
// TCP with 1, 4 and 8 streams both ways, 8 concurrent numbered UDP flows
// without reordering, and the worker count in status and metrics.
func TestWorkers(t *testing.T) {
	for _, workers := range []int{2, 1} {
		t.Run(fmt.Sprintf("workers-%d", workers), func(t *testing.T) {
			c := newCluster(t, "a", "b")
			for _, n := range c.nodes {
				n.args = runArgs(n, otherUnderlays(c.nodes, n), "--workers", strconv.Itoa(workers))
			}
			c.startAll()
			c.waitFormed(formationTimeout)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			a, b := c.by["a"], c.by["b"]
			for _, n := range c.nodes {
				checkWorkers(t, ctx, n, workers)
				st, err := status(n)
				if err != nil {
					t.Fatal(err)
				}
				if !st.Node.Offloads["partial_checksums"] {
					t.Errorf("%s: status offloads %v, want partial_checksums true (the default)", n.name, st.Node.Offloads)
				}
			}
			if err := pingWithin(ctx, a, b.overlay, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := pingWithin(ctx, b, a.overlay, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			for _, dir := range []struct{ client, server *node }{{a, b}, {b, a}} {
				if _, err := dir.server.host.IPerf3Server(5201); err != nil {
					t.Fatal(err)
				}
				for _, streams := range []int{1, 4, 8} {
					iperfStreams(t, ctx, dir.client, dir.server.overlay, 5201, streams, dir.client.name+" -> "+dir.server.name)
				}
			}
			numberedFlows(t, ctx, a, b, 8, 5000, fmt.Sprintf("workers %d, a -> b", workers))
			numberedFlows(t, ctx, b, a, 8, 5000, fmt.Sprintf("workers %d, b -> a", workers))
			for _, n := range c.nodes {
				st, err := status(n)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s: drops %v, totals %+v", n.name, st.Drops, st.Totals)
			}
		})
	}
}

// TestPartialChecksumsMixed: a keeps the default --partial-checksums (true),
// b runs with --partial-checksums=false. Each status shows its own setting,
// and ping, TCP and UDP work both ways: a must send b full checksums
// because b does not advertise the capability.
func TestPartialChecksumsMixed(t *testing.T) {
	c := newCluster(t, "a", "b")
	a, b := c.by["a"], c.by["b"]
	a.args = runArgs(a, []string{b.underlay.String()}, "--workers", "2")
	b.args = runArgs(b, []string{a.underlay.String()}, "--workers", "2", "--partial-checksums=false")
	c.startAll()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, want := range []struct {
		n       *node
		partial bool
	}{{a, true}, {b, false}} {
		st, err := status(want.n)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := st.Node.Offloads["partial_checksums"]
		if !ok || got != want.partial {
			t.Errorf("weft status --json on %s: node.offloads.partial_checksums = %v (present %v), want %v\n%s", want.n.name, got, ok, want.partial, st.raw)
		} else {
			t.Logf("%s: partial_checksums %v", want.n.name, got)
		}
	}
	for _, p := range []struct{ src, dst *node }{{a, b}, {b, a}} {
		if err := pingWithin(ctx, p.src, p.dst.overlay, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := pingOK(ctx, p.src, p.dst.overlay, 3); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []struct{ client, server *node }{{a, b}, {b, a}} {
		if _, err := dir.server.host.IPerf3Server(5201); err != nil {
			t.Fatal(err)
		}
		iperfStreams(t, ctx, dir.client, dir.server.overlay, 5201, 1, dir.client.name+" -> "+dir.server.name)
		iperfStreams(t, ctx, dir.client, dir.server.overlay, 5201, 4, dir.client.name+" -> "+dir.server.name)
	}
	// UDP checksums too: a datagram with a checksum left partial that b's
	// kernel did not expect would be dropped there.
	numberedFlows(t, ctx, a, b, 4, 2000, "mixed checksums, a -> b")
	numberedFlows(t, ctx, b, a, 4, 2000, "mixed checksums, b -> a")
}
