package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	k := mustKey(t)
	keyPath, pubPath := filepath.Join(dir, "h.key"), filepath.Join(dir, "h.pub")
	if err := WriteKey(keyPath, k); err != nil {
		t.Fatal(err)
	}
	if err := WritePublicKey(pubPath, pubOf(k)); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{keyPath: 0o600, pubPath: 0o644} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, %v; want %04o", p, fi.Mode().Perm(), err, mode)
		}
	}
	got, err := ReadKey(keyPath)
	if err != nil || !got.Equal(k) {
		t.Errorf("ReadKey: %v", err)
	}
	pub, err := ReadPublicKey(pubPath)
	if err != nil || !pub.Equal(pubOf(k)) {
		t.Errorf("ReadPublicKey: %v", err)
	}
	// Neither is overwritten.
	if err := WriteKey(keyPath, mustKey(t)); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteKey over a key: %v, want ErrExist", err)
	}
	if err := WritePublicKey(pubPath, pubOf(mustKey(t))); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WritePublicKey over a key: %v, want ErrExist", err)
	}
	if again, _ := ReadKey(keyPath); !again.Equal(k) {
		t.Error("a refused WriteKey changed the key")
	}
}

func TestReadKeyRefuses(t *testing.T) {
	dir := t.TempDir()
	k := mustKey(t)
	good := filepath.Join(dir, "good.key")
	if err := WriteKey(good, k); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
		mode os.FileMode
		want string
	}{
		{"mode 0644", data, 0o644, "mode 0644, want 0600"},
		{"group-readable", data, 0o640, "mode 0640"},
		{"ECDSA key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}), 0o600, "want an Ed25519 private key"},
		{"two keys", append(append([]byte{}, data...), data...), 0o600, "2 private keys"},
		{"public key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}), 0o600, `want "PRIVATE KEY"`},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}}), 0o600, "parse PKCS#8"},
		{"empty", nil, 0o600, "no \"PRIVATE KEY\" PEM block"},
	}
	for _, tt := range tests {
		p := filepath.Join(dir, tt.name)
		if err := os.WriteFile(p, tt.data, tt.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, tt.mode); err != nil { // past the umask
			t.Fatal(err)
		}
		_, err := ReadKey(p)
		wantErr(t, tt.name, err, tt.want)
		if err != nil && !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not name the file", tt.name, err)
		}
	}
	if _, err := ReadKey(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing key: %v", err)
	}
	if _, err := ReadPublicKey(good); err == nil {
		t.Error("ReadPublicKey read a private key")
	}
	if err := WriteKey(filepath.Join(dir, "short"), k[:5]); err == nil {
		t.Error("WriteKey wrote a 5-byte key")
	}
}
