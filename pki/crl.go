package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// CRL is a parsed certificate revocation list.
type CRL struct {
	Raw  []byte // DER
	List *x509.RevocationList
}

// ParseCRL parses a CRL, PEM ("X509 CRL") or DER. It checks that the list
// is signed with Ed25519, not by whom: NewTrust does that.
func ParseCRL(data []byte) (*CRL, error) {
	der := data
	if trimmed := bytes.TrimLeft(data, " \t\r\n"); bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		blocks, err := pemBlocks(trimmed, "X509 CRL")
		if err != nil {
			return nil, err
		}
		if len(blocks) != 1 {
			return nil, fmt.Errorf("%d CRLs in one file, want 1", len(blocks))
		}
		der = blocks[0].Bytes
	}
	der = bytes.Clone(der)
	l, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("parse CRL: %w", err)
	}
	if l.SignatureAlgorithm != x509.PureEd25519 {
		return nil, fmt.Errorf("CRL signed with %v, want Ed25519", l.SignatureAlgorithm)
	}
	if l.Number == nil {
		return nil, errors.New("CRL without a CRL number")
	}
	return &CRL{Raw: der, List: l}, nil
}

// ReadCRL reads a CRL file, PEM or DER.
func ReadCRL(path string) (*CRL, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	l, err := ParseCRL(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

// PEM is the CRL as a PEM "X509 CRL" block.
func (l *CRL) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: l.Raw})
}
