package pki

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Trust is what a host trusts: CAs (several at once, for rotation) and
// their revocation lists. It is immutable and safe for concurrent use.
type Trust struct {
	cas []*Cert
	// revoked maps a CA's fingerprint to the serial numbers (decimal) its
	// CRLs revoke, with the revocation time.
	revoked map[[32]byte]map[string]time.Time
}

// NewTrust trusts cas, each of which must be a CA certificate, and the
// revocation lists crls, each of which must be signed by one of cas. A CRL
// past its NextUpdate still counts (see the package doc).
func NewTrust(cas []*Cert, crls []*CRL) (*Trust, error) {
	if len(cas) == 0 {
		return nil, errors.New("trust: no CA certificate")
	}
	t := &Trust{revoked: map[[32]byte]map[string]time.Time{}}
	for i, c := range cas {
		if c == nil {
			return nil, fmt.Errorf("trust: CA certificate %d is missing", i+1)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("trust: certificate %d (%q) is not a CA certificate", i+1, c.Name)
		}
		if !slices.ContainsFunc(t.cas, func(o *Cert) bool { return o.Fingerprint == c.Fingerprint }) {
			t.cas = append(t.cas, c)
		}
	}
	for i, l := range crls {
		if l == nil {
			return nil, fmt.Errorf("trust: CRL %d is missing", i+1)
		}
		signed := false
		for _, ca := range t.cas {
			if !bytes.Equal(l.List.RawIssuer, ca.X509.RawSubject) || l.List.CheckSignatureFrom(ca.X509) != nil {
				continue
			}
			signed = true
			m := t.revoked[ca.Fingerprint]
			if m == nil {
				m = map[string]time.Time{}
				t.revoked[ca.Fingerprint] = m
			}
			for _, e := range l.List.RevokedCertificateEntries {
				if e.SerialNumber != nil {
					m[e.SerialNumber.String()] = e.RevocationTime
				}
			}
		}
		if !signed {
			return nil, fmt.Errorf("trust: CRL %d (issuer %q, number %v) is not signed by any trusted CA", i+1, l.List.Issuer.CommonName, l.List.Number)
		}
	}
	return t, nil
}

// CAs returns the trusted CA certificates.
func (t *Trust) CAs() []*Cert { return slices.Clone(t.cas) }

// Reason says why a certificate is not trusted.
type Reason string

// Reasons of a VerifyError.
const (
	ReasonUntrusted Reason = "cert_untrusted" // no trusted CA signed it (or it is a CA cert, or the CA itself is expired, or it grants outside the CA's networks)
	ReasonExpired   Reason = "cert_expired"   // now outside [NotBefore, NotAfter] (also "not yet valid": Error() says which)
	ReasonRevoked   Reason = "cert_revoked"
)

// VerifyError is why Trust.Verify refused a certificate.
type VerifyError struct {
	Reason Reason
	Detail string
}

func (e *VerifyError) Error() string { return string(e.Reason) + ": " + e.Detail }

// Verify checks a host certificate at now: signed by a trusted CA that is
// itself valid at now and whose networks hold every subnet and pool the
// certificate grants, not revoked by that CA's CRLs, and within its own
// validity period. It returns nil or a *VerifyError.
func (t *Trust) Verify(c *Cert, now time.Time) error {
	if c == nil || c.X509 == nil {
		return &VerifyError{ReasonUntrusted, "no certificate"}
	}
	if c.IsCA {
		return &VerifyError{ReasonUntrusted, fmt.Sprintf("%q is a CA certificate, not a host's", c.Name)}
	}
	// Two trusted CA certificates may share a name and key (a CA re-made
	// with other networks): the signer is one that is in date and whose
	// networks hold the grants.
	var signer, outOfDate, tooNarrow *Cert
	for _, ca := range t.cas {
		if !bytes.Equal(c.X509.RawIssuer, ca.X509.RawSubject) || c.X509.CheckSignatureFrom(ca.X509) != nil {
			continue
		}
		if now.Before(ca.NotBefore) || now.After(ca.NotAfter) {
			outOfDate = ca
			continue
		}
		if kind, _ := outsideNetworks(ca, c.Subnets, c.Pools); kind != "" {
			tooNarrow = ca
			continue
		}
		signer = ca
		break
	}
	if signer == nil {
		if ca := tooNarrow; ca != nil {
			kind, p := outsideNetworks(ca, c.Subnets, c.Pools)
			return &VerifyError{ReasonUntrusted, fmt.Sprintf("%q grants the %s %s, outside the networks of its CA %q (sha256:%x…): %s",
				c.Name, kind, p, ca.Name, ca.Fingerprint[:8], networksString(ca))}
		}
		if ca := outOfDate; ca != nil {
			when := "expired at " + ca.NotAfter.UTC().Format(time.RFC3339)
			if now.Before(ca.NotBefore) {
				when = "is not valid until " + ca.NotBefore.UTC().Format(time.RFC3339)
			}
			return &VerifyError{ReasonUntrusted, fmt.Sprintf("%q is signed by the CA %q (sha256:%x…), which %s", c.Name, ca.Name, ca.Fingerprint[:8], when)}
		}
		return &VerifyError{ReasonUntrusted, fmt.Sprintf("%q (issuer %q) is not signed by any trusted CA", c.Name, c.X509.Issuer.CommonName)}
	}
	if at, ok := t.revoked[signer.Fingerprint][c.X509.SerialNumber.String()]; ok {
		return &VerifyError{ReasonRevoked, fmt.Sprintf("%q (serial %x) was revoked by the CA %q at %s",
			c.Name, c.X509.SerialNumber, signer.Name, at.UTC().Format(time.RFC3339))}
	}
	switch {
	case now.Before(c.NotBefore):
		return &VerifyError{ReasonExpired, fmt.Sprintf("%q is not yet valid: valid from %s (in %s)",
			c.Name, c.NotBefore.UTC().Format(time.RFC3339), wordDuration(c.NotBefore.Sub(now)))}
	case now.After(c.NotAfter):
		return &VerifyError{ReasonExpired, fmt.Sprintf("%q expired at %s (%s ago)",
			c.Name, c.NotAfter.UTC().Format(time.RFC3339), wordDuration(now.Sub(c.NotAfter)))}
	}
	return nil
}
