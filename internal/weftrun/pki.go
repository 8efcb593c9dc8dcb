package weftrun

import (
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/weftnet/weft/internal/keyfile"
	"github.com/weftnet/weft/pki"
)

// NewCA makes a cluster CA for a lab's daemons, valid from three days ago
// (so that tests can issue certificates dated in the past) for a year.
func NewCA(name string) (*pki.CA, error) {
	ca, err := pki.NewCA(name, 365*24*time.Hour, time.Now().Add(-72*time.Hour))
	if err != nil {
		return nil, fmt.Errorf("weftrun: CA %s: %w", name, err)
	}
	return ca, nil
}

// Grant is what a certificate lets its host claim.
type Grant struct {
	Subnets []netip.Prefix
	Pools   []netip.Prefix
}

// Issue has issuer sign a certificate for name with a new key, valid from
// now for lifetime.
func Issue(issuer *pki.CA, name string, g Grant, now time.Time, lifetime time.Duration) (*pki.Cert, ed25519.PrivateKey, error) {
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	cert, err := issuer.Sign(pki.Request{Name: name, PublicKey: key.Public().(ed25519.PublicKey), Subnets: g.Subnets, Pools: g.Pools, Lifetime: lifetime}, now)
	if err != nil {
		return nil, nil, fmt.Errorf("weftrun: certificate for %s: %w", name, err)
	}
	return cert, key, nil
}

// InstallPKI writes into dir what weft run --pki-dir dir reads for the
// daemon name: ca.crt (the CAs it trusts), name.crt and name.key (a new
// certificate from issuer, valid for a day). Each file is replaced
// atomically, so that a daemon reloading meanwhile reads old or new.
func InstallPKI(dir, name string, trusted []*pki.CA, issuer *pki.CA, g Grant) error {
	cert, key, err := Issue(issuer, name, g, time.Now(), 24*time.Hour)
	if err != nil {
		return err
	}
	return WritePKI(dir, name, trusted, cert, key)
}

// WritePKI writes the files of InstallPKI from a certificate and its key.
func WritePKI(dir, name string, trusted []*pki.CA, cert *pki.Cert, key ed25519.PrivateKey) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("weftrun: %w", err)
	}
	var bundle []byte
	for _, ca := range trusted {
		bundle = append(bundle, ca.Cert.PEM()...)
	}
	// The key first: a daemon that reloads between the two files reads
	// a key that does not match its certificate, and refuses the reload
	// (keeping what runs) rather than advertising a mismatch.
	keyPath := filepath.Join(dir, name+".key")
	tmp := keyPath + ".new"
	_ = os.Remove(tmp)
	if err := pki.WriteKey(tmp, key); err != nil {
		return fmt.Errorf("weftrun: %w", err)
	}
	if err := os.Rename(tmp, keyPath); err != nil {
		return fmt.Errorf("weftrun: %w", err)
	}
	for file, data := range map[string][]byte{pki.CACertFile: bundle, name + ".crt": cert.PEM()} {
		if err := keyfile.WriteAtomic(filepath.Join(dir, file), data, false); err != nil {
			return fmt.Errorf("weftrun: %w", err)
		}
	}
	return nil
}

// WriteCRL installs a revocation list as dir/ca.crl.
func WriteCRL(dir string, l *pki.CRL) error {
	if err := keyfile.WriteAtomic(filepath.Join(dir, pki.CRLFile), l.PEM(), false); err != nil {
		return fmt.Errorf("weftrun: %w", err)
	}
	return nil
}
