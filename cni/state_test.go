package cni

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestStore(t *testing.T) {
	s := Store{Dir: filepath.Join(t.TempDir(), "weft")}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Fatalf("List of a missing dir: %v %v", list, err)
	}
	if _, ok, err := s.Load("c1", "eth0"); ok || err != nil {
		t.Fatalf("Load of nothing: %v %v", ok, err)
	}
	a := &State{Name: "w", ContainerID: "c1", IfName: "eth0", Network: "10.244.0.0/16", Subnet: "10.244.1.0/24",
		Masq: []string{"10.244.1.2/16"}, Delegate: json.RawMessage(`{"type":"bridge","name":"w"}`)}
	b := &State{ContainerID: "c1", IfName: "net1", Subnet: "10.244.1.0/24", Delegate: json.RawMessage(`{"type":"bridge"}`)}
	for _, st := range []*State{a, b} {
		if err := s.Save(st); err != nil {
			t.Fatal(err)
		}
	}
	got, ok, err := s.Load("c1", "eth0")
	if err != nil || !ok || !reflect.DeepEqual(got, a) {
		t.Fatalf("Load: %+v %v %v, want %+v", got, ok, err, a)
	}
	list, err := s.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("List: %v %v", list, err)
	}
	// Saved atomically: no temp files left, private directory.
	ents, _ := os.ReadDir(s.Dir)
	if len(ents) != 2 {
		t.Errorf("dir holds %v", ents)
	}
	if st, _ := os.Stat(s.Dir); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", st.Mode().Perm())
	}
	if err := s.Remove("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("c1", "eth0"); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if _, ok, _ := s.Load("c1", "eth0"); ok {
		t.Error("state still there after Remove")
	}
	// A corrupt state file is an error, not silently nothing.
	if err := os.WriteFile(filepath.Join(s.Dir, "bad_eth0.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Load("bad", "eth0"); err == nil {
		t.Error("corrupt state loaded")
	}
}
