package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/netip"
	"slices"
	"testing"
)

// FuzzParseCert feeds ParseCert mutations of real certificates: it must
// never panic, and what it accepts must keep to the profile.
func FuzzParseCert(f *testing.F) {
	ca := mustCA(f, "weft CA", 10*year, t0)
	f.Add(ca.Cert.Raw)
	f.Add(mustCAFor(f, "limited CA", []string{"10.244.0.0/16", "fd00:1::/48"}, 10*year, t0).Cert.Raw)
	f.Add(legacyCA(f, "old CA", 10*year, t0).Cert.Raw)
	for _, r := range []Request{
		hostRequest(f, "v4", "10.244.1.0/24"),
		hostRequest(f, "v6", "fd00:1::/64"),
		hostRequest(f, "both", "10.244.1.0/24", "fd00:1::/64"),
		{Name: "pools", PublicKey: pubOf(mustKey(f)), Pools: prefixes(f, "10.250.0.0/16", "10.252.0.0/16", "fd01::/48"), Groups: []string{"web", "db"}, Lifetime: year},
	} {
		f.Add(mustSign(f, ca, r, t0).Raw)
	}
	// A certificate with the appendix B extension (well-formed RFC 3779
	// outside the profile).
	var ext pkix.Extension
	if _, err := asn1.Unmarshal(unhex(f, appendixB), &ext); err != nil {
		f.Fatal(err)
	}
	k := mustKey(f)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "b"}, NotBefore: t0, NotAfter: t0.Add(day),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: []pkix.Extension{ext}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert.X509, k.Public(), ca.Key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der)
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := ParseCert(der)
		if err != nil {
			return
		}
		again, err := ParseCert(c.Raw)
		if err != nil || again.Fingerprint != c.Fingerprint {
			t.Fatalf("re-parsing an accepted certificate: %v", err)
		}
		if certs, err := ParsePEM(c.PEM()); err != nil || len(certs) != 1 || certs[0].Fingerprint != c.Fingerprint {
			t.Fatalf("PEM round trip: %v", err)
		}
		if len(c.X509.UnhandledCriticalExtensions) > 0 {
			t.Fatalf("accepted with unhandled critical extensions %v", c.X509.UnhandledCriticalExtensions)
		}
		for _, ps := range [][]netip.Prefix{c.Subnets, c.Pools} {
			if len(ps) == 0 {
				continue
			}
			canon, err := canonicalPrefixes("prefix", ps)
			if err != nil || !slices.Equal(canon, ps) {
				t.Fatalf("accepted grants %v that are not canonical: %v", ps, err)
			}
			for _, p := range ps {
				if !c.Grants(p) {
					t.Fatalf("the certificate does not grant its own %s", p)
				}
			}
		}
		if !c.IsCA {
			if err := checkGrants(c.Subnets, c.Pools); err != nil {
				t.Fatalf("accepted a host certificate breaking the grant rules: %v", err)
			}
			if c.Networks != nil {
				t.Fatalf("a host certificate with networks %v", c.Networks)
			}
		} else {
			if len(c.Subnets)+len(c.Pools) > 0 {
				t.Fatalf("a CA certificate with subnets %v and pools %v", c.Subnets, c.Pools)
			}
			canon, err := canonicalPrefixes("network", c.Networks)
			if err != nil || !slices.Equal(canon, c.Networks) || checkNetworks(c.Networks) != nil {
				t.Fatalf("accepted CA networks %v that are not canonical: %v", c.Networks, err)
			}
			for _, p := range c.Networks {
				if !c.MayGrant(p) {
					t.Fatalf("the CA may not grant its own network %s", p)
				}
			}
		}
		_ = c.Describe(t0)
	})
}
