package kernelvx

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/weftnet/weft/encap"
)

// Device is weft's kernel VXLAN device and its peer filter. Create one
// with New, then call Ensure once and Reconcile whenever the peers change.
// Its methods are safe for concurrent use.
type Device struct {
	k   Kernel
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	index   int            // the link's index, once ensured
	ensured bool           // the filter is one this Device built
	base    FilterCounters // counts of the filters this Device rebuilt
}

// New checks cfg and returns the device it describes; nothing is created
// until Ensure. A nil log discards.
func New(k Kernel, cfg Config, log *slog.Logger) (*Device, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Device{k: k, cfg: cfg, log: log.With("device", cfg.Name)}, nil
}

// Config returns the device's configuration, defaults filled in.
func (d *Device) Config() Config {
	c := d.cfg
	c.Subnets = slices.Clone(c.Subnets)
	return c
}

// Index is the link's index (0 before Ensure).
func (d *Device) Index() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.index
}

func (d *Device) link() Link {
	return Link{
		Name:          d.cfg.Name,
		Kind:          KindVXLAN,
		VNI:           d.cfg.VNI,
		Port:          d.cfg.Port,
		Local:         d.cfg.Underlay,
		UnderlayIndex: d.cfg.UnderlayIndex,
		MAC:           d.cfg.MAC,
		MTU:           d.cfg.MTU,
	}
}

// ErrNoVXLAN is wrapped by Ensure's error when the kernel cannot create a
// VXLAN device (no vxlan module): weft's userspace data path is then the
// only one.
var ErrNoVXLAN = errors.New("the kernel has no VXLAN support (module vxlan)")

// Ensure installs the peer filter, then creates the VXLAN link, or adopts
// an existing one with the same attributes (an existing link that differs
// is deleted and created anew), gives it the host's addresses (and removes
// any other) and sets it up. The filter comes first so that the device
// never accepts VXLAN unfiltered; it keeps the peers it already allows, so
// a restart does not cut traffic off. What Ensure created is removed again
// if it fails. Reconcile must follow: a link created anew has no peers.
func (d *Device) Ensure() (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()

	_, ferr := d.k.FilterSets()
	newFilter := errors.Is(ferr, ErrNotExist)
	if d.ensured {
		if c, err := d.k.FilterCounters(); err == nil {
			d.base = d.base.add(c)
		}
	}
	if err := d.k.FilterEnsure(d.cfg.Port, d.cfg.Subnets); err != nil {
		return fmt.Errorf("kernelvx: install the peer filter: %w", err)
	}
	d.ensured = true
	var created int // the index of a link this call created
	defer func() {
		if err == nil {
			return
		}
		if created != 0 {
			err = errors.Join(err, d.k.LinkDel(created))
			d.index = 0
		}
		if newFilter {
			err = errors.Join(err, d.k.FilterDelete())
			d.ensured = false
		}
	}()

	want := d.link()
	idx := 0 // the link's index, once adopted or created
	cur, err := d.k.LinkByName(want.Name)
	switch {
	case errors.Is(err, ErrNotExist):
	case err != nil:
		return fmt.Errorf("kernelvx: look up link %s: %w", want.Name, err)
	case cur.Kind != KindVXLAN:
		return fmt.Errorf("kernelvx: link %s exists and is a %s device, not weft's VXLAN device: remove it or choose another device name", want.Name, cur.Kind)
	default:
		diff := cur.differs(want)
		if diff == "" {
			d.log.Debug("adopting existing VXLAN device", "index", cur.Index)
			idx = cur.Index
			break
		}
		d.log.Warn("recreating VXLAN device with other attributes", "index", cur.Index, "differs", diff)
		if err := d.k.LinkDel(cur.Index); err != nil {
			return fmt.Errorf("kernelvx: delete link %s to recreate it (%s): %w", want.Name, diff, err)
		}
		d.index = 0
	}
	if idx == 0 {
		idx, err = d.k.LinkAdd(want)
		if errors.Is(err, syscall.EOPNOTSUPP) {
			err = fmt.Errorf("%w: %w", ErrNoVXLAN, err)
		}
		if err != nil {
			return fmt.Errorf("kernelvx: create VXLAN link %s (vni %d, port %d, local %s, dev #%d): %w",
				want.Name, want.VNI, want.Port, want.Local, want.UnderlayIndex, err)
		}
		d.log.Info("created VXLAN device", "index", idx, "vni", want.VNI, "port", want.Port, "local", want.Local,
			"mac", want.MAC.String(), "mtu", want.MTU)
		created = idx
	}
	d.index = idx
	if err := d.syncAddrs(); err != nil {
		return err
	}
	if err := d.k.LinkSetUp(d.index); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("kernelvx: set %s up: UDP port %d is taken (by weft's userspace data path, or another VXLAN device?): %w", want.Name, want.Port, err)
		}
		return fmt.Errorf("kernelvx: set %s up: %w", want.Name, err)
	}
	return nil
}

// syncAddrs makes the link's addresses exactly the configured ones.
func (d *Device) syncAddrs() error {
	have, err := d.k.AddrList(d.index)
	if err != nil {
		return fmt.Errorf("kernelvx: list addresses of %s: %w", d.cfg.Name, err)
	}
	want := d.cfg.addrs()
	var errs []error
	for _, p := range want {
		if slices.Contains(have, p) {
			continue
		}
		if err := d.k.AddrReplace(d.index, p); err != nil {
			errs = append(errs, fmt.Errorf("kernelvx: add address %s to %s: %w", p, d.cfg.Name, err))
			continue
		}
		d.log.Info("added address", "addr", p.String())
	}
	for _, p := range have {
		if slices.Contains(want, p) {
			continue
		}
		if err := d.k.AddrDel(d.index, p); err != nil {
			errs = append(errs, fmt.Errorf("kernelvx: remove address %s from %s: %w", p, d.cfg.Name, err))
			continue
		}
		d.log.Info("removed stale address", "addr", p.String())
	}
	return errors.Join(errs...)
}

// state is what the device holds for its peers.
type state struct {
	routes map[netip.Prefix]Route
	neighs map[netip.Addr]Neigh
	fdb    map[encap.MAC]FDB
	// fdbAll is every FDB entry read from the device: the all-zeros MAC
	// or a multicast one can have several destinations (a flood list,
	// `bridge fdb append`), each its own entry.
	fdbAll []FDB
	filter FilterSets
}

// desired is the state for peers. A peer that cannot be programmed (see
// checkPeer) is left out, and its error returned with the others'.
func (d *Device) desired(peers []Peer) (state, error) {
	s := state{
		routes: map[netip.Prefix]Route{},
		neighs: map[netip.Addr]Neigh{},
		fdb:    map[encap.MAC]FDB{},
	}
	sorted := slices.Clone(peers)
	slices.SortStableFunc(sorted, func(a, b Peer) int { return cmp.Compare(a.Name, b.Name) })
	taken := &claims{names: map[string]bool{}, macs: map[encap.MAC]string{d.cfg.MAC: "this host"}}
	for _, s := range d.cfg.Subnets {
		taken.subnets = append(taken.subnets, owned{s, "this host"})
	}
	var errs []error
	for _, p := range sorted {
		subnets, err := d.checkPeer(p, taken)
		if err != nil {
			errs = append(errs, fmt.Errorf("kernelvx: peer %q not programmed: %w", p.Name, err))
			continue
		}
		under := p.Underlay.Addr().Unmap()
		for _, sn := range subnets {
			gw := sn.Addr()
			s.routes[sn] = Route{Dst: sn, Via: gw, LinkIndex: d.index}
			s.neighs[gw] = Neigh{IP: gw, MAC: p.MAC, LinkIndex: d.index}
			s.filter.Sources = append(s.filter.Sources, Source{Peer: under, Prefix: sn})
		}
		s.fdb[p.MAC] = FDB{MAC: p.MAC, Dst: under, LinkIndex: d.index}
		s.filter.Peers = append(s.filter.Peers, under)
	}
	s.filter = s.filter.canonical()
	return s, errors.Join(errs...)
}

// claims are what earlier peers (and this host) hold: names, MACs and
// subnets must be unique.
type claims struct {
	names   map[string]bool
	macs    map[encap.MAC]string
	subnets []owned
}

type owned struct {
	prefix netip.Prefix
	owner  string
}

// checkPeer checks p against the configuration and the claims of the peers
// before it, records its claims and returns its subnets.
func (d *Device) checkPeer(p Peer, taken *claims) ([]netip.Prefix, error) {
	if p.Name == "" {
		return nil, errors.New("no name")
	}
	if taken.names[p.Name] {
		return nil, errors.New("a second peer of that name")
	}
	subnets, err := checkSubnets(p.Subnets)
	if err != nil {
		return nil, fmt.Errorf("subnets: %w", err)
	}
	if len(subnets) == 0 {
		return nil, errors.New("no subnet")
	}
	under := p.Underlay.Addr().Unmap()
	switch {
	case !under.IsValid() || under.IsUnspecified() || under.IsMulticast():
		return nil, fmt.Errorf("underlay %v: want a unicast address", p.Underlay)
	case under.Is4() != d.cfg.Underlay.Is4():
		return nil, fmt.Errorf("underlay %s is not of the family of this host's underlay %s (one kernel device, one underlay family)", under, d.cfg.Underlay)
	case under == d.cfg.Underlay:
		return nil, fmt.Errorf("underlay %s is this host's", under)
	case p.Underlay.Port() != 0 && p.Underlay.Port() != d.cfg.Port:
		return nil, fmt.Errorf("VXLAN port %d, this host's kernel device uses %d (kernel mode needs one port cluster-wide)", p.Underlay.Port(), d.cfg.Port)
	}
	switch owner, ok := taken.macs[p.MAC]; {
	case p.MAC.IsZero() || p.MAC[0]&1 != 0:
		return nil, fmt.Errorf("VTEP MAC %s: want a unicast MAC", p.MAC)
	case ok:
		return nil, fmt.Errorf("VTEP MAC %s is %s's too", p.MAC, owner)
	}
	for _, sn := range subnets {
		for _, o := range taken.subnets {
			if sn.Overlaps(o.prefix) {
				return nil, fmt.Errorf("subnet %s overlaps %s of %s", sn, o.prefix, o.owner)
			}
		}
	}
	taken.names[p.Name] = true
	taken.macs[p.MAC] = p.Name
	for _, sn := range subnets {
		taken.subnets = append(taken.subnets, owned{sn, p.Name})
	}
	return subnets, nil
}

// current reads what the device holds (its FDB in fdbAll only).
func (d *Device) current() (state, error) {
	s := state{
		routes: map[netip.Prefix]Route{},
		neighs: map[netip.Addr]Neigh{},
		fdb:    map[encap.MAC]FDB{},
	}
	routes, err := d.k.RouteList(d.index)
	if err != nil {
		return s, fmt.Errorf("kernelvx: list routes of %s: %w", d.cfg.Name, err)
	}
	for _, r := range routes {
		s.routes[r.Dst] = r
	}
	neighs, err := d.k.NeighList(d.index)
	if err != nil {
		return s, fmt.Errorf("kernelvx: list neighbours of %s: %w", d.cfg.Name, err)
	}
	for _, n := range neighs {
		s.neighs[n.IP] = n
	}
	fdb, err := d.k.FDBList(d.index)
	if err != nil {
		return s, fmt.Errorf("kernelvx: list FDB of %s: %w", d.cfg.Name, err)
	}
	s.fdbAll = fdb
	return s, nil
}

// Reconcile makes the device's routes, neighbour and FDB entries and the
// filter's sets those of peers, from what it reads on the device (not
// from memory), so that it is idempotent and picks up after a crash.
//
// Per peer and subnet S, flannel-style: a route "S via S.first dev NAME
// onlink" carrying weft's route protocol, a permanent neighbour entry
// "S.first lladdr MAC", and per peer a permanent FDB entry "MAC dst
// UNDERLAY self"; the filter accepts VXLAN from UNDERLAY carrying inner
// sources in S. Entries are added before the routes that use them and
// removed after.
//
// What is on the device and not wanted is removed: every permanent
// neighbour and FDB entry (the device is weft's, and a stale entry would
// send a peer's traffic to a host that no longer owns its MAC or address),
// and every route carrying weft's protocol. Routes through the device with
// another protocol (an administrator's) and the kernel's own learned
// neighbour entries are left alone.
//
// A peer that cannot be programmed (no name, a MAC or subnet another peer
// or this host holds, an underlay of the other family or port) is left out
// and named in the error; the others are programmed. Of two peers that
// claim the same name, MAC or subnet, the first by name (then by order in
// peers) wins: weft's membership resolves such conflicts before this. Operations that fail
// are reported together; Reconcile can be called again.
func (d *Device) Reconcile(peers []Peer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.index == 0 {
		return errors.New("kernelvx: Reconcile before Ensure")
	}
	want, perr := d.desired(peers)
	have, err := d.current()
	if err != nil {
		return errors.Join(perr, err)
	}
	errs := []error{perr, d.syncFilter(want.filter)}
	// Neighbours and FDB entries first: the kernel then never resolves a
	// new route's gateway itself (which a VXLAN device without a default
	// FDB entry cannot do).
	for _, n := range sortedValues(want.neighs, netip.Addr.Compare) {
		old, ok := have.neighs[n.IP]
		if ok && old.MAC == n.MAC {
			continue
		}
		if err := d.k.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("kernelvx: set neighbour %s: %w", n, err))
			continue
		}
		d.logChange(ok, "neighbour", n.String())
	}
	dests := map[encap.MAC]int{} // destinations per MAC on the device
	for _, f := range have.fdbAll {
		dests[f.MAC]++
	}
	for _, f := range sortedValues(want.fdb, compareMACs) {
		if slices.Contains(have.fdbAll, f) {
			continue
		}
		if err := d.k.FDBSet(f); err != nil {
			errs = append(errs, fmt.Errorf("kernelvx: set FDB entry %s: %w", f, err))
			continue
		}
		d.logChange(dests[f.MAC] > 0, "FDB entry", f.String())
	}
	for _, r := range sortedValues(want.routes, comparePrefixes) {
		old, ok := have.routes[r.Dst]
		if ok && old.Via == r.Via {
			continue
		}
		if err := d.k.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("kernelvx: install route %s: %w", r, err))
			continue
		}
		d.logChange(ok, "route", r.String())
	}
	// Then what is no longer wanted, routes first.
	for _, r := range sortedValues(have.routes, comparePrefixes) {
		if _, ok := want.routes[r.Dst]; ok {
			continue
		}
		if err := d.k.RouteDel(r); err != nil {
			errs = append(errs, fmt.Errorf("kernelvx: remove route %s: %w", r, err))
			continue
		}
		d.log.Info("removed route", "route", r.String())
	}
	for _, n := range sortedValues(have.neighs, netip.Addr.Compare) {
		if _, ok := want.neighs[n.IP]; ok {
			continue
		}
		if err := d.k.NeighDel(n); err != nil {
			errs = append(errs, fmt.Errorf("kernelvx: remove neighbour %s: %w", n, err))
			continue
		}
		d.log.Info("removed neighbour", "neigh", n.String())
	}
	slices.SortFunc(have.fdbAll, func(a, b FDB) int {
		return cmp.Or(compareMACs(a.MAC, b.MAC), a.Dst.Compare(b.Dst))
	})
	for _, f := range have.fdbAll {
		w, ok := want.fdb[f.MAC]
		if ok && (w.Dst == f.Dst || dests[f.MAC] == 1) {
			continue // wanted, or replaced above by FDBSet
		}
		if err := d.k.FDBDel(f); err != nil {
			errs = append(errs, fmt.Errorf("kernelvx: remove FDB entry %s: %w", f, err))
			continue
		}
		d.log.Info("removed FDB entry", "fdb", f.String())
	}
	return errors.Join(errs...)
}

func (d *Device) logChange(replaced bool, what, entry string) {
	verb := "added"
	if replaced {
		verb = "changed"
	}
	d.log.Info(verb+" "+what, "entry", entry)
}

// syncFilter replaces the filter's sets with want if they differ; a
// missing filter (deleted behind weft's back) is rebuilt.
func (d *Device) syncFilter(want FilterSets) error {
	have, err := d.k.FilterSets()
	if errors.Is(err, ErrNotExist) {
		d.log.Warn("peer filter missing: rebuilding it")
		if err := d.k.FilterEnsure(d.cfg.Port, d.cfg.Subnets); err != nil {
			return fmt.Errorf("kernelvx: rebuild the peer filter: %w", err)
		}
		have, err = FilterSets{}, nil
	}
	if err != nil {
		return fmt.Errorf("kernelvx: read the peer filter: %w", err)
	}
	if have.Equal(want) {
		return nil
	}
	if err := d.k.FilterReplace(want); err != nil {
		return fmt.Errorf("kernelvx: update the peer filter: %w", err)
	}
	d.log.Info("updated peer filter", "peers", len(want.Peers), "sources", len(want.Sources))
	return nil
}

// Stats returns the device's traffic counters.
func (d *Device) Stats() (Stats, error) {
	idx := d.Index()
	if idx == 0 {
		return Stats{}, errors.New("kernelvx: Stats before Ensure")
	}
	st, err := d.k.LinkStats(idx)
	if err != nil {
		return st, fmt.Errorf("kernelvx: read counters of %s: %w", d.cfg.Name, err)
	}
	return st, nil
}

// FilterCounters returns what the peer filter dropped since this Device's
// first Ensure (the counts survive a later Ensure's rebuild).
func (d *Device) FilterCounters() (FilterCounters, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.k.FilterCounters()
	if err != nil {
		return FilterCounters{}, fmt.Errorf("kernelvx: read the peer filter's counters: %w", err)
	}
	return d.base.add(c), nil
}

// Cleanup removes the device and the filter: Cleanup(k, name, log).
func (d *Device) Cleanup() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.index, d.ensured = 0, false
	return Cleanup(d.k, d.cfg.Name, d.log)
}

// Cleanup removes what weft's kernel data path leaves in the kernel: the
// VXLAN link called name (default DefaultName), and with it its addresses,
// routes, neighbour and FDB entries, and the peer filter. It needs no state
// from the run that created them, so a fresh process (`weft run --cleanup`,
// or a start after a crash) can call it. A link of that name that is not a
// VXLAN device is left alone, with an error. Nothing left is not an error.
func Cleanup(k Kernel, name string, log *slog.Logger) error {
	if name == "" {
		name = DefaultName
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	l, err := k.LinkByName(name)
	switch {
	case errors.Is(err, ErrNotExist):
	case err != nil:
		errs = append(errs, fmt.Errorf("kernelvx: look up link %s: %w", name, err))
	case l.Kind != KindVXLAN:
		errs = append(errs, fmt.Errorf("kernelvx: link %s is a %s device, not weft's VXLAN device: left alone", name, l.Kind))
	default:
		if err := k.LinkDel(l.Index); err != nil {
			errs = append(errs, fmt.Errorf("kernelvx: delete link %s: %w", name, err))
		} else {
			log.Info("removed VXLAN device", "device", name)
		}
	}
	if err := k.FilterDelete(); err != nil {
		errs = append(errs, fmt.Errorf("kernelvx: remove the peer filter: %w", err))
	}
	return errors.Join(errs...)
}

func sortedValues[K comparable, V any](m map[K]V, compare func(a, b K) int) []V {
	keys := slices.SortedFunc(maps.Keys(m), compare)
	out := make([]V, len(keys))
	for i, k := range keys {
		out[i] = m[k]
	}
	return out
}

func compareMACs(a, b encap.MAC) int { return slices.Compare(a[:], b[:]) }

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
