package seal

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestStageFirstPackets: frames a worker could not seal before the first
// handshake are held, sent in order as soon as the session is there (on
// the initiator's side by the completed handshake, on the responder's by
// the initiator's first datagram), and counted as sent.
func TestStageFirstPackets(t *testing.T) {
	n := newNet(t, Config{}, "a", "b")
	// Neither side has ticked: no handshake has run, no session exists.
	var frames [][]byte
	for i := range 3 {
		frames = append(frames, frame(fmt.Appendf(nil, "first-%d", i)))
	}
	if n.peers["a"]["b"].Seal(frames, n.clk.ns()) {
		t.Fatal("a sealed for b before any handshake")
	}
	if got := n.peers["a"]["b"].Stage(frames, n.clk.ns()); got != 3 {
		t.Fatalf("Stage held %d of 3 frames", got)
	}
	// Only a ticks: it initiates, b answers, a completes and flushes.
	n.ms["a"].tick()
	n.pump()
	want := []string{"first-0", "first-1", "first-2"}
	if got := plaintexts(n.got["b"]); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("b received %q, want %q", got, want)
	}
	if s := n.ms["a"].Staged(); s[StagedSent.String()] != 3 || s[StagedExpired.String()] != 0 {
		t.Fatalf("a's staged counters %v, want 3 sent", s)
	}
	if n.res[NoSession] != 0 {
		t.Fatalf("%d datagrams without a session", n.res[NoSession])
	}

	// a's held frames, the first data under the session, confirmed it
	// to b: b sends with it at once.
	if !n.peers["b"]["a"].Seal([][]byte{frame([]byte("reply"))}, n.clk.ns()) {
		t.Fatal("b's session was not confirmed by a's held frames")
	}
}

// TestStageResponderFlush: a responder that holds frames sends them once
// the initiator's first datagram confirms its session.
func TestStageResponderFlush(t *testing.T) {
	n := newNet(t, Config{}, "a", "b")
	n.ms["a"].tick()
	// Deliver the initiation and b's response, but not a's flush.
	n.drop = func(from string, b []byte) bool { return from == "a" && b[0] == TypeData }
	n.pump()
	n.drop = nil
	bf := [][]byte{frame([]byte("held-0")), frame([]byte("held-1"))}
	if n.peers["b"]["a"].Seal(bf, n.clk.ns()) {
		t.Fatal("b sent with an unconfirmed session")
	}
	if got := n.peers["b"]["a"].Stage(bf, n.clk.ns()); got != 2 {
		t.Fatalf("b's Stage held %d of 2", got)
	}
	if !n.send("a", "b", []byte("hello")) {
		t.Fatal("a has no session after the handshake")
	}
	n.pump() // b confirms on a's datagram and kicks its Manager
	n.ms["b"].tick()
	n.pump()
	if got := plaintexts(n.got["a"]); fmt.Sprint(got) != "[held-0 held-1]" {
		t.Fatalf("a received %q, want b's held frames", got)
	}
	if s := n.ms["b"].Staged(); s[StagedSent.String()] != 2 {
		t.Fatalf("b's staged counters %v, want 2 sent", s)
	}
}

// TestStageBounds: a peer holds at most StageFrames frames; they expire
// after StageMaxAge without a session, and when the peer leaves.
func TestStageBounds(t *testing.T) {
	n := newNet(t, Config{}, "a", "b")
	n.drop = func(string, []byte) bool { return true } // b never answers
	p := n.peers["a"]["b"]
	var many [][]byte
	for range StageFrames + 8 {
		many = append(many, frame([]byte("x")))
	}
	if got := p.Stage(many, n.clk.ns()); got != StageFrames {
		t.Fatalf("Stage held %d, want %d", got, StageFrames)
	}
	if got := p.Stage(many[:1], n.clk.ns()); got != 0 {
		t.Fatalf("a full stage held %d more", got)
	}
	n.tick()
	n.pump()
	if s := n.ms["a"].Staged(); s[StagedSent.String()]+s[StagedExpired.String()] != 0 {
		t.Fatalf("counters %v before StageMaxAge", s)
	}
	n.clk.add(StageMaxAge + time.Second)
	n.ms["a"].tick()
	if s := n.ms["a"].Staged(); s[StagedExpired.String()] != StageFrames || s[StagedSent.String()] != 0 {
		t.Fatalf("counters %v after StageMaxAge, want %d expired", s, StageFrames)
	}
	if got := p.Stage(many[:2], n.clk.ns()); got != 2 {
		t.Fatalf("an emptied stage held %d of 2", got)
	}
	// b leaves: what a held for it is dropped at once.
	n.ms["a"].SetPeers(nil)
	if s := n.ms["a"].Staged(); s[StagedExpired.String()] != StageFrames+2 {
		t.Fatalf("counters %v after the peer left", s)
	}
}

func plaintexts(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}

// TestInstallKeepsSessionsInUse: a new session never takes the slot of the
// one we send with, the one the peer sends with, or (unless it supersedes
// it) the newest one we answered; sessions of superseded initiations go
// first. Before this rule, simultaneous rekeys under load evicted the
// session the peer was sending with (no_session drops until its rekey).
func TestInstallKeepsSessionsInUse(t *testing.T) {
	m, err := New(Config{Cipher: AES256GCM, Send: func([]byte, netip.AddrPort) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	var k [32]byte
	mk := func(idx uint32, initiator bool, created int64) *session {
		s, err := newSession(AES256GCM, idx, idx+100, k, k, initiator, created)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	p := &Peer{m: m}
	cur := mk(1, true, 10)      // ours, sent with
	peerUses := mk(2, false, 5) // answered long ago; the peer sends with it
	p.install(cur)
	p.install(peerUses)
	p.confirm(peerUses)
	p.current.Store(cur)
	p.inUse.Store(peerUses)
	dead := mk(3, false, 20)   // answered, then superseded by
	answer := mk(4, false, 30) // the newest answered initiation
	p.install(dead)
	p.install(answer)
	has := func(s *session) bool { return p.find(s.local) == s }

	mine := mk(5, true, 40) // our own rekey completes
	p.install(mine)
	if !has(cur) || p.current.Load() != mine || !has(peerUses) || !has(answer) || has(dead) {
		t.Fatalf("after our rekey: cur %v peer's %v newest answer %v dead %v", has(cur), has(peerUses), has(answer), has(dead))
	}
	// A newer initiation from the peer supersedes the answer it replaces.
	again := mk(6, false, 50)
	p.install(again)
	if !has(again) || !has(peerUses) || !has(mine) || has(answer) {
		t.Fatalf("after the peer's new initiation: new %v peer's %v ours %v old answer %v", has(again), has(peerUses), has(mine), has(answer))
	}
}
