package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
)

func TestExitCodes(t *testing.T) {
	var stderr strings.Builder
	if code := weft(t.Context(), []string{"run", "--network", "10.244.0.0/33"}, io.Discard, &stderr); code != exitUsage {
		t.Errorf("bad flag exit %d, want %d", code, exitUsage)
	}
	if got := stderr.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "--network") {
		t.Errorf("stderr %q, want one line naming --network", got)
	}
	if code := weft(t.Context(), []string{"frobnicate"}, io.Discard, io.Discard); code != exitUsage {
		t.Errorf("unknown command exit %d", code)
	}
	if code := weft(t.Context(), []string{"run", "--check", "--network", "10.244.0.0/16", "--subnet", "10.244.1.0/24", "--insecure-gossip"}, io.Discard, io.Discard); code != exitOK {
		t.Errorf("--check of a valid config exit %d", code)
	}
	stderr.Reset()
	if code := weft(t.Context(), []string{"run", "--check", "--network", "10.244.0.0/16", "--subnet", "10.244.1.0/24"}, io.Discard, &stderr); code != exitUsage ||
		!strings.Contains(stderr.String(), "weft keygen > /etc/weft/gossip.key") {
		t.Errorf("--check without a gossip key: exit %d, %q; want %d and how to make a key", code, stderr.String(), exitUsage)
	}
	stderr.Reset()
	if code := weft(t.Context(), []string{"run", "--check", "--network", "10.244.0.0/16", "--insecure-gossip", "--datapath", "kernel"}, io.Discard, &stderr); code != exitUsage ||
		strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), "--datapath kernel with --encap udp") {
		t.Errorf("--datapath kernel with udp: exit %d, %q; want %d and one line naming both", code, stderr.String(), exitUsage)
	}
	if code := weft(t.Context(), []string{"status", "--socket", filepath.Join(t.TempDir(), "none.sock")}, io.Discard, io.Discard); code != exitFailure {
		t.Errorf("status without a daemon exit %d, want %d", code, exitFailure)
	}
}
