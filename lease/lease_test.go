package lease

import (
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestFreeAvoidsTakenAndStaysInBounds(t *testing.T) {
	p := Pool{Network: pfx("10.244.0.0/16"), Bits: 24, Min: netip.MustParseAddr("10.244.10.0"), Max: netip.MustParseAddr("10.244.13.0")}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	taken := []netip.Prefix{pfx("10.244.10.0/24"), pfx("10.244.12.0/23")} // covers 12 and 13
	seen := map[netip.Prefix]bool{}
	for range 50 {
		s, err := p.Free(taken, rng)
		if err != nil {
			t.Fatal(err)
		}
		seen[s] = true
	}
	if len(seen) != 1 || !seen[pfx("10.244.11.0/24")] {
		t.Fatalf("picked %v, want only 10.244.11.0/24", seen)
	}
	if _, err := p.Free(append(taken, pfx("10.244.11.0/24")), rng); err != ErrFull {
		t.Fatalf("full pool: err %v, want ErrFull", err)
	}
}

func TestFreeSpreadsPicks(t *testing.T) {
	p := Pool{Network: pfx("10.244.0.0/16"), Bits: 24}
	rng := rand.New(rand.NewPCG(3, 4))
	seen := map[netip.Prefix]bool{}
	for range 20 {
		s, err := p.Free(nil, rng)
		if err != nil || !p.Contains(s) {
			t.Fatalf("%v %v", s, err)
		}
		seen[s] = true
	}
	if len(seen) < 15 {
		t.Errorf("20 picks gave only %d distinct subnets", len(seen))
	}
}

func TestFreeLargeIPv6Pool(t *testing.T) {
	p := Pool{Network: pfx("fd00::/48"), Bits: 80}
	s, err := p.Free([]netip.Prefix{pfx("fd00::/80")}, rand.New(rand.NewPCG(5, 6)))
	if err != nil || !p.Contains(s) || s == pfx("fd00::/80") {
		t.Fatalf("%v %v", s, err)
	}
}

func TestPoolValidate(t *testing.T) {
	for _, tc := range []struct {
		p    Pool
		want string
	}{
		{Pool{Network: pfx("10.244.0.0/16"), Bits: 16}, "must be longer"},
		{Pool{Network: pfx("10.244.0.0/16"), Bits: 33}, "at most /32"},
		{Pool{Network: pfx("10.244.0.0/16"), Bits: 24, Min: netip.MustParseAddr("10.0.0.0")}, "minimum 10.0.0.0 is outside"},
		{Pool{Network: pfx("10.244.0.0/16"), Bits: 24, Min: netip.MustParseAddr("10.244.9.0"), Max: netip.MustParseAddr("10.244.3.0")}, "above the maximum"},
	} {
		if err := tc.p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.p, err, tc.want)
		}
	}
	p := Pool{Network: pfx("10.244.0.0/16"), Bits: 24, Max: netip.MustParseAddr("10.244.5.0")}
	for s, want := range map[string]bool{"10.244.5.0/24": true, "10.244.6.0/24": false, "10.244.5.0/25": false, "10.245.0.0/24": false} {
		if p.Contains(pfx(s)) != want {
			t.Errorf("Contains(%s) != %v", s, want)
		}
	}
}

func TestLeaseSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if l, err := Load(dir); err != nil || len(l.Subnets) > 0 {
		t.Fatalf("missing lease: %+v %v", l, err)
	}
	want := Lease{Networks: []netip.Prefix{pfx("10.244.0.0/16")}, Subnets: []netip.Prefix{pfx("10.244.7.0/24")}, Claimed: 1234}
	if err := Save(dir, want); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(dir); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("loaded %+v %v, want %+v", got, err, want)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir has %d files, want only the lease (no temp files)", len(entries))
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte("{bad"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil {
		t.Error("a corrupt lease loaded")
	}
}

// The lease file keeps its format: the first network and subnet, and a
// dual-stack host's IPv6 ones beside them, read back into the lists.
func TestLeaseFileFormat(t *testing.T) {
	for _, tt := range []struct {
		name string
		l    Lease
		file string
	}{
		{"single stack", Lease{Networks: []netip.Prefix{pfx("10.244.0.0/16")}, Subnets: []netip.Prefix{pfx("10.244.7.0/24")}, Claimed: 1234},
			`{"network":"10.244.0.0/16","subnet":"10.244.7.0/24","claimed":1234}`},
		{"IPv6 only", Lease{Networks: []netip.Prefix{pfx("fd00::/48")}, Subnets: []netip.Prefix{pfx("fd00:0:0:7::/64")}, Claimed: 1},
			`{"network":"fd00::/48","subnet":"fd00:0:0:7::/64","claimed":1}`},
		{"dual stack", Lease{Networks: []netip.Prefix{pfx("10.244.0.0/16"), pfx("fd00::/48")}, Subnets: []netip.Prefix{pfx("10.244.7.0/24"), pfx("fd00:0:0:7::/64")}, Claimed: 5},
			`{"network":"10.244.0.0/16","subnet":"10.244.7.0/24","network6":"fd00::/48","subnet6":"fd00:0:0:7::/64","claimed":5}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.l)
			if err != nil || string(b) != tt.file {
				t.Fatalf("marshal: %s %v, want %s", b, err, tt.file)
			}
			var got Lease
			if err := json.Unmarshal([]byte(tt.file), &got); err != nil || !reflect.DeepEqual(got, tt.l) {
				t.Errorf("unmarshal: %+v %v, want %+v", got, err, tt.l)
			}
		})
	}
}
