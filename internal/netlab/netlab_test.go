package netlab

import (
	"bufio"
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParsePing(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	tests := []struct {
		file             string
		sent, recv, errs int
		avg, min, max    time.Duration
		wantErr          bool
	}{
		{file: "ping_ok.txt", sent: 3, recv: 3, avg: ms(0.069), min: ms(0.059), max: ms(0.079)},
		{file: "ping_unreach.txt", sent: 5, recv: 0},
		{file: "ping_hosterr.txt", sent: 5, recv: 0, errs: 3},
		{file: "ping_busybox.txt", sent: 2, recv: 2, avg: ms(0.094), min: ms(0.088), max: ms(0.101)},
		{file: "ping_netunreach.txt", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			res, err := ParsePing(readTestdata(t, tt.file))
			if tt.wantErr {
				if err == nil || !errors.Is(err, ErrNoPingStats) {
					t.Fatalf("want ErrNoPingStats, got %v (%+v)", err, res)
				}
				if !strings.Contains(err.Error(), "Network is unreachable") {
					t.Errorf("error should quote ping's message, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Sent != tt.sent || res.Received != tt.recv || res.Errors != tt.errs {
				t.Errorf("got sent=%d recv=%d errs=%d, want %d %d %d", res.Sent, res.Received, res.Errors, tt.sent, tt.recv, tt.errs)
			}
			if res.RTTAvg != tt.avg || res.RTTMin != tt.min || res.RTTMax != tt.max {
				t.Errorf("got rtt min/avg/max %v/%v/%v, want %v/%v/%v", res.RTTMin, res.RTTAvg, res.RTTMax, tt.min, tt.avg, tt.max)
			}
		})
	}
	if got := (PingResult{Sent: 4, Received: 3}).Loss(); got != 0.25 {
		t.Errorf("Loss = %v, want 0.25", got)
	}
	if _, err := ParsePing(nil); !errors.Is(err, ErrNoPingStats) {
		t.Errorf("empty output: got %v", err)
	}
}

func TestParseIPerf3(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		res, err := ParseIPerf3(readTestdata(t, "iperf_tcp.json"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Protocol != "TCP" || res.SentBPS != 9316215510.5397148 || res.ReceivedBPS != 9278704191.4928341 ||
			res.Retransmits != 834 || res.SentBytes != 1166934016 || res.RecvBytes != 1165623296 {
			t.Errorf("unexpected result %+v", res)
		}
		if res.Seconds < 1 || res.Seconds > 1.01 {
			t.Errorf("seconds = %v", res.Seconds)
		}
		if !strings.Contains(res.String(), "Mbit/s") {
			t.Errorf("String() = %q", res.String())
		}
	})
	t.Run("tcp-parallel-reverse", func(t *testing.T) {
		res, err := ParseIPerf3(readTestdata(t, "iperf_tcp_p2_reverse.json"))
		if err != nil {
			t.Fatal(err)
		}
		if res.SentBPS != 11457760161.40507 || res.ReceivedBPS != 11342882558.053566 || res.Retransmits != 1377 {
			t.Errorf("unexpected result %+v", res)
		}
	})
	t.Run("udp", func(t *testing.T) {
		res, err := ParseIPerf3(readTestdata(t, "iperf_udp.json"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Protocol != "UDP" || res.Packets != 5205 || res.LostPackets != 0 || res.SentBPS != 49961255.230543874 ||
			res.ReceivedBPS != 49956659.83821673 || res.JitterMs != 0.008434030330182767 {
			t.Errorf("unexpected result %+v", res)
		}
	})
	t.Run("udp-old-format", func(t *testing.T) {
		doc := `{"start":{"test_start":{"protocol":"UDP"}},"end":{"sum":{"seconds":1,"bytes":1000,
			"bits_per_second":8000,"jitter_ms":0.5,"lost_packets":10,"packets":100,"lost_percent":10}}}`
		res, err := ParseIPerf3([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if res.LostPackets != 10 || res.Packets != 100 || res.SentBPS != 8000 || res.ReceivedBPS != 7200 || res.JitterMs != 0.5 {
			t.Errorf("unexpected result %+v", res)
		}
	})
	t.Run("error", func(t *testing.T) {
		_, err := ParseIPerf3(readTestdata(t, "iperf_refused.json"))
		if err == nil || !strings.Contains(err.Error(), "Connection refused") {
			t.Fatalf("want connection refused error, got %v", err)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		if _, err := ParseIPerf3([]byte("iperf3: error - unable to connect")); err == nil {
			t.Fatal("want error")
		}
		if _, err := ParseIPerf3([]byte(`{"start":{},"end":{}}`)); err == nil {
			t.Fatal("want error for missing summary")
		}
	})
}

func TestNames(t *testing.T) {
	RequireRoot(t)
	lab := newTestLab(t)
	if len(lab.ID()) > MaxNameLen-2 || !strings.HasPrefix(lab.ID(), "nltest") {
		t.Errorf("lab id %q", lab.ID())
	}
	for _, bad := range []string{"", "sw", "Upper", "toolongname", "a-b"} {
		if _, err := lab.Host(bad); err == nil {
			t.Errorf("Host(%q) should fail", bad)
		}
	}
	h, err := lab.Host("x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Host("x"); err == nil {
		t.Error("duplicate host should fail")
	}
	if len(h.NS()) > MaxNameLen {
		t.Errorf("namespace name %q too long", h.NS())
	}
	seg, err := lab.Segment("lan0", netip.MustParsePrefix("192.168.77.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Attach(seg, netip.MustParsePrefix("10.1.1.1/24")); err == nil {
		t.Error("Attach outside the segment prefix should fail")
	}
}

func newTestLab(t *testing.T) *Lab {
	t.Helper()
	RequireTools(t, "ip", "ping", "iperf3", "ss")
	lab, err := New("nltest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nss := lab.Namespaces()
		if err := lab.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, ns := range nss {
			if nsExists(ns) {
				t.Errorf("namespace %s still exists after Close", ns)
			}
		}
		if _, err := os.Stat(lab.Dir()); err == nil && os.Getenv("NETLAB_KEEP") == "" {
			t.Errorf("lab dir %s still exists after Close", lab.Dir())
		}
	})
	return lab
}

func TestSegmentPing(t *testing.T) {
	RequireRoot(t)
	lab := newTestLab(t)
	seg, err := lab.Segment("lan0", netip.MustParsePrefix("192.168.50.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := lab.Host("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.Host("b")
	if err != nil {
		t.Fatal(err)
	}
	ifA, err := a.Attach(seg, netip.MustParsePrefix("192.168.50.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Attach(seg, netip.MustParsePrefix("192.168.50.2/24")); err != nil {
		t.Fatal(err)
	}
	if ifA != "eth0" {
		t.Errorf("first interface is %q, want eth0", ifA)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	res, err := a.Ping(ctx, netip.MustParseAddr("192.168.50.2"), 3)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 3 || res.Received != 3 || res.RTTAvg <= 0 {
		t.Fatalf("ping a->b: %+v", res)
	}
	t.Logf("a -> b: %v", res)

	// Unused address on the segment: no replies, but no error either.
	res, err = a.Ping(ctx, netip.MustParseAddr("192.168.50.9"), 2)
	if err != nil || res.Received != 0 {
		t.Fatalf("ping unused address: %+v, %v", res, err)
	}
	// Off-segment address: there is no route at all (and must not be).
	if _, err := a.Ping(ctx, netip.MustParseAddr("10.99.0.1"), 1); err == nil {
		t.Fatal("ping to an unrouted address should fail")
	} else {
		t.Logf("unrouted ping error (expected): %v", err)
	}
	out, err := a.Run(ctx, "ip", "route", "show", "default")
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("host must have no default route: %q %v", out, err)
	}

	// Link down/up.
	if err := a.SetLinkDown("eth0"); err != nil {
		t.Fatal(err)
	}
	if res, _ := a.Ping(ctx, netip.MustParseAddr("192.168.50.2"), 1); res.Received != 0 {
		t.Fatalf("ping with link down: %+v", res)
	}
	if err := a.SetLinkUp("eth0"); err != nil {
		t.Fatal(err)
	}
	ok := false
	for i := 0; i < 10 && !ok; i++ {
		res, _ := a.Ping(ctx, netip.MustParseAddr("192.168.50.2"), 1)
		ok = res.Received == 1
	}
	if !ok {
		t.Fatal("ping after link up failed")
	}

	links, err := a.Links(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(links, ",") != "lo,eth0" {
		t.Errorf("links = %v", links)
	}
	if ok, err := a.LinkExists(ctx, "weft0"); ok || err != nil {
		t.Errorf("LinkExists(weft0) = %v, %v", ok, err)
	}

	// Run errors carry the exit code and output.
	_, err = a.Run(ctx, "sh", "-c", "echo boom >&2; exit 7")
	var re *RunError
	if !errors.As(err, &re) || re.ExitCode() != 7 || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "[a]") {
		t.Fatalf("Run error = %v", err)
	}
}

func TestLinkIPerf3(t *testing.T) {
	RequireRoot(t)
	lab := newTestLab(t)
	a, err := lab.Host("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.Host("b")
	if err != nil {
		t.Fatal(err)
	}
	ia, ib, err := lab.Link(a, b, netip.MustParsePrefix("10.0.0.1/30"), netip.MustParsePrefix("10.0.0.2/30"))
	if err != nil {
		t.Fatal(err)
	}
	if ia != "eth0" || ib != "eth0" {
		t.Errorf("link names %s %s", ia, ib)
	}
	srv, err := b.IPerf3Server(0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dst := netip.MustParseAddr("10.0.0.2")
	tcp, err := a.IPerf3Client(ctx, dst, IPerf3Options{Seconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if tcp.Protocol != "TCP" || tcp.SentBPS <= 0 || tcp.ReceivedBPS <= 0 {
		t.Fatalf("tcp: %+v", tcp)
	}
	t.Logf("tcp: %v", tcp)
	udp, err := a.IPerf3Client(ctx, dst, IPerf3Options{Seconds: 1, UDP: true, Bitrate: "20M", Len: 1200, Reverse: true})
	if err != nil {
		t.Fatal(err)
	}
	if udp.Protocol != "UDP" || udp.Packets == 0 {
		t.Fatalf("udp: %+v", udp)
	}
	t.Logf("udp: %v", udp)
	if _, err := a.IPerf3Client(ctx, dst, IPerf3Options{Seconds: 1, Port: 5999}); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("client to closed port: want connection refused, got %v", err)
	}
	if err := srv.Stop(5 * time.Second); err != nil {
		t.Logf("iperf3 server stop: %v", err) // iperf3 exits non-zero on SIGTERM
	}
	if !srv.Exited() {
		t.Fatal("server still running after Stop")
	}
}

func TestProcLifecycle(t *testing.T) {
	RequireRoot(t)
	lab := newTestLab(t)
	lab.StopTimeout = 500 * time.Millisecond
	h, err := lab.Host("h")
	if err != nil {
		t.Fatal(err)
	}
	// Exit code and logs.
	p, err := h.Start("sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := p.Wait(10 * time.Second); !errors.As(err, &ee) || p.ExitCode() != 3 {
		t.Fatalf("Wait = %v, exit code %d", err, p.ExitCode())
	}
	if logs := p.Logs(); !strings.Contains(logs, "to-stdout") || !strings.Contains(logs, "to-stderr") {
		t.Fatalf("logs = %q", logs)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after exit = %v", err)
	}

	// The PID is the command itself, inside the namespace.
	sl, err := h.Start("sleep", "100")
	if err != nil {
		t.Fatal(err)
	}
	if err := sl.Wait(200 * time.Millisecond); !errors.Is(err, ErrNotExited) {
		t.Fatalf("Wait on running process = %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		exe, _ := os.Readlink("/proc/" + strconv.Itoa(sl.PID()) + "/exe")
		if strings.HasSuffix(exe, "/sleep") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d is %q, want sleep", sl.PID(), exe)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := sl.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := sl.Wait(5 * time.Second); !errors.As(err, &ee) {
		t.Fatalf("Wait after SIGTERM = %v", err)
	}
	if sl.ExitCode() != -1 { // killed by a signal
		t.Errorf("exit code = %d", sl.ExitCode())
	}

	// Kill.
	k, err := h.Start("sleep", "100")
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Kill(); err != nil || !k.Exited() {
		t.Fatalf("Kill = %v, exited %v", err, k.Exited())
	}

	// A stubborn process (and its child) are still cleaned up by Close:
	// SIGTERM is ignored, SIGKILL after StopTimeout, and the orphaned
	// "sleep" is swept by PID from the namespace.
	stub, err := h.Start("sh", "-c", `trap "" TERM; sleep 100 & wait; sleep 100`)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := lab.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !stub.Exited() {
		t.Fatal("stubborn process still running after Close")
	}
	if !strings.Contains(p.Logs(), "to-stdout") {
		t.Errorf("logs not available after Close: %q", p.Logs())
	}
	if err := lab.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := h.Start("true"); err == nil {
		t.Fatal("Start after Close should fail")
	}
}

func TestHTTPGet(t *testing.T) {
	RequireRoot(t)
	a, b := twoHosts(t, "192.168.50")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := a.HTTPGet(ctx, "http://192.168.50.2:8080/x"); err == nil {
		t.Fatal("GET with no server should fail")
	}
	srv, err := b.StartHTTPServer("192.168.50.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	for {
		code, body, err := a.HTTPGet(ctx, "http://192.168.50.2:8080/readyz")
		if err == nil {
			if code != 200 || string(body) != "ok /readyz\n" {
				t.Fatalf("got %d %q", code, body)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("server never answered: %v; logs: %s", err, srv.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReaper checks that namespaces are removed even when the owning process
// dies without calling Close: a child test process builds a lab and is
// SIGKILLed.
func TestReaper(t *testing.T) {
	RequireRoot(t)
	RequireTools(t, "ip")
	if os.Getenv("NETLAB_REAPER_CHILD") == "1" {
		lab, err := New("nlreap")
		if err != nil {
			t.Fatal(err)
		}
		h, err := lab.Host("a")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Start("sleep", "100"); err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("DIR " + lab.Dir() + "\n")
		os.Stdout.WriteString("NS " + strings.Join(lab.Namespaces(), " ") + "\n")
		select {} // wait to be killed
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestReaper$", "-test.v")
	cmd.Env = append(os.Environ(), "NETLAB_REAPER_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var nss []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if dir, ok := strings.CutPrefix(sc.Text(), "DIR "); ok && strings.Contains(dir, "netlab-nlreap") {
			// The reaper keeps the logs of a crashed owner; remove them.
			t.Cleanup(func() { os.RemoveAll(dir) })
		}
		if rest, ok := strings.CutPrefix(sc.Text(), "NS "); ok {
			nss = strings.Fields(rest)
			break
		}
	}
	if len(nss) != 2 {
		t.Fatalf("child did not report namespaces (%v)", sc.Err())
	}
	for _, ns := range nss {
		if !nsExists(ns) {
			t.Fatalf("namespace %s missing while child runs", ns)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for _, ns := range nss {
		for nsExists(ns) {
			if time.Now().After(deadline) {
				t.Fatalf("namespace %s still exists 10s after its owner was killed", ns)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestParseEcho(t *testing.T) {
	r, err := parseEcho("20 19 41000 52000 90000\n")
	if err != nil {
		t.Fatal(err)
	}
	want := EchoResult{Sent: 20, Received: 19, RTTMin: 41 * time.Microsecond, RTTAvg: 52 * time.Microsecond, RTTMax: 90 * time.Microsecond}
	if r != want {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	for _, bad := range []string{"", "1 2 3 4", "1 2 3 4 x", "1 2 3 4 -5", "3 0 0 0 0"} {
		if _, err := parseEcho(bad); err == nil {
			t.Errorf("parseEcho(%q): no error", bad)
		}
	}
}

// TestUDPEcho runs the echo helpers between two hosts: nothing answers
// before the server starts, every datagram comes back after.
func TestUDPEcho(t *testing.T) {
	RequireRoot(t)
	a, b := twoHosts(t, "192.168.51")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dst := netip.MustParseAddrPort("192.168.51.2:7007")
	if r, err := a.UDPEchoRTT(ctx, dst, 1, time.Millisecond); err == nil {
		t.Fatalf("echo with no server: %+v", r)
	}
	srv, err := b.StartUDPEcho(dst)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := a.UDPEchoRTT(ctx, dst, 1, time.Millisecond); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("echo server never answered; logs: %s", srv.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	r, err := a.UDPEchoRTT(ctx, dst, 10, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 10 || r.Received != 10 || r.RTTMin <= 0 || r.RTTMin > r.RTTAvg || r.RTTAvg > r.RTTMax || r.RTTMax >= time.Second {
		t.Fatalf("echo: %+v", r)
	}
}

// twoHosts builds a lab with hosts a (NET.1) and b (NET.2) on one segment,
// NET.0/24.
func twoHosts(t *testing.T, net3 string) (a, b *Host) {
	t.Helper()
	lab := newTestLab(t)
	seg, err := lab.Segment("lan0", netip.MustParsePrefix(net3+".0/24"))
	if err != nil {
		t.Fatal(err)
	}
	a, _ = lab.Host("a")
	b, _ = lab.Host("b")
	if a == nil || b == nil {
		t.Fatal("hosts")
	}
	if _, err := a.Attach(seg, netip.MustParsePrefix(net3+".1/24")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Attach(seg, netip.MustParsePrefix(net3+".2/24")); err != nil {
		t.Fatal(err)
	}
	return a, b
}
