package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/pki"
)

// run runs weft with args and returns its exit code, stdout and stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	code := weft(t.Context(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// mustRun runs weft and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := run(t, args...)
	if code != exitOK {
		t.Fatalf("weft %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func readOne(t *testing.T, path string) *pki.Cert {
	t.Helper()
	certs, err := pki.ReadCerts(path)
	if err != nil || len(certs) != 1 {
		t.Fatalf("%s: %d certificates, %v", path, len(certs), err)
	}
	return certs[0]
}

func TestPKIFlow(t *testing.T) {
	dir := t.TempDir()
	caDir, hosts := filepath.Join(dir, "ca"), filepath.Join(dir, "hosts")

	out := mustRun(t, "ca", "init", "--dir", caDir, "--name", "test CA", "--lifetime", "730d")
	if !strings.Contains(out, "test CA (certificate authority)") || !strings.Contains(out, "networks:    0.0.0.0/0, ::/0\n") {
		t.Errorf("ca init printed:\n%s", out)
	}
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	if got := ca.Cert.NotAfter.Sub(ca.Cert.NotBefore); got != 730*24*time.Hour+time.Minute {
		t.Errorf("CA valid for %s, want 730 days and the minute of clock skew", got)
	}

	// The host makes its key; the CA signs its public key.
	mustRun(t, "cert", "keygen", "--out-dir", hosts, "--name", "node-a")
	for name, mode := range map[string]os.FileMode{"node-a.key": 0o600, "node-a.pub": 0o644} {
		if fi, err := os.Stat(filepath.Join(hosts, name)); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, want mode %04o", name, err, mode)
		}
	}
	out = mustRun(t, "cert", "sign", "--ca-dir", caDir, "--name", "node-a", "--subnet", "10.244.1.0/24", "--subnet", "fd00:1::/64",
		"--groups", "web,db", "--public-key", filepath.Join(hosts, "node-a.pub"), "--out-dir", hosts)
	if !strings.Contains(out, "10.244.1.0/24, fd00:1::/64") || !strings.Contains(out, "groups:      db, web") {
		t.Errorf("cert sign printed:\n%s", out)
	}
	a := readOne(t, filepath.Join(hosts, "node-a.crt"))
	key, err := pki.ReadKey(filepath.Join(hosts, "node-a.key"))
	if err != nil || !a.MatchesKey(key) {
		t.Errorf("node-a.crt does not hold node-a.key's public key (%v)", err)
	}
	if got := a.NotAfter.Sub(a.NotBefore); got != 365*24*time.Hour+time.Minute {
		t.Errorf("default lifetime %s, want 365 days", got)
	}

	// Without --public-key, sign makes the key pair.
	mustRun(t, "cert", "sign", "--ca-dir", caDir, "--name", "node-b", "--pool", "10.245.0.0/16", "--pool", "fd01::/48",
		"--lifetime", "12h", "--out-dir", hosts)
	b := readOne(t, filepath.Join(hosts, "node-b.crt"))
	bKey, err := pki.ReadKey(filepath.Join(hosts, "node-b.key"))
	if err != nil || !b.MatchesKey(bKey) || len(b.Pools) != 2 || len(b.Subnets) != 0 {
		t.Errorf("node-b: key %v match %v, pools %v subnets %v", err, err == nil && b.MatchesKey(bKey), b.Pools, b.Subnets)
	}
	if _, err := os.Stat(filepath.Join(hosts, "node-b.pub")); err == nil {
		t.Error("sign wrote a .pub file")
	}

	// show: described, trusted.
	crt := filepath.Join(hosts, "node-a.crt")
	code, out, errOut := run(t, "cert", "show", "--ca-cert", filepath.Join(caDir, pki.CACertFile), crt, filepath.Join(hosts, "node-b.crt"))
	if code != exitOK || strings.Count(out, "trust:       trusted") != 2 || !strings.Contains(out, "node-a (host certificate)") {
		t.Errorf("show, trusted: exit %d\n%s%s", code, out, errOut)
	}
	// Without --ca-cert: described, not verified.
	if code, out, _ := run(t, "cert", "show", crt); code != exitOK || strings.Contains(out, "trust:") {
		t.Errorf("show without a CA: exit %d\n%s", code, out)
	}
	// Against another CA: not trusted, exit 1.
	otherDir := filepath.Join(dir, "other")
	mustRun(t, "ca", "init", "--dir", otherDir)
	code, out, _ = run(t, "cert", "show", "--ca-cert", filepath.Join(otherDir, pki.CACertFile), crt)
	if code != exitFailure || !strings.Contains(out, "NOT trusted: cert_untrusted") {
		t.Errorf("show against another CA: exit %d\n%s", code, out)
	}
	// Both CAs at once (rotation): trusted.
	if code, out, _ := run(t, "cert", "show", "--ca-cert", filepath.Join(otherDir, pki.CACertFile), "--ca-cert", filepath.Join(caDir, pki.CACertFile), crt); code != exitOK {
		t.Errorf("show with both CAs: exit %d\n%s", code, out)
	}

	// revoke by file and by serial; the CRL merges.
	crlPath := filepath.Join(caDir, pki.CRLFile)
	mustRun(t, "cert", "revoke", "--ca-dir", caDir, "--cert", crt)
	code, out, _ = run(t, "cert", "show", "--ca-cert", filepath.Join(caDir, pki.CACertFile), "--crl", crlPath, crt, filepath.Join(hosts, "node-b.crt"))
	if code != exitFailure || !strings.Contains(out, "NOT trusted: cert_revoked") || !strings.Contains(out, "trust:       trusted") {
		t.Errorf("show after revoking node-a: exit %d\n%s", code, out)
	}
	mustRun(t, "cert", "revoke", "--ca-dir", caDir, "--serial", b.X509.SerialNumber.Text(16), "--crl-lifetime", "7d")
	l, err := pki.ReadCRL(crlPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(l.List.RevokedCertificateEntries); n != 2 || l.List.Number.Int64() != 2 {
		t.Errorf("CRL after two revocations: %d entries, number %v; want 2 and 2", n, l.List.Number)
	}
	if got := l.List.NextUpdate.Sub(l.List.ThisUpdate); got != 7*24*time.Hour {
		t.Errorf("--crl-lifetime 7d gave a CRL current for %s", got)
	}
	if fi, err := os.Stat(crlPath); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("%s: %v, want mode 0644", crlPath, err)
	}
}

func TestPKIRefusals(t *testing.T) {
	dir := t.TempDir()
	caDir, hosts := filepath.Join(dir, "ca"), filepath.Join(dir, "hosts")
	mustRun(t, "ca", "init", "--dir", caDir, "--lifetime", "730d")
	mustRun(t, "cert", "keygen", "--out-dir", hosts, "--name", "h")
	sign := []string{"cert", "sign", "--ca-dir", caDir, "--name", "n", "--out-dir", hosts}
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr, which must be one line
	}{
		{"ca init over a CA", []string{"ca", "init", "--dir", caDir}, exitFailure, "ca.crt; refusing to overwrite it"},
		{"ca init without --dir", []string{"ca", "init"}, exitUsage, "--dir is required"},
		{"ca init with a bad lifetime", []string{"ca", "init", "--dir", filepath.Join(dir, "x"), "--lifetime", "ten years"}, exitUsage, `invalid value "ten years" for flag -lifetime`},
		{"ca init with a zero lifetime", []string{"ca", "init", "--dir", filepath.Join(dir, "x"), "--lifetime", "0d"}, exitUsage, "want a positive duration"},
		{"ca init with a bad name", []string{"ca", "init", "--dir", filepath.Join(dir, "x"), "--name", ""}, exitUsage, `--name "": empty`},
		{"ca unknown", []string{"ca", "frob"}, exitUsage, `unknown command "frob"`},
		{"ca init with a bad network", []string{"ca", "init", "--dir", filepath.Join(dir, "x"), "--network", "10.0.0.0/33"}, exitUsage, `--network "10.0.0.0/33": not a CIDR prefix`},
		{"ca init with a network with host bits", []string{"ca", "init", "--dir", filepath.Join(dir, "x"), "--network", "10.244.1.0/16"}, exitUsage, `--network "10.244.1.0/16": host bits are set; the prefix is 10.244.0.0/16`},
		{"ca init with two IPv4 networks", []string{"ca", "init", "--dir", filepath.Join(dir, "x"), "--network", "10.0.0.0/16", "--network", "10.1.0.0/16"}, exitUsage,
			"--network 10.0.0.0/16 and --network 10.1.0.0/16: at most one network per address family"},
		{"ca init with an IPv4-mapped network", []string{"ca", "init", "--dir", filepath.Join(dir, "x"), "--network", "::ffff:10.0.0.0/104"}, exitUsage, "--network: network ::ffff:10.0.0.0/104: an IPv4-mapped IPv6 prefix; write it as IPv4"},
		{"keygen over a key", []string{"cert", "keygen", "--out-dir", hosts, "--name", "h"}, exitFailure, "h.key exists; refusing to overwrite it"},
		{"keygen without --name", []string{"cert", "keygen", "--out-dir", hosts}, exitUsage, "--name is required"},
		{"keygen with a path as name", []string{"cert", "keygen", "--out-dir", hosts, "--name", "../evil"}, exitUsage, `--name "../evil": must be usable as a file name`},
		{"sign without --ca-dir", []string{"cert", "sign", "--name", "n", "--subnet", "10.0.0.0/24", "--out-dir", hosts}, exitUsage, "--ca-dir is required"},
		{"sign without --out-dir", []string{"cert", "sign", "--ca-dir", caDir, "--name", "n", "--subnet", "10.0.0.0/24"}, exitUsage, "--out-dir is required"},
		{"sign without --name", []string{"cert", "sign", "--ca-dir", caDir, "--subnet", "10.0.0.0/24", "--out-dir", hosts}, exitUsage, "--name is required"},
		{"sign with neither --subnet nor --pool", sign, exitUsage, "give --subnet"},
		{"sign with both --subnet and --pool", append(sign[:len(sign):len(sign)], "--subnet", "10.0.0.0/24", "--pool", "10.1.0.0/16"), exitUsage, "not both (--subnet 10.0.0.0/24, --pool 10.1.0.0/16)"},
		{"sign with a bad CIDR", append(sign[:len(sign):len(sign)], "--subnet", "10.0.0.0/33"), exitUsage, `--subnet "10.0.0.0/33": not a CIDR prefix`},
		{"sign with host bits", append(sign[:len(sign):len(sign)], "--subnet", "10.0.0.1/24"), exitUsage, `--subnet "10.0.0.1/24": host bits are set; the prefix is 10.0.0.0/24`},
		{"sign with a pool with host bits", append(sign[:len(sign):len(sign)], "--pool", "10.1.2.3/16"), exitUsage, `--pool "10.1.2.3/16": host bits are set`},
		{"sign with two IPv4 subnets", append(sign[:len(sign):len(sign)], "--subnet", "10.0.0.0/24", "--subnet", "10.0.1.0/24"), exitUsage, "at most one subnet per address family"},
		{"sign with overlapping pools", append(sign[:len(sign):len(sign)], "--pool", "10.1.0.0/16", "--pool", "10.1.0.0/24"), exitUsage, "overlap"},
		{"sign with a bad group", append(sign[:len(sign):len(sign)], "--subnet", "10.0.0.0/24", "--groups", "web,,db"), exitUsage, `--groups "web,,db": group: empty`},
		{"sign past the CA's lifetime", append(sign[:len(sign):len(sign)], "--subnet", "10.0.0.0/24", "--lifetime", "731d"), exitUsage, "--lifetime 731d: the certificate would end"},
		{"sign with a missing public key", append(sign[:len(sign):len(sign)], "--subnet", "10.0.0.0/24", "--public-key", filepath.Join(dir, "none.pub")), exitUsage, "--public-key: open"},
		{"sign with a missing CA", []string{"cert", "sign", "--ca-dir", filepath.Join(dir, "none"), "--name", "n", "--subnet", "10.0.0.0/24", "--out-dir", hosts}, exitFailure, "--ca-dir"},
		{"sign over a key", []string{"cert", "sign", "--ca-dir", caDir, "--name", "h", "--subnet", "10.0.0.0/24", "--out-dir", hosts}, exitFailure, "h.key exists"},
		{"show without files", []string{"cert", "show"}, exitUsage, "no certificate file given"},
		{"show a missing file", []string{"cert", "show", filepath.Join(dir, "none.crt")}, exitFailure, "no such file"},
		{"show a CRL without a CA", []string{"cert", "show", "--crl", "x.crl", "y.crt"}, exitUsage, "--crl x.crl needs --ca-cert"},
		{"show against a key file as CA", []string{"cert", "show", "--ca-cert", filepath.Join(hosts, "h.pub"), "y.crt"}, exitUsage, "--ca-cert"},
		{"revoke nothing", []string{"cert", "revoke", "--ca-dir", caDir}, exitUsage, "give --cert FILE or --serial HEX"},
		{"revoke a bad serial", []string{"cert", "revoke", "--ca-dir", caDir, "--serial", "xyz"}, exitUsage, `--serial "xyz": want a positive hexadecimal serial number`},
		{"revoke with a bad CRL lifetime", []string{"cert", "revoke", "--ca-dir", caDir, "--serial", "1f", "--crl-lifetime", "-1h"}, exitUsage, "want a positive duration"},
		{"cert unknown", []string{"cert", "frob"}, exitUsage, `unknown command "frob"`},
		{"unexpected argument", []string{"cert", "keygen", "--out-dir", hosts, "--name", "z", "extra"}, exitUsage, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		code, _, errOut := run(t, tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and one line containing %q", tt.name, code, errOut, tt.code, tt.want)
		}
	}
	// Nothing was left behind by the refused signs.
	ents, err := os.ReadDir(hosts)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "h.key h.pub" {
		t.Errorf("%s holds %v after the refusals, want only h.key and h.pub", hosts, names)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("a refused ca init made its directory")
	}
	// A certificate of another CA is not revoked by this one.
	otherDir := filepath.Join(dir, "other")
	mustRun(t, "ca", "init", "--dir", otherDir)
	mustRun(t, "cert", "sign", "--ca-dir", otherDir, "--name", "stranger", "--subnet", "10.9.0.0/24", "--out-dir", hosts)
	code, _, errOut := run(t, "cert", "revoke", "--ca-dir", caDir, "--cert", filepath.Join(hosts, "stranger.crt"))
	if code != exitUsage || !strings.Contains(errOut, "was not issued by the CA") {
		t.Errorf("revoking another CA's certificate: exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(caDir, pki.CRLFile)); err == nil {
		t.Error("a refused revoke wrote a CRL")
	}
}

// TestCANetworks: a CA limited with --network signs only inside it, and
// `openssl verify` accepts the host certificates of a default CA and of a
// limited one, made by the commands as an operator makes them.
func TestCANetworks(t *testing.T) {
	openssl, _ := exec.LookPath("openssl")
	tests := []struct {
		name     string
		networks []string // --network
		describe string   // ca init's networks line
		subnets  []string // signed and verified
		refused  []string // flag and value Sign must refuse, e.g. "--subnet", "10.9.0.0/24"
		want     string   // the refusal's stderr
	}{
		{"default", nil, "networks:    0.0.0.0/0, ::/0\n", []string{"--subnet", "10.244.1.0/24", "--subnet", "fd00:1::/64"}, nil, ""},
		{"limited to 10.244.0.0/16", []string{"--network", "10.244.0.0/16"}, "networks:    10.244.0.0/16\n", []string{"--subnet", "10.244.1.0/24"},
			[]string{"--subnet", "10.9.0.0/24"}, `--subnet 10.9.0.0/24: outside the networks of the CA "weft CA" (10.244.0.0/16); grant inside them, or make a CA with wider ones (weft ca init --network)`},
		{"limited, an IPv6 subnet", []string{"--network", "10.244.0.0/16"}, "networks:    10.244.0.0/16\n", []string{"--subnet", "10.244.0.0/16"},
			[]string{"--subnet", "10.244.2.0/24", "--subnet", "fd00:1::/64"}, "--subnet fd00:1::/64: outside the networks"},
		{"both families limited, a pool outside", []string{"--network", "fd00:1::/48", "--network", "10.244.0.0/16"}, "networks:    10.244.0.0/16, fd00:1::/48\n",
			[]string{"--pool", "10.244.128.0/17", "--pool", "fd00:1:0:8000::/49"},
			[]string{"--pool", "10.244.128.0/17", "--pool", "fd00:2::/48"}, "--pool fd00:2::/48: outside the networks of the CA \"weft CA\" (10.244.0.0/16, fd00:1::/48)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			caDir, hosts := filepath.Join(dir, "ca"), filepath.Join(dir, "hosts")
			out := mustRun(t, append([]string{"ca", "init", "--dir", caDir}, tt.networks...)...)
			if !strings.Contains(out, tt.describe) {
				t.Errorf("ca init printed no %q:\n%s", tt.describe, out)
			}
			caFile := filepath.Join(caDir, pki.CACertFile)
			mustRun(t, append([]string{"cert", "sign", "--ca-dir", caDir, "--name", "good", "--out-dir", hosts}, tt.subnets...)...)
			good := filepath.Join(hosts, "good.crt")
			if code, out, errOut := run(t, "cert", "show", "--ca-cert", caFile, good); code != exitOK || !strings.Contains(out, "trust:       trusted") {
				t.Errorf("show: exit %d\n%s%s", code, out, errOut)
			}
			if tt.refused != nil {
				code, _, errOut := run(t, append([]string{"cert", "sign", "--ca-dir", caDir, "--name", "bad", "--out-dir", hosts}, tt.refused...)...)
				if code != exitUsage || !strings.Contains(errOut, tt.want) || strings.Count(errOut, "\n") != 1 {
					t.Errorf("sign %v: exit %d, stderr %q; want exit %d and one line containing %q", tt.refused, code, errOut, exitUsage, tt.want)
				}
				for _, f := range []string{"bad.crt", "bad.key"} {
					if _, err := os.Stat(filepath.Join(hosts, f)); err == nil {
						t.Errorf("a refused sign wrote %s", f)
					}
				}
			}
			t.Run("openssl verify", func(t *testing.T) {
				if openssl == "" {
					t.Skip("SKIP: openssl is not installed, so this test cannot check that openssl verify accepts weft host certificates (apt-get install openssl)")
				}
				out, err := exec.Command(openssl, "verify", "-CAfile", caFile, good).CombinedOutput()
				if err != nil || strings.TrimSpace(string(out)) != good+": OK" {
					t.Errorf("openssl verify -CAfile %s %s: %v, want OK:\n%s", caFile, good, err, out)
				}
			})
		})
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"365d", 365 * 24 * time.Hour, false},
		{"1d", 24 * time.Hour, false},
		{"12h", 12 * time.Hour, false},
		{"90m", 90 * time.Minute, false},
		{"1h30m", 90 * time.Minute, false},
		{"0d", 0, true},
		{"0s", 0, true},
		{"-1h", 0, true},
		{"-1d", 0, true},
		{"1.5d", 0, true},
		{"d", 0, true},
		{"", 0, true},
		{"100001d", 0, true},
		{"ten", 0, true},
	}
	for _, tt := range tests {
		got, err := parseDuration(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseDuration(%q) = %s, %v; want %s (error %v)", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestParseSerial(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // hex, "" = error
	}{
		{"1f", "1f"},
		{"0x1F", "1f"},
		{"85:34:a6", "8534a6"},
		{"0", ""},
		{"", ""},
		{"xyz", ""},
		{"-5", ""},
	} {
		n, err := parseSerial(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("parseSerial(%q) = %x, want an error", tt.in, n)
		case tt.want != "" && (err != nil || n.Text(16) != tt.want):
			t.Errorf("parseSerial(%q) = %v, %v; want %s", tt.in, n, err, tt.want)
		}
	}
}
