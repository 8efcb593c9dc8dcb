// Package lease chooses a free subnet of the overlay network for a host that
// was not given one, and keeps it across restarts (flannel's SubnetLen,
// SubnetMin and SubnetMax semantics).
package lease

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/weftnet/weft/internal/family"
)

// Pool is the set of subnets a host may take: every Bits-long subnet of
// Network from Min to Max (inclusive; zero values mean the whole network).
type Pool struct {
	Network netip.Prefix
	Bits    int
	Min     netip.Addr
	Max     netip.Addr
}

// PoolField names the part of a Pool that a PoolError is about.
type PoolField uint8

// The parts of a Pool.
const (
	FieldBits PoolField = iota // the subnet length
	FieldMin                   // the lowest subnet
	FieldMax                   // the highest subnet
)

// PoolError is a malformed Pool; Field says which part is at fault.
type PoolError struct {
	Field PoolField
	msg   string
}

func (e *PoolError) Error() string { return e.msg }

func poolErrorf(f PoolField, format string, args ...any) error {
	return &PoolError{Field: f, msg: fmt.Sprintf(format, args...)}
}

// Validate checks that the pool is well formed. Its error is a *PoolError.
func (p Pool) Validate() error {
	if p.Bits <= p.Network.Bits() || p.Bits > p.Network.Addr().BitLen() {
		return poolErrorf(FieldBits, "subnet length /%d must be longer than the network's /%d and at most /%d", p.Bits, p.Network.Bits(), p.Network.Addr().BitLen())
	}
	if p.Min.IsValid() && !p.Network.Contains(p.Min) {
		return poolErrorf(FieldMin, "subnet minimum %s is outside %s", p.Min, p.Network)
	}
	if p.Max.IsValid() && !p.Network.Contains(p.Max) {
		return poolErrorf(FieldMax, "subnet maximum %s is outside %s", p.Max, p.Network)
	}
	lo, hi := p.bounds()
	if lo.Cmp(hi) > 0 {
		return poolErrorf(FieldMax, "subnet minimum %s is above the maximum %s", p.Min, p.Max)
	}
	return nil
}

// Contains reports whether s is one of the pool's subnets.
func (p Pool) Contains(s netip.Prefix) bool {
	if s.Bits() != p.Bits || s.Masked() != s || !p.Network.Contains(s.Addr()) {
		return false
	}
	lo, hi := p.bounds()
	i := p.index(s.Addr())
	return i.Cmp(lo) >= 0 && i.Cmp(hi) <= 0
}

// index is the subnet number of a within the network.
func (p Pool) index(a netip.Addr) *big.Int {
	off := new(big.Int).Sub(new(big.Int).SetBytes(a.AsSlice()), new(big.Int).SetBytes(p.Network.Addr().AsSlice()))
	return off.Rsh(off, uint(a.BitLen()-p.Bits))
}

func (p Pool) subnet(i *big.Int) netip.Prefix {
	off := new(big.Int).Lsh(i, uint(p.Network.Addr().BitLen()-p.Bits))
	n := new(big.Int).Add(new(big.Int).SetBytes(p.Network.Addr().AsSlice()), off)
	b := make([]byte, p.Network.Addr().BitLen()/8)
	n.FillBytes(b)
	a, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(a, p.Bits)
}

// bounds are the first and last subnet numbers of the pool.
func (p Pool) bounds() (lo, hi *big.Int) {
	lo = big.NewInt(0)
	hi = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(p.Bits-p.Network.Bits())), big.NewInt(1))
	if p.Min.IsValid() {
		lo = p.index(p.Min)
	}
	if p.Max.IsValid() {
		hi = p.index(p.Max)
	}
	return lo, hi
}

// ErrFull is returned when every subnet of the pool is taken.
var ErrFull = errors.New("no free subnet left")

// maxScan bounds how many subnets Free looks at one by one; a larger pool
// is sampled at random.
const maxScan = 1 << 16

// Free picks a subnet of the pool that overlaps none of taken, at random
// so that hosts starting together rarely pick the same one.
func (p Pool) Free(taken []netip.Prefix, rng *rand.Rand) (netip.Prefix, error) {
	lo, hi := p.bounds()
	size := new(big.Int).Add(new(big.Int).Sub(hi, lo), big.NewInt(1))
	free := func(s netip.Prefix) bool {
		for _, t := range taken {
			if t.Overlaps(s) {
				return false
			}
		}
		return true
	}
	if size.IsInt64() && size.Int64() <= maxScan {
		n := int(size.Int64())
		start := rng.IntN(n)
		for k := range n {
			i := new(big.Int).Add(lo, big.NewInt(int64((start+k)%n)))
			if s := p.subnet(i); free(s) {
				return s, nil
			}
		}
		return netip.Prefix{}, ErrFull
	}
	buf := make([]byte, (size.BitLen()+7)/8+8) // 8 spare bytes make the modulo bias negligible
	for range 4 * maxScan {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		r := new(big.Int).SetBytes(buf)
		if s := p.subnet(r.Mod(r, size).Add(r, lo)); free(s) {
			return s, nil
		}
	}
	return netip.Prefix{}, ErrFull
}

// Lease is the subnets a host holds, as kept in its state directory: one
// per network, in the order of the networks (IPv4 first in dual stack).
type Lease struct {
	Networks []netip.Prefix
	Subnets  []netip.Prefix
	Claimed  int64 // unix ms; keeps the host's priority in conflicts across restarts
}

// leaseFile is a Lease as its file holds it: the first network and subnet,
// and a dual-stack host's IPv6 ones beside them.
type leaseFile struct {
	Network  netip.Prefix `json:"network"`
	Subnet   netip.Prefix `json:"subnet"`
	Network6 netip.Prefix `json:"network6,omitzero"`
	Subnet6  netip.Prefix `json:"subnet6,omitzero"`
	Claimed  int64        `json:"claimed"`
}

// MarshalJSON writes the lease file's format.
func (l Lease) MarshalJSON() ([]byte, error) {
	return json.Marshal(leaseFile{
		Network: family.First(l.Networks), Subnet: family.First(l.Subnets),
		Network6: family.Second(l.Networks), Subnet6: family.Second(l.Subnets),
		Claimed: l.Claimed,
	})
}

// UnmarshalJSON reads the lease file's format.
func (l *Lease) UnmarshalJSON(b []byte) error {
	var f leaseFile
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*l = Lease{Networks: valid(f.Network, f.Network6), Subnets: valid(f.Subnet, f.Subnet6), Claimed: f.Claimed}
	return nil
}

// valid is the list of ps that are valid.
func valid(ps ...netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

// FileName is the lease's file in the state directory.
const FileName = "subnet.json"

// Load reads the lease in dir. A missing file is (Lease{}, nil).
func Load(dir string) (Lease, error) {
	var l Lease
	data, err := os.ReadFile(filepath.Join(dir, FileName))
	if errors.Is(err, os.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return l, fmt.Errorf("read lease: %w", err)
	}
	if err := json.Unmarshal(data, &l); err != nil {
		return Lease{}, fmt.Errorf("lease %s: %w", filepath.Join(dir, FileName), err)
	}
	return l, nil
}

// Save writes the lease to dir atomically.
func Save(dir string, l Lease) error {
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	return WriteFileAtomic(filepath.Join(dir, FileName), append(data, '\n'), 0o644)
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory and a rename, so a reader sees the old or the new content,
// never a partial one.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
