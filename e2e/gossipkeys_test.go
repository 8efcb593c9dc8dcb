package e2e

// Gossip encryption keys: a member with another key is refused, and a key
// rotation by SIGHUP keeps the cluster joined.

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/router"
)

// keygen runs "weft keygen" in n's namespace.
func keygen(t *testing.T, n *node) string {
	t.Helper()
	code, stdout, stderr := runWeft(t, n, "keygen")
	key := strings.TrimSpace(stdout)
	if code != 0 || key == "" {
		t.Fatalf("weft keygen: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	return key
}

func keyFile(n *node) string { return filepath.Join(n.files.Dir, "gossip.keys") }

func writeKeys(t *testing.T, n *node, keys ...string) {
	t.Helper()
	if err := os.WriteFile(keyFile(n), []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// neverSeen watches n's status for d and fails if name appears in it.
func neverSeen(n *node, name string, d time.Duration) error {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if n.proc.Exited() {
			return errExited(n)
		}
		v, err := status(n)
		if err != nil {
			return err
		}
		if p := v.Peer(name); p != nil {
			return fmt.Errorf("%s lists %s (%s): %s", n.name, name, p.State, v.summary())
		}
		time.Sleep(500 * time.Millisecond)
	}
	return nil
}

// gossipCounters returns n's gossip key-error and join-failure counters.
func gossipCounters(ctx context.Context, n *node) (keyErrs, joinFails float64, err error) {
	m, _, err := metrics(ctx, n)
	if err != nil {
		return 0, 0, err
	}
	keyErrs, ok1 := m.value("weft_gossip_key_errors_total")
	joinFails, ok2 := m.value("weft_gossip_join_failures_total")
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("%s's /metrics lacks weft_gossip_key_errors_total or weft_gossip_join_failures_total", n.name)
	}
	return keyErrs, joinFails, nil
}

// TestWrongGossipKeyRefused: a and b share a gossip key, c has another: a
// and b form a cluster, c never becomes a member, and the refusal is
// counted.
func TestWrongGossipKeyRefused(t *testing.T) {
	t.Parallel() // waits more than it works: runs beside the other parallel tests (make e2e -parallel 4)
	c := newCluster(t, "a", "b", "c")
	a, b, cc := c.by["a"], c.by["b"], c.by["c"]
	k1, k2 := keygen(t, a), keygen(t, a)
	if k1 == k2 {
		t.Fatal("weft keygen printed the same key twice")
	}
	writeKeys(t, a, k1)
	writeKeys(t, b, k1)
	writeKeys(t, cc, k2)
	for _, n := range c.nodes {
		n.args = append(n.args, "--gossip-key-file", keyFile(n))
	}
	c.startAll()

	// a and b form a cluster of two; c, whose key differs, must not join.
	if err := pollUntil(time.Now().Add(formationTimeout), func() error {
		for _, pair := range [][2]*node{{a, b}, {b, a}} {
			if pair[0].proc.Exited() {
				return errExited(pair[0])
			}
			v, err := status(pair[0])
			if err != nil {
				return err
			}
			if err := seesAlive(v, pair[1].name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("a and b (same key) did not form a cluster: %v", err)
	}
	if err := waitReady(cc, formationTimeout); err != nil {
		t.Fatal(err)
	}
	// Long enough for c's join retries (backoff from 2 s) and a's and b's
	// reconnect to their missing seed c (every 10 s).
	const watch = 12 * time.Second
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, w := range []struct {
		n    *node
		name string
	}{{a, "c"}, {b, "c"}, {cc, "a"}} {
		wg.Go(func() { errs[i] = neverSeen(w.n, w.name, watch) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("a member with another gossip key was accepted: %v", err)
		}
	}
	if v, err := status(cc); err == nil && len(v.Peers) > 0 {
		t.Errorf("c, whose key differs, knows peers: %s", v.summary())
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	counted := false
	for _, n := range c.nodes {
		ke, jf, err := gossipCounters(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: weft_gossip_key_errors_total %.0f, weft_gossip_join_failures_total %.0f", n.name, ke, jf)
		if n == cc && (ke > 0 || jf > 0) {
			counted = true
		}
		if n == a && ke > 0 {
			t.Logf("a counts c's traffic as key errors")
		}
	}
	if !counted {
		t.Errorf("c counts neither key errors nor join failures")
	}
	ka, _, _ := gossipCounters(ctx, a)
	kc, _, _ := gossipCounters(ctx, cc)
	if ka == 0 && kc == 0 {
		t.Errorf("neither a nor c counts a gossip key error")
	}
	re := regexp.MustCompile(`(?i)decrypt|encrypt|join failed`)
	for _, n := range []*node{a, cc} {
		t.Logf("%s's log about the refusal:\n%s", n.name, strings.Join(grepLines(n.proc.Logs(), re, 5), "\n"))
	}
}

// TestGossipKeyRotation: a and b, both with the encrypted data plane,
// rotate their gossip key K1 -> K2 by rewriting their key files and sending
// SIGHUP (install, use, remove) while a TCP transfer a -> b and a ping
// b -> a run through the overlay: they stay joined, each keeps the other's
// session (never refused), the transfer never stalls, no ping is lost and
// no datagram is dropped for want of a session or a valid tag. Then d, with
// only K2, joins, and e, with only K1, is refused.
func TestGossipKeyRotation(t *testing.T) {
	c := newCluster(t, "a", "b", "d", "e")
	a, b, d, e := c.by["a"], c.by["b"], c.by["d"], c.by["e"]
	k1, k2 := keygen(t, a), keygen(t, a)
	writeKeys(t, a, k1)
	writeKeys(t, b, k1)
	writeKeys(t, d, k2)
	writeKeys(t, e, k1)
	for _, n := range c.nodes {
		// A 10 s rekey: handshakes happen during the rotation too.
		n.args = append(n.args, "--gossip-key-file", keyFile(n), "--encrypt", "--encrypt-rekey-after", "10s")
	}
	pair := []*node{a, b}
	for _, n := range pair {
		c.start(n)
	}
	joined := func(within time.Duration) error {
		return pollUntil(time.Now().Add(within), func() error {
			for _, n := range pair {
				if n.proc.Exited() {
					return errExited(n)
				}
				v, err := status(n)
				if err != nil {
					return err
				}
				if err := seesAlive(v, otherNames(pair, n)...); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := joined(formationTimeout); err != nil {
		t.Fatalf("a and b did not form a cluster: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	keyErrs := func() map[string]float64 {
		m := map[string]float64{}
		for _, n := range pair {
			ke, _, err := gossipCounters(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			m[n.name] = ke
		}
		return m
	}
	errsBefore := keyErrs()

	// Both sessions up and traffic flowing before the rotation starts.
	if err := pollUntil(time.Now().Add(10*time.Second), func() error {
		for _, n := range pair {
			v, err := status(n)
			if err != nil {
				return err
			}
			if err := hasSession(v, otherNames(pair, n)...); err != nil {
				return err
			}
		}
		return pingOK(ctx, a, b.overlay, 1)
	}); err != nil {
		t.Fatalf("a and b have no encrypted sessions before the rotation: %v", err)
	}
	dropsOf := func() map[string]float64 {
		m := map[string]float64{}
		for _, n := range pair {
			for _, r := range []string{"no_session", "bad_auth", "replay"} {
				m[n.name+" "+r] = drop(ctx, t, n, r)
			}
		}
		return m
	}
	dropsBefore := dropsOf()
	hsBefore := counter(ctx, t, a, "weft_handshakes_total", "result", "completed") + counter(ctx, t, b, "weft_handshakes_total", "result", "completed")

	// Traffic through the whole rotation (~15 s), with a and b listing
	// each other as alive, routed, with an established session at every
	// look.
	const trafficSecs = 25
	traffic := startSteady(ctx, t, a, b, trafficSecs, func(st *statusDoc, names ...string) error {
		if err := seesAlive(st, names...); err != nil {
			return err
		}
		return hasSession(st, names...)
	})

	steps := []struct {
		what string
		keys []string
	}{
		{"install K2", []string{k1, k2}},
		{"use K2", []string{k2, k1}},
		{"remove K1", []string{k2}},
	}
	for _, step := range steps {
		for _, n := range pair {
			writeKeys(t, n, step.keys...)
		}
		for _, n := range pair {
			t.Logf("%s: reload %s", step.what, n.name)
			reload(t, n, "gossip keys")
			logs := n.proc.Logs()
			if strings.Contains(logs, "reload: gossip keys") || strings.Contains(logs, "reload refused") {
				t.Fatalf("%s: %s refused the new keys:\n%s", step.what, n.name, tail(logs, 20))
			}
		}
		// A few probe rounds under the new keys, then: still joined, the
		// overlay works, and no gossip message was refused.
		time.Sleep(3 * time.Second)
		if err := joined(5 * time.Second); err != nil {
			t.Fatalf("after %s: %v", step.what, err)
		}
		if err := pingOK(ctx, a, b.overlay, 1); err != nil {
			t.Errorf("after %s: a -> b: %v", step.what, err)
		}
		if err := pingOK(ctx, b, a.overlay, 1); err != nil {
			t.Errorf("after %s: b -> a: %v", step.what, err)
		}
		if now := keyErrs(); now["a"] != errsBefore["a"] || now["b"] != errsBefore["b"] {
			t.Errorf("after %s: gossip key errors went from %v to %v", step.what, errsBefore, now)
		}
		t.Logf("%s: a and b still joined, overlay ok", step.what)
	}
	traffic.stopWatching("the rotation")
	rotated := time.Since(traffic.started)
	if now := dropsOf(); !maps.Equal(now, dropsBefore) {
		t.Errorf("datagrams dropped during the rotation: before %v, after %v", dropsBefore, now)
	}
	hs := counter(ctx, t, a, "weft_handshakes_total", "result", "completed") + counter(ctx, t, b, "weft_handshakes_total", "result", "completed") - hsBefore
	for _, n := range pair {
		for _, r := range []string{router.RefusedNoKey.String(), router.RefusedCipher.String()} {
			if v := counter(ctx, t, n, "weft_peers_refused", "reason", r); v != 0 {
				t.Errorf("%s: weft_peers_refused{reason=%s} = %v after the rotation", n.name, r, v)
			}
		}
	}
	t.Logf("rotation done %v into the traffic; %v handshakes completed meanwhile; drops %v", rotated.Round(time.Millisecond), hs, dropsBefore)

	// d (K2 only) joins the rotated cluster; e (K1 only) is refused.
	c.start(d)
	c.start(e)
	startedAt := time.Now()
	pair = []*node{a, b, d}
	if err := joined(formationTimeout); err != nil {
		t.Fatalf("d, with the new key, did not join: %v", err)
	}
	t.Logf("d (K2) joined %v after its start", time.Since(startedAt).Round(time.Millisecond))
	if err := waitReady(e, formationTimeout); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i, w := range []struct {
		n    *node
		name string
	}{{a, "e"}, {b, "e"}, {d, "e"}, {e, "a"}} {
		wg.Go(func() { errs[i] = neverSeen(w.n, w.name, time.Until(startedAt.Add(15*time.Second))) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("e, with only the removed key, was accepted: %v", err)
		}
	}
	ke, jf, err := gossipCounters(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("e: weft_gossip_key_errors_total %.0f, weft_gossip_join_failures_total %.0f", ke, jf)
	if ke == 0 && jf == 0 {
		t.Errorf("e counts neither key errors nor join failures")
	}

	// The traffic of the rotation: TCP never stalled, no ping lost.
	traffic.finish("the rotation")
}

// hasSession requires st to show an established session with every name.
func hasSession(st *statusDoc, names ...string) error {
	for _, name := range names {
		p := st.Peer(name)
		switch {
		case p == nil:
			return fmt.Errorf("%s does not list %s: %s", st.Node.Name, name, st.summary())
		case p.Reason != "":
			return fmt.Errorf("%s refuses %s: %s", st.Node.Name, name, p.Reason)
		case p.Encryption == nil || p.Encryption.Session != "established":
			return fmt.Errorf("%s has no established session with %s: %+v", st.Node.Name, name, p.Encryption)
		}
	}
	return nil
}

// TestGossipKeyRequired: weft run (and --check) without a gossip key exits
// 2 saying how to make one; a key file others may read is refused naming
// its path, with or without --encrypt; --cleanup needs no key; with
// --insecure-gossip weft runs and warns once that gossip is
// unauthenticated.
func TestGossipKeyRequired(t *testing.T) {
	c := newCluster(t, "a")
	a := c.by["a"]
	for _, extra := range [][]string{nil, {"--check"}} {
		code, _, stderr := runWeft(t, a, noKeyArgs(a, nil, extra...)...)
		if code != 2 {
			t.Errorf("weft run %v without a gossip key: exit %d, want 2; stderr %q", extra, code, stderr)
		}
		for _, w := range []string{"--gossip-key-file", "weft keygen > /etc/weft/gossip.key", "chmod 600", "--insecure-gossip"} {
			if !strings.Contains(stderr, w) {
				t.Errorf("weft run %v without a gossip key: stderr does not say %q: %q", extra, w, stderr)
			}
		}
	}
	t.Logf("without a key: %s", strings.TrimSpace(runWeftStderr(t, a, noKeyArgs(a, nil)...)))

	loose := filepath.Join(a.files.Dir, "loose.key")
	if err := os.WriteFile(loose, []byte(keygen(t, a)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, extra := range [][]string{{"--gossip-key-file", loose}, {"--gossip-key-file", loose, "--encrypt"}} {
		code, _, stderr := runWeft(t, a, runArgs(a, nil, extra...)...)
		if code != 2 || !strings.Contains(stderr, loose) || !strings.Contains(stderr, "0644") {
			t.Errorf("weft run %v (mode 0644): exit %d, %q; want 2 naming the file and its mode", extra, code, stderr)
		}
	}

	if code, _, stderr := runWeft(t, a, "run", "--cleanup", "--tun", "weft0"); code != 0 {
		t.Errorf("weft run --cleanup without a gossip key: exit %d, %q", code, stderr)
	}
	if links, err := weftLinks(a.host); err != nil || len(links) != 0 {
		t.Errorf("TUN links %v exist after the refusals (%v)", links, err)
	}

	a.args = insecureArgs(a, nil)
	c.start(a)
	if err := waitReady(a, formationTimeout); err != nil {
		t.Fatal(err)
	}
	if n := countLines(a.proc.Logs(), "gossip is unauthenticated"); n != 1 {
		t.Errorf("--insecure-gossip: %d warnings that gossip is unauthenticated, want 1:\n%s", n, tail(a.proc.Logs(), 20))
	}
	stopNode(t, a)

	// With a key: no warning; a reload re-reads the key file with the same
	// checks, and a file others may read is refused (the keys stay).
	writeKeys(t, a, keygen(t, a))
	a.args = runArgs(a, nil, "--gossip-key-file", keyFile(a))
	c.start(a)
	if err := waitReady(a, formationTimeout); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(a.proc.Logs(), "gossip is unauthenticated") {
		t.Errorf("with a gossip key, weft warns that gossip is unauthenticated")
	}
	if err := os.Chmod(keyFile(a), 0o644); err != nil {
		t.Fatal(err)
	}
	logOff := len(a.proc.Logs())
	if err := a.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line, err := waitLogLine(a.proc, logOff, time.Now().Add(10*time.Second), "reload refused")
	if err != nil {
		t.Fatalf("a reload with a 0644 key file was not refused: %v\n%s", err, tail(a.proc.Logs(), 10))
	}
	if !strings.Contains(line, keyFile(a)) || !strings.Contains(line, "0644") {
		t.Errorf("the refusal does not name the key file and its mode: %s", line)
	}
	t.Logf("reload refused: %s", line)
	if err := readyz(a); err != nil {
		t.Errorf("after the refused reload: %v", err)
	}
}

func runWeftStderr(t *testing.T, n *node, args ...string) string {
	t.Helper()
	_, _, stderr := runWeft(t, n, args...)
	return stderr
}
