package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/seal"
)

func gossipKeyFile(t *testing.T, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(p, []byte("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseEncrypt(t *testing.T) {
	key := gossipKeyFile(t, 0o600)
	s, _, _, err := Parse(append(base, "--encrypt", "--gossip-key-file", key,
		"--peer", "name=k,subnet=10.244.9.0/24,ip=192.0.2.9,encrypt=false"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Encrypt || s.EncryptCipher != seal.DefaultCipher() || s.RekeyAfter != 2*time.Minute || !s.Live.Peers[0].Plaintext {
		t.Errorf("settings %+v", s)
	}
	s, _, _, err = Parse(append(base, "--encrypt", "--gossip-key-file", key, "--encrypt-cipher", "chacha20-poly1305", "--encrypt-rekey-after", "5s"), io.Discard)
	if err != nil || s.EncryptCipher != seal.ChaCha20Poly1305 || s.RekeyAfter != 5*time.Second {
		t.Errorf("cipher %v rekey %v: %v", s.EncryptCipher, s.RekeyAfter, err)
	}
	cfg := filepath.Join(t.TempDir(), "weft.yaml")
	if err := os.WriteFile(cfg, []byte("encrypt: true\ngossipKeyFile: "+key+"\npeers: [{name: k, subnet: 10.244.9.0/24, ip: 192.0.2.9, encrypt: false}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, _, _, err = Parse(append(base, "--config", cfg), io.Discard); err != nil || !s.Encrypt || !s.Live.Peers[0].Plaintext {
		t.Errorf("from the file: %+v, %v", s, err)
	}
}

func TestParseEncryptErrors(t *testing.T) {
	key := gossipKeyFile(t, 0o600)
	open := gossipKeyFile(t, 0o644)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--encrypt"}, []string{"--encrypt", "--gossip-key-file"}},
		{[]string{"--encrypt", "--gossip-key-file", open}, []string{"--gossip-key-file", open, "0644"}},
		{[]string{"--encrypt", "--gossip-key-file", key, "--encap", "none"}, []string{"--encrypt", "--encap"}},
		{[]string{"--encrypt", "--gossip-key-file", key, "--peer", "name=k,subnet=10.244.9.0/24,ip=192.0.2.9"}, []string{"--peer", "encrypt=false"}},
		{[]string{"--gossip-key-file", key, "--peer", "name=k,subnet=10.244.9.0/24,ip=192.0.2.9,encrypt=true"}, []string{"--peer", "--encrypt"}},
		{[]string{"--encrypt", "--gossip-key-file", key, "--encrypt-cipher", "rot13"}, []string{"--encrypt-cipher", "rot13"}},
		{[]string{"--encrypt", "--gossip-key-file", key, "--encrypt-rekey-after", "1ms"}, []string{"--encrypt-rekey-after", "1ms"}},
		{[]string{"--encrypt-rekey-after", "5s"}, []string{"--encrypt-rekey-after", "--encrypt"}},
		{[]string{"--peer", "name=k,subnet=10.244.9.0/24,ip=192.0.2.9,encrypt=maybe"}, []string{"encrypt"}},
	} {
		_, _, _, err := Parse(append(base, tc.args...), io.Discard)
		var ue *UsageError
		if err == nil || !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", tc.args, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %q does not name %q", tc.args, err, w)
			}
		}
	}
}
