package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/weftnet/weft/encap"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// lockedBuffer collects a test's logs; they are printed only if the test
// fails. (Logging straight to t.Log would panic when one of memberlist's
// goroutines logs after the test has finished.)
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	buf := new(lockedBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", buf)
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testMeta(i int) Meta {
	return Meta{
		Subnets:  []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)},
		Underlay: loopback,
		Port:     8472,
		Encap:    encap.VXLAN,
		VNI:      1,
		VTEPMAC:  [6]byte{0x02, 0, 0, 0, 0, byte(i)},
		Claimed:  int64(1_700_000_000_000 + i),
	}
}

// testConfig returns a config with fast timings suitable for loopback.
func testConfig(t *testing.T, name string, i int, seeds ...string) Config {
	return Config{
		Name:     name,
		BindAddr: loopback,
		Seeds:    seeds,
		Meta:     testMeta(i),
		Logger:   testLogger(t).With("node", name),

		RetryInterval:     100 * time.Millisecond,
		MaxRetryInterval:  400 * time.Millisecond,
		DeadReclaim:       500 * time.Millisecond,
		ReconnectInterval: 300 * time.Millisecond,

		ProbeInterval:       200 * time.Millisecond,
		ProbeTimeout:        100 * time.Millisecond,
		SuspicionMult:       2,
		GossipInterval:      50 * time.Millisecond,
		PushPullInterval:    2 * time.Second,
		GossipToTheDeadTime: 3 * time.Second,
		TCPTimeout:          time.Second,
	}
}

func start(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	c, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		if err := c.Shutdown(); err != nil {
			t.Errorf("Shutdown(%s): %v", cfg.Name, err)
		}
	})
	return c
}

func seedOf(c *Cluster) string { return c.LocalAddr().String() }

// waitFor polls cond until it returns nil or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func member(c *Cluster, name string) (Member, bool) {
	for _, m := range c.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// sees checks that c knows every node in others in the given state, with
// its current address and metadata.
func sees(c *Cluster, state State, others ...*Cluster) error {
	for _, o := range others {
		m, ok := member(c, o.LocalName())
		switch {
		case !ok:
			return fmt.Errorf("%s does not know %s", c.LocalName(), o.LocalName())
		case m.State != state:
			return fmt.Errorf("%s sees %s %v, want %v", c.LocalName(), o.LocalName(), m.State, state)
		case m.MetaErr != nil:
			return fmt.Errorf("%s sees %s with bad metadata: %v", c.LocalName(), o.LocalName(), m.MetaErr)
		case !reflect.DeepEqual(m.Meta, o.LocalMeta()):
			return fmt.Errorf("%s sees %s with meta %+v, want %+v", c.LocalName(), o.LocalName(), m.Meta, o.LocalMeta())
		case m.Gossip != o.LocalAddr():
			return fmt.Errorf("%s sees %s at %v, want %v", c.LocalName(), o.LocalName(), m.Gossip, o.LocalAddr())
		case m.Since.IsZero():
			return fmt.Errorf("%s sees %s with zero Since", c.LocalName(), o.LocalName())
		}
	}
	return nil
}

func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func counterValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("metric %v is neither counter nor gauge", c.Desc())
	return 0
}

func TestClusterJoinUpdateLeave(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	cfgA := testConfig(t, "a", 1)
	cfgA.Metrics = metrics
	a := start(t, cfgA)
	b := start(t, testConfig(t, "b", 2, seedOf(a)))
	c := start(t, testConfig(t, "c", 3, seedOf(a)))

	for _, n := range []*Cluster{a, b, c} {
		if !n.Running() {
			t.Fatalf("%s: Running() = false after Start", n.LocalName())
		}
	}
	waitFor(t, 5*time.Second, "all members alive", func() error {
		return errors.Join(sees(a, StateAlive, b, c), sees(b, StateAlive, a, c), sees(c, StateAlive, a, b))
	})
	select {
	case <-a.Changes():
	default:
		t.Error("Changes did not fire on a after b and c joined")
	}
	names := []string{}
	for _, m := range a.Members() {
		names = append(names, m.Name)
	}
	if !slices.Equal(names, []string{"b", "c"}) {
		t.Errorf("a.Members() names = %v, want [b c] (sorted, self excluded)", names)
	}
	if got := counterValue(t, metrics.Members); got != 3 {
		t.Errorf("weft_gossip_members = %v, want 3", got)
	}
	if got := counterValue(t, metrics.HealthScore); got != float64(a.Health()) {
		t.Errorf("weft_gossip_health_score = %v, want %d", got, a.Health())
	}

	// Metadata updates propagate and fire Changes.
	drain(a.Changes())
	newMeta := testMeta(22)
	newMeta.Encap, newMeta.VNI, newMeta.VTEPMAC, newMeta.Port = encap.UDP, 0, [6]byte{}, 8285
	if err := b.UpdateMeta(newMeta); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	if !reflect.DeepEqual(b.LocalMeta(), newMeta) {
		t.Fatalf("LocalMeta = %+v after UpdateMeta(%+v)", b.LocalMeta(), newMeta)
	}
	select {
	case <-a.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("Changes did not fire on a after b updated its metadata")
	}
	waitFor(t, 5*time.Second, "metadata update seen", func() error {
		return errors.Join(sees(a, StateAlive, b), sees(c, StateAlive, b))
	})
	if err := b.UpdateMeta(Meta{}); err == nil || !errors.Is(err, ErrInvalidMeta) {
		t.Errorf("UpdateMeta(invalid) = %v, want ErrInvalidMeta", err)
	}

	// A graceful leave is seen as StateLeft at once, not as a failure.
	leaveStart := time.Now()
	if err := c.Leave(2 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	waitFor(t, time.Second, "c seen as left", func() error {
		return errors.Join(sees(a, StateLeft, c), sees(b, StateLeft, c))
	})
	t.Logf("leave took %v to be seen", time.Since(leaveStart))
	if err := c.Leave(time.Second); err != nil {
		t.Errorf("second Leave = %v, want nil", err)
	}
	if err := c.UpdateMeta(testMeta(3)); err == nil {
		t.Error("UpdateMeta after Leave succeeded")
	}
	if err := c.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if c.Running() {
		t.Error("Running() = true after Shutdown")
	}
	// Well past failure detection, c is still "left", not "dead".
	time.Sleep(1500 * time.Millisecond)
	if err := errors.Join(sees(a, StateLeft, c), sees(b, StateLeft, c)); err != nil {
		t.Error(err)
	}
	if err := sees(a, StateAlive, b); err != nil {
		t.Error(err)
	}
}

func TestClusterFailureDetected(t *testing.T) {
	t.Parallel()
	a := start(t, testConfig(t, "a", 1))
	b := start(t, testConfig(t, "b", 2, seedOf(a)))
	waitFor(t, 5*time.Second, "joined", func() error {
		return errors.Join(sees(a, StateAlive, b), sees(b, StateAlive, a))
	})
	if err := b.Shutdown(); err != nil { // no Leave: a crash, as far as a can tell
		t.Fatal(err)
	}
	failStart := time.Now()
	waitFor(t, 5*time.Second, "b seen as dead", func() error { return sees(a, StateDead, b) })
	t.Logf("failure detected after %v", time.Since(failStart))
	if err := b.Shutdown(); err != nil {
		t.Errorf("second Shutdown = %v, want nil", err)
	}
	if err := b.Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Errorf("Leave after Shutdown = %v, want ErrShutdown", err)
	}
	if err := b.UpdateMeta(testMeta(2)); !errors.Is(err, ErrShutdown) {
		t.Errorf("UpdateMeta after Shutdown = %v, want ErrShutdown", err)
	}
}

// freePort returns a port that is currently free for both TCP and UDP on
// 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free TCP+UDP port")
	return 0
}

func TestClusterJoinRetry(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	metrics := NewMetrics(nil)
	cfgB := testConfig(t, "b", 2, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	cfgB.Metrics = metrics
	b := start(t, cfgB) // its seed does not exist yet: Start must not block or fail
	waitFor(t, 5*time.Second, "join failures counted", func() error {
		if f := counterValue(t, metrics.JoinFailures); f < 2 {
			return fmt.Errorf("%v join failures", f)
		}
		return nil
	})
	if ms := b.Members(); len(ms) != 0 {
		t.Fatalf("b has members %v before its seed exists", ms)
	}

	cfgA := testConfig(t, "a", 1)
	cfgA.BindPort = port
	a := start(t, cfgA)
	waitFor(t, 5*time.Second, "b joined its late seed", func() error {
		return errors.Join(sees(a, StateAlive, b), sees(b, StateAlive, a))
	})
	attempts, failures := counterValue(t, metrics.JoinAttempts), counterValue(t, metrics.JoinFailures)
	if attempts != failures+1 {
		t.Errorf("join attempts %v, failures %v: want exactly one successful attempt", attempts, failures)
	}
}

// TestClusterReconnect is partition healing: a has no seeds and b, after a
// failure, comes back with none either. Only a's reconnect loop, which
// retries dead members, can bring them together again.
func TestClusterReconnect(t *testing.T) {
	t.Parallel()
	a := start(t, testConfig(t, "a", 1))
	b := start(t, testConfig(t, "b", 2, seedOf(a)))
	waitFor(t, 5*time.Second, "joined", func() error {
		return errors.Join(sees(a, StateAlive, b), sees(b, StateAlive, a))
	})
	bPort := int(b.LocalAddr().Port())
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b seen as dead", func() error { return sees(a, StateDead, b) })

	cfgB := testConfig(t, "b", 2) // no seeds
	cfgB.BindPort = bPort
	b2 := start(t, cfgB)
	waitFor(t, 8*time.Second, "a reconnected to b", func() error {
		return errors.Join(sees(a, StateAlive, b2), sees(b2, StateAlive, a))
	})
}

// TestClusterRestartNewAddress checks DeadReclaim: a host that restarts with
// the same name on a new address is accepted.
func TestClusterRestartNewAddress(t *testing.T) {
	t.Parallel()
	a := start(t, testConfig(t, "a", 1))
	b := start(t, testConfig(t, "b", 2, seedOf(a)))
	waitFor(t, 5*time.Second, "joined", func() error { return sees(a, StateAlive, b) })
	oldAddr := b.LocalAddr()
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b seen as dead", func() error { return sees(a, StateDead, b) })
	time.Sleep(600 * time.Millisecond) // > DeadReclaim

	b2 := start(t, testConfig(t, "b", 2, seedOf(a))) // new port
	if b2.LocalAddr() == oldAddr {
		t.Fatalf("restarted b got the same address %v", oldAddr)
	}
	waitFor(t, 5*time.Second, "restarted b accepted at its new address", func() error {
		return errors.Join(sees(a, StateAlive, b2), sees(b2, StateAlive, a))
	})
}

func TestClusterEncryption(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, 32)
	cfgA := testConfig(t, "a", 1)
	cfgA.SecretKey = key
	a := start(t, cfgA)
	cfgB := testConfig(t, "b", 2, seedOf(a))
	cfgB.SecretKey = key
	b := start(t, cfgB)
	waitFor(t, 5*time.Second, "joined with a shared key", func() error {
		return errors.Join(sees(a, StateAlive, b), sees(b, StateAlive, a))
	})

	metrics := NewMetrics(nil)
	cfgC := testConfig(t, "c", 3, seedOf(a))
	cfgC.SecretKey = bytes.Repeat([]byte{8}, 16)
	cfgC.Metrics = metrics
	c := start(t, cfgC)
	waitFor(t, 5*time.Second, "wrong-key join failures", func() error {
		if f := counterValue(t, metrics.JoinFailures); f < 2 {
			return fmt.Errorf("%v join failures", f)
		}
		return nil
	})
	if ms := c.Members(); len(ms) != 0 {
		t.Errorf("c with the wrong key has members %v", ms)
	}

	if _, ok := member(a, "c"); ok {
		t.Error("a accepted c, which has the wrong key")
	}

	cfgBad := testConfig(t, "d", 4)
	cfgBad.SecretKey = []byte("short")
	if c, err := Start(t.Context(), cfgBad); err == nil {
		c.Shutdown()
		t.Error("Start with a 5-byte key succeeded")
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "x", 1)
	cfg.Meta.Subnets = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}
	if c, err := Start(t.Context(), cfg); err == nil || !errors.Is(err, ErrInvalidMeta) {
		if c != nil {
			c.Shutdown()
		}
		t.Errorf("Start with invalid meta = %v, want ErrInvalidMeta", err)
	}
	cfg = testConfig(t, "x", 1, "127.0.0.1") // no port, and BindPort is 0
	if c, err := Start(t.Context(), cfg); err == nil {
		c.Shutdown()
		t.Error("Start with a port-less seed and BindPort 0 succeeded")
	}
}

func TestNormalizeSeeds(t *testing.T) {
	got, err := normalizeSeeds([]string{"10.0.0.1", "10.0.0.2:8000", " host.example ", "::1", "[fe80::1]", "[::2]:9", "10.0.0.1:7946", ""}, 7946)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.1:7946", "10.0.0.2:8000", "host.example:7946", "[::1]:7946", "[fe80::1]:7946", "[::2]:9"}
	if !slices.Equal(got, want) {
		t.Errorf("normalizeSeeds = %q, want %q", got, want)
	}
	for _, bad := range []string{":7946", "host:0", "host:99999", "host:x"} {
		if _, err := normalizeSeeds([]string{bad}, 7946); err == nil {
			t.Errorf("normalizeSeeds(%q) succeeded", bad)
		}
	}
}

// TestShutdownStopsLoop checks that Shutdown returns promptly and that a
// cancelled Start context stops the background loop while memberlist keeps
// running until Shutdown.
func TestShutdownStopsLoop(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cfg := testConfig(t, "a", 1, "127.0.0.1:1") // a seed that never answers
	c, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if !c.Running() {
		t.Error("Running() = false after the context ended; memberlist must run until Shutdown")
	}
	done := make(chan error, 1)
	go func() { done <- c.Shutdown() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if c.Running() {
		t.Error("Running() = true after Shutdown")
	}
}

// TestKeyRotation walks serf's install, use, remove procedure: a and b
// share key1; key2 is installed on both, made primary on both, and key1 is
// removed. A newcomer with only key2 joins; one with only key1 is refused.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	key1, key2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	cfgA := testConfig(t, "a", 1)
	cfgA.SecretKey = key1
	a := start(t, cfgA)
	cfgB := testConfig(t, "b", 2, seedOf(a))
	cfgB.SecretKey = key1
	b := start(t, cfgB)
	waitFor(t, 5*time.Second, "a and b joined", func() error {
		return errors.Join(sees(a, StateAlive, b), sees(b, StateAlive, a))
	})
	for _, step := range []struct {
		primary []byte
		others  [][]byte
	}{{key1, [][]byte{key2}}, {key2, [][]byte{key1}}, {key2, nil}} {
		for _, c := range []*Cluster{a, b} {
			if err := c.SetKeys(step.primary, step.others); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := a.keyring.GetKeys(); len(got) != 1 || !bytes.Equal(got[0], key2) {
		t.Fatalf("a's keys after rotation: %x", got)
	}
	cfgC := testConfig(t, "c", 3, seedOf(a))
	cfgC.SecretKey = key2
	c := start(t, cfgC)
	waitFor(t, 5*time.Second, "c with the new key joined", func() error {
		return errors.Join(sees(a, StateAlive, c), sees(c, StateAlive, a, b))
	})
	metrics := NewMetrics(nil)
	cfgD := testConfig(t, "d", 4, seedOf(a))
	cfgD.SecretKey = key1
	cfgD.Metrics = metrics
	d := start(t, cfgD)
	waitFor(t, 5*time.Second, "d with the old key refused", func() error {
		if f := counterValue(t, metrics.JoinFailures); f < 1 {
			return fmt.Errorf("%v join failures", f)
		}
		return nil
	})
	if ms := d.Members(); len(ms) != 0 {
		t.Errorf("d with the removed key has members %v", ms)
	}
	if err := testClusterNoKey(t).SetKeys(key1, nil); err == nil {
		t.Error("SetKeys turned encryption on at run time")
	}
}

func testClusterNoKey(t *testing.T) *Cluster {
	return start(t, testConfig(t, "plain", 5))
}
