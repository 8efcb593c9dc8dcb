package seal

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"
)

// Every outcome has its own label, so that no counter hides another.
func TestHandshakeResultLabels(t *testing.T) {
	seen := map[string]bool{}
	for _, l := range append(HandshakeResults(), StagedResults()...) {
		if l == "" || seen[l] {
			t.Fatalf("label %q empty or repeated in %v", l, HandshakeResults())
		}
		seen[l] = true
	}
	if len(HandshakeResults()) != int(numHS) || HSBadMAC.String() != "bad_mac" || StagedExpired.String() != "expired" {
		t.Errorf("labels %v %v", HandshakeResults(), StagedResults())
	}
}

// forge returns a handshake message of type typ with random bytes: the
// right type and length, and a mac1 that is random too.
func forge(t testing.TB, typ byte) []byte {
	b := make([]byte, handshakeLen(typ))
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[0], b[1], b[2], b[3] = typ, 0, 0, 0
	return b
}

// A message whose mac1 is wrong (forged, or made for another receiver's
// key) is dropped by Open, counted bad_mac, and spends no token of the
// peer's rate limit nor a place in the backlog.
func TestWrongMAC1IsRefusedBeforeTheRateLimit(t *testing.T) {
	n := newNet(t, Config{}, "a", "b", "c")
	pa, pb := n.peers["a"]["b"], n.peers["b"]["a"]
	n.ms["a"].initiate(pa, n.clk.now())
	genuine := n.queue[0].b
	n.queue = nil

	flipped := bytes.Clone(genuine)
	flipped[len(flipped)-1] ^= 0x80
	body := bytes.Clone(genuine)
	body[20] ^= 1 // the mac1 covers every byte before it
	// A genuine initiation from a to c, replayed to b from a's address:
	// its mac1 is keyed with c's public key, not b's.
	n.ms["a"].initiate(n.peers["a"]["c"], n.clk.now())
	forOther := n.queue[0].b
	n.queue = nil
	cases := map[string][]byte{
		"flipped mac1":     flipped,
		"flipped body":     body,
		"for another host": forOther,
		"random init":      forge(t, TypeInitiation),
		"random response":  forge(t, TypeResponse),
	}
	want := uint64(0)
	for name, msg := range cases {
		if _, r := pb.Open(bytes.Clone(msg), n.clk.ns()); r != BadMAC {
			t.Errorf("%s: %v, want BadMAC", name, r)
		}
		want++
		if got := n.ms["b"].Handshakes()[HSBadMAC.String()]; got != want {
			t.Errorf("%s: bad_mac %d, want %d", name, got, want)
		}
	}
	if len(n.ms["b"].in) != 0 {
		t.Errorf("%d messages with a wrong mac1 reached the backlog", len(n.ms["b"].in))
	}
	n.drain()
	if !pb.tokensAt.IsZero() || pb.tokens != 0 {
		t.Error("a message with a wrong mac1 spent a token")
	}
	// Truncated or padded: not a handshake message at all. Among them an
	// older weft's, without mac1 (64 and 60 bytes): dropped as malformed
	// (the router counts it), never handed on.
	for _, c := range []struct {
		typ byte
		l   int
	}{{TypeInitiation, InitiationLen - MACLen}, {TypeResponse, ResponseLen - MACLen}, {TypeInitiation, InitiationLen - 1},
		{TypeInitiation, InitiationLen + 1}, {TypeInitiation, ResponseLen}, {TypeResponse, InitiationLen}} {
		m := make([]byte, c.l)
		m[0] = c.typ
		if _, r := pb.Open(m, n.clk.ns()); r != Malformed {
			t.Errorf("type %d of %d bytes: %v, want Malformed", c.typ, c.l, r)
		}
	}
	// The genuine one still gets its answer.
	if _, r := pb.Open(bytes.Clone(genuine), n.clk.ns()); r != Handshake {
		t.Fatalf("genuine: %v", r)
	}
	n.pump()
	if hs := n.ms["b"].Handshakes(); hs[HSResponded.String()] != 1 || hs[HSInvalid.String()]+hs[HSRateLimited.String()] != 0 || hs[HSBadMAC.String()] != want {
		t.Fatalf("b %v", hs)
	}
	established(t, n, "a", "b")
}

// 10,000 forged handshake messages from a's address, then a genuine
// initiation: it still gets a session, with nothing rate limited.
func TestFloodOfForgeriesDoesNotStarveHandshakes(t *testing.T) {
	n := newNet(t, Config{}, "a", "b")
	pb := n.peers["b"]["a"]
	const forged = 10_000
	for i := range forged {
		typ := byte(TypeInitiation)
		if i%2 == 1 {
			typ = TypeResponse
		}
		if _, r := pb.Open(forge(t, typ), n.clk.ns()); r != BadMAC {
			t.Fatalf("forgery %d: %v", i, r)
		}
	}
	n.ms["a"].tick() // a initiates
	n.pump()
	established(t, n, "a", "b")
	hs := n.ms["b"].Handshakes()
	if hs[HSBadMAC.String()] != forged || hs[HSRateLimited.String()] != 0 || hs[HSResponded.String()] != 1 {
		t.Fatalf("b %v", hs)
	}
	// And again across a rekey, with forgeries in between.
	n.clk.add(DefaultRekeyAfter)
	for range 1000 {
		pb.Open(forge(t, TypeInitiation), n.clk.ns())
	}
	n.tick()
	n.pump()
	established(t, n, "a", "b")
	if hs := n.ms["b"].Handshakes(); hs[HSResponded.String()] != 2 || hs[HSRateLimited.String()] != 0 {
		t.Fatalf("b after the rekey %v", hs)
	}
}

// The mac1 itself: keyed with the receiver's key, over every byte before
// it, and checked the same by the pool's hashes as made by mac1.
func TestMAC1(t *testing.T) {
	kb, _ := GenerateKey()
	kc, _ := GenerateKey()
	c := newMAC1Checker(kb.Public)
	kB, kC := mac1KeyOf(kb.Public), mac1KeyOf(kc.Public)
	if kB == kC {
		t.Fatal("two receivers, one mac1 key")
	}
	msg := forge(t, TypeInitiation)[:InitiationLen-MACLen]
	good := appendMAC1(bytes.Clone(msg), &kB)
	for range 3 { // the pooled hash is reset between uses
		if !c.check(good) {
			t.Fatal("genuine mac1 refused")
		}
	}
	if c.check(appendMAC1(bytes.Clone(msg), &kC)) {
		t.Fatal("mac1 for another receiver accepted")
	}
	if c.check(good[:MACLen-1]) || c.check(nil) {
		t.Fatal("short message accepted")
	}
}

// BenchmarkMAC1Check is the cost of the worker's check per handshake
// message (a forged one: the whole check runs either way).
func BenchmarkMAC1Check(b *testing.B) {
	kb, _ := GenerateKey()
	c := newMAC1Checker(kb.Public)
	msg := forge(b, TypeInitiation)
	b.ReportAllocs()
	for b.Loop() {
		if c.check(msg) {
			b.Fatal("forged mac1 accepted")
		}
	}
}

// BenchmarkOpenForgedHandshake is what one forged handshake message costs
// the receiving worker in Open.
func BenchmarkOpenForgedHandshake(b *testing.B) {
	n := newNet(&testing.T{}, Config{}, "a", "b")
	pb := n.peers["b"]["a"]
	msg := forge(b, TypeInitiation)
	now := time.Now().UnixNano()
	b.ReportAllocs()
	for b.Loop() {
		if _, r := pb.Open(msg, now); r != BadMAC {
			b.Fatal(r)
		}
	}
}

// BenchmarkHandleForgedInitiation is, for comparison, what a forged
// initiation that passes mac1 (one from a holder of the public key) costs
// the Manager: the Noise KK's Diffie-Hellmans before its AEAD fails.
func BenchmarkHandleForgedInitiation(b *testing.B) {
	n := newNet(&testing.T{}, Config{HandshakeRate: 1e12, HandshakeBurst: 1 << 30}, "a", "b")
	pa, pb := n.peers["a"]["b"], n.peers["b"]["a"]
	msg := forge(b, TypeInitiation)
	msg = appendMAC1(msg[:InitiationLen-MACLen], &pa.mac1)
	m := n.ms["b"]
	b.ReportAllocs()
	for b.Loop() {
		m.handle(pb, msg)
	}
	if m.Handshakes()[HSInvalid.String()] == 0 {
		b.Fatal("not refused as invalid")
	}
}
