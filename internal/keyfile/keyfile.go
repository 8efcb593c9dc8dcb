// Package keyfile reads and writes weft's secret files (the data-plane key,
// the gossip key): a secret is read only from a regular file that belongs to
// the user weft runs as and that nobody else can read or write, and it is
// written so that a crash leaves either the old file or the new one, never
// half of one.
package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Check reports why path may not hold a secret, naming the path: it is not
// a regular file, it belongs to another user than the one running, or its
// group or others may read or write it.
func Check(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return check(path, fi, os.Geteuid())
}

func check(path string, fi fs.FileInfo, euid int) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != euid {
		return fmt.Errorf("%s: owned by uid %d, but weft runs as uid %d (chown %d %s)", path, st.Uid, euid, euid, path)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("%s: mode %04o, want 0600 (chmod 600 %s)", path, m, path)
	}
	return nil
}

// Read checks path (see Check) and returns its contents.
func Read(path string) ([]byte, error) {
	if err := Check(path); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return data, nil
}

// WriteAtomic writes data to path with mode 0600: into a temporary file in
// the same directory, synced, then renamed over path, and the directory
// synced, so that a crash at any point leaves no partial file at path.
// excl refuses to replace a file that exists (fs.ErrExist).
func WriteAtomic(path string, data []byte, excl bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	// CreateTemp makes the file 0600 already; say so for umask-free clarity.
	_, werr := f.Write(data)
	cherr := f.Chmod(0o600)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, cherr, serr, cerr); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if excl {
		// link(2) fails if path exists: no window where another writer's
		// file could be replaced.
		if err := os.Link(tmp, path); err != nil {
			return err
		}
		_ = os.Remove(tmp)
	} else if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
