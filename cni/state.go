package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// State is what the plugin keeps per attachment (container and interface)
// from ADD to DEL: the delegate config it used and what it set up itself.
type State struct {
	// Name is the network's name (the config's name).
	Name        string `json:"name"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	// Network and Subnet are the cluster network and the host's subnet at
	// ADD (from the subnet file).
	Network string `json:"network"`
	Subnet  string `json:"subnet"`
	// Masq lists the addresses weft masquerades for, each with the cluster
	// network's prefix length (the ipmasq helpers' form: from this address,
	// not to this prefix), empty if weft does not masquerade.
	Masq []string `json:"masq,omitempty"`
	// Delegate is the delegate config, exactly as ADD passed it.
	Delegate json.RawMessage `json:"delegate"`
}

// Store keeps State files in a directory, one per attachment.
type Store struct {
	Dir string
}

const stateSuffix = ".json"

// path is the state file of an attachment. The runtime's container ID and
// interface name are validated by skel (no "/"; the ID is [A-Za-z0-9_.-]).
func (s Store) path(containerID, ifName string) string {
	return filepath.Join(s.Dir, containerID+"_"+ifName+stateSuffix)
}

// Save writes st atomically.
func (s Store) Save(st *State) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("state dir (dataDir): %w", err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(s.Dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("state dir (dataDir): %w", err)
	}
	_, werr := f.Write(b)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write state %s: %w", f.Name(), err)
	}
	p := s.path(st.ContainerID, st.IfName)
	if err := os.Rename(f.Name(), p); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write state %s: %w", p, err)
	}
	return nil
}

// Load reads an attachment's state; ok is false if none is kept.
func (s Store) Load(containerID, ifName string) (st *State, ok bool, err error) {
	return s.read(s.path(containerID, ifName))
}

func (s Store) read(p string) (*State, bool, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read state: %w", err)
	}
	st := &State{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, false, fmt.Errorf("state %s: %w", p, err)
	}
	return st, true, nil
}

// Remove deletes an attachment's state; a missing one is not an error.
func (s Store) Remove(containerID, ifName string) error {
	err := os.Remove(s.path(containerID, ifName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove state: %w", err)
	}
	return nil
}

// List returns every kept state (a missing directory holds none).
func (s Store) List() ([]*State, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state dir (dataDir): %w", err)
	}
	var out []*State
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), stateSuffix) || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		st, ok, err := s.read(filepath.Join(s.Dir, e.Name()))
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, st)
		}
	}
	return out, nil
}
