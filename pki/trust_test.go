package pki

import (
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	caA := mustCA(t, "weft CA", 10*year, t0)
	caB := mustCA(t, "weft CA", 10*year, t0) // same name, another key: rotation
	other := mustCA(t, "other CA", 10*year, t0)
	shortCA := mustCA(t, "short CA", 30*day, t0)

	good := mustSign(t, caA, hostRequest(t, "good", "10.0.1.0/24"), t0)
	fromB := mustSign(t, caB, hostRequest(t, "from-b", "10.0.2.0/24"), t0)
	fromOther := mustSign(t, other, hostRequest(t, "stranger", "10.0.3.0/24"), t0)
	fromShort := mustSign(t, shortCA, func() Request { r := hostRequest(t, "short-lived-ca", "10.0.4.0/24"); r.Lifetime = 20 * day; return r }(), t0)
	revoked := mustSign(t, caA, hostRequest(t, "revoked", "10.0.5.0/24"), t0)
	later := mustSign(t, caA, hostRequest(t, "later", "10.0.6.0/24"), t0.Add(day))

	crlA, err := caA.Revoke(nil, []*big.Int{revoked.X509.SerialNumber}, t0.Add(time.Hour), 30*day)
	if err != nil {
		t.Fatal(err)
	}
	// caB's CRL revokes the same serial number: it must not touch caA's
	// certificate of that serial, only caB's.
	crlB, err := caB.Revoke(nil, []*big.Int{good.X509.SerialNumber}, t0, 30*day)
	if err != nil {
		t.Fatal(err)
	}
	onlyA, err := NewTrust([]*Cert{caA.Cert}, []*CRL{crlA})
	if err != nil {
		t.Fatal(err)
	}
	both, err := NewTrust([]*Cert{caA.Cert, caB.Cert, shortCA.Cert}, []*CRL{crlA, crlB})
	if err != nil {
		t.Fatal(err)
	}
	now := t0.Add(day)
	tests := []struct {
		name   string
		trust  *Trust
		cert   *Cert
		now    time.Time
		reason Reason // "" = trusted
		detail string
	}{
		{"good", onlyA, good, now, "", ""},
		{"other CA", onlyA, fromOther, now, ReasonUntrusted, `is not signed by any trusted CA`},
		{"same-named CA, other key", onlyA, fromB, now, ReasonUntrusted, `not signed by any trusted CA`},
		{"expired", onlyA, good, t0.Add(year + time.Second), ReasonExpired, "expired at"},
		{"not yet valid", onlyA, later, t0.Add(day - 2*time.Minute), ReasonExpired, "not yet valid: valid from"},
		{"valid from a minute back (clock skew)", onlyA, later, t0.Add(day - 30*time.Second), "", ""},
		{"CA not yet valid", onlyA, good, t0.Add(-2 * time.Minute), ReasonUntrusted, "which is not valid until"},
		{"CA expired", both, fromShort, t0.Add(31 * day), ReasonUntrusted, `signed by the CA "short CA"`},
		{"revoked", onlyA, revoked, now, ReasonRevoked, "was revoked by the CA \"weft CA\""},
		{"revoked, and a stale CRL still counts", onlyA, revoked, t0.Add(300 * day), ReasonRevoked, "revoked"},
		{"two CAs at once: A", both, good, now, "", ""},
		{"two CAs at once: B", both, fromB, now, "", ""},
		{"two CAs at once: revoked by A", both, revoked, now, ReasonRevoked, "revoked"},
		{"CA cert presented as a host", both, caA.Cert, now, ReasonUntrusted, "is a CA certificate"},
		{"no certificate", both, nil, now, ReasonUntrusted, "no certificate"},
		{"a Cert not from ParseCert", both, &Cert{Name: "forged"}, now, ReasonUntrusted, "no certificate"},
	}
	for _, tt := range tests {
		err := tt.trust.Verify(tt.cert, tt.now)
		if tt.reason == "" {
			if err != nil {
				t.Errorf("%s: %v, want trusted", tt.name, err)
			}
			continue
		}
		var ve *VerifyError
		if !errors.As(err, &ve) {
			t.Errorf("%s: %v (%T), want a *VerifyError", tt.name, err, err)
			continue
		}
		if ve.Reason != tt.reason || !strings.Contains(ve.Error(), tt.detail) || !strings.HasPrefix(ve.Error(), string(tt.reason)+": ") {
			t.Errorf("%s: %q, want reason %s and %q", tt.name, ve.Error(), tt.reason, tt.detail)
		}
	}
}

// TestVerifyNetworks: a host certificate is trusted only if its issuing
// CA's networks hold every subnet and pool it grants. Sign refuses to issue
// such a certificate, so the bad ones are forged with the CA's key (as a
// buggy or older signer could).
func TestVerifyNetworks(t *testing.T) {
	key := mustKey(t)
	narrow := caCert(t, key, "limited CA", mustEncode(t, "10.244.0.0/16"), 2*year, t0)
	// The same CA (name and key) re-made with both families: hosts it
	// signed are trusted where either certificate is.
	wide := caCert(t, key, "limited CA", mustEncode(t, "10.0.0.0/8", "fd00::/8"), 2*year, t0)
	legacy := legacyCA(t, "old CA", 2*year, t0)

	inside := mustSign(t, narrow, hostRequest(t, "inside", "10.244.1.0/24"), t0)
	subnetOut := forgeHost(t, narrow, "subnet-out", []string{"10.9.1.0/24"}, nil)
	v6 := forgeHost(t, narrow, "v6", []string{"10.244.2.0/24", "fd00:1::/64"}, nil)
	poolOut := forgeHost(t, narrow, "pool-out", nil, []string{"10.244.128.0/17", "192.168.0.0/16"})
	legacyHost := forgeHost(t, legacy, "anything", []string{"198.51.100.0/24", "2001:db8::/64"}, []string{"172.16.0.0/12"})

	trust := func(cas ...*CA) *Trust {
		var certs []*Cert
		for _, ca := range cas {
			certs = append(certs, ca.Cert)
		}
		tr, err := NewTrust(certs, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	now := t0.Add(day)
	tests := []struct {
		name   string
		trust  *Trust
		cert   *Cert
		detail string // "" = trusted
	}{
		{"inside", trust(narrow), inside, ""},
		{"subnet outside", trust(narrow), subnetOut,
			`"subnet-out" grants the subnet 10.9.1.0/24, outside the networks of its CA "limited CA" (sha256:` +
				hex.EncodeToString(narrow.Cert.Fingerprint[:8]) + `…): 10.244.0.0/16`},
		{"IPv6 subnet from an IPv4-only CA", trust(narrow), v6, "grants the subnet fd00:1::/64, outside the networks"},
		{"pool outside", trust(narrow), poolOut, "grants the pool 192.168.0.0/16, outside the networks"},
		{"the wider certificate of the same CA", trust(wide), subnetOut, ""},
		{"both certificates of the same CA, narrow first", trust(narrow, wide), v6, ""},
		{"both certificates: still outside both", trust(narrow, wide), poolOut, "grants the pool 192.168.0.0/16"},
		{"legacy CA grants everything", trust(legacy, narrow), legacyHost, ""},
	}
	for _, tt := range tests {
		err := tt.trust.Verify(tt.cert, now)
		if tt.detail == "" {
			if err != nil {
				t.Errorf("%s: %v, want trusted", tt.name, err)
			}
			continue
		}
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Reason != ReasonUntrusted || !strings.Contains(ve.Detail, tt.detail) {
			t.Errorf("%s: %v, want %s with %q", tt.name, err, ReasonUntrusted, tt.detail)
		}
	}
}

func TestNewTrustRefuses(t *testing.T) {
	caA := mustCA(t, "weft CA", year, t0)
	caB := mustCA(t, "weft CA", year, t0)
	host := mustSign(t, caA, hostRequest(t, "h", "10.0.0.0/24"), t0)
	crlB, err := caB.Revoke(nil, []*big.Int{big.NewInt(5)}, t0, day)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cas  []*Cert
		crls []*CRL
		want string
	}{
		{"no CA", nil, nil, "no CA certificate"},
		{"host certificate as CA", []*Cert{caA.Cert, host}, nil, `certificate 2 ("h") is not a CA certificate`},
		{"CRL from another CA", []*Cert{caA.Cert}, []*CRL{crlB}, "CRL 1 (issuer \"weft CA\", number 1) is not signed by any trusted CA"},
		{"nil CRL", []*Cert{caA.Cert}, []*CRL{nil}, "CRL 1 is missing"},
	}
	for _, tt := range tests {
		_, err := NewTrust(tt.cas, tt.crls)
		wantErr(t, tt.name, err, tt.want)
	}
	tr, err := NewTrust([]*Cert{caA.Cert, caA.Cert, caB.Cert}, []*CRL{crlB})
	if err != nil {
		t.Fatal(err)
	}
	cas := tr.CAs()
	if len(cas) != 2 {
		t.Errorf("CAs() has %d certificates, want 2 (a duplicate dropped)", len(cas))
	}
	cas[0] = nil // a copy: the Trust is immutable
	if tr.CAs()[0] == nil {
		t.Error("CAs() returned the Trust's own slice")
	}
}

func TestVerifyConcurrent(t *testing.T) {
	ca := mustCA(t, "weft CA", year, t0)
	host := mustSign(t, ca, hostRequest(t, "h", "10.0.0.0/24"), t0)
	tr, err := NewTrust([]*Cert{ca.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if err := tr.Verify(host, t0.Add(day)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkParseVerify is what a peer pays per certificate it is shown:
// parse the DER, then verify it.
func BenchmarkParseVerify(b *testing.B) {
	ca := mustCA(b, "weft CA", year, t0)
	host := mustSign(b, ca, hostRequest(b, "h", "10.0.0.0/24", "fd00::/64"), t0)
	crl, err := ca.Revoke(nil, []*big.Int{big.NewInt(1), big.NewInt(2)}, t0, day)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := NewTrust([]*Cert{ca.Cert}, []*CRL{crl})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c, err := ParseCert(host.Raw)
		if err != nil {
			b.Fatal(err)
		}
		if err := tr.Verify(c, t0.Add(day)); err != nil {
			b.Fatal(err)
		}
	}
}
