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

	"github.com/weftnet/weft/internal/keyfile"
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
// yet; created says which. The key is written atomically (a temporary file,
// synced, linked into place, the directory synced), so a crash while it is
// written leaves no partial data.key to block the next start; a leftover
// temporary file is harmless. A file that is not a regular file, belongs to
// another user than the one weft runs as, is readable or writable by group
// or others, cannot be read, or is not a key, is refused with its path
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
	line := base64.StdEncoding.EncodeToString(kp.Private[:]) + "\n"
	if err := keyfile.WriteAtomic(path, []byte(line), true); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another start made it meanwhile: that one is the key.
			kp, err = loadKey(path)
			return kp, path, false, err
		}
		return kp, path, false, fmt.Errorf("data-plane key %s: %w", path, err)
	}
	return kp, path, true, nil
}

func loadKey(path string) (KeyPair, error) {
	// keyfile names the path in its own refusals; an *fs.PathError does too.
	data, err := keyfile.Read(path)
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
