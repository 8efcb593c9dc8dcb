package config

import (
	"crypto/ed25519"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/keyfile"
	"github.com/weftnet/weft/pki"
)

// pkiFiles writes a CA and a certificate for name granting grants (pools
// if pool) into dir, the layout --pki-dir reads; issued shifts the
// certificate's start.
func pkiFiles(t *testing.T, dir, name string, subnets, pools []netip.Prefix, issued time.Time) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test CA", 365*24*time.Hour, time.Now().Add(-72*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	writeHost(t, dir, name, ca, ca, subnets, pools, issued)
	return ca
}

func writeHost(t *testing.T, dir, name string, trusted, issuer *pki.CA, subnets, pools []netip.Prefix, issued time.Time) {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := issuer.Sign(pki.Request{Name: name, PublicKey: key.Public().(ed25519.PublicKey), Subnets: subnets, Pools: pools, Lifetime: 24 * time.Hour}, issued)
	if err != nil {
		t.Fatal(err)
	}
	for file, data := range map[string][]byte{"ca.crt": trusted.Cert.PEM(), name + ".crt": cert.PEM()} {
		if err := keyfile.WriteAtomic(filepath.Join(dir, file), data, false); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.Remove(filepath.Join(dir, name+".key"))
	if err := pki.WriteKey(filepath.Join(dir, name+".key"), key); err != nil {
		t.Fatal(err)
	}
}

func TestPKIConfig(t *testing.T) {
	p := netip.MustParsePrefix
	now := time.Now()
	base := []string{"--name", "a", "--network", "10.244.0.0/16", "--insecure-gossip"}
	good := t.TempDir()
	pkiFiles(t, good, "a", []netip.Prefix{p("10.244.1.0/24")}, nil, now)

	s, _, _, err := Parse(append(base, "--subnet", "10.244.1.0/24", "--pki-dir", good), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if pk := s.Live.PKI; pk == nil || pk.Cert.Name != "a" || pk.Digest == [32]byte{} || len(pk.Trust.CAs()) != 1 {
		t.Fatalf("PKI %+v", s.Live.PKI)
	}
	explicit := []string{"--ca-cert", filepath.Join(good, "ca.crt"), "--cert", filepath.Join(good, "a.crt"), "--key", filepath.Join(good, "a.key")}
	s2, _, _, err := Parse(append(append(base, "--subnet", "10.244.1.0/24"), explicit...), io.Discard)
	if err != nil || s2.Live.PKI.Digest != s.Live.PKI.Digest {
		t.Fatalf("the same files by name: %v (digest equal: %v)", err, err == nil && s2.Live.PKI.Digest == s.Live.PKI.Digest)
	}
	if s, _, _, err := Parse(append(base, "--subnet", "10.244.1.0/24"), io.Discard); err != nil || s.Live.PKI != nil {
		t.Fatalf("no CA: %v, %+v", err, s.Live.PKI)
	}

	// Automatic subnets narrow to the granted pool.
	pooled := t.TempDir()
	pkiFiles(t, pooled, "a", nil, []netip.Prefix{p("10.244.128.0/20")}, now)
	s, _, _, err = Parse(append(base, "--pki-dir", pooled), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Pools[0].Min != netip.MustParseAddr("10.244.128.0") || s.Pools[0].Max != netip.MustParseAddr("10.244.143.0") {
		t.Errorf("pool narrowed to %v..%v, want 10.244.128.0..10.244.143.0", s.Pools[0].Min, s.Pools[0].Max)
	}

	expired := t.TempDir()
	pkiFiles(t, expired, "a", []netip.Prefix{p("10.244.1.0/24")}, nil, now.Add(-48*time.Hour))
	small := t.TempDir()
	pkiFiles(t, small, "a", nil, []netip.Prefix{p("10.244.1.0/26")}, now)
	otherCA := t.TempDir()
	ca2 := pkiFiles(t, otherCA, "a", []netip.Prefix{p("10.244.1.0/24")}, nil, now)
	writeHost(t, otherCA, "a", pkiFiles(t, t.TempDir(), "x", []netip.Prefix{p("10.244.1.0/24")}, nil, now), ca2, []netip.Prefix{p("10.244.1.0/24")}, nil, now)
	mismatched := t.TempDir()
	pkiFiles(t, mismatched, "a", []netip.Prefix{p("10.244.1.0/24")}, nil, now)
	other := t.TempDir()
	pkiFiles(t, other, "a", []netip.Prefix{p("10.244.1.0/24")}, nil, now)
	if err := os.Rename(filepath.Join(other, "a.key"), filepath.Join(mismatched, "a.key")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"ca without cert", append(base, "--subnet", "10.244.1.0/24", "--ca-cert", filepath.Join(good, "ca.crt")), "--ca-cert needs --cert and --key"},
		{"cert without ca", append(base, "--subnet", "10.244.1.0/24", "--cert", filepath.Join(good, "a.crt"), "--key", filepath.Join(good, "a.key")), "need --ca-cert"},
		{"both ways", append(append(base, "--subnet", "10.244.1.0/24", "--pki-dir", good), explicit[:2]...), "give one"},
		{"another name", []string{"--name", "b", "--network", "10.244.0.0/16", "--insecure-gossip", "--subnet", "10.244.1.0/24",
			"--ca-cert", filepath.Join(good, "ca.crt"), "--cert", filepath.Join(good, "a.crt"), "--key", filepath.Join(good, "a.key")}, `is for "a", and this host is "b"`},
		{"subnet not granted", append(base, "--subnet", "10.244.2.0/24", "--pki-dir", good), "does not grant 10.244.2.0/24"},
		{"expired", append(base, "--subnet", "10.244.1.0/24", "--pki-dir", expired), "not trusted"},
		{"another CA", append(base, "--subnet", "10.244.1.0/24", "--pki-dir", otherCA), "not trusted"},
		{"key of another certificate", append(base, "--subnet", "10.244.1.0/24", "--pki-dir", mismatched), "is not the key of the certificate"},
		{"pool smaller than a subnet", append(base, "--pki-dir", small), "smaller than one /24 subnet"},
		{"missing file", append(base, "--subnet", "10.244.1.0/24", "--pki-dir", t.TempDir()), "invalid --pki-dir"},
	} {
		_, _, _, err := Parse(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
