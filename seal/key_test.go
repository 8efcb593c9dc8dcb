package seal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A key file that belongs to another user is refused, with its path and
// the owner named, even with mode 0600.
func TestKeyFileOwnedByAnotherUserIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: TestKeyFileOwnedByAnotherUserIsRefused needs root to chown data.key to uid 65534; run it as root (go test -run KeyFileOwned ./seal) to check that a key file of another user is refused")
	}
	dir := t.TempDir()
	_, path, _, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = LoadOrCreateKey(dir)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "uid 65534") {
		t.Fatalf("a key file owned by uid 65534: %v, want a refusal naming %s and the owner", err, path)
	}
}

// Group- or other-accessible modes are refused; 0600 and 0400 are not.
func TestKeyFileLooseModeIsRefused(t *testing.T) {
	dir := t.TempDir()
	kp, path, _, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o666, 0o700 | 0o044} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, _, _, err := LoadOrCreateKey(dir)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "want 0600") {
			t.Errorf("mode %04o: %v, want a refusal naming %s", mode, err, path)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if again, _, created, err := LoadOrCreateKey(dir); err != nil || created || again != kp {
			t.Errorf("mode %04o: created %v, same key %v, %v", mode, created, again == kp, err)
		}
	}
	// Not a regular file.
	dir2 := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir2, KeyFileName), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := LoadOrCreateKey(dir2); err == nil || !strings.Contains(err.Error(), filepath.Join(dir2, KeyFileName)) || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory as data.key: %v", err)
	}
}

// A crash while the key was written leaves at most a temporary file
// beside data.key (never a half data.key): the next start makes the key
// anyway, and keeps it.
func TestKeyFileLeftoverTemporaryDoesNotBlockStart(t *testing.T) {
	dir := t.TempDir()
	// What WriteAtomic leaves if it dies before the link: a temporary
	// file with part of a key, in the same directory.
	leftover := filepath.Join(dir, "."+KeyFileName+".tmp-123456")
	if err := os.WriteFile(leftover, []byte("c2VjcmV0IGJ1dCBv"), 0o600); err != nil {
		t.Fatal(err)
	}
	kp, path, created, err := LoadOrCreateKey(dir)
	if err != nil || !created {
		t.Fatalf("start after a crash mid-write: created %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || !fi.Mode().IsRegular() {
		t.Fatalf("%s: %v %v", path, fi, err)
	}
	again, _, created, err := LoadOrCreateKey(dir)
	if err != nil || created || again != kp {
		t.Fatalf("restart: created %v, same key %v, %v", created, again == kp, err)
	}
	// Nothing else of ours is left beside data.key and the old leftover.
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 {
		t.Errorf("the state directory holds %v, want data.key and the old leftover", names)
	}
}
