package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSignParseRoundTrip(t *testing.T) {
	ca := mustCA(t, "weft CA", 10*year, t0)
	tests := []struct {
		name            string
		subnets, pools  []string
		groups          []string
		wantSubnets     []string
		wantPools       []string
		wantGroups      []string
		grants, refuses []string
	}{
		{name: "ipv4", subnets: []string{"10.244.1.0/24"},
			wantSubnets: []string{"10.244.1.0/24"},
			grants:      []string{"10.244.1.0/24", "10.244.1.128/25", "10.244.1.7/32"},
			refuses:     []string{"10.244.0.0/16", "10.244.2.0/24", "fd00::/64"}},
		{name: "ipv6", subnets: []string{"fd00:1::/64"},
			wantSubnets: []string{"fd00:1::/64"},
			grants:      []string{"fd00:1::/64", "fd00:1::/80"},
			refuses:     []string{"fd00::/16", "10.244.1.0/24"}},
		{name: "both families, IPv6 given first", subnets: []string{"fd00:1::/64", "10.244.1.0/24"},
			wantSubnets: []string{"10.244.1.0/24", "fd00:1::/64"},
			grants:      []string{"10.244.1.0/24", "fd00:1::/64"}},
		{name: "pools", pools: []string{"fd00::/48", "10.3.0.0/16", "10.1.0.0/16"},
			wantPools: []string{"10.1.0.0/16", "10.3.0.0/16", "fd00::/48"},
			grants:    []string{"10.1.2.0/24", "10.3.0.0/16", "fd00::/56"},
			refuses:   []string{"10.2.0.0/24", "10.0.0.0/8"}},
		{name: "subnet, pool and groups", subnets: []string{"10.244.1.0/24"}, pools: []string{"10.245.0.0/16"},
			groups:      []string{"web", "db", "web", "edge nodes"},
			wantSubnets: []string{"10.244.1.0/24"}, wantPools: []string{"10.245.0.0/16"},
			wantGroups: []string{"db", "edge nodes", "web"},
			grants:     []string{"10.244.1.0/24", "10.245.9.0/24"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := mustKey(t)
			r := Request{Name: "host-" + strings.ReplaceAll(tt.name, " ", "-"), PublicKey: pubOf(key),
				Subnets: prefixes(t, tt.subnets...), Pools: prefixes(t, tt.pools...), Groups: tt.groups, Lifetime: 30 * day}
			c := mustSign(t, ca, r, t0)
			certs, err := ParsePEM(c.PEM())
			if err != nil {
				t.Fatal(err)
			}
			got := certs[0]
			if got.Name != r.Name || got.IsCA || !got.PublicKey.Equal(r.PublicKey) || !got.MatchesKey(key) {
				t.Errorf("parsed %q IsCA %v key match %v", got.Name, got.IsCA, got.MatchesKey(key))
			}
			if !slices.Equal(got.Subnets, prefixes(t, tt.wantSubnets...)) || !slices.Equal(got.Pools, prefixes(t, tt.wantPools...)) {
				t.Errorf("subnets %v pools %v, want %v and %v", got.Subnets, got.Pools, tt.wantSubnets, tt.wantPools)
			}
			if !slices.Equal(got.Groups, tt.wantGroups) {
				t.Errorf("groups %q, want %q", got.Groups, tt.wantGroups)
			}
			if !got.NotBefore.Equal(t0.Add(-time.Minute)) || !got.NotAfter.Equal(t0.Add(30*day)) {
				t.Errorf("valid %s to %s, want %s to %s", got.NotBefore, got.NotAfter, t0.Add(-time.Minute), t0.Add(30*day))
			}
			if got.Fingerprint != c.Fingerprint || string(got.Raw) != string(c.Raw) {
				t.Error("the round trip changed the DER")
			}
			if len(got.X509.UnhandledCriticalExtensions) != 0 {
				t.Errorf("unhandled critical extensions left: %v", got.X509.UnhandledCriticalExtensions)
			}
			if bits := got.X509.SerialNumber.BitLen(); bits < 100 || bits > 128 {
				t.Errorf("serial of %d bits, want a random 128-bit number", bits)
			}
			for _, s := range tt.grants {
				if !got.Grants(netip.MustParsePrefix(s)) {
					t.Errorf("Grants(%s) = false", s)
				}
			}
			for _, s := range tt.refuses {
				if got.Grants(netip.MustParsePrefix(s)) {
					t.Errorf("Grants(%s) = true", s)
				}
			}
		})
	}
}

func TestGrants(t *testing.T) {
	ca := mustCA(t, "weft CA", 10*year, t0)
	r := hostRequest(t, "h", "10.244.1.0/24", "fd00:1::/64")
	r.Pools = prefixes(t, "10.250.0.0/16")
	c := mustSign(t, ca, r, t0)
	tests := []struct {
		sub  string
		want bool
	}{
		{"10.244.1.0/24", true},          // equal
		{"10.244.1.64/26", true},         // inside the subnet
		{"10.244.1.9/32", true},          // one address
		{"10.244.1.9/24", true},          // host bits ignored: 10.244.1.0/24
		{"10.244.0.0/23", false},         // larger, holding the subnet
		{"10.244.2.0/24", false},         // beside it
		{"fd00:1::/64", true},            // the IPv6 subnet
		{"fd00:1:0:0:8000::/65", true},   // inside it
		{"fd00::/48", false},             // larger
		{"::ffff:10.244.1.0/120", false}, // IPv4-mapped is the IPv6 family
		{"10.250.7.0/24", true},          // inside the pool
		{"10.250.0.0/16", true},          // the whole pool
		{"10.250.0.0/15", false},         // larger than the pool
		{"10.251.0.0/24", false},         // outside the pool
	}
	for _, tt := range tests {
		if got := c.Grants(netip.MustParsePrefix(tt.sub)); got != tt.want {
			t.Errorf("Grants(%s) = %v, want %v", tt.sub, got, tt.want)
		}
	}
	if c.Grants(netip.Prefix{}) {
		t.Error("Grants(invalid prefix) = true")
	}
}

func TestDescribe(t *testing.T) {
	ca := mustCA(t, "weft CA", 10*year, t0)
	r := hostRequest(t, "node-a", "10.244.1.0/24")
	r.Groups = []string{"web"}
	c := mustSign(t, ca, r, t0)
	tests := []struct {
		cert *Cert
		now  time.Time
		want []string
	}{
		{c, t0.Add(day), []string{"node-a (host certificate)", "subnets:", "10.244.1.0/24", "pools:       none", "groups:      web",
			"issuer:      weft CA", "expires in 364 days", "fingerprint: sha256:", "ed25519 "}},
		{c, t0.Add(2 * year), []string{"expired 365 days ago"}},
		{c, t0.Add(-time.Hour), []string{"not yet valid: starts in 59 minutes"}},
		{ca.Cert, t0, []string{"weft CA (certificate authority)", "expires in 3650 days"}},
	}
	for _, tt := range tests {
		got := tt.cert.Describe(tt.now)
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("Describe(%s) lacks %q:\n%s", tt.now, w, got)
			}
		}
	}
	if d := ca.Cert.Describe(t0); strings.Contains(d, "subnets") {
		t.Errorf("a CA's description lists subnets:\n%s", d)
	}
	// A CA's networks: all by default, its own when limited, and a word
	// about a CA made before CAs carried them.
	for _, tt := range []struct {
		name   string
		ca     *CA
		want   string
		legacy bool
	}{
		{"default", ca, "  networks:    0.0.0.0/0, ::/0\n", false},
		{"limited", mustCAFor(t, "limited CA", []string{"10.244.0.0/16"}, year, t0), "  networks:    10.244.0.0/16\n", false},
		{"legacy", legacyCA(t, "old CA", year, t0), "  networks:    0.0.0.0/0, ::/0 (the certificate carries no address blocks", true},
	} {
		d := tt.ca.Cert.Describe(t0)
		if !strings.Contains(d, tt.want) || strings.Contains(d, "no address blocks") != tt.legacy {
			t.Errorf("%s CA: description lacks %q (or says more):\n%s", tt.name, tt.want, d)
		}
	}
	if d := c.Describe(t0); strings.Contains(d, "networks") {
		t.Errorf("a host's description lists networks:\n%s", d)
	}
}

func TestMayGrant(t *testing.T) {
	v4 := mustCAFor(t, "v4 CA", []string{"10.244.0.0/16"}, year, t0)
	all := mustCA(t, "weft CA", year, t0)
	legacy := legacyCA(t, "old CA", year, t0)
	host := mustSign(t, all, hostRequest(t, "h", "10.244.1.0/24"), t0)
	tests := []struct {
		name string
		cert *Cert
		sub  string
		want bool
	}{
		{"inside", v4.Cert, "10.244.9.0/24", true},
		{"the network itself", v4.Cert, "10.244.0.0/16", true},
		{"host bits ignored", v4.Cert, "10.244.9.9/24", true},
		{"larger", v4.Cert, "10.244.0.0/15", false},
		{"beside", v4.Cert, "10.245.0.0/24", false},
		{"IPv6 from an IPv4-only CA", v4.Cert, "fd00::/64", false},
		{"IPv4-mapped is IPv6", v4.Cert, "::ffff:10.244.1.0/120", false},
		{"everything: IPv4", all.Cert, "0.0.0.0/0", true},
		{"everything: IPv6", all.Cert, "2001:db8::/32", true},
		{"legacy CA: IPv4", legacy.Cert, "192.168.0.0/16", true},
		{"legacy CA: IPv6", legacy.Cert, "::/0", true},
		{"a host may grant nothing", host, "10.244.1.0/24", false},
	}
	for _, tt := range tests {
		if got := tt.cert.MayGrant(netip.MustParsePrefix(tt.sub)); got != tt.want {
			t.Errorf("%s: MayGrant(%s) = %v, want %v", tt.name, tt.sub, got, tt.want)
		}
	}
	if all.Cert.MayGrant(netip.Prefix{}) {
		t.Error("MayGrant(invalid prefix) = true")
	}
	if all.Cert.Grants(netip.MustParsePrefix("10.0.0.0/24")) {
		t.Error("a CA's Grants (a host's subnets and pools) holds its networks")
	}
}

func TestParsePEMRefuses(t *testing.T) {
	ca := mustCA(t, "weft CA", 10*year, t0)
	good := string(ca.Cert.PEM())
	tests := []struct {
		name string
		data string
		want string
	}{
		{"empty", "", "no \"CERTIFICATE\" PEM block"},
		{"white space", " \n\t", "no \"CERTIFICATE\" PEM block"},
		{"not PEM", "hello", "not PEM"},
		{"junk before", "junk\n" + good, "not PEM"},
		{"junk between", good + "junk\n" + good, "not PEM after block 1"},
		{"key block", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", `is "PRIVATE KEY", want "CERTIFICATE"`},
		{"truncated", good[:len(good)-20], "malformed PEM block 1"},
		{"bad DER", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "parse certificate"},
	}
	for _, tt := range tests {
		_, err := ParsePEM([]byte(tt.data))
		wantErr(t, tt.name, err, tt.want)
	}
	if certs, err := ParsePEM([]byte(good + "\n" + good)); err != nil || len(certs) != 2 {
		t.Errorf("two blocks: %d certificates, %v", len(certs), err)
	}
}

// TestParseCertProfile builds certificates that break the profile with
// x509 directly, signed by a real CA, and checks ParseCert names the
// problem.
func TestParseCertProfile(t *testing.T) {
	ca := mustCA(t, "weft CA", 10*year, t0)
	subnetExt := func(critical bool, ps ...string) pkix.Extension {
		v, err := encodeGrants(prefixes(t, ps...))
		if err != nil {
			t.Fatal(err)
		}
		return pkix.Extension{Id: oidIPAddrBlocks, Critical: critical, Value: v}
	}
	poolExt := func(critical bool, ps ...string) pkix.Extension {
		e := subnetExt(false, ps...)
		e.Id, e.Critical = oidWeftPools, critical
		return e
	}
	host := func() *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "h"},
			NotBefore: t0, NotAfter: t0.Add(day), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtraExtensions: []pkix.Extension{subnetExt(true, "10.0.0.0/24")},
		}
	}
	caTmpl := func() *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(43), Subject: pkix.Name{CommonName: "other CA"},
			NotBefore: t0, NotAfter: t0.Add(day), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
		}
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		tmpl   func() *x509.Certificate
		ecdsa  bool // an ECDSA subject key
		selfCA bool // self-signed instead of signed by ca
		want   string
	}{
		{"good host", host, false, false, ""},
		{"good CA", caTmpl, false, true, ""},
		{"ECDSA key", host, true, false, "ECDSA key, want Ed25519"},
		{"no grant", func() *x509.Certificate { c := host(); c.ExtraExtensions = nil; return c }, false, false, "no subnet and no pool"},
		{"two IPv4 subnets", func() *x509.Certificate {
			c := host()
			c.ExtraExtensions = []pkix.Extension{subnetExt(true, "10.0.0.0/24", "10.0.2.0/24")}
			return c
		}, false, false, "at most one subnet per address family"},
		{"17 grants", func() *x509.Certificate {
			c := host()
			var ps []string
			for i := range 16 {
				ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(2 * i), 0}), 24).String())
			}
			c.ExtraExtensions = append(c.ExtraExtensions, poolExt(false, ps...))
			return c
		}, false, false, "17 subnets and pools, at most 16"},
		{"non-critical RFC 3779", func() *x509.Certificate {
			c := host()
			c.ExtraExtensions = []pkix.Extension{subnetExt(false, "10.0.0.0/24")}
			return c
		}, false, false, "not critical"},
		{"critical pools", func() *x509.Certificate {
			c := host()
			c.ExtraExtensions = append(c.ExtraExtensions, poolExt(true, "10.9.0.0/16"))
			return c
		}, false, false, "pool extension is critical"},
		{"unknown critical extension", func() *x509.Certificate {
			c := host()
			c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}})
			return c
		}, false, false, "unsupported critical extension 1.2.3.4"},
		{"unknown non-critical extension", func() *x509.Certificate {
			c := host()
			c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Value: []byte{5, 0}})
			return c
		}, false, false, ""},
		{"bad RFC 3779 value", func() *x509.Certificate {
			c := host()
			c.ExtraExtensions = []pkix.Extension{{Id: oidIPAddrBlocks, Critical: true, Value: []byte{0x30, 0}}}
			return c
		}, false, false, "subnets (RFC 3779 extension): no address family"},
		{"host that may sign certificates", func() *x509.Certificate {
			c := host()
			c.KeyUsage |= x509.KeyUsageCertSign
			return c
		}, false, false, "want digital signature alone"},
		{"organization in the subject", func() *x509.Certificate {
			c := host()
			c.Subject.Organization = []string{"acme"}
			return c
		}, false, false, "subject attribute 2.5.4.10"},
		{"empty name", func() *x509.Certificate {
			c := host()
			c.Subject = pkix.Name{OrganizationalUnit: []string{"web"}}
			return c
		}, false, false, "0 common names"},
		{"control character in name", func() *x509.Certificate {
			c := host()
			c.Subject.CommonName = "bad\nname"
			return c
		}, false, false, "control character"},
		{"name too long", func() *x509.Certificate {
			c := host()
			c.Subject.CommonName = strings.Repeat("n", 129)
			return c
		}, false, false, "129 bytes, at most 128"},
		{"duplicate group", func() *x509.Certificate {
			c := host()
			c.Subject = subjectName("h", []string{"web", "web"})
			return c
		}, false, false, `group "web" appears twice`},
		{"groups in one multi-valued RDN", func() *x509.Certificate {
			c := host()
			c.Subject.OrganizationalUnit = []string{"web", "db"}
			return c
		}, false, false, "multi-valued RDN"},
		{"group with a comma", func() *x509.Certificate {
			c := host()
			c.Subject.OrganizationalUnit = []string{"a,b"}
			return c
		}, false, false, "no commas"},
		{"CA that may sign intermediates", func() *x509.Certificate {
			c := caTmpl()
			c.MaxPathLen, c.MaxPathLenZero = 1, false
			return c
		}, false, true, "path length 1"},
		{"CA without CRL signing", func() *x509.Certificate {
			c := caTmpl()
			c.KeyUsage = x509.KeyUsageCertSign
			return c
		}, false, true, "want certificate and CRL signing"},
		{"CA with networks", func() *x509.Certificate {
			c := caTmpl()
			c.ExtraExtensions = []pkix.Extension{subnetExt(true, "10.0.0.0/8", "fd00::/8")}
			return c
		}, false, true, ""},
		{"CA with two IPv4 networks", func() *x509.Certificate {
			c := caTmpl()
			c.ExtraExtensions = []pkix.Extension{subnetExt(true, "10.0.0.0/16", "10.2.0.0/16")}
			return c
		}, false, true, "networks 10.0.0.0/16 and 10.2.0.0/16: at most one network per address family"},
		{"CA with non-critical networks", func() *x509.Certificate {
			c := caTmpl()
			c.ExtraExtensions = []pkix.Extension{subnetExt(false, "10.0.0.0/8")}
			return c
		}, false, true, "not critical"},
		{"CA with a bad RFC 3779 value", func() *x509.Certificate {
			c := caTmpl()
			c.ExtraExtensions = []pkix.Extension{{Id: oidIPAddrBlocks, Critical: true, Value: []byte{0x30, 0}}}
			return c
		}, false, true, "networks (RFC 3779 extension): no address family"},
		{"CA with pools", func() *x509.Certificate {
			c := caTmpl()
			c.ExtraExtensions = []pkix.Extension{subnetExt(true, "10.0.0.0/8"), poolExt(false, "10.1.0.0/16")}
			return c
		}, false, true, "CA certificate with pools"},
		{"negative serial", func() *x509.Certificate {
			c := host()
			c.SerialNumber = big.NewInt(0)
			return c
		}, false, false, "serial number is not positive"},
	}
	for _, tt := range tests {
		tmpl := tt.tmpl()
		var der []byte
		var err error
		if tt.selfCA {
			k := mustKey(t)
			der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		} else {
			pub := mustKey(t).Public()
			if tt.ecdsa {
				pub = ecKey.Public()
			}
			der, err = x509.CreateCertificate(rand.Reader, tmpl, ca.Cert.X509, pub, ca.Key)
		}
		if err != nil {
			t.Fatalf("%s: create: %v", tt.name, err)
		}
		_, err = ParseCert(der)
		wantErr(t, tt.name, err, tt.want)
	}
}

// TestUUIDArcUnparseable is why the pool extension's OID is not a
// UUID-derived 2.25.<uuid>: Go's x509 cannot parse a certificate with an
// extension OID arc of 2^31 or more, and a UUID's is near 2^128.
func TestUUIDArcUnparseable(t *testing.T) {
	k := mustKey(t)
	for _, tt := range []struct {
		arc int
		ok  bool
	}{{1<<31 - 1, true}, {1 << 31, false}} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: t0, NotAfter: t0.Add(day),
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 25, tt.arc}, Value: []byte{5, 0}}}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := x509.ParseCertificate(der); (err == nil) != tt.ok {
			t.Errorf("extension 2.25.%d: parse error %v, want ok=%v", tt.arc, err, tt.ok)
		}
	}
	for _, arc := range oidWeftPools {
		if arc >= 1<<31 {
			t.Errorf("pool OID %v has an arc Go cannot parse", oidWeftPools)
		}
	}
}

func TestMatchesKey(t *testing.T) {
	ca := mustCA(t, "weft CA", year, t0)
	if !ca.Cert.MatchesKey(ca.Key) {
		t.Error("the CA's own key does not match")
	}
	if ca.Cert.MatchesKey(mustKey(t)) {
		t.Error("another key matches")
	}
	if ca.Cert.MatchesKey(ed25519.PrivateKey{1, 2, 3}) {
		t.Error("a short key matches")
	}
}
