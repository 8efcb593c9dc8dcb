// Package router is weft's data plane and its control-plane seam: the
// immutable route table, the two forwarding loops (TUN → underlay and
// underlay → TUN), drop accounting, and the reconciliation of kernel routes
// to directly reachable peers with the current peer set.
//
// The forwarding loops take no lock: they load the current Table through an
// atomic pointer once per batch. SetPeers builds a new Table and swaps it in.
package router

import (
	"cmp"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/seal"
)

// DirectMode says which peers are reached by plain kernel routes.
type DirectMode uint8

// Direct routing modes.
const (
	DirectOff    DirectMode = iota // every peer through the tunnel
	DirectOnLink                   // on-link peers by kernel route, the rest through the tunnel (DirectRouting)
	DirectOnly                     // on-link peers by kernel route, the rest not at all (host-gw)
)

// Config is the router's configuration. The local identity (subnets,
// addresses, MAC, claim) can change later through SetLocal.
type Config struct {
	Name  string     // this host
	Local Local      // our identity
	Encap encap.Kind // the encapsulation (zero: udp); the router builds its codec
	VNI   uint32

	Direct DirectMode
	OnLink func(netip.Addr) bool // is an underlay address on our L2 segment?
	Routes Routes                // kernel routes for direct peers (nil: none)
	// OffLinkReason is the status reason of a peer that DirectOnly does
	// not route (default: host-gw cannot reach it); with BGP the fabric
	// routes it instead.
	OffLinkReason string

	// Now is the clock (time.Now); ClaimGrace how long after we settle on
	// our subnet a peer we see can still take it from us by an earlier
	// claim (DefaultClaimGrace). See judge.
	Now        func() time.Time
	ClaimGrace time.Duration

	PerPeerMetrics bool
	// Beside, if set, returns the counts of a data path that carries the
	// peers' packets beside the router (node's kernel engine: the
	// kernel's VXLAN device and its peer filter); they are added to the
	// router's own in Totals, Drops and the metrics. It is called on
	// every such read, without the router's lock held.
	Beside func() Counts
	// BusyPoll is how long a worker spins for another TUN packet after a
	// batch before it blocks (0: it blocks at once).
	BusyPoll time.Duration
	Logger   *slog.Logger
}

// DefaultClaimGrace is how long after a host settles on its subnet another
// host it sees may still take the subnet by an earlier claim: long enough
// for gossip to bring two hosts that claimed one subnet at once together
// (seconds, in clusters of hundreds), short enough that a host joining
// later cannot chase an established one off its subnet.
const DefaultClaimGrace = 20 * time.Second

// Router forwards packets between TUN queues and sockets, one worker each.
type Router struct {
	cfg     Config
	workers []Worker
	log     *slog.Logger

	table atomic.Pointer[Table]

	mu      sync.Mutex  // control plane only: SetPeers, Status
	codec   encap.Codec // the encapsulation for our identity, put in every table
	peers   []Peer
	reasons map[string]string
	refused map[string]Refusal
	viaOf   map[string]Via
	// seen is when each peer was first seen with its current subnets, and
	// localSince when we took ours (for the conflict rules, see judge).
	// Both it and stats hold only peers of the current set: their bound is
	// the peer set's.
	seen       map[string]seenRec
	localSince time.Time
	stats      map[string]*peerStats
	direct     map[netip.Prefix]netip.Addr // kernel routes we installed
	conflicts  []Conflict

	ctr      counters
	txBatch  prometheus.Histogram
	rxBatch  prometheus.Histogram
	conflCnt atomic.Uint64
	probeOut atomic.Uint64 // nonce of the last watchdog probe the outbound loop saw
	probeIn  atomic.Uint64 // ... and the inbound loop

	loops    sync.WaitGroup
	failOnce sync.Once
	failed   chan struct{}
	failErr  error
}

// counters are the data path's totals, updated once per batch.
type counters struct {
	txPackets, txBytes, rxPackets, rxBytes atomic.Uint64
	tunReads, tunWrites                    atomic.Uint64
	drops                                  [numDropReasons]atomic.Uint64
}

type seenRec struct {
	subnets []netip.Prefix
	at      time.Time
}

type peerStats struct {
	txPackets, txBytes atomic.Uint64
	_                  [48]byte // keep the two directions on separate cache lines
	rxPackets, rxBytes atomic.Uint64
	lastRx             atomic.Int64 // unix ns
}

// New returns a router with no peers over one or more workers.
func New(cfg Config, workers ...Worker) *Router {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClaimGrace <= 0 {
		cfg.ClaimGrace = DefaultClaimGrace
	}
	if cfg.Encap == 0 {
		cfg.Encap = encap.UDP
	}
	if !cfg.Encap.Valid() {
		panic("router: unknown encapsulation " + cfg.Encap.String())
	}
	r := &Router{
		cfg:     cfg,
		workers: workers,
		log:     cfg.Logger,
		reasons: map[string]string{},
		refused: map[string]Refusal{},
		seen:    map[string]seenRec{},
		viaOf:   map[string]Via{},
		stats:   map[string]*peerStats{},
		direct:  map[netip.Prefix]netip.Addr{},
		failed:  make(chan struct{}),
		txBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_batch_size_packets", Help: "Packets handled per batch, by direction.",
			ConstLabels: prometheus.Labels{"direction": "tx"}, Buckets: prometheus.ExponentialBuckets(1, 2, 8),
		}),
		rxBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_batch_size_packets", Help: "Packets handled per batch, by direction.",
			ConstLabels: prometheus.Labels{"direction": "rx"}, Buckets: prometheus.ExponentialBuckets(1, 2, 8),
		}),
	}
	r.localSince = cfg.Now()
	r.codec = r.newCodec()
	r.table.Store(r.newTable(nil))
	return r
}

// Local is this host's identity in the overlay.
type Local struct {
	// Subnets are our subnets: one of either family, or a dual-stack
	// host's IPv4 and IPv6 ones, IPv4 first; Addrs our (TUN) address in
	// each, in the same order, answered in ARP and Neighbor Discovery.
	Subnets []netip.Prefix
	Addrs   []netip.Addr
	MAC     encap.MAC // our VTEP MAC
	Claimed int64     // unix ms when we claimed our subnets
}

// SetLocal changes our subnets, addresses, VTEP MAC and claim time (after
// a subnet conflict moved us) and rebuilds the table around them.
func (r *Router) SetLocal(l Local) []Conflict {
	r.mu.Lock()
	if !slices.Equal(l.Subnets, r.cfg.Local.Subnets) {
		r.localSince = r.cfg.Now()
	}
	r.cfg.Local = l
	r.codec = r.newCodec()
	peers := r.peers
	r.mu.Unlock()
	return r.SetPeers(peers)
}

// newTable builds a table for peers around the local identity. r.mu is held
// (or the router is not yet shared).
func (r *Router) newTable(peers []Peer) *Table {
	t, _, _ := buildTable(r.cfg.Local.Subnets, r.cfg.Local.Claimed, r.cfg.Name, peers)
	r.setIdentity(t)
	return t
}

// setIdentity gives t the codec of our identity. r.mu is held (or the
// router is not yet shared).
func (r *Router) setIdentity(t *Table) { t.codec = r.codec }

// newCodec builds the encapsulation's data path for our identity. r.mu is
// held (or the router is not yet shared).
func (r *Router) newCodec() encap.Codec {
	return r.cfg.Encap.NewCodec(encap.Local{VNI: r.cfg.VNI, MAC: r.cfg.Local.MAC, Addrs: r.cfg.Local.Addrs})
}

// SetPeers replaces the peer set: it builds and swaps in a new route table
// and brings the kernel's direct routes in line. It returns the subnet
// conflicts found, each also logged and counted.
func (r *Router) SetPeers(peers []Peer) []Conflict {
	r.mu.Lock()
	defer r.mu.Unlock()
	peers = slices.Clone(peers)
	t, conflicts, reasons, refused := buildTableWith(r.cfg.Local.Subnets, r.cfg.Local.Claimed, r.cfg.Name, peers, r.judge(peers))
	r.setIdentity(t)

	wantDirect := map[netip.Prefix]netip.Addr{}
	viaOf := map[string]Via{}
	kept := t.entries[:0]
	lpmChanged := false
	for _, e := range t.entries {
		st := r.stats[e.peer.Name]
		if st == nil {
			st = &peerStats{}
			r.stats[e.peer.Name] = st
		}
		e.stats = st
		onLink := r.cfg.OnLink != nil && r.cfg.OnLink(e.peer.Underlay.Addr())
		switch {
		case r.cfg.Direct != DirectOff && onLink:
			e.via = ViaDirect
			for _, sub := range e.peer.Subnets {
				if sub.Addr().Is6() && e.peer.Underlay.Addr().Is4() {
					// The kernel takes no IPv6 route through an IPv4
					// gateway (IPv6 has no RTA_VIA): the IPv6 subnet
					// of a peer on an IPv4 underlay stays in the tunnel.
					continue
				}
				wantDirect[sub] = e.peer.Underlay.Addr()
			}
		case r.cfg.Direct == DirectOnly:
			e.via = ViaNone
			reasons[e.peer.Name] = cmp.Or(r.cfg.OffLinkReason, "not on-link: host-gw cannot reach it")
			for _, sub := range e.peer.Subnets {
				t.lpm.Delete(sub)
			}
			lpmChanged = true
			viaOf[e.peer.Name] = ViaNone
			continue
		}
		viaOf[e.peer.Name] = e.via
		kept = append(kept, e)
	}
	if lpmChanged {
		// Peers dropped from the table keep their byAddr entry only if
		// they can still reach us through the tunnel, which host-gw has
		// not: rebuild the index from what is kept.
		t.byAddr = make(map[netip.Addr]*entry, len(kept))
		for _, e := range kept {
			t.byAddr[e.peer.Underlay.Addr()] = e
		}
	}
	t.entries = kept
	r.table.Store(t)

	r.syncDirect(wantDirect)
	r.logChanges(peers, reasons, viaOf)
	for name, why := range refused {
		if why != RefusedSubnetConflict && (r.refused[name] != why || r.reasons[name] != reasons[name]) {
			p := peers[slices.IndexFunc(peers, func(p Peer) bool { return p.Name == name })]
			r.log.Warn("peer refused", "peer", name, "underlay", p.Underlay, "subnet", family.First(p.Subnets), "refused", why.String(), "reason", reasons[name])
		}
	}
	for _, c := range conflicts {
		if !slices.Contains(r.conflicts, c) {
			r.log.Error("subnet conflict: route refused", "conflict", c.String(), "loser", c.Loser, "winner", c.Winner, "subnet", c.Subnet)
			r.conflCnt.Add(1)
		}
	}
	for name := range r.stats {
		if !slices.ContainsFunc(peers, func(p Peer) bool { return p.Name == name }) {
			delete(r.stats, name) // gone for good: its counters go with it
		}
	}
	r.peers, r.reasons, r.refused, r.viaOf, r.conflicts = peers, reasons, refused, viaOf, conflicts
	return conflicts
}

// judge records when each peer of the new set was first seen with its
// subnets and returns the conflict rules' view of the past: the previous
// table's peers are incumbents, and the peers seen before our subnet had
// settled for ClaimGrace are early. r.mu is held.
func (r *Router) judge(peers []Peer) judge {
	now := r.cfg.Now()
	seen := make(map[string]seenRec, len(peers))
	for _, p := range peers {
		if old, ok := r.seen[p.Name]; ok && slices.Equal(old.subnets, p.Subnets) {
			seen[p.Name] = old
		} else {
			seen[p.Name] = seenRec{subnets: p.Subnets, at: now}
		}
	}
	r.seen = seen
	prev := map[string]*entry{}
	for _, e := range r.table.Load().entries {
		prev[e.peer.Name] = e
	}
	settled := r.localSince.Add(r.cfg.ClaimGrace)
	return judge{
		incumbent: func(p *Peer) bool {
			e := prev[p.Name]
			return e != nil && slices.Equal(e.peer.Subnets, p.Subnets) && e.peer.Underlay.Addr() == p.Underlay.Addr()
		},
		early: func(p *Peer) bool { return seen[p.Name].at.Before(settled) },
	}
}

func (r *Router) logChanges(peers []Peer, reasons map[string]string, viaOf map[string]Via) {
	for _, p := range peers {
		if old, nw := r.viaOf[p.Name], viaOf[p.Name]; old != nw {
			switch {
			case nw == "":
				r.log.Info("peer withdrawn", "peer", p.Name, "subnet", family.First(p.Subnets), "state", p.State, "reason", reasons[p.Name])
			case nw == ViaNone:
				r.log.Warn("peer not routed", "peer", p.Name, "subnet", family.First(p.Subnets), "underlay", p.Underlay, "reason", reasons[p.Name])
			default:
				r.log.Info("peer routed", "peer", p.Name, "subnet", family.First(p.Subnets), "underlay", p.Underlay, "via", nw)
			}
		}
	}
}

// syncDirect makes the kernel's direct routes match want.
func (r *Router) syncDirect(want map[netip.Prefix]netip.Addr) {
	if r.cfg.Routes == nil {
		return
	}
	for dst, via := range r.direct {
		if w, ok := want[dst]; !ok || w != via {
			if err := r.cfg.Routes.Delete(dst, via); err != nil {
				r.log.Error("removing direct route", "dst", dst, "via", via, "err", err)
				continue
			}
			delete(r.direct, dst)
		}
	}
	for dst, via := range want {
		if cur, ok := r.direct[dst]; ok && cur == via {
			continue
		}
		if err := r.cfg.Routes.Replace(dst, via); err != nil {
			r.log.Error("installing direct route", "dst", dst, "via", via, "err", err)
			continue
		}
		r.direct[dst] = via
	}
}

// RemoveRoutes removes every direct route the router installed (at
// shutdown).
func (r *Router) RemoveRoutes() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncDirect(nil)
}

// PeerStatus is one peer's line in `weft status`.
type PeerStatus struct {
	Name     string `json:"name"`
	Subnet   string `json:"subnet"`
	Subnet6  string `json:"subnet6,omitempty"` // a dual-stack peer's IPv6 subnet
	Underlay string `json:"underlay"`
	State    string `json:"state"`
	Static   bool   `json:"static"`
	Via      Via    `json:"via"`
	Reason   string `json:"reason,omitempty"`
	// Refused is the refusal's label (weft_peers_refused's reason),
	// empty for a peer that is not refused.
	Refused   string    `json:"refused,omitempty"`
	LastSeen  time.Time `json:"lastSeen,omitzero"`
	TxPackets uint64    `json:"txPackets"`
	TxBytes   uint64    `json:"txBytes"`
	RxPackets uint64    `json:"rxPackets"`
	RxBytes   uint64    `json:"rxBytes"`
	// Encryption is the peer's sessions (filled in by the node; nil
	// without --encrypt).
	Encryption *seal.PeerStatus `json:"encryption,omitempty"`
}

// Status reports every peer known, routed or not.
func (r *Router) Status() []PeerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]PeerStatus, 0, len(r.peers))
	for _, p := range r.peers {
		s := PeerStatus{Name: p.Name, State: p.State, Static: p.Static, Via: r.viaOf[p.Name], Reason: r.reasons[p.Name], Refused: r.refused[p.Name].String()}
		if s.Via == "" {
			s.Via = ViaNone
		}
		if sub := family.First(p.Subnets); sub.IsValid() {
			s.Subnet = sub.String()
		}
		if sub6 := family.Second(p.Subnets); sub6.IsValid() {
			s.Subnet6 = sub6.String()
		}
		if p.Underlay.IsValid() {
			s.Underlay = p.Underlay.String()
		}
		if st := r.stats[p.Name]; st != nil {
			s.TxPackets, s.TxBytes = st.txPackets.Load(), st.txBytes.Load()
			s.RxPackets, s.RxBytes = st.rxPackets.Load(), st.rxBytes.Load()
			if ns := st.lastRx.Load(); ns != 0 {
				s.LastSeen = time.Unix(0, ns)
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Drops returns the drop counters by reason name.
func (r *Router) Drops() map[string]uint64 {
	drops := r.dropCounts()
	m := make(map[string]uint64, numDropReasons)
	for i := range numDropReasons {
		m[i.String()] = drops[i]
	}
	return m
}

// Counts are packets counted outside the router (Config.Beside).
type Counts struct {
	Totals Totals
	Drops  map[DropReason]uint64
}

// beside returns Config.Beside's counts (none without it).
func (r *Router) beside() Counts {
	if r.cfg.Beside == nil {
		return Counts{}
	}
	return r.cfg.Beside()
}

// dropCounts are the drop counters by reason, Beside's added.
func (r *Router) dropCounts() [numDropReasons]uint64 {
	var out [numDropReasons]uint64
	for i := range numDropReasons {
		out[i] = r.ctr.drops[i].Load()
	}
	for reason, n := range r.beside().Drops {
		if reason < numDropReasons {
			out[reason] += n
		}
	}
	return out
}

// Totals are the data path's packet and byte counts.
type Totals struct {
	TxPackets uint64 `json:"txPackets"`
	TxBytes   uint64 `json:"txBytes"`
	RxPackets uint64 `json:"rxPackets"`
	RxBytes   uint64 `json:"rxBytes"`
}

// Totals returns the data path's packet and byte counts (Beside's added).
func (r *Router) Totals() Totals {
	b := r.beside().Totals
	return Totals{r.ctr.txPackets.Load() + b.TxPackets, r.ctr.txBytes.Load() + b.TxBytes,
		r.ctr.rxPackets.Load() + b.RxPackets, r.ctr.rxBytes.Load() + b.RxBytes}
}

func (r *Router) drop(reason DropReason, n int) {
	if n > 0 {
		r.ctr.drops[reason].Add(uint64(n))
	}
}
