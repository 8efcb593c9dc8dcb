package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// t0 is the tests' "now".
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	day  = 24 * time.Hour
	year = 365 * day
)

func mustCA(t testing.TB, name string, lifetime time.Duration, now time.Time) *CA {
	t.Helper()
	ca, err := NewCA(name, lifetime, now)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", name, err)
	}
	return ca
}

func mustKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func prefixes(t testing.TB, ss ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// hostRequest is a request for name with a new key, granting subnets, for
// a year.
func hostRequest(t testing.TB, name string, subnets ...string) Request {
	t.Helper()
	return Request{Name: name, PublicKey: pubOf(mustKey(t)), Subnets: prefixes(t, subnets...), Lifetime: year}
}

func mustSign(t testing.TB, ca *CA, r Request, now time.Time) *Cert {
	t.Helper()
	c, err := ca.Sign(r, now)
	if err != nil {
		t.Fatalf("Sign(%q): %v", r.Name, err)
	}
	return c
}

// unhex decodes hex with spaces.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

// wantErr reports a mismatch between err and the substring want ("" = no
// error).
func wantErr(t testing.TB, what string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case want != "" && err == nil:
		t.Errorf("%s: no error, want one containing %q", what, want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("%s: error %q, want one containing %q", what, err, want)
	}
}

func mustCAFor(t testing.TB, name string, networks []string, lifetime time.Duration, now time.Time) *CA {
	t.Helper()
	ca, err := NewCAFor(name, prefixes(t, networks...), lifetime, now)
	if err != nil {
		t.Fatalf("NewCAFor(%q, %v): %v", name, networks, err)
	}
	return ca
}

// legacyCA is a CA as NewCA made it before CA certificates carried address
// blocks, valid from now for lifetime.
func legacyCA(t testing.TB, name string, lifetime time.Duration, now time.Time) *CA {
	t.Helper()
	return caCert(t, mustKey(t), name, nil, lifetime, now)
}

// caCert makes a CA certificate for key without NewCAFor's checks: with the
// extension value blocks as its critical RFC 3779 extension, or none if
// blocks is nil.
func caCert(t testing.TB, key ed25519.PrivateKey, name string, blocks []byte, lifetime time.Duration, now time.Time) *CA {
	t.Helper()
	serial, err := newSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subjectName(name, nil),
		NotBefore: now.Add(-clockSkew), NotAfter: now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	if blocks != nil {
		tmpl.ExtraExtensions = []pkix.Extension{{Id: oidIPAddrBlocks, Critical: true, Value: blocks}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCert(der)
	if err != nil {
		t.Fatalf("CA certificate %q: %v", name, err)
	}
	return &CA{Cert: c, Key: key}
}

// mustEncode is encodeGrants for tests.
func mustEncode(t testing.TB, ps ...string) []byte {
	t.Helper()
	v, err := encodeGrants(prefixes(t, ps...))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// forgeHost is a host certificate signed by ca's key that Sign would
// refuse: it grants subnets and pools whatever the CA's networks.
func forgeHost(t testing.TB, ca *CA, name string, subnets, pools []string) *Cert {
	t.Helper()
	serial, err := newSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subjectName(name, nil),
		NotBefore: ca.Cert.NotBefore, NotAfter: ca.Cert.NotBefore.Add(year),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
	}
	if len(subnets) > 0 {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidIPAddrBlocks, Critical: true, Value: mustEncode(t, subnets...)})
	}
	if len(pools) > 0 {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidWeftPools, Value: mustEncode(t, pools...)})
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert.X509, pubOf(mustKey(t)), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCert(der)
	if err != nil {
		t.Fatalf("forged %q: %v", name, err)
	}
	return c
}
