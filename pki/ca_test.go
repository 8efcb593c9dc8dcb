package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewCA(t *testing.T) {
	ca := mustCA(t, "weft CA", 10*year, t0)
	c := ca.Cert
	x := c.X509
	if !c.IsCA || c.Name != "weft CA" || !x.MaxPathLenZero || x.MaxPathLen != 0 {
		t.Errorf("IsCA %v name %q MaxPathLen %d zero %v", c.IsCA, c.Name, x.MaxPathLen, x.MaxPathLenZero)
	}
	if x.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("key usage %#x", x.KeyUsage)
	}
	if err := x.CheckSignatureFrom(x); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if !c.NotBefore.Equal(t0.Add(-time.Minute)) || !c.NotAfter.Equal(t0.Add(10*year)) {
		t.Errorf("valid %s to %s", c.NotBefore, c.NotAfter)
	}
	if want := prefixes(t, "0.0.0.0/0", "::/0"); !slices.Equal(c.Networks, want) {
		t.Errorf("networks %v, want %v", c.Networks, want)
	}
	if len(c.Subnets)+len(c.Pools) != 0 {
		t.Errorf("a CA with subnets %v, pools %v", c.Subnets, c.Pools)
	}
	for _, tt := range []struct {
		name     string
		lifetime time.Duration
		want     string
	}{
		{"", year, "CA name: empty"},
		{"tab\there", year, "control character"},
		{"weft CA", 0, "want a positive duration"},
		{"weft CA", -time.Hour, "want a positive duration"},
	} {
		_, err := NewCA(tt.name, tt.lifetime, t0)
		wantErr(t, "NewCA("+tt.name+")", err, tt.want)
	}
}

func TestNewCAFor(t *testing.T) {
	tests := []struct {
		name     string
		networks []string
		want     []string // the certificate's networks
		err      string
	}{
		{"nil: everything", nil, []string{"0.0.0.0/0", "::/0"}, ""},
		{"IPv4 only", []string{"10.244.0.0/16"}, []string{"10.244.0.0/16"}, ""},
		{"IPv6 only", []string{"fd00:1::/48"}, []string{"fd00:1::/48"}, ""},
		{"both, IPv6 given first", []string{"fd00::/8", "10.0.0.0/8"}, []string{"10.0.0.0/8", "fd00::/8"}, ""},
		{"one address", []string{"10.1.2.3/32"}, []string{"10.1.2.3/32"}, ""},
		{"all of IPv4 alone", []string{"0.0.0.0/0"}, []string{"0.0.0.0/0"}, ""},
		{"two IPv4 networks", []string{"10.0.0.0/16", "10.2.0.0/16"}, nil, "networks 10.0.0.0/16 and 10.2.0.0/16: at most one network per address family"},
		{"overlapping networks", []string{"10.0.0.0/8", "10.1.0.0/16"}, nil, "networks 10.0.0.0/8 and 10.1.0.0/16 overlap"},
		{"host bits", []string{"10.244.1.1/16"}, nil, "network 10.244.1.1/16: host bits are set (did you mean 10.244.0.0/16?)"},
		{"IPv4-mapped", []string{"::ffff:10.0.0.0/104"}, nil, "an IPv4-mapped IPv6 prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := NewCAFor("limited CA", prefixes(t, tt.networks...), year, t0)
			wantErr(t, "NewCAFor", err, tt.err)
			if err == nil && CheckNetworks(prefixes(t, tt.networks...)) != nil {
				t.Errorf("CheckNetworks refuses what NewCAFor takes")
			}
			if err != nil {
				wantErr(t, "CheckNetworks", CheckNetworks(prefixes(t, tt.networks...)), tt.err)
				return
			}
			if !slices.Equal(ca.Cert.Networks, prefixes(t, tt.want...)) {
				t.Errorf("networks %v, want %v", ca.Cert.Networks, tt.want)
			}
			// The certificate says so itself, in a critical RFC 3779
			// extension, and parses back to the same networks.
			i := slices.IndexFunc(ca.Cert.X509.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oidIPAddrBlocks) })
			if i < 0 || !ca.Cert.X509.Extensions[i].Critical {
				t.Fatalf("no critical RFC 3779 extension in %v", ca.Cert.X509.Extensions)
			}
			back, err := ParseCert(ca.Cert.Raw)
			if err != nil || !slices.Equal(back.Networks, ca.Cert.Networks) {
				t.Errorf("parsed back: %v, networks %v", err, back.Networks)
			}
		})
	}
	_, err := NewCAFor("", nil, year, t0)
	wantErr(t, "no name", err, "CA name: empty")
	if err := CheckNetworks(nil); err != nil {
		t.Errorf("CheckNetworks(nil): %v", err)
	}
}

// TestLegacyCA: a CA certificate made before CAs carried address blocks
// still parses, grants everything, signs and verifies as before.
func TestLegacyCA(t *testing.T) {
	ca := legacyCA(t, "old CA", 2*year, t0)
	if !ca.Cert.IsCA || !slices.Equal(ca.Cert.Networks, prefixes(t, "0.0.0.0/0", "::/0")) {
		t.Errorf("IsCA %v, networks %v; want a CA granting everything", ca.Cert.IsCA, ca.Cert.Networks)
	}
	r := hostRequest(t, "h", "192.168.7.0/24", "2001:db8::/64")
	r.Pools = prefixes(t, "172.16.0.0/12")
	c := mustSign(t, ca, r, t0)
	tr, err := NewTrust([]*Cert{ca.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Verify(c, t0.Add(day)); err != nil {
		t.Errorf("a legacy CA's host: %v", err)
	}
	dir := t.TempDir()
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	if back, err := LoadCA(dir); err != nil || !slices.Equal(back.Cert.Networks, ca.Cert.Networks) {
		t.Errorf("LoadCA of a legacy CA: %v", err)
	}
}

func TestSignWithinNetworks(t *testing.T) {
	v4 := mustCAFor(t, "v4 CA", []string{"10.244.0.0/16"}, 2*year, t0)
	both := mustCAFor(t, "dual CA", []string{"10.244.0.0/16", "fd00:1::/48"}, 2*year, t0)
	tests := []struct {
		name           string
		ca             *CA
		subnets, pools []string
		want           string
	}{
		{"subnet inside", v4, []string{"10.244.1.0/24"}, nil, ""},
		{"subnet is the network", v4, []string{"10.244.0.0/16"}, nil, ""},
		{"pool inside", v4, nil, []string{"10.244.128.0/17"}, ""},
		{"both families inside", both, []string{"10.244.1.0/24", "fd00:1:0:1::/64"}, []string{"10.244.128.0/17", "fd00:1:0:8000::/49"}, ""},
		{"subnet beside", v4, []string{"10.245.0.0/24"}, nil, `subnet 10.245.0.0/24 lies outside the CA "v4 CA"'s networks (10.244.0.0/16)`},
		{"subnet larger", v4, []string{"10.0.0.0/8"}, nil, "subnet 10.0.0.0/8 lies outside"},
		{"IPv6 from an IPv4-only CA", v4, []string{"10.244.1.0/24", "fd00:1::/64"}, nil, `subnet fd00:1::/64 lies outside the CA "v4 CA"'s networks (10.244.0.0/16)`},
		{"pool straddling the edge", v4, nil, []string{"10.244.0.0/15"}, "pool 10.244.0.0/15 lies outside"},
		{"one pool of two outside", both, nil, []string{"10.244.0.0/17", "fd00:2::/48"}, `pool fd00:2::/48 lies outside the CA "dual CA"'s networks (10.244.0.0/16, fd00:1::/48)`},
	}
	for _, tt := range tests {
		r := Request{Name: "h", PublicKey: pubOf(mustKey(t)), Subnets: prefixes(t, tt.subnets...), Pools: prefixes(t, tt.pools...), Lifetime: year}
		c, err := tt.ca.Sign(r, t0)
		wantErr(t, tt.name, err, tt.want)
		if err != nil {
			continue
		}
		tr, err := NewTrust([]*Cert{tt.ca.Cert}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Verify(c, t0.Add(day)); err != nil {
			t.Errorf("%s: Verify of what Sign issued: %v", tt.name, err)
		}
	}
}

func TestSaveLoadCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "ca")
	ca := mustCA(t, "weft CA", year, t0)
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{CACertFile: 0o644, CAKeyFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %04o", name, err, fi.Mode().Perm(), mode)
		}
	}
	got, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Cert.Fingerprint != ca.Cert.Fingerprint || !got.Key.Equal(ca.Key) {
		t.Error("LoadCA returned another CA")
	}
	// Refuses to overwrite, and leaves both files as they were.
	other := mustCA(t, "other CA", year, t0)
	if err := other.Save(dir); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("Save over a CA: %v, want ErrExist", err)
	}
	if again, err := LoadCA(dir); err != nil || again.Cert.Fingerprint != ca.Cert.Fingerprint {
		t.Errorf("after a refused Save: %v", err)
	}
	// Refuses a directory that holds only the key, too.
	half := t.TempDir()
	if err := WriteKey(filepath.Join(half, CAKeyFile), mustKey(t)); err != nil {
		t.Fatal(err)
	}
	if err := other.Save(half); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Save beside a key: %v, want ErrExist", err)
	}
	if _, err := os.Stat(filepath.Join(half, CACertFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused Save wrote %s", CACertFile)
	}
}

func TestSaveRemovesMadeDirs(t *testing.T) {
	root := t.TempDir()
	ca := mustCA(t, "weft CA", year, t0)
	ca.Key = ca.Key[:10] // WriteKey refuses it: Save fails after making the directories
	if err := ca.Save(filepath.Join(root, "x", "y")); err == nil {
		t.Fatal("Save with a broken key succeeded")
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("a failed Save left %v in %s", ents, root)
	}
}

func TestLoadCARefuses(t *testing.T) {
	ca := mustCA(t, "weft CA", year, t0)
	host := mustSign(t, ca, hostRequest(t, "h", "10.0.0.0/24"), t0)
	write := func(dir, name string, data []byte, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		setup func(dir string)
		want  string
	}{
		{"empty directory", func(string) {}, "no such file"},
		{"key of another CA", func(dir string) {
			write(dir, CACertFile, ca.Cert.PEM(), 0o644)
			if err := WriteKey(filepath.Join(dir, CAKeyFile), mustKey(t)); err != nil {
				t.Fatal(err)
			}
		}, "is not the key of"},
		{"host certificate", func(dir string) {
			write(dir, CACertFile, host.PEM(), 0o644)
		}, "is not a CA certificate"},
		{"two certificates", func(dir string) {
			write(dir, CACertFile, append(ca.Cert.PEM(), ca.Cert.PEM()...), 0o644)
		}, "holds 2 certificates"},
		{"key readable by others", func(dir string) {
			write(dir, CACertFile, ca.Cert.PEM(), 0o644)
			if err := WriteKey(filepath.Join(dir, CAKeyFile), ca.Key); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(dir, CAKeyFile), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "mode 0644"},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		tt.setup(dir)
		_, err := LoadCA(dir)
		wantErr(t, tt.name, err, tt.want)
	}
}

func TestSignRefuses(t *testing.T) {
	ca := mustCA(t, "weft CA", 2*year, t0)
	tooMany := func() []netip.Prefix {
		var ps []netip.Prefix
		for i := range 17 {
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(2 * i), 0, 0}), 16))
		}
		return ps
	}
	tests := []struct {
		name   string
		modify func(r *Request)
		now    time.Time
		want   string
	}{
		{"good", func(*Request) {}, t0, ""},
		{"empty name", func(r *Request) { r.Name = "" }, t0, "name: empty"},
		{"name with a newline", func(r *Request) { r.Name = "a\nb" }, t0, "control character"},
		{"no key", func(r *Request) { r.PublicKey = nil }, t0, "public key has 0 bytes"},
		{"no grant", func(r *Request) { r.Subnets = nil }, t0, "must grant at least one"},
		{"host bits", func(r *Request) { r.Subnets = prefixes(t, "10.0.0.1/24") }, t0, "subnet 10.0.0.1/24: host bits are set (did you mean 10.0.0.0/24?)"},
		{"two IPv4 subnets", func(r *Request) { r.Subnets = prefixes(t, "10.0.0.0/24", "10.0.9.0/24") }, t0, "at most one subnet per address family"},
		{"overlapping pools", func(r *Request) { r.Pools = prefixes(t, "10.8.0.0/16", "10.8.0.0/24") }, t0, "pools 10.8.0.0/16 and 10.8.0.0/24 overlap"},
		{"adjacent pools", func(r *Request) { r.Pools = prefixes(t, "10.8.0.0/16", "10.9.0.0/16") }, t0, "adjacent"},
		{"17 grants", func(r *Request) { r.Subnets = nil; r.Pools = tooMany() }, t0, "17 subnets and pools, at most 16"},
		{"bad group", func(r *Request) { r.Groups = []string{"a,b"} }, t0, "no commas"},
		{"zero lifetime", func(r *Request) { r.Lifetime = 0 }, t0, "want a positive duration"},
		{"lifetime past the CA", func(r *Request) { r.Lifetime = 3 * year }, t0, "after the CA \"weft CA\" expires"},
		{"CA expired", func(*Request) {}, t0.Add(3 * year), "expired at"},
		{"CA not yet valid", func(*Request) {}, t0.Add(-time.Hour), "is not valid until"},
	}
	for _, tt := range tests {
		r := hostRequest(t, "h", "10.0.0.0/24")
		tt.modify(&r)
		_, err := ca.Sign(r, tt.now)
		wantErr(t, tt.name, err, tt.want)
	}
	// The lifetime may reach the CA's expiry exactly.
	r := hostRequest(t, "h", "10.0.0.0/24")
	r.Lifetime = ca.Cert.NotAfter.Sub(t0)
	if _, err := ca.Sign(r, t0); err != nil {
		t.Errorf("lifetime up to the CA's expiry: %v", err)
	}
}

func TestRevoke(t *testing.T) {
	ca := mustCA(t, "weft CA", 2*year, t0)
	l1, err := ca.Revoke(nil, []*big.Int{big.NewInt(7), big.NewInt(9), big.NewInt(7)}, t0, 30*day)
	if err != nil {
		t.Fatal(err)
	}
	if l1.List.Number.Int64() != 1 || !l1.List.NextUpdate.Equal(t0.Add(30*day)) {
		t.Errorf("first CRL number %v next update %s", l1.List.Number, l1.List.NextUpdate)
	}
	if err := l1.List.CheckSignatureFrom(ca.Cert.X509); err != nil {
		t.Errorf("the CRL is not signed by the CA: %v", err)
	}
	// Through PEM and back, then merged with one new serial and one old.
	back, err := ParseCRL(l1.PEM())
	if err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(day)
	l2, err := ca.Revoke(back, []*big.Int{big.NewInt(9), big.NewInt(11)}, t1, 30*day)
	if err != nil {
		t.Fatal(err)
	}
	if l2.List.Number.Int64() != 2 {
		t.Errorf("second CRL number %v, want 2", l2.List.Number)
	}
	got := map[int64]time.Time{}
	for _, e := range l2.List.RevokedCertificateEntries {
		got[e.SerialNumber.Int64()] = e.RevocationTime
	}
	want := map[int64]time.Time{7: t0, 9: t0, 11: t1}
	if len(got) != len(want) {
		t.Errorf("entries %v, want %v", got, want)
	}
	for s, at := range want {
		if !got[s].Equal(at) {
			t.Errorf("serial %d revoked at %s, want %s (an old entry keeps its time)", s, got[s], at)
		}
	}
	// DER reads as well as PEM.
	if _, err := ParseCRL(l2.Raw); err != nil {
		t.Errorf("ParseCRL(DER): %v", err)
	}
	other := mustCA(t, "other CA", year, t0)
	_, err = other.Revoke(l2, nil, t1, day)
	wantErr(t, "merging another CA's CRL", err, "is not this CA's")
	_, err = ca.Revoke(nil, []*big.Int{big.NewInt(0)}, t1, day)
	wantErr(t, "serial 0", err, "want a positive number")
	_, err = ca.Revoke(nil, nil, t1, 0)
	wantErr(t, "zero validity", err, "want a positive duration")
	// An empty CRL is a CRL.
	if l, err := ca.Revoke(nil, nil, t1, day); err != nil || len(l.List.RevokedCertificateEntries) != 0 {
		t.Errorf("empty CRL: %v", err)
	}
}

func TestParseCRLRefuses(t *testing.T) {
	ca := mustCA(t, "weft CA", year, t0)
	l, err := ca.Revoke(nil, []*big.Int{big.NewInt(1)}, t0, day)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"certificate PEM", ca.Cert.PEM(), `want "X509 CRL"`},
		{"two CRLs", slices.Concat(l.PEM(), l.PEM()), "2 CRLs"},
		{"garbage", []byte("garbage"), "parse CRL"},
		{"truncated DER", l.Raw[:len(l.Raw)-3], "parse CRL"},
	}
	for _, tt := range tests {
		_, err := ParseCRL(tt.data)
		wantErr(t, tt.name, err, tt.want)
	}
	p := filepath.Join(t.TempDir(), "x.crl")
	if err := WriteCRLFile(p, l); err != nil {
		t.Fatal(err)
	}
	if err := WriteCRLFile(p, l); err != nil {
		t.Errorf("a CRL file is replaced in place: %v", err)
	}
	if got, err := ReadCRL(p); err != nil || string(got.Raw) != string(l.Raw) {
		t.Errorf("ReadCRL: %v", err)
	}
	if _, err := ReadCRL(filepath.Join(t.TempDir(), "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadCRL of no file: %v", err)
	}
}
