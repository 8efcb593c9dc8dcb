package keyfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Check(good); err != nil {
		t.Errorf("0600 file of ours: %v", err)
	}
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Check(loose); err == nil || !strings.Contains(err.Error(), loose) || !strings.Contains(err.Error(), "0644") {
		t.Errorf("0644 file: %v, want an error naming the path and the mode", err)
	}
	if err := Check(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
	if err := Check(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	fi, err := os.Stat(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(good, fi, os.Geteuid()+1); err == nil || !strings.Contains(err.Error(), "owned by uid") {
		t.Errorf("another owner: %v, want an owner error", err)
	}
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "data.key")
	if err := WriteAtomic(p, []byte("one\n"), true); err != nil {
		t.Fatal(err)
	}
	if err := WriteAtomic(p, []byte("two\n"), true); !errors.Is(err, fs.ErrExist) {
		t.Errorf("exclusive write over an existing file: %v, want ErrExist", err)
	}
	if b, err := Read(p); err != nil || string(b) != "one\n" {
		t.Errorf("after a refused exclusive write: %q, %v", b, err)
	}
	if err := WriteAtomic(p, []byte("two\n"), false); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(p); err != nil || string(b) != "two\n" {
		t.Errorf("after a replacing write: %q, %v", b, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only data.key (no temporary left)", len(ents))
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
}
