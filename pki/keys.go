package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/weftnet/weft/internal/keyfile"
)

// GenerateKey makes a new Ed25519 key pair.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate Ed25519 key: %w", err)
	}
	return k, nil
}

// ReadKey reads an Ed25519 private key from a PEM PKCS#8 "PRIVATE KEY"
// file, which must pass keyfile.Check (a regular file of ours that nobody
// else may read or write).
func ReadKey(path string) (ed25519.PrivateKey, error) {
	data, err := keyfile.Read(path)
	if err != nil {
		return nil, err
	}
	k, err := parseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func parseKeyPEM(data []byte) (ed25519.PrivateKey, error) {
	blocks, err := pemBlocks(data, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 {
		return nil, fmt.Errorf("%d private keys, want 1", len(blocks))
	}
	key, err := x509.ParsePKCS8PrivateKey(blocks[0].Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#8 private key: %w", err)
	}
	k, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, want an Ed25519 private key", key)
	}
	return k, nil
}

// WriteKey writes k as a PEM PKCS#8 "PRIVATE KEY" file, mode 0600, through
// keyfile.WriteAtomic. It refuses to replace a file that exists (the error
// wraps fs.ErrExist): a key is never overwritten by accident.
func WriteKey(path string, k ed25519.PrivateKey) error {
	if len(k) != ed25519.PrivateKeySize {
		return fmt.Errorf("write %s: not an Ed25519 private key (%d bytes)", path, len(k))
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := keyfile.WriteAtomic(path, data, true); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ReadPublicKey reads an Ed25519 public key from a PEM PKIX "PUBLIC KEY"
// file.
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := parsePublicKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func parsePublicKeyPEM(data []byte) (ed25519.PublicKey, error) {
	blocks, err := pemBlocks(data, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 {
		return nil, fmt.Errorf("%d public keys, want 1", len(blocks))
	}
	key, err := x509.ParsePKIXPublicKey(blocks[0].Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	k, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T, want an Ed25519 public key", key)
	}
	return k, nil
}

// WritePublicKey writes k as a PEM PKIX "PUBLIC KEY" file, mode 0644. Like
// WriteKey it refuses to replace a file that exists.
func WritePublicKey(path string, k ed25519.PublicKey) error {
	if len(k) != ed25519.PublicKeySize {
		return fmt.Errorf("write %s: not an Ed25519 public key (%d bytes)", path, len(k))
	}
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return writePublicFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), false)
}

// writePublicFile writes data to path, mode 0644, atomically (see
// keyfile.WriteAtomic); it replaces a file that exists only if replace.
func writePublicFile(path string, data []byte, replace bool) error {
	if err := keyfile.WriteAtomic(path, data, !replace); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		err = fmt.Errorf("write %s: %w", path, err)
		if !replace { // the file is ours alone: take it back
			err = errors.Join(err, os.Remove(path))
		}
		return err
	}
	return nil
}

// WriteCertFile writes certificates to a PEM file, mode 0644, atomically;
// it refuses to replace a file that exists (the error wraps fs.ErrExist).
func WriteCertFile(path string, certs ...*Cert) error {
	if len(certs) == 0 {
		return fmt.Errorf("write %s: no certificate", path)
	}
	var data []byte
	for _, c := range certs {
		data = append(data, c.PEM()...)
	}
	return writePublicFile(path, data, false)
}

// WriteCRLFile writes a CRL to a PEM file, mode 0644, atomically, replacing
// the file if it exists (a CRL is re-issued in place).
func WriteCRLFile(path string, l *CRL) error {
	return writePublicFile(path, l.PEM(), true)
}
