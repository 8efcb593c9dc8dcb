package node

import (
	"crypto/ed25519"
	"io"
	"log/slog"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/pki"
	"github.com/weftnet/weft/router"
)

// pkiLab is a CA and what the certificate tests sign with it.
type pkiLab struct {
	t   *testing.T
	now time.Time
	ca  *pki.CA
}

func newPKILab(t *testing.T, now time.Time) *pkiLab {
	t.Helper()
	ca, err := pki.NewCA("test CA", 365*24*time.Hour, now.Add(-72*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &pkiLab{t: t, now: now, ca: ca}
}

// issue signs a certificate for name granting subnets, issued at issued.
func (l *pkiLab) issue(ca *pki.CA, name string, issued time.Time, subnets, pools []netip.Prefix) (*pki.Cert, ed25519.PrivateKey) {
	l.t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		l.t.Fatal(err)
	}
	c, err := ca.Sign(pki.Request{Name: name, PublicKey: key.Public().(ed25519.PublicKey), Subnets: subnets, Pools: pools, Lifetime: 24 * time.Hour}, issued)
	if err != nil {
		l.t.Fatal(err)
	}
	return c, key
}

func (l *pkiLab) trust(cas []*pki.CA, crls ...*pki.CRL) *pki.Trust {
	l.t.Helper()
	var certs []*pki.Cert
	for _, ca := range cas {
		certs = append(certs, ca.Cert)
	}
	tr, err := pki.NewTrust(certs, crls)
	if err != nil {
		l.t.Fatal(err)
	}
	return tr
}

// member is a gossip member named name claiming subnet, showing cert and
// signing with key at signed.
func member(name string, subnet netip.Prefix, idx byte, cert *pki.Cert, key ed25519.PrivateKey, signed time.Time) membership.Member {
	m := membership.Meta{
		Subnets: []netip.Prefix{subnet}, Underlay: netip.AddrFrom4([4]byte{192, 0, 2, idx}), Port: 8285, Encap: encap.UDP,
		Claimed: signed.Add(-time.Hour).UnixMilli(), Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		Proof: membership.Proof{Cert: cert.Fingerprint, Signed: signed.UnixMilli()},
	}
	msg, err := membership.ProofMessage(name, m)
	if err != nil {
		panic(err)
	}
	copy(m.Proof.Sig[:], ed25519.Sign(key, msg))
	return membership.Member{Name: name, Meta: m, Cert: cert.Raw, State: membership.StateAlive}
}

func pkiNode(now *time.Time, p *PKI) *Node {
	n := &Node{s: Settings{Name: "self"}, d: Deps{Now: func() time.Time { return *now }}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	n.live.Store(&Live{PKI: p})
	return n
}

// judgeOne runs member m through peersFrom and certPeers on n.
func judgeOne(n *Node, m membership.Member, now time.Time) router.Peer {
	self := membership.Meta{Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, Underlay: netip.MustParseAddr("192.0.2.1"), Port: 8285,
		Encap: encap.UDP, Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	members := []membership.Member{m}
	return n.certPeers(peersFrom(members, nil, self, now), members, now)[0]
}

// Every certificate check, one member at a time (issue 23).
func TestCertPeersChecks(t *testing.T) {
	p := netip.MustParsePrefix
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	lab := newPKILab(t, now)
	other := newPKILab(t, now)
	sub := p("10.244.2.0/24")
	good, goodKey := lab.issue(lab.ca, "x", now, []netip.Prefix{sub}, nil)
	pooled, pooledKey := lab.issue(lab.ca, "x", now, nil, []netip.Prefix{p("10.244.128.0/20")})
	foreign, foreignKey := lab.issue(other.ca, "x", now, []netip.Prefix{sub}, nil)
	expired, expiredKey := lab.issue(lab.ca, "x", now.Add(-48*time.Hour), []netip.Prefix{sub}, nil)
	revoked, revokedKey := lab.issue(lab.ca, "x", now, []netip.Prefix{sub}, nil)
	named, namedKey := lab.issue(lab.ca, "y", now, []netip.Prefix{sub}, nil)
	_, strangerKey := lab.issue(lab.ca, "z", now, []netip.Prefix{p("10.244.9.0/24")}, nil)
	crl, err := lab.ca.Revoke(nil, []*big.Int{revoked.X509.SerialNumber}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	trust := lab.trust([]*pki.CA{lab.ca}, crl)

	noProof := member("x", sub, 2, good, goodKey, now)
	noProof.Meta.Proof, noProof.Cert = membership.Proof{}, nil
	pending := member("x", sub, 2, good, goodKey, now)
	pending.Cert = nil
	for _, tt := range []struct {
		name  string
		m     membership.Member
		want  router.Refusal
		text  string
		state string
	}{
		{"believed", member("x", sub, 2, good, goodKey, now), router.RefusedNone, "", "alive"},
		{"a subnet inside a granted pool", member("x", p("10.244.130.0/24"), 2, pooled, pooledKey, now), router.RefusedNone, "", "alive"},
		{"no certificate", noProof, router.RefusedCertMissing, "no certificate", "alive"},
		{"certificate not arrived", pending, router.RefusedNone, "", "pending"},
		{"another CA", member("x", sub, 2, foreign, foreignKey, now), router.RefusedCertUntrusted, "serial", "alive"},
		{"expired", member("x", sub, 2, expired, expiredKey, now), router.RefusedCertExpired, "", "alive"},
		{"revoked", member("x", sub, 2, revoked, revokedKey, now), router.RefusedCertRevoked, "", "alive"},
		{"another host's certificate", member("x", sub, 2, good, strangerKey, now), router.RefusedBadSignature, "copied", "alive"},
		{"a certificate for another name", member("x", sub, 2, named, namedKey, now), router.RefusedCertName, `for "y"`, "alive"},
		{"signed in the future", member("x", sub, 2, good, goodKey, now.Add(MaxClaimSkew+time.Minute)), router.RefusedSignatureTime, "ahead of our clock", "alive"},
		{"a subnet not granted", member("x", p("10.244.3.0/24"), 2, good, goodKey, now), router.RefusedSubnetNotGranted, "does not grant", "alive"},
		{"outside the pool", member("x", p("10.244.2.0/24"), 2, pooled, pooledKey, now), router.RefusedSubnetNotGranted, "pool 10.244.128.0/20", "alive"},
	} {
		n := pkiNode(&now, &PKI{Trust: trust})
		got := judgeOne(n, tt.m, now)
		if got.Refused != tt.want || !strings.Contains(got.Incompatible, tt.text) || got.State != tt.state {
			t.Errorf("%s: refused %v %q, state %q; want %v with %q, state %q", tt.name, got.Refused, got.Incompatible, got.State, tt.want, tt.text, tt.state)
		}
	}
}

// A replayed older signature is refused; a renewal keeps its routes while
// its certificate is on its way, for certWait; a new trust (a revocation)
// and the clock (an expiry) are judged again.
func TestCertPeersOverTime(t *testing.T) {
	p := netip.MustParsePrefix
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	lab := newPKILab(t, now)
	sub := p("10.244.2.0/24")
	cert, key := lab.issue(lab.ca, "x", now, []netip.Prefix{sub}, nil)
	n := pkiNode(&now, &PKI{Trust: lab.trust([]*pki.CA{lab.ca})})

	first := member("x", sub, 2, cert, key, now)
	if got := judgeOne(n, first, now); got.Refused != router.RefusedNone {
		t.Fatalf("first: %v %s", got.Refused, got.Incompatible)
	}
	newer := member("x", sub, 3, cert, key, now.Add(time.Second)) // a new underlay
	if got := judgeOne(n, newer, now); got.Refused != router.RefusedNone || got.Underlay.Addr() != netip.MustParseAddr("192.0.2.3") {
		t.Fatalf("newer: %v %s", got.Refused, got.Incompatible)
	}
	replay := first
	if got := judgeOne(n, replay, now); got.Refused != router.RefusedSignatureTime || !strings.Contains(got.Incompatible, "replay") {
		t.Errorf("replay of the older metadata: %v %q, want signature_time", got.Refused, got.Incompatible)
	}
	if got := judgeOne(n, newer, now); got.Refused != router.RefusedNone {
		t.Fatalf("newer again: %v %s", got.Refused, got.Incompatible)
	}
	// A host that died comes back with its restarted clock: its next life
	// is judged afresh.
	dead := newer
	dead.State = membership.StateDead
	judgeOne(n, dead, now)
	if got := judgeOne(n, first, now); got.Refused != router.RefusedNone {
		t.Errorf("back from the dead, signed earlier than its last life: %v %s", got.Refused, got.Incompatible)
	}
	if got := judgeOne(n, newer, now); got.Refused != router.RefusedNone {
		t.Fatalf("newer after the return: %v %s", got.Refused, got.Incompatible)
	}

	// A renewal: metadata naming a certificate not yet here keeps the
	// routes of the believed metadata for certWait.
	renewed, renewedKey := lab.issue(lab.ca, "x", now, []netip.Prefix{sub}, nil)
	inFlight := member("x", sub, 3, renewed, renewedKey, now.Add(2*time.Second))
	inFlight.Cert = nil
	if got := judgeOne(n, inFlight, now); got.State != "alive" || got.Refused != router.RefusedNone || len(got.Subnets) != 1 {
		t.Errorf("renewal in flight: %+v, want the believed peer", got)
	}
	later := now.Add(certWait + time.Second)
	if got := judgeOne(n, inFlight, later); got.Refused != router.RefusedCertMissing || !strings.Contains(got.Incompatible, "has not arrived") {
		t.Errorf("renewal after certWait: %v %q, want cert_missing", got.Refused, got.Incompatible)
	}
	arrived := member("x", sub, 3, renewed, renewedKey, now.Add(2*time.Second))
	if got := judgeOne(n, arrived, later); got.Refused != router.RefusedNone || got.State != "alive" {
		t.Errorf("renewed certificate arrived: %v %q %s", got.Refused, got.State, got.Incompatible)
	}

	// A reload with the renewed certificate revoked: judged at once.
	crl, err := lab.ca.Revoke(nil, []*big.Int{renewed.X509.SerialNumber}, later, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	n.live.Store(&Live{PKI: &PKI{Trust: lab.trust([]*pki.CA{lab.ca}, crl)}})
	if got := judgeOne(n, arrived, later); got.Refused != router.RefusedCertRevoked {
		t.Errorf("after the revocation: %v %s", got.Refused, got.Incompatible)
	}
	// The clock: a certificate that runs out is refused by the next
	// judgement after its verdict expires.
	n.live.Store(&Live{PKI: &PKI{Trust: lab.trust([]*pki.CA{lab.ca})}})
	if got := judgeOne(n, arrived, later); got.Refused != router.RefusedNone {
		t.Fatalf("unrevoked: %v %s", got.Refused, got.Incompatible)
	}
	if v := n.certs.verdicts["x"]; !v.expires.Equal(renewed.NotAfter) {
		t.Errorf("a belief is kept until %v, want until the certificate runs out (%v)", v.expires, renewed.NotAfter)
	}
	end := renewed.NotAfter.Add(time.Second)
	if got := judgeOne(n, arrived, end); got.Refused != router.RefusedCertExpired {
		t.Errorf("after its lifetime: %v %s", got.Refused, got.Incompatible)
	}
	// Members gone are forgotten.
	n.certPeers(nil, nil, end)
	if len(n.certs.verdicts)+len(n.certs.signed)+len(n.certs.good)+len(n.certs.waiting) != 0 {
		t.Errorf("state kept for members gone: %+v", n.certs)
	}
}

// Our metadata carries a proof peers verify, each later than the last.
func TestSignMeta(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	lab := newPKILab(t, now)
	cert, key := lab.issue(lab.ca, "self", now, []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, nil)
	n := pkiNode(&now, &PKI{Trust: lab.trust([]*pki.CA{lab.ca}), Cert: cert, Key: key})
	m := membership.Meta{Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, Underlay: netip.MustParseAddr("192.0.2.1"), Port: 8285, Encap: encap.UDP}
	a, b := n.signMeta(m), n.signMeta(m)
	if a.Proof.Cert != cert.Fingerprint || b.Proof.Signed <= a.Proof.Signed {
		t.Fatalf("proofs %+v then %+v", a.Proof, b.Proof)
	}
	msg, err := membership.ProofMessage("self", b)
	if err != nil || !ed25519.Verify(cert.PublicKey, msg, b.Proof.Sig[:]) {
		t.Errorf("our signature does not verify (%v)", err)
	}
	if n := pkiNode(&now, nil); n.signMeta(m).Proof.Present() {
		t.Error("signed without a PKI")
	}
}

// The log warns a day before our certificate runs out, at most hourly, and
// says so as an error once it has.
func TestCheckOwnCertWarns(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	lab := newPKILab(t, now)
	cert, key := lab.issue(lab.ca, "self", now, []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, nil)
	var logs strings.Builder
	n := pkiNode(&now, &PKI{Trust: lab.trust([]*pki.CA{lab.ca}), Cert: cert, Key: key})
	n.log = slog.New(slog.NewTextHandler(&logs, nil))
	for _, at := range []time.Duration{time.Hour, 2 * time.Hour, 2*time.Hour + time.Minute, 25 * time.Hour} {
		n.checkOwnCert(now.Add(at))
	}
	// The certificate runs out a day after it was issued: at +1h (under
	// a day left) a warning, at +2h another (an hour later), at +2h1m
	// none (within the hour), at +25h the error.
	if w, e := strings.Count(logs.String(), "runs out soon"), strings.Count(logs.String(), "has expired"); w != 2 || e != 1 {
		t.Errorf("%d warnings and %d errors, want 2 and 1:\n%s", w, e, logs.String())
	}
}
