package pki

import (
	"cmp"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// clockSkew is how far before "now" a new certificate's validity starts,
// so that a host whose clock is a little behind the CA's accepts it.
const clockSkew = time.Minute

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert *Cert
	Key  ed25519.PrivateKey
}

// NewCA makes a CA with a new key pair and a self-signed certificate named
// name, valid from now (less a minute of clock skew) for lifetime, whose
// networks are all of IPv4 and IPv6: NewCAFor(name, nil, lifetime, now).
func NewCA(name string, lifetime time.Duration, now time.Time) (*CA, error) {
	return NewCAFor(name, nil, lifetime, now)
}

// NewCAFor makes a CA as NewCA does, limited to networks: the certificate
// carries them as its RFC 3779 address blocks, and the CA grants host
// subnets and pools inside them only. At most one network per address
// family; a family without one can be granted nothing. Nil or empty
// networks means all of IPv4 and IPv6 (0.0.0.0/0 and ::/0).
func NewCAFor(name string, networks []netip.Prefix, lifetime time.Duration, now time.Time) (*CA, error) {
	if err := CheckName(name); err != nil {
		return nil, fmt.Errorf("CA name: %w", err)
	}
	if lifetime <= 0 {
		return nil, fmt.Errorf("CA lifetime %s: want a positive duration", lifetime)
	}
	if len(networks) == 0 {
		networks = allNetworks()
	}
	networks, err := canonicalPrefixes("network", networks)
	if err != nil {
		return nil, fmt.Errorf("CA %q: %w", name, err)
	}
	if err := checkNetworks(networks); err != nil {
		return nil, fmt.Errorf("CA %q: %w", name, err)
	}
	blocks, err := encodeGrants(networks)
	if err != nil {
		return nil, fmt.Errorf("CA %q: networks: %w", name, err)
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subjectName(name, nil),
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		// SubjectKeyId: x509 derives it from the key (a CRL needs it).
		ExtraExtensions: []pkix.Extension{{Id: oidIPAddrBlocks, Critical: true, Value: blocks}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	c, err := ParseCert(der)
	if err != nil {
		return nil, fmt.Errorf("the new CA certificate: %w", err)
	}
	return &CA{Cert: c, Key: key}, nil
}

// newSerial is a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// LoadCA reads dir/ca.crt and dir/ca.key; the key must match the
// certificate, which must be a CA's.
func LoadCA(dir string) (*CA, error) {
	certPath := filepath.Join(dir, CACertFile)
	certs, err := ReadCerts(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("load CA: %s holds %d certificates, want 1", certPath, len(certs))
	}
	if !certs[0].IsCA {
		return nil, fmt.Errorf("load CA: %s: %q is not a CA certificate", certPath, certs[0].Name)
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	key, err := ReadKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if !certs[0].MatchesKey(key) {
		return nil, fmt.Errorf("load CA: %s is not the key of %s", keyPath, certPath)
	}
	return &CA{Cert: certs[0], Key: key}, nil
}

// Save writes dir/ca.crt (0644) and dir/ca.key (0600), making dir (0700)
// if it is missing. It refuses to overwrite either file (the error wraps
// fs.ErrExist); when it fails it leaves behind nothing it made.
func (ca *CA) Save(dir string) (err error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("save CA: %w: %s; refusing to overwrite it", fs.ErrExist, p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("save CA: %w", err)
		}
	}
	made, err := mkdirs(dir)
	if err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	defer func() {
		if err != nil && made != "" {
			err = errors.Join(err, os.RemoveAll(made))
		}
	}()
	if err := WriteKey(keyPath, ca.Key); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := WriteCertFile(certPath, ca.Cert); err != nil {
		return errors.Join(fmt.Errorf("save CA: %w", err), os.Remove(keyPath))
	}
	return nil
}

// mkdirs makes dir and its missing parents, mode 0700, and returns the
// topmost directory it made ("" if dir existed).
func mkdirs(dir string) (string, error) {
	top := ""
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		top = d
		if filepath.Dir(d) == d {
			break
		}
	}
	if top == "" {
		return "", nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", errors.Join(err, os.RemoveAll(top))
	}
	return top, nil
}

// Request is what a host certificate is to say.
type Request struct {
	Name      string
	PublicKey ed25519.PublicKey
	Subnets   []netip.Prefix
	Pools     []netip.Prefix
	Groups    []string
	Lifetime  time.Duration
}

// Sign issues a host certificate for r, valid from now less a minute (clock
// skew) for r.Lifetime. It refuses a request outside the profile (see the
// package doc), a subnet or pool outside the CA's networks, and a lifetime
// that would outlast the CA's certificate. Groups are sorted and
// duplicates dropped.
func (ca *CA) Sign(r Request, now time.Time) (*Cert, error) {
	if err := CheckName(r.Name); err != nil {
		return nil, fmt.Errorf("sign: name: %w", err)
	}
	if len(r.PublicKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("sign %q: public key has %d bytes, want an Ed25519 key (%d)", r.Name, len(r.PublicKey), ed25519.PublicKeySize)
	}
	subnets, err := canonicalPrefixes("subnet", r.Subnets)
	if err != nil {
		return nil, fmt.Errorf("sign %q: %w", r.Name, err)
	}
	pools, err := canonicalPrefixes("pool", r.Pools)
	if err != nil {
		return nil, fmt.Errorf("sign %q: %w", r.Name, err)
	}
	if err := checkGrants(subnets, pools); err != nil {
		return nil, fmt.Errorf("sign %q: %w", r.Name, err)
	}
	if kind, p := outsideNetworks(ca.Cert, subnets, pools); kind != "" {
		return nil, fmt.Errorf("sign %q: %s %s lies outside the CA %q's networks (%s)", r.Name, kind, p, ca.Cert.Name, networksString(ca.Cert))
	}
	groups := slices.Compact(slices.Sorted(slices.Values(r.Groups)))
	if err := CheckGroups(groups); err != nil {
		return nil, fmt.Errorf("sign %q: %w", r.Name, err)
	}
	if r.Lifetime <= 0 {
		return nil, fmt.Errorf("sign %q: lifetime %s: want a positive duration", r.Name, r.Lifetime)
	}
	caCert := ca.Cert
	if now.Before(caCert.NotBefore) {
		return nil, fmt.Errorf("sign %q: the CA %q is not valid until %s", r.Name, caCert.Name, caCert.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(caCert.NotAfter) {
		return nil, fmt.Errorf("sign %q: the CA %q expired at %s", r.Name, caCert.Name, caCert.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := now.Add(r.Lifetime)
	if notAfter.After(caCert.NotAfter) {
		return nil, fmt.Errorf("sign %q: lifetime %s would end at %s, after the CA %q expires (%s); give a lifetime of at most %s, or rotate the CA",
			r.Name, r.Lifetime, notAfter.UTC().Format(time.RFC3339), caCert.Name, caCert.NotAfter.UTC().Format(time.RFC3339), caCert.NotAfter.Sub(now).Truncate(time.Second))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subjectName(r.Name, groups),
		NotBefore:             latest(now.Add(-clockSkew), caCert.NotBefore),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, // CA:FALSE, said outright
	}
	if len(subnets) > 0 {
		v, err := encodeGrants(subnets)
		if err != nil {
			return nil, fmt.Errorf("sign %q: subnets: %w", r.Name, err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidIPAddrBlocks, Critical: true, Value: v})
	}
	if len(pools) > 0 {
		v, err := encodeGrants(pools)
		if err != nil {
			return nil, fmt.Errorf("sign %q: pools: %w", r.Name, err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidWeftPools, Value: v})
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert.X509, r.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign %q: %w", r.Name, err)
	}
	c, err := ParseCert(der)
	if err != nil {
		return nil, fmt.Errorf("sign %q: the new certificate: %w", r.Name, err)
	}
	return c, nil
}

// subjectName is the subject of a certificate: each group an OU, then the
// name as CN, one attribute per RDN (pkix.Name's OrganizationalUnit would
// put all groups in one multi-valued RDN, in DER's order rather than
// ours).
func subjectName(name string, groups []string) pkix.Name {
	var n pkix.Name
	for _, g := range groups {
		n.ExtraNames = append(n.ExtraNames, pkix.AttributeTypeAndValue{Type: oidOrgUnit, Value: g})
	}
	n.ExtraNames = append(n.ExtraNames, pkix.AttributeTypeAndValue{Type: oidCommonName, Value: name})
	return n
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Revoke issues a CRL that lists serials and every entry of prev (if not
// nil; it must be this CA's), valid from now for validFor. An entry already
// in prev keeps its revocation time; the CRL number is prev's plus one.
func (ca *CA) Revoke(prev *CRL, serials []*big.Int, now time.Time, validFor time.Duration) (*CRL, error) {
	if validFor <= 0 {
		return nil, fmt.Errorf("revoke: CRL validity %s: want a positive duration", validFor)
	}
	number := big.NewInt(1)
	var entries []x509.RevocationListEntry
	seen := map[string]bool{}
	if prev != nil {
		if err := prev.List.CheckSignatureFrom(ca.Cert.X509); err != nil {
			return nil, fmt.Errorf("revoke: the previous CRL is not this CA's (%q): %w", ca.Cert.Name, err)
		}
		number.Add(prev.List.Number, number)
		for _, e := range prev.List.RevokedCertificateEntries {
			if !seen[e.SerialNumber.String()] {
				seen[e.SerialNumber.String()] = true
				entries = append(entries, x509.RevocationListEntry{SerialNumber: e.SerialNumber, RevocationTime: e.RevocationTime})
			}
		}
	}
	for _, s := range serials {
		if s == nil || s.Sign() <= 0 {
			return nil, fmt.Errorf("revoke: serial %v: want a positive number", s)
		}
		if !seen[s.String()] {
			seen[s.String()] = true
			entries = append(entries, x509.RevocationListEntry{SerialNumber: new(big.Int).Set(s), RevocationTime: now})
		}
	}
	slices.SortFunc(entries, func(a, b x509.RevocationListEntry) int {
		return cmp.Or(a.RevocationTime.Compare(b.RevocationTime), a.SerialNumber.Cmp(b.SerialNumber))
	})
	tmpl := &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                now.Add(validFor),
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert.X509, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	l, err := ParseCRL(der)
	if err != nil {
		return nil, fmt.Errorf("revoke: the new CRL: %w", err)
	}
	return l, nil
}
