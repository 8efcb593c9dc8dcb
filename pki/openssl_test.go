package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// openssl runs openssl with args and returns its output; it skips the test,
// loudly, where openssl is not installed.
func openssl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := opensslErr(t, args...)
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// opensslErr is openssl that returns a failure instead of failing the test.
func opensslErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("SKIP: openssl is not installed, so this test cannot check that openssl reads weft's certificates (apt-get install openssl)")
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

// ipAddrBlockLines returns the lines openssl prints under the
// sbgp-ipAddrBlock extension, trimmed.
func ipAddrBlockLines(t *testing.T, text string) []string {
	t.Helper()
	lines := strings.Split(text, "\n")
	i := slices.IndexFunc(lines, func(l string) bool { return strings.TrimSpace(l) == "sbgp-ipAddrBlock: critical" })
	if i < 0 {
		t.Fatalf("openssl printed no critical sbgp-ipAddrBlock:\n%s", text)
	}
	var out []string
	for _, l := range lines[i+1:] {
		l = strings.TrimSpace(l)
		if l == "" || strings.Contains(l, ": ") && !strings.HasPrefix(l, "IPv") {
			break
		}
		out = append(out, l)
	}
	return out
}

func TestOpenSSLPrintsCertificate(t *testing.T) {
	ca := mustCA(t, "weft CA", 10*year, t0)
	r := hostRequest(t, "node-a", "fd00:1::/64", "10.244.1.0/24")
	r.Pools = prefixes(t, "10.250.0.0/16")
	r.Groups = []string{"web", "db"}
	c := mustSign(t, ca, r, t0)
	path := filepath.Join(t.TempDir(), "node-a.crt")
	if err := WriteCertFile(path, c); err != nil {
		t.Fatal(err)
	}
	text := openssl(t, "x509", "-in", path, "-noout", "-text")
	if got, want := ipAddrBlockLines(t, text), []string{"IPv4:", "10.244.1.0/24", "IPv6:", "fd00:1::/64"}; !slices.Equal(got, want) {
		t.Errorf("openssl prints the blocks as %q, want %q\n%s", got, want, text)
	}
	for _, want := range []string{
		"Subject: OU = db, OU = web, CN = node-a",
		"Issuer: CN = weft CA",
		"Signature Algorithm: ED25519",
		"CA:FALSE",
		"Digital Signature",
		oidWeftPools.String() + ":", // unknown to openssl, printed by OID
		fmt.Sprintf("%x", c.X509.SerialNumber)[:6],
	} {
		if !strings.Contains(strings.ReplaceAll(text, ":", ""), strings.ReplaceAll(want, ":", "")) {
			t.Errorf("openssl's text lacks %q:\n%s", want, text)
		}
	}
	caText := openssl(t, "x509", "-in", writeTemp(t, "ca.crt", ca.Cert.PEM()), "-noout", "-text")
	for _, want := range []string{"CA:TRUE, pathlen:0", "Certificate Sign, CRL Sign"} {
		if !strings.Contains(caText, want) {
			t.Errorf("openssl's text of the CA lacks %q:\n%s", want, caText)
		}
	}
	if got, want := ipAddrBlockLines(t, caText), []string{"IPv4:", "0.0.0.0/0", "IPv6:", "::/0"}; !slices.Equal(got, want) {
		t.Errorf("openssl prints the CA's blocks as %q, want %q\n%s", got, want, caText)
	}
	limited := mustCAFor(t, "limited CA", []string{"fd00:1::/48", "10.244.0.0/16"}, year, t0)
	limitedText := openssl(t, "x509", "-in", writeTemp(t, "limited.crt", limited.Cert.PEM()), "-noout", "-text")
	if got, want := ipAddrBlockLines(t, limitedText), []string{"IPv4:", "10.244.0.0/16", "IPv6:", "fd00:1::/48"}; !slices.Equal(got, want) {
		t.Errorf("openssl prints the limited CA's blocks as %q, want %q\n%s", got, want, limitedText)
	}
	l, err := ca.Revoke(nil, []*big.Int{c.X509.SerialNumber}, t0, day)
	if err != nil {
		t.Fatal(err)
	}
	crlText := openssl(t, "crl", "-in", writeTemp(t, "ca.crl", l.PEM()), "-noout", "-text")
	if want := fmt.Sprintf("Serial Number: %X", c.X509.SerialNumber); !strings.Contains(crlText, want) {
		t.Errorf("openssl's text of the CRL lacks %q:\n%s", want, crlText)
	}
}

// TestOpenSSLVerify: `openssl verify`, which checks RFC 3779 resources
// along the chain, accepts what Sign issues, and refuses what Trust.Verify
// refuses for the same reason.
func TestOpenSSLVerify(t *testing.T) {
	all := mustCA(t, "weft CA", 10*year, t0)
	limited := mustCAFor(t, "limited CA", []string{"10.244.0.0/16"}, 10*year, t0)
	legacy := legacyCA(t, "old CA", 10*year, t0)
	both := hostRequest(t, "both", "10.244.1.0/24", "fd00:1::/64")
	both.Pools = prefixes(t, "10.250.0.0/16")
	pool := Request{Name: "pool", PublicKey: pubOf(mustKey(t)), Pools: prefixes(t, "10.244.128.0/17"), Lifetime: year}
	tests := []struct {
		name string
		ca   *CA
		host *Cert
		ok   bool
	}{
		{"default CA, both families and a pool", all, mustSign(t, all, both, t0), true},
		{"CA limited to 10.244.0.0/16", limited, mustSign(t, limited, hostRequest(t, "v4", "10.244.1.0/24"), t0), true},
		{"limited CA, the whole network", limited, mustSign(t, limited, hostRequest(t, "whole", "10.244.0.0/16"), t0), true},
		{"limited CA, a pool only (not RFC 3779)", limited, mustSign(t, limited, pool, t0), true},
		{"limited CA, a forged subnet outside", limited, forgeHost(t, limited, "outside", []string{"10.9.0.0/24"}, nil), false},
		{"limited CA, a forged IPv6 subnet", limited, forgeHost(t, limited, "v6", []string{"fd00:1::/64"}, nil), false},
		{"a CA without blocks (before this change)", legacy, mustSign(t, legacy, hostRequest(t, "old", "10.244.1.0/24"), t0), false},
	}
	attime := strconv.FormatInt(t0.Add(day).Unix(), 10) // the certificates are valid around t0, in 2030
	for _, tt := range tests {
		caFile := writeTemp(t, "ca.crt", tt.ca.Cert.PEM())
		hostFile := writeTemp(t, "host.crt", tt.host.PEM())
		out, err := opensslErr(t, "verify", "-attime", attime, "-CAfile", caFile, hostFile)
		if tt.ok {
			if err != nil || strings.TrimSpace(out) != hostFile+": OK" {
				t.Errorf("%s: openssl verify: %v, want OK:\n%s", tt.name, err, out)
			}
			continue
		}
		if err == nil || !strings.Contains(out, "RFC 3779 resource not subset of parent's resources") {
			t.Errorf("%s: openssl verify: %v, want the RFC 3779 refusal:\n%s", tt.name, err, out)
		}
		// Trust.Verify refuses the forged ones too; the legacy CA's host
		// it trusts (a CA without blocks grants everything in weft).
		tr, err := NewTrust([]*Cert{tt.ca.Cert}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Verify(tt.host, t0.Add(day)); (err == nil) != (tt.ca == legacy) {
			t.Errorf("%s: Trust.Verify: %v", tt.name, err)
		}
	}
}

// TestOpenSSLReadsAppendixB has openssl print the RFC 3779 appendix B
// extension as this package's tests reproduce it: an independent check of
// the vector and so of TestAppendixB.
func TestOpenSSLReadsAppendixB(t *testing.T) {
	var ext pkix.Extension
	if _, err := asn1.Unmarshal(unhex(t, appendixB), &ext); err != nil {
		t.Fatal(err)
	}
	k := mustKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: t0, NotAfter: t0.Add(day), ExtraExtensions: []pkix.Extension{ext}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	text := openssl(t, "x509", "-inform", "DER", "-in", writeTemp(t, "b.der", der), "-noout", "-text")
	want := []string{"IPv4 (Unicast):", "10.0.32.0/20", "10.0.64.0/24", "10.1.0.0/16", "10.2.48.0-10.2.64.255", "10.3.0.0/16", "IPv6: inherit"}
	if got := ipAddrBlockLines(t, text); !slices.Equal(got, want) {
		t.Errorf("openssl prints appendix B as %q, want %q", got, want)
	}
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
