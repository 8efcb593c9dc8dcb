package e2e

// Issue 23's certificates between real weft processes: hosts with
// certificates from a cluster CA form a cluster, with and without
// --encrypt, and choose automatic subnets inside their granted pools;
// a host with another CA's certificate, with none, with an expired one, one
// that claims a subnet its certificate does not grant, and one that shows
// another host's certificate are each refused by every host with its
// reason; a renewal and a CA rotation by reload keep the traffic flowing,
// and a revocation by reload removes the host's routes within 5 s.

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/weftrun"
	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/pki"
	"github.com/weftnet/weft/router"
)

func pkiDir(n *node) string { return filepath.Join(n.files.Dir, "pki") }

func newCA(t *testing.T, name string) *pki.CA {
	t.Helper()
	ca, err := weftrun.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// withCert gives n a certificate from issuer for its subnet (or, if
// pools are given, for those pools), trusting the CAs trusted, and runs it
// with --pki-dir.
func withCert(t *testing.T, n *node, join []string, trusted []*pki.CA, issuer *pki.CA, pools []netip.Prefix, extra ...string) {
	t.Helper()
	g := weftrun.Grant{Pools: pools}
	if len(pools) == 0 {
		g.Subnets = []netip.Prefix{n.subnet}
	}
	if err := weftrun.InstallPKI(pkiDir(n), n.name, trusted, issuer, g); err != nil {
		t.Fatal(err)
	}
	spec := n.spec(join)
	spec.PKIDir = pkiDir(n)
	n.args = weftrun.RunArgs(n.files, spec, extra...)
}

// reload sends n SIGHUP and waits for its log to say the reload changed
// what (or, with what empty, for any reload line).
func reload(t *testing.T, n *node, what string) {
	t.Helper()
	const reloaded = `msg="configuration reloaded"`
	was := countLines(n.proc.Logs(), reloaded)
	if err := n.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := pollUntil(time.Now().Add(10*time.Second), func() error {
		if n.proc.Exited() {
			return errExited(n)
		}
		if countLines(n.proc.Logs(), reloaded) <= was {
			return errors.New("no reload logged yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("%s: SIGHUP: %v\n%s", n.name, err, tail(n.proc.Logs(), 20))
	}
	logs := n.proc.Logs()
	if line := logs[strings.LastIndex(logs, reloaded):]; !strings.Contains(line, what) {
		t.Fatalf("%s's reload did not change %q:\n%s", n.name, what, tail(logs, 10))
	}
}

// refusedFor waits until n's status shows peer refused with the label
// want, and checks that n counts it once in weft_peers_refused and logged
// it once.
func refusedFor(ctx context.Context, t *testing.T, n *node, peer, want string) {
	t.Helper()
	if err := refusedBy(n, peer, "", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := status(n)
	if err != nil {
		t.Fatal(err)
	}
	if p := st.Peer(peer); p.Refused != want {
		t.Errorf("%s refuses %s as %q (%s), want %q", n.name, peer, p.Refused, p.Reason, want)
	}
	if v := counter(ctx, t, n, "weft_peers_refused", "reason", want); v != 1 {
		t.Errorf("%s: weft_peers_refused{reason=%s} = %v, want 1", n.name, want, v)
	}
	got := 0
	for line := range strings.Lines(n.proc.Logs()) {
		if strings.Contains(line, `msg="peer refused"`) && strings.Contains(line, " peer="+peer+" ") {
			got++
		}
	}
	if got != 1 {
		t.Errorf("%s logged its refusal of %s %d times, want once:\n%s", n.name, peer, got, tail(n.proc.Logs(), 20))
	}
}

func TestCertClusterPlain(t *testing.T)     { t.Parallel(); certCluster(t) }
func TestCertClusterEncrypted(t *testing.T) { t.Parallel(); certCluster(t, "--encrypt") }

// certCluster: a, b and c with certificates from one CA, c's granting a
// pool it chooses its automatic subnet from; every pair pings.
func certCluster(t *testing.T, extra ...string) {
	c := newCluster(t, "a", "b", "c")
	a, b, cc := c.by["a"], c.by["b"], c.by["c"]
	ca := newCA(t, "lab CA")
	pool := netip.MustParsePrefix("10.244.128.0/20")
	cc.subnet, cc.overlay = netip.Prefix{}, netip.Addr{}
	for _, n := range c.nodes {
		var pools []netip.Prefix
		if n == cc {
			pools = []netip.Prefix{pool}
		}
		withCert(t, n, otherUnderlays(c.nodes, n), []*pki.CA{ca}, ca, pools, extra...)
	}
	c.startAll()
	if err := waitReady(cc, formationTimeout); err != nil {
		t.Fatal(err)
	}
	st, err := status(cc)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := netip.ParsePrefix(st.Node.Subnet)
	if err != nil || !membership.Inside(sub, pool) {
		t.Fatalf("c chose %q (%v), want a subnet inside its granted pool %s", st.Node.Subnet, err, pool)
	}
	cc.subnet, cc.overlay = sub, sub.Addr()
	if st.Node.Cert == nil || st.Node.Cert.Name != "c" || !slices.Contains(st.Node.Cert.Grants, "pool "+pool.String()) {
		t.Errorf("c's status shows its certificate as %+v", st.Node.Cert)
	}
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, from := range c.nodes {
		for _, to := range c.nodes {
			if from != to {
				if err := pingWithin(ctx, from, to.overlay, 10*time.Second); err != nil {
					t.Errorf("%s -> %s: %v", from.name, to.name, err)
				}
			}
		}
	}
	if v := counter(ctx, t, a, "weft_cert_expiry_seconds", "cert", "host"); v < 23*3600 || v > 24*3600 {
		t.Errorf("a: weft_cert_expiry_seconds{cert=host} = %v, want about a day", v)
	}
	for _, n := range c.nodes {
		for _, r := range router.Refusals() {
			if v := counter(ctx, t, n, "weft_peers_refused", "reason", r); v != 0 {
				t.Errorf("%s refuses %v peers for %s", n.name, v, r)
			}
		}
	}
	_ = b
}

// impostorSpec is a gossip member run by the test binary in a namespace:
// it joins with metadata it signs itself, showing the certificate in
// CertFile and signing with the key in KeyFile, for Seconds.
type impostorSpec struct {
	Name      string
	Addr      string // its underlay address
	Join      string // a seed, addr:port
	GossipKey string // the lab's key file
	Network   string
	Subnet    string
	Claimed   int64 // unix ms
	CertFile  string
	KeyFile   string
	Seconds   int
}

type impostorReport struct{ Members int }

func impostor(spec impostorSpec) (impostorReport, error) {
	var rep impostorReport
	raw, err := os.ReadFile(spec.GossipKey)
	if err != nil {
		return rep, err
	}
	gossipKey, err := base64.StdEncoding.DecodeString(strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0]))
	if err != nil {
		return rep, err
	}
	certs, err := pki.ReadCerts(spec.CertFile)
	if err != nil {
		return rep, err
	}
	key, err := pki.ReadKey(spec.KeyFile)
	if err != nil {
		return rep, err
	}
	addr := netip.MustParseAddr(spec.Addr)
	meta := membership.Meta{
		Subnets: []netip.Prefix{netip.MustParsePrefix(spec.Subnet)}, Underlay: addr, Port: encap.UDP.DefaultPort(), Encap: encap.UDP,
		Claimed: spec.Claimed, Networks: []netip.Prefix{netip.MustParsePrefix(spec.Network)},
		Proof: membership.Proof{Cert: certs[0].Fingerprint, Signed: time.Now().UnixMilli()},
	}
	msg, err := membership.ProofMessage(spec.Name, meta)
	if err != nil {
		return rep, err
	}
	copy(meta.Proof.Sig[:], ed25519.Sign(key, msg))
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(spec.Seconds)*time.Second)
	defer cancel()
	c, err := membership.Start(ctx, membership.Config{
		Name: spec.Name, BindAddr: addr, BindPort: 7946, AdvertiseAddr: addr, Seeds: []string{spec.Join},
		Meta: meta, Cert: certs[0].Raw, SecretKey: gossipKey,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return rep, err
	}
	<-ctx.Done()
	for _, m := range c.Members() {
		if m.State == membership.StateAlive {
			rep.Members++
		}
	}
	return rep, c.Shutdown()
}

// TestCertRefusals: a and b hold certificates from ca1; five others try
// to join and are refused by both, each for its reason: o (a real weft
// with ca2's certificate: cert_untrusted), n (a real weft without one:
// cert_missing), r (ca1's certificate for 10.244.99.0/24, claiming b's
// subnet with a claim dated 30 days back: subnet_not_granted), e (an
// expired certificate: cert_expired) and k (a's certificate in its own
// metadata, signed with its own key: bad_signature). b keeps its subnet
// and its traffic.
func TestCertRefusals(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "a", "b", "o", "n", "r", "e", "k")
	a, b, o, n := c.by["a"], c.by["b"], c.by["o"], c.by["n"]
	ca1, ca2 := newCA(t, "ca1"), newCA(t, "ca2")
	seed := []string{a.underlay.String()}
	withCert(t, a, []string{b.underlay.String()}, []*pki.CA{ca1}, ca1, nil)
	withCert(t, b, seed, []*pki.CA{ca1}, ca1, nil)
	withCert(t, o, seed, []*pki.CA{ca2}, ca2, nil)
	n.args = runArgs(n, seed)

	now := time.Now()
	impostors := map[string]struct {
		subnet  netip.Prefix
		claimed time.Time
		grant   netip.Prefix
		issued  time.Time
		showA   bool // show a's certificate
		refused string
	}{
		"r": {b.subnet, now.Add(-30 * 24 * time.Hour), netip.MustParsePrefix("10.244.99.0/24"), now, false, "subnet_not_granted"},
		"e": {c.by["e"].subnet, now, c.by["e"].subnet, now.Add(-48 * time.Hour), false, "cert_expired"},
		"k": {c.by["k"].subnet, now, c.by["k"].subnet, now, true, "bad_signature"},
	}
	specs := map[string]impostorSpec{}
	for name, im := range impostors {
		h := c.by[name]
		cert, key, err := weftrun.Issue(ca1, name, weftrun.Grant{Subnets: []netip.Prefix{im.grant}}, im.issued, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := weftrun.WritePKI(pkiDir(h), name, []*pki.CA{ca1}, cert, key); err != nil {
			t.Fatal(err)
		}
		certFile := filepath.Join(pkiDir(h), name+".crt")
		if im.showA {
			certFile = filepath.Join(pkiDir(a), "a.crt")
		}
		specs[name] = impostorSpec{
			Name: name, Addr: h.underlay.String(), Join: netip.AddrPortFrom(a.underlay, 7946).String(), GossipKey: h.files.GossipKey,
			Network: overlayPrefix.String(), Subnet: im.subnet.String(), Claimed: im.claimed.UnixMilli(),
			CertFile: certFile, KeyFile: filepath.Join(pkiDir(h), name+".key"), Seconds: 40,
		}
	}

	c.nodes = []*node{a, b}
	c.startAll()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.nodes = []*node{a, b, o, n}
	c.start(o)
	c.start(n)
	done := make(chan error, len(specs))
	for name, spec := range specs {
		go func() {
			var rep impostorReport
			err := runTrustHelperIn(ctx, c.by[name].host, "impostor", spec, &rep)
			if err == nil && rep.Members == 0 {
				err = fmt.Errorf("impostor %s never joined", name)
			}
			done <- err
		}()
	}
	want := map[string]string{"o": "cert_untrusted", "n": "cert_missing"}
	for name, im := range impostors {
		want[name] = im.refused
	}
	for _, h := range []*node{a, b} {
		for peer, reason := range want {
			refusedFor(ctx, t, h, peer, reason)
		}
	}
	for _, peer := range []string{"a", "b"} {
		if err := refusedBy(o, peer, "", 10*time.Second); err != nil {
			t.Errorf("o, trusting only ca2, routes %s: %v", peer, err)
		}
	}
	// b keeps its subnet and its traffic.
	if st, err := status(b); err != nil || st.Node.Subnet != b.subnet.String() {
		t.Fatalf("b's subnet: %v (%v), want %s", st.Node.Subnet, err, b.subnet)
	}
	if err := pingOK(ctx, a, b.overlay, 3); err != nil {
		t.Errorf("a -> b with the impostors about: %v", err)
	}
	for range specs {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestCertRenewRotateRevoke: a, b and c hold certificates from ca1, with
// TCP and a ping between a and b throughout: b renews its certificate by
// reload; then the CA is rotated (every host trusts ca1 and ca2, then holds
// a certificate from ca2, then trusts ca2 only), each step a reload; a and
// b route each other at every look, TCP never stalls and no ping is lost.
// Then c's certificate is revoked by a reload of a and b with ca2's list:
// within 5 s neither routes c.
func TestCertRenewRotateRevoke(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "a", "b", "c")
	a, b, cc := c.by["a"], c.by["b"], c.by["c"]
	ca1, ca2 := newCA(t, "ca1"), newCA(t, "ca2")
	for _, n := range c.nodes {
		withCert(t, n, otherUnderlays(c.nodes, n), []*pki.CA{ca1}, ca1, nil)
	}
	c.startAll()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	install := func(n *node, trusted []*pki.CA, issuer *pki.CA) {
		t.Helper()
		if err := weftrun.InstallPKI(pkiDir(n), n.name, trusted, issuer, weftrun.Grant{Subnets: []netip.Prefix{n.subnet}}); err != nil {
			t.Fatal(err)
		}
	}

	traffic := startSteady(ctx, t, a, b, 30, seesAlive)
	install(b, []*pki.CA{ca1}, ca1)
	reload(t, b, "caCert/cert/key/crl")
	time.Sleep(2 * time.Second)
	for _, step := range []struct {
		what    string
		trusted []*pki.CA
		issuer  *pki.CA
	}{
		{"trust ca1 and ca2", []*pki.CA{ca1, ca2}, ca1},
		{"certificates from ca2", []*pki.CA{ca1, ca2}, ca2},
		{"trust ca2 only", []*pki.CA{ca2}, ca2},
	} {
		for _, n := range c.nodes {
			install(n, step.trusted, step.issuer)
		}
		for _, n := range c.nodes {
			reload(t, n, "caCert/cert/key/crl")
		}
		time.Sleep(2 * time.Second)
		if err := pingOK(ctx, a, cc.overlay, 1); err != nil {
			t.Errorf("after %s: a -> c: %v", step.what, err)
		}
		t.Logf("%s: done", step.what)
	}
	traffic.stopWatching("the renewal and the rotation")
	traffic.finish("the renewal and the rotation")

	// Revoke c's certificate.
	certs, err := pki.ReadCerts(filepath.Join(pkiDir(cc), "c.crt"))
	if err != nil {
		t.Fatal(err)
	}
	crl, err := ca2.Revoke(nil, []*big.Int{certs[0].X509.SerialNumber}, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, b} {
		if err := weftrun.WriteCRL(pkiDir(n), crl); err != nil {
			t.Fatal(err)
		}
	}
	revoked := time.Now()
	for _, n := range []*node{a, b} {
		reload(t, n, "caCert/cert/key/crl")
	}
	for _, n := range []*node{a, b} {
		if err := pollUntil(revoked.Add(5*time.Second), func() error {
			st, err := status(n)
			if err != nil {
				return err
			}
			if p := st.Peer("c"); p == nil || p.Via != router.ViaNone || p.Refused != "cert_revoked" {
				return fmt.Errorf("%s sees c as %+v", n.name, p)
			}
			return nil
		}); err != nil {
			t.Errorf("c's revocation did not take within 5 s: %v", err)
		}
	}
	t.Logf("c refused by a and b %v after the lists were installed", time.Since(revoked).Round(time.Millisecond))
	if err := pingOK(ctx, a, cc.overlay, 1); err == nil {
		t.Error("a still reaches c after its certificate was revoked")
	}
	if err := pingOK(ctx, a, b.overlay, 1); err != nil {
		t.Errorf("a -> b after c's revocation: %v", err)
	}
}
