package config

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/node"
	"github.com/weftnet/weft/pki"
)

// pkiFlags declares the certificate flags.
func pkiFlags(fs *flag.FlagSet, c *Config) {
	fs.Var(listFlag{(*[]string)(&c.CACert)}, "ca-cert", "PEM file of CA certificates this host trusts (repeatable: trust old and new CAs during a rotation); peers must show a certificate one of them issued")
	fs.StringVar(&c.Cert, "cert", "", "this host's certificate (PEM), issued by a --ca-cert CA for --name (weft cert sign)")
	fs.StringVar(&c.Key, "key", "", "the private key of --cert (PEM; mode 0600, owned by weft's user)")
	fs.Var(listFlag{(*[]string)(&c.CRL)}, "crl", "PEM revocation list of a --ca-cert CA (repeatable; weft cert revoke)")
	fs.StringVar(&c.PKIDir, "pki-dir", "", "instead of the four above: DIR/ca.crt, DIR/NAME.crt, DIR/NAME.key and, if present, DIR/ca.crl")
}

// validatePKI reads and checks the certificate material: the CAs and
// their lists, our certificate and key, which must match, chain to a
// trusted CA, name this host and grant its subnets. With automatic
// subnets, the pools narrow to what the certificate grants.
func validatePKI(c Config, s *node.Settings, src source) error {
	now := time.Now()
	cas, crls, certFile, keyFile := []string(c.CACert), []string(c.CRL), c.Cert, c.Key
	if c.PKIDir != "" {
		if len(cas)+len(crls) > 0 || certFile != "" || keyFile != "" {
			return usagef("%s, or %s, %s, %s and %s: give one", src.name("pki-dir", "pkiDir"),
				src.name("ca-cert", "caCert"), src.name("cert", "cert"), src.name("key", "key"), src.name("crl", "crl"))
		}
		cas = []string{filepath.Join(c.PKIDir, pki.CACertFile)}
		certFile = filepath.Join(c.PKIDir, s.Name+".crt")
		keyFile = filepath.Join(c.PKIDir, s.Name+".key")
		if crl := filepath.Join(c.PKIDir, pki.CRLFile); fileExists(crl) {
			crls = []string{crl}
		}
	}
	switch {
	case len(cas) == 0 && certFile == "" && keyFile == "" && len(crls) == 0:
		return nil // no CA: the gossip key is the root of trust
	case len(cas) == 0:
		return usagef("%s, %s and %s need %s: the CAs whose certificates this host trusts",
			src.name("cert", "cert"), src.name("key", "key"), src.name("crl", "crl"), src.name("ca-cert", "caCert"))
	case certFile == "" || keyFile == "":
		return usagef("%s needs %s and %s: a host that checks its peers' certificates shows its own (weft cert sign makes one)",
			src.name("ca-cert", "caCert"), src.name("cert", "cert"), src.name("key", "key"))
	}
	// Errors name the flag or key that gave the file: with --pki-dir,
	// that one.
	name := func(flagName, key string) string {
		if c.PKIDir != "" {
			return src.name("pki-dir", "pkiDir") + " file"
		}
		return src.name(flagName, key)
	}
	digest := sha256.New()
	read := func(flagName, key, path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, usagef("invalid %s %q: %v", name(flagName, key), path, err)
		}
		fmt.Fprintf(digest, "%s %d\n", path, len(b))
		digest.Write(b)
		return b, nil
	}
	bad := func(flagName, key, path string, format string, args ...any) error {
		return usagef("invalid %s %q: %s", name(flagName, key), path, fmt.Sprintf(format, args...))
	}

	var trusted []*pki.Cert
	for _, f := range cas {
		b, err := read("ca-cert", "caCert", f)
		if err != nil {
			return err
		}
		certs, err := pki.ParsePEM(b)
		if err != nil {
			return bad("ca-cert", "caCert", f, "%v", err)
		}
		for _, ca := range certs {
			if !ca.IsCA {
				return bad("ca-cert", "caCert", f, "%q is not a CA certificate", ca.Name)
			}
		}
		trusted = append(trusted, certs...)
	}
	var lists []*pki.CRL
	for _, f := range crls {
		b, err := read("crl", "crl", f)
		if err != nil {
			return err
		}
		l, err := pki.ParseCRL(b)
		if err != nil {
			return bad("crl", "crl", f, "%v", err)
		}
		lists = append(lists, l)
	}
	trust, err := pki.NewTrust(trusted, lists)
	if err != nil {
		return usagef("invalid %s/%s: %v", src.name("ca-cert", "caCert"), src.name("crl", "crl"), err)
	}

	b, err := read("cert", "cert", certFile)
	if err != nil {
		return err
	}
	certs, err := pki.ParsePEM(b)
	if err != nil {
		return bad("cert", "cert", certFile, "%v", err)
	}
	if len(certs) != 1 || certs[0].IsCA {
		return bad("cert", "cert", certFile, "want exactly one host certificate, not a CA's (found %d certificates)", len(certs))
	}
	own := certs[0]
	if _, err := read("key", "key", keyFile); err != nil {
		return err
	}
	key, err := pki.ReadKey(keyFile)
	if err != nil {
		return bad("key", "key", keyFile, "%v", err)
	}
	if !own.MatchesKey(key) {
		return bad("key", "key", keyFile, "is not the key of the certificate %s", certFile)
	}
	if err := trust.Verify(own, now); err != nil {
		return bad("cert", "cert", certFile, "not trusted: %v", err)
	}
	if own.Name != s.Name {
		return bad("cert", "cert", certFile, "is for %q, and this host is %q (%s): sign one for this name", own.Name, s.Name, src.name("name", "name"))
	}
	grants := append(append([]netip.Prefix(nil), own.Subnets...), own.Pools...)
	if s.AutoSubnet {
		for i := range s.Pools {
			if err := narrowPool(&s.Pools[i], grants); err != nil {
				return bad("cert", "cert", certFile, "%v", err)
			}
		}
	} else {
		for _, sub := range s.Subnets {
			if !own.Grants(sub) {
				return bad("cert", "cert", certFile, "does not grant %s, this host's %s (it grants %s)", sub, src.name("subnet", "subnet"), prefixesString(grants))
			}
		}
	}
	s.Live.PKI = &node.PKI{Trust: trust, Cert: own, Key: key, Digest: [32]byte(digest.Sum(nil))}
	return nil
}

// narrowPool narrows an automatic subnet pool to the first grant of its
// family that overlaps its network.
func narrowPool(pool *lease.Pool, grants []netip.Prefix) error {
	nw := pool.Network
	if !nw.IsValid() {
		return nil
	}
	var g netip.Prefix
	for _, p := range grants {
		if p.Addr().Is4() == nw.Addr().Is4() && p.Overlaps(nw) {
			g = p
			break
		}
	}
	switch {
	case !g.IsValid():
		return fmt.Errorf("grants nothing inside the network %s (it grants %s), and this host chooses its subnet there", nw, prefixesString(grants))
	case g.Bits() > pool.Bits:
		return fmt.Errorf("grants %s, smaller than one /%d subnet (subnetLen)", g, pool.Bits)
	case g.Bits() <= nw.Bits():
		return nil // the whole network
	}
	first := g.Addr()
	last := netip.PrefixFrom(lastAddr(g), pool.Bits).Masked().Addr()
	if !pool.Min.IsValid() || first.Compare(pool.Min) > 0 {
		pool.Min = first
	}
	if !pool.Max.IsValid() || last.Compare(pool.Max) < 0 {
		pool.Max = last
	}
	if err := pool.Validate(); err != nil {
		var pe *lease.PoolError
		if errors.As(err, &pe) {
			return fmt.Errorf("grants %s, outside subnetMin..subnetMax", g)
		}
		return err
	}
	return nil
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func prefixesString(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "nothing"
	}
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		s += p.String()
	}
	return s
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
