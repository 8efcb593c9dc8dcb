package membership

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// bounded is what the bounded tables of c hold now (test-only accessor).
type bounded struct {
	members, alive, pendingLeave, seenIntents, relayQueue int
}

func (c *Cluster) bounded() bounded {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := bounded{members: len(c.members), pendingLeave: len(c.pendingLeave), seenIntents: c.seenIntents.len()}
	if len(c.seenIntents.when) != c.seenIntents.len() {
		panic(fmt.Sprintf("seenIntents: %d in the map, %d in the ring", len(c.seenIntents.when), c.seenIntents.len()))
	}
	for _, m := range c.members {
		if m.State == StateAlive {
			b.alive++
		}
	}
	b.relayQueue = c.bcast.NumQueued() // the queue has its own lock; c.mu is a leaf lock held only for this read
	return b
}

func refusedCount(t *testing.T, m *Metrics, reason string) float64 {
	t.Helper()
	return counterValue(t, m.Refused.WithLabelValues(reason))
}

func TestIntentIDs(t *testing.T) {
	s := newIntentIDs()
	t0 := time.Unix(1_700_000_000, 0)
	for i := range uint64(5) {
		if s.add(i, t0.Add(time.Duration(i)*time.Second), 3) != (i >= 3) {
			t.Fatalf("add(%d): eviction reported wrongly", i)
		}
	}
	if s.len() != 3 || s.has(0) || s.has(1) || !s.has(2) || !s.has(4) {
		t.Fatalf("after 5 adds with room for 3: len %d, has 0..4: %v %v %v %v %v", s.len(), s.has(0), s.has(1), s.has(2), s.has(3), s.has(4))
	}
	s.expire(t0.Add(3*time.Second+intentSeenTTL), intentSeenTTL) // ids 2 and 3 are old enough
	if s.len() != 1 || !s.has(4) || len(s.when) != 1 {
		t.Fatalf("after expiry: len %d, map %d, has 4: %v", s.len(), len(s.when), s.has(4))
	}
	s.add(9, t0.Add(10*time.Second), 3)
	s.add(10, t0.Add(11*time.Second), 3)
	s.expire(t0.Add(time.Hour), intentSeenTTL)
	if s.len() != 0 || len(s.when) != 0 {
		t.Fatalf("after full expiry: len %d, map %d", s.len(), len(s.when))
	}
}

func TestDecodeLeaveIntentLimits(t *testing.T) {
	for _, n := range []int{1, MaxNameLen} {
		name := strings.Repeat("n", n)
		id, got, err := decodeLeaveIntent(encodeLeaveIntent(42, name))
		if err != nil || id != 42 || got != name {
			t.Errorf("name of %d bytes: %d %q %v", n, id, got, err)
		}
	}
	for _, b := range [][]byte{
		encodeLeaveIntent(1, strings.Repeat("n", MaxNameLen+1)),
		encodeLeaveIntent(1, strings.Repeat("n", 20<<10)),
	} {
		if _, _, err := decodeLeaveIntent(b); !errors.Is(err, errNameTooLong) {
			t.Errorf("name of %d bytes: err %v, want errNameTooLong", len(b)-intentHdrLen, err)
		}
	}
	for _, b := range [][]byte{nil, {msgLeaveIntent}, encodeLeaveIntent(1, "")[:intentHdrLen], {2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 'a'}, {1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 'a'}} {
		if _, _, err := decodeLeaveIntent(b); err == nil || errors.Is(err, errNameTooLong) {
			t.Errorf("decodeLeaveIntent(%x) = %v, want a malformed error", b, err)
		}
	}
}

func FuzzDecodeLeaveIntent(f *testing.F) {
	f.Add(encodeLeaveIntent(1, "a"))
	f.Add(encodeLeaveIntent(1<<63, strings.Repeat("z", MaxNameLen)))
	f.Add(encodeLeaveIntent(7, strings.Repeat("z", MaxNameLen+1)))
	f.Add([]byte{1, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, name, err := decodeLeaveIntent(b)
		if err != nil {
			if len(b) > intentMaxLen && len(b) > 1 && b[0] == msgLeaveIntent && b[1] == intentVersion && !errors.Is(err, errNameTooLong) {
				t.Fatalf("over-long intent refused as %v", err)
			}
			return
		}
		if !validName(name) {
			t.Fatalf("decoded a name of %d bytes", len(name))
		}
		if !bytes.Equal(encodeLeaveIntent(id, name), b) {
			t.Fatalf("decode(%x) = %d %q does not encode back", b, id, name)
		}
	})
}

// rawNode is a plain memberlist node (not a weft Cluster) on loopback that
// speaks weft's gossip (label, key): a rogue member, or a stranger joining.
func rawNode(t *testing.T, name string, key []byte, d memberlist.Delegate) *memberlist.Memberlist {
	t.Helper()
	mlc := memberlist.DefaultLocalConfig()
	mlc.Name = name
	mlc.BindAddr = "127.0.0.1"
	mlc.BindPort = 0
	mlc.Label = gossipLabel
	mlc.Delegate = d
	mlc.Logger = log.New(io.Discard, "", 0)
	mlc.ProbeInterval = 200 * time.Millisecond
	mlc.ProbeTimeout = 100 * time.Millisecond
	mlc.GossipInterval = 50 * time.Millisecond
	mlc.TCPTimeout = time.Second
	if key != nil {
		mlc.SecretKey = key
		mlc.GossipVerifyIncoming, mlc.GossipVerifyOutgoing = true, true
	}
	ml, err := memberlist.Create(mlc)
	if err != nil {
		t.Fatalf("memberlist %.20q: %v", name, err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	return ml
}

// rogueDelegate gossips the user messages it is given as broadcasts.
type rogueDelegate struct {
	mu      sync.Mutex
	pending [][]byte
}

func (d *rogueDelegate) NodeMeta(int) []byte                  { return nil }
func (d *rogueDelegate) NotifyMsg([]byte)                     {}
func (d *rogueDelegate) LocalState(bool) []byte               { return nil }
func (d *rogueDelegate) MergeRemoteState(b []byte, join bool) {}
func (d *rogueDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out [][]byte
	for len(d.pending) > 0 && overhead+len(d.pending[0]) <= limit {
		limit -= overhead + len(d.pending[0])
		out = append(out, d.pending[0])
		d.pending = d.pending[1:]
	}
	return out
}

func (d *rogueDelegate) queue(msgs ...[]byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pending = append(d.pending, msgs...)
}

func (d *rogueDelegate) left() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending)
}

func randomName(rng *rand.Rand, n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789-"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[rng.IntN(len(letters))]
	}
	return string(b)
}

// TestLeaveIntentFlood: a rogue gossip member (a plain memberlist node with
// the cluster's key) floods a with leave intents, by TCP (SendReliable),
// UDP (SendBestEffort) and its gossip broadcasts: random ids for names of
// non-members, over-long names, a's own name, a's peer b's name, and
// garbage. a's tables stay within their bounds, every refusal is counted,
// b is not marked left, and b's genuine leave afterwards is seen as one.
func TestLeaveIntentFlood(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{9}, 32)
	metricsA := NewMetrics(prometheus.NewRegistry())
	cfgA := testConfig(t, "a", 1)
	cfgA.SecretKey, cfgA.Metrics = key, metricsA
	const seenCap = 64 // small, so that the flood overfills it
	cfgA.maxSeenIntents = seenCap
	a := start(t, cfgA)
	cfgB := testConfig(t, "b", 2, seedOf(a))
	cfgB.SecretKey = key
	cfgB.maxSeenIntents = seenCap
	b := start(t, cfgB)
	waitFor(t, 5*time.Second, "a and b joined", func() error {
		return errors.Join(sees(a, StateAlive, b), sees(b, StateAlive, a))
	})

	rd := &rogueDelegate{}
	rogue := rawNode(t, "rogue", key, rd)
	if _, err := rogue.Join([]string{seedOf(a)}); err != nil {
		t.Fatalf("rogue join: %v", err)
	}
	// Our own Node for a: the ones memberlist's Members returns are its
	// own, which it updates without a lock the caller could take.
	target := &memberlist.Node{Name: "a", Addr: a.LocalAddr().Addr().AsSlice(), Port: a.LocalAddr().Port()}
	waitFor(t, 5*time.Second, "the rogue is a's member", func() error {
		if _, ok := member(a, "rogue"); !ok {
			return errors.New("not yet")
		}
		return nil
	})

	rng := rand.New(rand.NewPCG(1, 2))
	const perKind = 150
	kinds := map[string]func() []byte{
		"not_member": func() []byte { return encodeLeaveIntent(rng.Uint64(), randomName(rng, 1+rng.IntN(MaxNameLen))) },
		"too_long":   func() []byte { return encodeLeaveIntent(rng.Uint64(), randomName(rng, MaxNameLen+1+rng.IntN(900))) },
		"self":       func() []byte { return encodeLeaveIntent(rng.Uint64(), "a") },
		"peer":       func() []byte { return encodeLeaveIntent(rng.Uint64(), "b") },
		"garbage":    func() []byte { return []byte{byte(rng.IntN(256)), byte(rng.IntN(4))} },
	}
	var sendErrs int
	for kind, gen := range kinds {
		for i := range perKind {
			msg := gen()
			var err error
			switch i % 3 {
			case 0:
				err = rogue.SendReliable(target, msg)
			case 1:
				err = rogue.SendBestEffort(target, msg)
			default:
				rd.queue(msg)
			}
			if err != nil {
				sendErrs++
				t.Logf("%s: %v", kind, err)
			}
		}
		// Over-long names up to 64 KiB, by TCP only.
		if kind == "too_long" {
			for range 10 {
				if err := rogue.SendReliable(target, encodeLeaveIntent(rng.Uint64(), randomName(rng, 64<<10))); err != nil {
					sendErrs++
				}
			}
		}
	}
	if sendErrs > perKind {
		t.Fatalf("%d sends failed", sendErrs)
	}
	waitFor(t, 10*time.Second, "rogue's broadcasts gossiped", func() error {
		if n := rd.left(); n > 0 {
			return fmt.Errorf("%d left to gossip", n)
		}
		return nil
	})

	// The refusals are counted under their reasons (UDP may lose a few).
	waitFor(t, 10*time.Second, "refusals counted", func() error {
		var errs []error
		for reason, min := range map[string]float64{
			RefusedNotMember: perKind / 2, RefusedNameTooLong: perKind / 2, RefusedSelf: perKind / 2,
			RefusedIntentsFull: perKind/2 - seenCap, RefusedMalformed: perKind / 2,
		} {
			if got := refusedCount(t, metricsA, reason); got < min {
				errs = append(errs, fmt.Errorf("weft_gossip_refused_total{reason=%q} = %v, want ≥ %v", reason, got, min))
			}
		}
		return errors.Join(errs...)
	})
	for _, r := range RefusalReasons {
		t.Logf("a: weft_gossip_refused_total{reason=%q} %v", r, refusedCount(t, metricsA, r))
	}

	for _, c := range []*Cluster{a, b} {
		bd := c.bounded()
		t.Logf("%s after the flood: %+v", c.LocalName(), bd)
		switch {
		case bd.seenIntents > seenCap:
			t.Errorf("%s remembers %d intent ids, bound %d", c.LocalName(), bd.seenIntents, seenCap)
		case bd.pendingLeave > bd.alive:
			t.Errorf("%s has %d pending leave intents for %d alive members", c.LocalName(), bd.pendingLeave, bd.alive)
		case bd.relayQueue > bd.members+1:
			t.Errorf("%s queues %d broadcasts for %d members", c.LocalName(), bd.relayQueue, bd.members)
		case bd.members != 2:
			t.Errorf("%s has %d members, want 2 (the other and the rogue)", c.LocalName(), bd.members)
		}
	}
	c := a.bounded()
	if c.seenIntents < seenCap/2 {
		t.Errorf("a remembers only %d intent ids: the flood of intents for b did not reach it", c.seenIntents)
	}

	// b is not marked left, on a or anywhere, while it stays alive.
	time.Sleep(time.Second)
	if err := sees(a, StateAlive, b); err != nil {
		t.Errorf("after the flood: %v", err)
	}
	for _, m := range a.Members() {
		if m.State == StateLeft {
			t.Errorf("a sees %s as left", m.Name)
		}
	}

	// A genuine leave still works: b leaves and a sees it as left, not
	// dead, even though the rogue's forged intents for b came first.
	if err := b.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "b seen as left", func() error { return sees(a, StateLeft, b) })
}

// TestAliveDelegateBounds: a joining node whose name is over MaxNameLen is
// refused; with a member table of 2, a third joining node is refused until
// a member has been gone for GossipToTheDeadTime, whose entry then makes
// room.
func TestAliveDelegateBounds(t *testing.T) {
	t.Parallel()
	metrics := NewMetrics(nil)
	cfg := testConfig(t, "a", 1)
	cfg.Metrics = metrics
	cfg.maxMembers = 2
	cfg.GossipToTheDeadTime = time.Second
	a := start(t, cfg)
	has := func(name string) bool { _, ok := member(a, name); return ok }

	long := rawNode(t, strings.Repeat("L", MaxNameLen+1), nil, nil)
	_, _ = long.Join([]string{seedOf(a)})
	ok := rawNode(t, strings.Repeat("k", MaxNameLen), nil, nil) // at the limit: accepted
	if _, err := ok.Join([]string{seedOf(a)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the name at the limit accepted", func() error {
		if !has(strings.Repeat("k", MaxNameLen)) {
			return errors.New("not a member")
		}
		return nil
	})
	if has(strings.Repeat("L", MaxNameLen+1)) {
		t.Error("a accepted a member whose name is over MaxNameLen")
	}
	if got := refusedCount(t, metrics, RefusedNameTooLong); got < 1 {
		t.Errorf("name_too_long refusals %v", got)
	}
	long.Shutdown()

	n2 := rawNode(t, "n2", nil, nil)
	if _, err := n2.Join([]string{seedOf(a)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n2 joined", func() error {
		if !has("n2") {
			return errors.New("n2 not a member")
		}
		return nil
	})
	n3 := rawNode(t, "n3", nil, nil)
	_, _ = n3.Join([]string{seedOf(a)})
	waitFor(t, 5*time.Second, "n3 refused", func() error {
		if got := refusedCount(t, metrics, RefusedMembersFull); got < 1 {
			return fmt.Errorf("members_full refusals %v", got)
		}
		return nil
	})
	time.Sleep(time.Second) // n3 keeps gossiping its alive message, through n2 too
	if has("n3") || len(a.Members()) != 2 {
		t.Fatalf("a's member table over its bound of 2: %v", a.Members())
	}

	// n2 fails; once it has been dead for GossipToTheDeadTime, n3 (still
	// gossiping) takes its place.
	n2.Shutdown()
	waitFor(t, 10*time.Second, "n3 admitted in n2's place", func() error {
		if !has("n3") {
			_, _ = n3.Join([]string{seedOf(a)}) // a push/pull: its alive message again
			return fmt.Errorf("n3 not a member; members %v", a.Members())
		}
		return nil
	})
	if got := len(a.Members()); got > 2 {
		t.Errorf("a has %d members, bound 2", got)
	}
	if err := a.delegateMergeCheck(); err != nil {
		t.Error(err)
	}
}

// delegateMergeCheck: NotifyMerge refuses a node list that could never fit.
func (c *Cluster) delegateMergeCheck() error {
	d := (*delegate)(c)
	small := []*memberlist.Node{{Name: "x"}}
	if err := d.NotifyMerge(small); err != nil {
		return fmt.Errorf("NotifyMerge(1 node) = %v", err)
	}
	big := make([]*memberlist.Node, maxMembers+2)
	for i := range big {
		big[i] = &memberlist.Node{Name: fmt.Sprint("n", i)}
	}
	if err := d.NotifyMerge(big); !errors.Is(err, errMembersFull) {
		return fmt.Errorf("NotifyMerge(%d nodes) = %v, want errMembersFull", len(big), err)
	}
	return nil
}

func TestStartRefusesLongName(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, strings.Repeat("n", MaxNameLen+1), 1)
	if c, err := Start(t.Context(), cfg); err == nil {
		c.Shutdown()
		t.Error("Start with an over-long name succeeded")
	}
}

// TestStreamBounds: inbound streams beyond maxInboundStreams are closed at
// once, and a stream that carries more than maxStreamBytes (an encrypted
// message claiming 20 MB, which memberlist would buffer before it could
// authenticate it) is cut off. Both are counted. The cluster still works.
func TestStreamBounds(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{5}, 32)
	metrics := NewMetrics(nil)
	cfg := testConfig(t, "a", 1)
	cfg.SecretKey, cfg.Metrics = key, metrics
	cfg.TCPTimeout = 5 * time.Second // idle streams hold their slots this long
	a := start(t, cfg)
	addr := seedOf(a)

	// Idle streams fill the slots; the extra ones are closed at once.
	const extra = 8
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range maxInboundStreams + extra {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitFor(t, 3*time.Second, "extra streams refused", func() error {
		if got := refusedCount(t, metrics, RefusedStreamsFull); got < extra {
			return fmt.Errorf("streams_full %v, want ≥ %d", got, extra)
		}
		return nil
	})
	closed := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, io.EOF) {
			closed++
		}
	}
	if closed < extra || closed > extra+2 {
		t.Errorf("%d of %d idle streams closed by a at once, want %d", closed, len(conns), extra)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil

	// An oversized stream is cut off after maxStreamBytes. A stream
	// refused because a's slots are not free yet (a has not seen the
	// closes above) is cut off too, but counted as streams_full: try
	// again until one is counted as stream_too_big.
	waitFor(t, 10*time.Second, "an oversized stream cut off and counted", func() error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := memberlist.AddLabelHeaderToStream(c, gossipLabel); err != nil {
			return err
		}
		hdr := []byte{10, 0, 0, 0, 0} // encryptMsg, then a 20 MB length
		binary.BigEndian.PutUint32(hdr[1:], 20_000_000)
		if _, err := c.Write(hdr); err != nil {
			return err
		}
		junk := make([]byte, 64<<10)
		sent := 0
		c.SetWriteDeadline(time.Now().Add(4 * time.Second))
		for sent < 32<<20 {
			n, err := c.Write(junk)
			sent += n
			if err != nil {
				break // a closed the stream
			}
		}
		if sent >= 32<<20 {
			return fmt.Errorf("a took all %d bytes", sent)
		}
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if refusedCount(t, metrics, RefusedStreamTooBig) >= 1 {
				return nil
			}
		}
		return fmt.Errorf("cut off after %d bytes, but stream_too_big %v (streams_full %v)", sent,
			refusedCount(t, metrics, RefusedStreamTooBig), refusedCount(t, metrics, RefusedStreamsFull))
	})

	// Gossip still works.
	cfgB := testConfig(t, "b", 2, addr)
	cfgB.SecretKey = key
	b := start(t, cfgB)
	waitFor(t, 5*time.Second, "b joined", func() error {
		return errors.Join(sees(a, StateAlive, b), sees(b, StateAlive, a))
	})
}
