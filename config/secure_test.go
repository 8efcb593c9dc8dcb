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
	s, _, _, err := Parse(append(bare, "--encrypt", "--gossip-key-file", key,
		"--peer", "name=k,subnet=10.244.9.0/24,ip=192.0.2.9,encrypt=false"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Encrypt || s.EncryptCipher != seal.DefaultCipher() || s.RekeyAfter != 2*time.Minute || !s.Live.Peers[0].Plaintext {
		t.Errorf("settings %+v", s)
	}
	s, _, _, err = Parse(append(bare, "--encrypt", "--gossip-key-file", key, "--encrypt-cipher", "chacha20-poly1305", "--encrypt-rekey-after", "5s"), io.Discard)
	if err != nil || s.EncryptCipher != seal.ChaCha20Poly1305 || s.RekeyAfter != 5*time.Second {
		t.Errorf("cipher %v rekey %v: %v", s.EncryptCipher, s.RekeyAfter, err)
	}
	cfg := filepath.Join(t.TempDir(), "weft.yaml")
	if err := os.WriteFile(cfg, []byte("encrypt: true\ngossipKeyFile: "+key+"\npeers: [{name: k, subnet: 10.244.9.0/24, ip: 192.0.2.9, encrypt: false}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, _, _, err = Parse(append(bare, "--config", cfg), io.Discard); err != nil || !s.Encrypt || !s.Live.Peers[0].Plaintext {
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
		_, _, _, err := Parse(append(bare, tc.args...), io.Discard)
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

// --encrypt with --direct-routing is refused, on the command line and in
// the file, naming both: direct routes would carry plaintext.
func TestParseEncryptRefusesDirectRouting(t *testing.T) {
	key := gossipKeyFile(t, 0o600)
	_, _, _, err := Parse(append(bare, "--encrypt", "--gossip-key-file", key, "--direct-routing"), io.Discard)
	var ue *UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--encrypt with --direct-routing") || !strings.Contains(err.Error(), "cannot encrypt") {
		t.Errorf("--encrypt --direct-routing: %v, want a usage error naming both", err)
	}
	cfg := filepath.Join(t.TempDir(), "weft.yaml")
	if err := os.WriteFile(cfg, []byte("encrypt: true\ndirectRouting: true\ngossipKeyFile: "+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = Parse(append(bare, "--config", cfg), io.Discard)
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "encrypt (in "+cfg+") with directRouting (in "+cfg+")") {
		t.Errorf("encrypt and directRouting in the file: %v, want a usage error naming both keys", err)
	}
	// One from each: each named where it came from.
	if err := os.WriteFile(cfg, []byte("directRouting: true\ngossipKeyFile: "+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = Parse(append(bare, "--config", cfg, "--encrypt"), io.Discard)
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--encrypt with directRouting (in "+cfg+")") {
		t.Errorf("--encrypt over directRouting in the file: %v", err)
	}
	// Each alone is fine.
	if _, _, _, err := Parse(append(bare, "--gossip-key-file", key, "--direct-routing"), io.Discard); err != nil {
		t.Errorf("--direct-routing alone: %v", err)
	}
}

// The gossip key is required: without one (and without --insecure-gossip)
// weft run refuses, saying how to make one; the file is always checked
// (regular, ours, 0600), with or without --encrypt, its path named.
func TestGossipKeyRequired(t *testing.T) {
	_, _, _, err := Parse(bare, io.Discard)
	var ue *UsageError
	if !errors.As(err, &ue) {
		t.Fatalf("no gossip key: %v, want a usage error", err)
	}
	for _, w := range []string{"missing --gossip-key-file", "weft keygen > /etc/weft/gossip.key", "chmod 600 /etc/weft/gossip.key", "same file to every host", "--insecure-gossip"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("no gossip key: %q does not say %q", err, w)
		}
	}
	if _, _, _, err := Parse(append(bare, "--check"), io.Discard); !errors.As(err, &ue) {
		t.Errorf("--check without a gossip key: %v, want a usage error", err)
	}
	// --cleanup (ExecStopPost) needs no key.
	if _, _, cleanup, err := Parse([]string{"--cleanup"}, io.Discard); err != nil || !cleanup {
		t.Errorf("--cleanup without a gossip key: %v", err)
	}
	// From the file: the key named as a key.
	cfg := filepath.Join(t.TempDir(), "weft.yaml")
	if err := os.WriteFile(cfg, []byte("name: a\nnetwork: 10.244.0.0/16\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Parse([]string{"--config", cfg}, io.Discard); err == nil || !strings.Contains(err.Error(), "missing gossipKeyFile (in "+cfg+")") {
		t.Errorf("no key in the file: %v", err)
	}
	if err := os.WriteFile(cfg, []byte("name: a\nnetwork: 10.244.0.0/16\ninsecureGossip: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _, _, err := Parse([]string{"--config", cfg}, io.Discard)
	if err != nil || !s.InsecureGossip || len(s.Live.GossipKeys) != 0 {
		t.Errorf("insecureGossip: true: %v %v", s.InsecureGossip, err)
	}

	key := gossipKeyFile(t, 0o600)
	s, _, _, err = Parse(append(bare, "--gossip-key-file", key), io.Discard)
	if err != nil || s.InsecureGossip || len(s.Live.GossipKeys) != 1 {
		t.Errorf("with a key: insecure %v, %d keys, %v", s.InsecureGossip, len(s.Live.GossipKeys), err)
	}
	if _, _, _, err := Parse(append(bare, "--gossip-key-file", key, "--insecure-gossip"), io.Discard); !errors.As(err, &ue) ||
		!strings.Contains(err.Error(), "--gossip-key-file and --insecure-gossip") {
		t.Errorf("a key and --insecure-gossip: %v, want a usage error naming both", err)
	}
	// A later --gossip-key-file wins (weftrun's default, a test's own).
	other := gossipKeyFile(t, 0o600)
	if err := os.WriteFile(other, []byte("AAECAwQFBgcICQoLDA0ODw==\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, _, _, err = Parse(append(bare, "--gossip-key-file", key, "--gossip-key-file", other), io.Discard); err != nil || len(s.Live.GossipKeys[0]) != 16 {
		t.Errorf("the later --gossip-key-file: %v", err)
	}

	open := gossipKeyFile(t, 0o640)
	dir := t.TempDir()
	for _, tc := range []struct {
		path string
		want []string
	}{
		{open, []string{`invalid --gossip-key-file "` + open + `"`, open, "mode 0640, want 0600", "chmod 600 " + open}},
		{dir, []string{`invalid --gossip-key-file "` + dir + `"`, "not a regular file"}},
	} {
		_, _, _, err := Parse(append(bare, "--gossip-key-file", tc.path), io.Discard)
		if !errors.As(err, &ue) {
			t.Errorf("%s: %v, want a usage error", tc.path, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", tc.path, err, w)
			}
		}
	}
}
