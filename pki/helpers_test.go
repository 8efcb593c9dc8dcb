package pki

import (
	"crypto/ed25519"
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
