package fsnap

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func write(t *testing.T, path, content string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // past the umask
		t.Fatal(err)
	}
}

func take(t *testing.T, roots ...string) Snapshot {
	t.Helper()
	s, err := Take(roots...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDiffSeesEveryKindOfChange: a created, a changed (contents, then only
// the mode) and a removed file, a new directory and a root that appears, each
// named in the diff; an untouched tree has no diff.
func TestDiffSeesEveryKindOfChange(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "run")
	absent := filepath.Join(dir, "lib") // does not exist before
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "keep"), "same", 0o644)
	write(t, filepath.Join(root, "edit"), "old", 0o644)
	write(t, filepath.Join(root, "chmod"), "x", 0o644)
	write(t, filepath.Join(root, "gone"), "bye", 0o644)
	if err := os.Symlink("keep", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}

	before := take(t, root, absent)
	if d := Diff(before, take(t, root, absent)); len(d) != 0 {
		t.Fatalf("nothing changed, yet Diff says %q", d)
	}
	if _, ok := before[absent]; ok {
		t.Fatalf("a missing root has an entry: %v", before[absent])
	}

	write(t, filepath.Join(root, "new"), "hello", 0o600)
	write(t, filepath.Join(root, "edit"), "new", 0o644) // same size, other bytes
	if err := os.Chmod(filepath.Join(root, "chmod"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "gone")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("edit", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(absent, "state"), 0o755); err != nil {
		t.Fatal(err)
	}

	d := Diff(before, take(t, root, absent))
	t.Logf("diff:\n%s", strings.Join(d, "\n"))
	want := []string{
		"created " + absent + " ",
		"created " + filepath.Join(absent, "state") + " ",
		"changed " + filepath.Join(root, "chmod") + ": ",
		"changed " + filepath.Join(root, "edit") + ": ",
		"removed " + filepath.Join(root, "gone") + " ",
		"changed " + filepath.Join(root, "link") + ": ",
		"created " + filepath.Join(root, "new") + " ",
	}
	if len(d) != len(want) {
		t.Fatalf("Diff has %d lines, want %d:\n%s", len(d), len(want), strings.Join(d, "\n"))
	}
	for _, w := range want {
		if !slices.ContainsFunc(d, func(l string) bool { return strings.HasPrefix(l, w) }) {
			t.Errorf("Diff lacks a line starting %q", w)
		}
	}
	if !slices.IsSortedFunc(d, func(x, y string) int { return strings.Compare(pathOf(x), pathOf(y)) }) {
		t.Errorf("Diff is not sorted by path")
	}
}

func TestTakeMissingRoots(t *testing.T) {
	s := take(t, filepath.Join(t.TempDir(), "nothing"))
	if len(s) != 0 {
		t.Errorf("snapshot of a missing root: %v", s)
	}
}
