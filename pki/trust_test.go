package pki

import (
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
