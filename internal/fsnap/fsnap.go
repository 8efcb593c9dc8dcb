// Package fsnap takes listings of directory trees (path, type, mode and a
// SHA-256 of each regular file's contents) and compares them, to prove that a
// run left some directories exactly as it found them.
package fsnap

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Entry is one file, directory, link or other node of a tree.
type Entry struct {
	Mode   fs.FileMode // type bits and permissions
	SHA256 string      // regular files: of the contents; symlinks: of the target
}

func (e Entry) String() string {
	if e.SHA256 == "" {
		return e.Mode.String()
	}
	return e.Mode.String() + " sha256:" + e.SHA256[:12]
}

// Snapshot maps each path under the roots (the roots included) to its entry.
// A root that does not exist has no entry.
type Snapshot map[string]Entry

// Take lists every root. A root that does not exist is not an error: its
// later creation is a difference.
func Take(roots ...string) (Snapshot, error) {
	s := Snapshot{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if path == root && errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			e, err := entry(path, d)
			if err != nil {
				return err
			}
			s[path] = e
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("fsnap: %w", err)
		}
	}
	return s, nil
}

func entry(path string, d fs.DirEntry) (Entry, error) {
	fi, err := d.Info()
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Mode: fi.Mode()}
	switch {
	case fi.Mode().IsRegular():
		f, err := os.Open(path)
		if err != nil {
			return Entry{}, err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return Entry{}, fmt.Errorf("read %s: %w", path, err)
		}
		e.SHA256 = hex.EncodeToString(h.Sum(nil))
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return Entry{}, err
		}
		sum := sha256.Sum256([]byte(target))
		e.SHA256 = hex.EncodeToString(sum[:])
	}
	return e, nil
}

// Diff lists what differs from before to after, one line per path, sorted:
// "created PATH (...)", "removed PATH (...)" or "changed PATH: ... -> ...".
// It is empty when the snapshots are equal.
func Diff(before, after Snapshot) []string {
	var out []string
	for path, b := range before {
		a, ok := after[path]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("removed %s (%v)", path, b))
		case a != b:
			out = append(out, fmt.Sprintf("changed %s: %v -> %v", path, b, a))
		}
	}
	for path, a := range after {
		if _, ok := before[path]; !ok {
			out = append(out, fmt.Sprintf("created %s (%v)", path, a))
		}
	}
	slices.SortFunc(out, func(x, y string) int {
		return strings.Compare(pathOf(x), pathOf(y))
	})
	return out
}

// pathOf is the path of a Diff line, for sorting.
func pathOf(line string) string {
	_, rest, _ := strings.Cut(line, " ")
	path, _, _ := strings.Cut(rest, " ")
	return strings.TrimSuffix(path, ":")
}
