package pki

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Files of a CA directory (weft ca init --dir).
const (
	CACertFile = "ca.crt" // PEM
	CAKeyFile  = "ca.key" // PEM PKCS#8, 0600
	CRLFile    = "ca.crl" // PEM X509 CRL
)

// Limits of the profile (see the package doc).
const (
	maxGrants   = 16
	maxNameLen  = 128
	maxGroups   = 32
	maxGroupLen = 64
)

var (
	// oidIPAddrBlocks is id-pe-ipAddrBlocks (RFC 3779 section 2.2.1).
	oidIPAddrBlocks = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 7}
	// oidWeftPools is weft's pool extension: the documentation enterprise
	// number 32473 (RFC 5612), "weft" in ASCII, 1. See the package doc.
	oidWeftPools = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 119, 101, 102, 116, 1}

	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidCommonName       = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidOrgUnit          = asn1.ObjectIdentifier{2, 5, 4, 11}
)

// Cert is a parsed weft certificate: a host's or a CA's.
type Cert struct {
	Raw     []byte // DER
	X509    *x509.Certificate
	Name    string         // CommonName
	Subnets []netip.Prefix // a host's granted subnets (RFC 3779), canonical, IPv4 first
	Pools   []netip.Prefix // a host's granted pools (weft extension), canonical, IPv4 first
	// Networks is a CA's address blocks (RFC 3779): the space its hosts'
	// subnets and pools must lie in, canonical, IPv4 first, at most one
	// per family. A family without a block grants nothing in it. A CA
	// certificate without blocks (made before CAs carried them) grants
	// everything, and Networks is then 0.0.0.0/0 and ::/0. Nil for a
	// host.
	Networks            []netip.Prefix
	Groups              []string
	PublicKey           ed25519.PublicKey
	NotBefore, NotAfter time.Time
	IsCA                bool
	Fingerprint         [32]byte // SHA-256 of Raw
}

// ParseCert parses a DER certificate and checks that it keeps to weft's
// profile (see the package doc). It checks no signature and no time: that
// is Trust.Verify's work.
func ParseCert(der []byte) (*Cert, error) {
	der = bytes.Clone(der)
	x, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	c, err := fromX509(x)
	if err != nil {
		name := x.Subject.CommonName
		if !validText(name, maxNameLen) {
			name = fmt.Sprintf("serial %x", x.SerialNumber)
		}
		return nil, fmt.Errorf("certificate %q: %w", name, err)
	}
	return c, nil
}

func fromX509(x *x509.Certificate) (*Cert, error) {
	if x.Version != 3 {
		return nil, fmt.Errorf("X.509 version %d, want 3", x.Version)
	}
	if x.PublicKeyAlgorithm != x509.Ed25519 {
		return nil, fmt.Errorf("%v key, want Ed25519", x.PublicKeyAlgorithm)
	}
	if x.SignatureAlgorithm != x509.PureEd25519 {
		return nil, fmt.Errorf("signature algorithm %v, want Ed25519", x.SignatureAlgorithm)
	}
	pub, ok := x.PublicKey.(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("malformed Ed25519 public key")
	}
	if x.SerialNumber == nil || x.SerialNumber.Sign() <= 0 {
		return nil, errors.New("serial number is not positive")
	}
	if !x.NotAfter.After(x.NotBefore) {
		return nil, fmt.Errorf("validity ends (%s) before it starts (%s)", x.NotAfter, x.NotBefore)
	}
	c := &Cert{
		Raw:         x.Raw,
		X509:        x,
		PublicKey:   pub,
		NotBefore:   x.NotBefore,
		NotAfter:    x.NotAfter,
		IsCA:        x.BasicConstraintsValid && x.IsCA,
		Fingerprint: sha256.Sum256(x.Raw),
	}
	if err := parseSubject(x, c); err != nil {
		return nil, err
	}
	if err := parseExtensions(x, c); err != nil {
		return nil, err
	}
	if c.IsCA {
		return c, checkCAProfile(x, c)
	}
	return c, checkHostProfile(x, c)
}

// parseSubject reads the name and groups: one CommonName, any number of
// OrganizationalUnits, nothing else.
func parseSubject(x *x509.Certificate, c *Cert) error {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(x.RawSubject, &rdns); err != nil || len(rest) > 0 {
		return errors.New("malformed subject")
	}
	cns := 0
	for _, rdn := range rdns {
		if len(rdn) != 1 {
			return fmt.Errorf("subject has a multi-valued RDN (%d attributes), want one attribute each", len(rdn))
		}
		switch atv := rdn[0]; {
		case atv.Type.Equal(oidCommonName):
			cns++
		case atv.Type.Equal(oidOrgUnit):
		default:
			return fmt.Errorf("subject attribute %v: weft certificates hold only CN (name) and OU (groups)", atv.Type)
		}
	}
	if cns != 1 {
		return fmt.Errorf("subject has %d common names, want 1", cns)
	}
	if err := CheckName(x.Subject.CommonName); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if err := CheckGroups(x.Subject.OrganizationalUnit); err != nil {
		return err
	}
	c.Name = x.Subject.CommonName
	c.Groups = slices.Clone(x.Subject.OrganizationalUnit)
	return nil
}

// parseExtensions decodes the address blocks (a host's subnets, a CA's
// networks) and pools, and marks the RFC 3779 extension handled (see the
// package doc): any other critical extension Go's x509 does not know is
// refused.
func parseExtensions(x *x509.Certificate, c *Cert) error {
	blocksName := "subnets"
	if c.IsCA {
		blocksName = "networks"
	}
	for _, e := range x.Extensions {
		var err error
		switch {
		case e.Id.Equal(oidIPAddrBlocks):
			if !e.Critical {
				return errors.New("IP address delegation extension (RFC 3779) is not critical")
			}
			var blocks []netip.Prefix
			if blocks, err = decodeGrants(e.Value); err != nil {
				return fmt.Errorf("%s (RFC 3779 extension): %w", blocksName, err)
			}
			if c.IsCA {
				c.Networks = blocks
			} else {
				c.Subnets = blocks
			}
		case e.Id.Equal(oidWeftPools):
			if e.Critical {
				return errors.New("pool extension is critical, want non-critical")
			}
			if c.Pools, err = decodeGrants(e.Value); err != nil {
				return fmt.Errorf("pools (weft extension %v): %w", oidWeftPools, err)
			}
		}
	}
	x.UnhandledCriticalExtensions = slices.DeleteFunc(x.UnhandledCriticalExtensions, func(id asn1.ObjectIdentifier) bool {
		return id.Equal(oidIPAddrBlocks)
	})
	if len(x.UnhandledCriticalExtensions) > 0 {
		return fmt.Errorf("unsupported critical extension %v", x.UnhandledCriticalExtensions[0])
	}
	return nil
}

func checkCAProfile(x *x509.Certificate, c *Cert) error {
	if !basicConstraintsCritical(x) {
		return errors.New("CA certificate whose basic constraints are not critical")
	}
	if x.MaxPathLen != 0 || !x.MaxPathLenZero {
		return fmt.Errorf("CA certificate with path length %d, want 0 (weft CAs sign hosts directly)", x.MaxPathLen)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; x.KeyUsage != want {
		return fmt.Errorf("CA certificate with key usage %#x, want certificate and CRL signing (%#x)", x.KeyUsage, want)
	}
	if len(x.SubjectKeyId) == 0 {
		return errors.New("CA certificate without a subject key identifier")
	}
	if len(c.Pools) > 0 {
		return errors.New("CA certificate with pools (a CA's space is its RFC 3779 networks)")
	}
	if !hasExtension(x, oidIPAddrBlocks) {
		c.Networks = allNetworks() // made before CAs carried blocks: grants everything
		return nil
	}
	return checkNetworks(c.Networks)
}

// allNetworks is all of IPv4 and IPv6: a CA's networks by default.
func allNetworks() []netip.Prefix {
	return []netip.Prefix{netip.PrefixFrom(netip.IPv4Unspecified(), 0), netip.PrefixFrom(netip.IPv6Unspecified(), 0)}
}

// checkNetworks applies the rules of a CA's canonical networks: at least
// one, at most one per family.
func checkNetworks(networks []netip.Prefix) error {
	if len(networks) == 0 {
		return errors.New("no network: a CA certificate's address blocks must hold at least one")
	}
	for i := 1; i < len(networks); i++ {
		if networks[i-1].Addr().Is4() == networks[i].Addr().Is4() {
			return fmt.Errorf("networks %s and %s: at most one network per address family", networks[i-1], networks[i])
		}
	}
	return nil
}

// CheckNetworks checks a CA's networks as NewCAFor takes them: valid CIDR
// prefixes without host bits, zones or IPv4-mapped IPv6 addresses, at most
// one per family. Nil or empty is fine (all of IPv4 and IPv6).
func CheckNetworks(networks []netip.Prefix) error {
	if len(networks) == 0 {
		return nil
	}
	canon, err := canonicalPrefixes("network", networks)
	if err != nil {
		return err
	}
	return checkNetworks(canon)
}

func hasExtension(x *x509.Certificate, id asn1.ObjectIdentifier) bool {
	return slices.ContainsFunc(x.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(id) })
}

func checkHostProfile(x *x509.Certificate, c *Cert) error {
	if x.KeyUsage != x509.KeyUsageDigitalSignature {
		return fmt.Errorf("host certificate with key usage %#x, want digital signature alone (%#x)", x.KeyUsage, x509.KeyUsageDigitalSignature)
	}
	return checkGrants(c.Subnets, c.Pools)
}

// checkGrants applies the grant rules: at least one, at most maxGrants, at
// most one subnet per family.
func checkGrants(subnets, pools []netip.Prefix) error {
	n := len(subnets) + len(pools)
	if n == 0 {
		return errors.New("no subnet and no pool: a host certificate must grant at least one")
	}
	if n > maxGrants {
		return fmt.Errorf("%d subnets and pools, at most %d", n, maxGrants)
	}
	for i := 1; i < len(subnets); i++ {
		if subnets[i-1].Addr().Is4() == subnets[i].Addr().Is4() {
			return fmt.Errorf("subnets %s and %s: at most one subnet per address family", subnets[i-1], subnets[i])
		}
	}
	return nil
}

func basicConstraintsCritical(x *x509.Certificate) bool {
	for _, e := range x.Extensions {
		if e.Id.Equal(oidBasicConstraints) {
			return e.Critical
		}
	}
	return false
}

// validText reports whether s is 1 to max bytes of UTF-8 without control
// characters.
func validText(s string, max int) bool {
	return checkText(s, max) == nil
}

func checkText(s string, max int) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > max:
		return fmt.Errorf("%d bytes, at most %d", len(s), max)
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%q holds the control character %U", s, r)
		}
	}
	return nil
}

// CheckName checks a host's or CA's name (the CommonName): 1 to 128 bytes
// of UTF-8 without control characters.
func CheckName(name string) error {
	return checkText(name, maxNameLen)
}

// CheckGroups checks a list of groups (the OrganizationalUnits): at most
// 32, each 1 to 64 bytes of UTF-8 without control characters, commas or
// surrounding spaces, none twice.
func CheckGroups(groups []string) error {
	if len(groups) > maxGroups {
		return fmt.Errorf("%d groups, at most %d", len(groups), maxGroups)
	}
	seen := make(map[string]bool, len(groups))
	for _, g := range groups {
		if err := checkText(g, maxGroupLen); err != nil {
			return fmt.Errorf("group: %w", err)
		}
		if strings.ContainsRune(g, ',') || strings.TrimSpace(g) != g {
			return fmt.Errorf("group %q: no commas and no surrounding spaces", g)
		}
		if seen[g] {
			return fmt.Errorf("group %q appears twice", g)
		}
		seen[g] = true
	}
	return nil
}

// ParsePEM parses one or more PEM "CERTIFICATE" blocks. Anything else in
// data but white space between the blocks is an error, and so is no block.
func ParsePEM(data []byte) ([]*Cert, error) {
	blocks, err := pemBlocks(data, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	certs := make([]*Cert, 0, len(blocks))
	for i, b := range blocks {
		c, err := ParseCert(b.Bytes)
		if err != nil {
			if len(blocks) > 1 {
				return nil, fmt.Errorf("PEM block %d: %w", i+1, err)
			}
			return nil, err
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// pemBlocks splits data into PEM blocks of the one type it wants, refusing
// other types, headers, and anything but white space around the blocks.
func pemBlocks(data []byte, typ string) ([]*pem.Block, error) {
	var out []*pem.Block
	rest := data
	for {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) == 0 {
			break
		}
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("data that is not PEM after block %d", len(out))
		}
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("malformed PEM block %d", len(out)+1)
		}
		if b.Type != typ {
			return nil, fmt.Errorf("PEM block %d is %q, want %q", len(out)+1, b.Type, typ)
		}
		if len(b.Headers) > 0 {
			return nil, fmt.Errorf("PEM block %d has headers", len(out)+1)
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no %q PEM block", typ)
	}
	return out, nil
}

// ReadCerts reads a PEM file of one or more certificates.
func ReadCerts(path string) ([]*Cert, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := ParsePEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// PEM is the certificate as a PEM "CERTIFICATE" block.
func (c *Cert) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// Grants reports whether sub lies wholly inside one granted subnet or pool
// of its family. An invalid sub is granted nothing; host bits in sub are
// ignored.
func (c *Cert) Grants(sub netip.Prefix) bool {
	return within(sub, c.Subnets) || within(sub, c.Pools)
}

// MayGrant reports whether a CA certificate's networks hold sub wholly,
// that is whether the CA may grant it to a host as a subnet or pool. A
// host certificate may grant nothing; an invalid sub is never granted;
// host bits in sub are ignored.
func (c *Cert) MayGrant(sub netip.Prefix) bool {
	return c.IsCA && within(sub, c.Networks)
}

// within reports whether sub lies wholly inside one of ps (of its family).
func within(sub netip.Prefix, ps []netip.Prefix) bool {
	if !sub.IsValid() {
		return false
	}
	sub = sub.Masked()
	for _, p := range ps {
		if p.Addr().Is4() == sub.Addr().Is4() && p.Bits() <= sub.Bits() && p.Contains(sub.Addr()) {
			return true
		}
	}
	return false
}

// outsideNetworks returns the first of subnets and pools that the CA
// certificate ca may not grant ("subnet" or "pool", and the prefix), or ""
// if it may grant them all.
func outsideNetworks(ca *Cert, subnets, pools []netip.Prefix) (string, netip.Prefix) {
	for _, p := range subnets {
		if !ca.MayGrant(p) {
			return "subnet", p
		}
	}
	for _, p := range pools {
		if !ca.MayGrant(p) {
			return "pool", p
		}
	}
	return "", netip.Prefix{}
}

// networksString words a CA's networks for an error or Describe.
func networksString(ca *Cert) string {
	if len(ca.Networks) == 0 {
		return "none"
	}
	return prefixList(ca.Networks)
}

// MatchesKey reports whether k is the private key of the certificate's
// public key.
func (c *Cert) MatchesKey(k ed25519.PrivateKey) bool {
	if len(k) != ed25519.PrivateKeySize {
		return false
	}
	pub, ok := k.Public().(ed25519.PublicKey)
	return ok && bytes.Equal(pub, c.PublicKey)
}

// Describe is the certificate in words, one fact a line, for `weft cert
// show`; now words the validity ("expires in 364 days").
func (c *Cert) Describe(now time.Time) string {
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "  %-12s %s\n", k+":", v) }
	kind := "host certificate"
	if c.IsCA {
		kind = "certificate authority"
	}
	fmt.Fprintf(&b, "%s (%s)\n", c.Name, kind)
	if c.IsCA {
		nets := networksString(c)
		if !hasExtension(c.X509, oidIPAddrBlocks) {
			nets += " (the certificate carries no address blocks, so `openssl verify` refuses its hosts' certificates)"
		}
		line("networks", nets)
	} else {
		line("subnets", prefixList(c.Subnets))
		line("pools", prefixList(c.Pools))
		line("groups", orNone(strings.Join(c.Groups, ", ")))
	}
	line("issuer", c.X509.Issuer.CommonName)
	line("serial", fmt.Sprintf("%x", c.X509.SerialNumber))
	line("valid", fmt.Sprintf("%s to %s (%s)", c.NotBefore.UTC().Format(time.DateTime+" MST"), c.NotAfter.UTC().Format(time.DateTime+" MST"), c.validity(now)))
	line("public key", "ed25519 "+base64.StdEncoding.EncodeToString(c.PublicKey))
	line("fingerprint", fmt.Sprintf("sha256:%x", c.Fingerprint))
	return b.String()
}

// validity words where now stands in the validity period.
func (c *Cert) validity(now time.Time) string {
	switch {
	case now.Before(c.NotBefore):
		return "not yet valid: starts in " + wordDuration(c.NotBefore.Sub(now))
	case now.After(c.NotAfter):
		return "expired " + wordDuration(now.Sub(c.NotAfter)) + " ago"
	}
	return "expires in " + wordDuration(c.NotAfter.Sub(now))
}

// wordDuration is d in whole days, hours, minutes or seconds, rounded down.
func wordDuration(d time.Duration) string {
	unit := func(n int64, what string) string {
		if n == 1 {
			return "1 " + what
		}
		return fmt.Sprintf("%d %ss", n, what)
	}
	switch {
	case d >= 48*time.Hour:
		return unit(int64(d/(24*time.Hour)), "day")
	case d >= 2*time.Hour:
		return unit(int64(d/time.Hour), "hour")
	case d >= 2*time.Minute:
		return unit(int64(d/time.Minute), "minute")
	}
	return unit(int64(d/time.Second), "second")
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return orNone(strings.Join(s, ", "))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
