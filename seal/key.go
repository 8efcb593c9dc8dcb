package seal

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyFileName is the static key's file in the state directory.
const KeyFileName = "data.key"

// KeyLen is the length of an X25519 key.
const KeyLen = 32

// PublicKey is a host's static X25519 public key, as carried in gossip
// metadata.
type PublicKey [KeyLen]byte

// IsZero reports whether k is unset.
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

func (k PublicKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// KeyPair is a host's static X25519 key pair.
type KeyPair struct {
	Private [KeyLen]byte
	Public  PublicKey
}

// GenerateKey returns a new random key pair.
func GenerateKey() (KeyPair, error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate X25519 key: %w", err)
	}
	return pairOf(k), nil
}

func pairOf(k *ecdh.PrivateKey) KeyPair {
	var kp KeyPair
	copy(kp.Private[:], k.Bytes())
	copy(kp.Public[:], k.PublicKey().Bytes())
	return kp
}

// KeyFromPrivate derives the key pair of a private key.
func KeyFromPrivate(priv []byte) (KeyPair, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return KeyPair{}, fmt.Errorf("X25519 private key: %w", err)
	}
	return pairOf(k), nil
}

// LoadOrCreateKey reads the static key from dir/data.key, or creates it
// there (mode 0600, the directory 0700 if it is new) when it does not exist
// yet; created says which. A file that cannot be read, is not a key, or is
// readable or writable by anyone but its owner is refused with its path
// named.
func LoadOrCreateKey(dir string) (kp KeyPair, path string, created bool, err error) {
	path = filepath.Join(dir, KeyFileName)
	kp, err = loadKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return kp, path, false, err
	}
	if kp, err = GenerateKey(); err != nil {
		return kp, path, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return kp, path, false, fmt.Errorf("data-plane key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return kp, path, false, fmt.Errorf("data-plane key: %w", err)
	}
	line := base64.StdEncoding.EncodeToString(kp.Private[:]) + "\n"
	_, werr := f.WriteString(line)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(path)
		return kp, path, false, fmt.Errorf("data-plane key %s: %w", path, err)
	}
	return kp, path, true, nil
}

func loadKey(path string) (KeyPair, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return KeyPair{}, fmt.Errorf("data-plane key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return KeyPair{}, fmt.Errorf("data-plane key %s: not a regular file", path)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return KeyPair{}, fmt.Errorf("data-plane key %s: mode %04o, want 0600 (chmod 600 %s)", path, m, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return KeyPair{}, fmt.Errorf("data-plane key: %w", err)
	}
	priv, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil || len(priv) != KeyLen {
		return KeyPair{}, fmt.Errorf("data-plane key %s: not a base64 X25519 private key (remove it to make a new one)", path)
	}
	kp, err := KeyFromPrivate(priv)
	if err != nil {
		return kp, fmt.Errorf("data-plane key %s: %w", path, err)
	}
	return kp, nil
}
