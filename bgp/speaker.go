package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Defaults of the speaker's timers.
const (
	// DefaultRestartTime is the graceful-restart time weft advertises: how
	// long a router keeps our routes after our session drops without a
	// notification (a crash, kill -9), waiting for us to come back.
	// Calico's BIRD advertises 120 s too.
	DefaultRestartTime = 120 * time.Second
	// DefaultConnectRetry is how long the speaker waits between attempts
	// to open a session with a neighbour that does not answer, at first.
	DefaultConnectRetry = 5 * time.Second
	// DefaultMaxConnectRetry is where the wait stops growing: it doubles
	// after every backoffAttempts attempts without a session.
	DefaultMaxConnectRetry = 2 * time.Minute
	backoffAttempts        = 3
	// deferralTime bounds how long, after a (re)start, the speaker waits
	// for the neighbours' End-of-RIB before it sends its own routes.
	deferralTime = 2 * time.Second
)

// Neighbor is a BGP peer: a top-of-rack router, a route reflector.
type Neighbor struct {
	Addr     netip.Addr
	ASN      uint32
	Port     uint16 // 0: 179
	Password string // TCP MD5 (RFC 2385); empty: none
}

// Config configures a Speaker.
type Config struct {
	ASN      uint32
	RouterID netip.Addr
	// ListenPort is where the speaker accepts sessions; 0 or less: it does
	// not listen and opens every session itself (weft's default: the
	// neighbours' side of 179 is theirs).
	ListenPort int32
	// RestartTime is the graceful-restart time advertised (0: DefaultRestartTime).
	RestartTime time.Duration
	// ConnectRetry is the first wait between connection attempts (0:
	// DefaultConnectRetry); it doubles up to MaxConnectRetry (0:
	// DefaultMaxConnectRetry) while the neighbour stays down.
	ConnectRetry, MaxConnectRetry time.Duration
	Logger                        *slog.Logger
	// OnChange, if set, is called (from the speaker's own goroutine) after a
	// neighbour's session state changed.
	OnChange func(NeighborStatus)
}

// NeighborStatus is a neighbour's session as `weft status` shows it.
type NeighborStatus struct {
	Addr  string `json:"addr"`
	ASN   uint32 `json:"asn"`
	State string `json:"state"` // idle, connect, active, opensent, openconfirm, established
	// Since is when the session reached its current state (the uptime of an
	// established session).
	Since         time.Time `json:"since"`
	UptimeSeconds float64   `json:"uptimeSeconds,omitempty"`
	Sent          uint64    `json:"prefixesSent"`
	Received      uint64    `json:"prefixesReceived"`
	// LastError is why the session last went down (a notification sent or
	// received, such as "bad peer AS"; a hold timer).
	LastError string `json:"lastError,omitempty"`
}

// Up reports whether the session is established.
func (s NeighborStatus) Up() bool { return s.State == "established" }

// Speaker is an embedded BGP speaker that announces a set of paths to its
// neighbours. It owns gobgp's server goroutine and waits for it in Stop.
type Speaker struct {
	cfg Config
	log *slog.Logger
	srv *server.BgpServer

	serving sync.WaitGroup // gobgp's server loop and watchSessions
	done    chan struct{}  // closed by Stop

	peersMu sync.Mutex // serializes the neighbours' changes: SetNeighbors and backOff

	mu        sync.Mutex
	neighbors map[netip.Addr]Neighbor
	retry     map[netip.Addr]*backoff
	announced []Path
	sessions  map[netip.Addr]*NeighborStatus // state and last error, from events
	stopped   bool
}

// Start starts a speaker with no neighbours and nothing announced.
func Start(ctx context.Context, cfg Config) (*Speaker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RestartTime == 0 {
		cfg.RestartTime = DefaultRestartTime
	}
	if cfg.ConnectRetry == 0 {
		cfg.ConnectRetry = DefaultConnectRetry
	}
	if cfg.MaxConnectRetry == 0 {
		cfg.MaxConnectRetry = DefaultMaxConnectRetry
	}
	if !cfg.RouterID.Is4() {
		return nil, fmt.Errorf("bgp router ID %s: want an IPv4 address", cfg.RouterID)
	}
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelInfo)
	s := &Speaker{
		cfg:       cfg,
		log:       cfg.Logger,
		neighbors: map[netip.Addr]Neighbor{},
		sessions:  map[netip.Addr]*NeighborStatus{},
		retry:     map[netip.Addr]*backoff{},
	}
	// gobgp logs every connection attempt at info; weft logs session
	// changes itself (OnChange), so only gobgp's warnings pass, and the
	// notifications it sends and receives are kept as the neighbour's
	// last error (a refused OPEN never reaches a state event).
	h := &notifyHandler{next: cfg.Logger.With("component", "gobgp").Handler(), notified: s.notified}
	s.srv = server.NewBgpServer(server.LoggerOption(slog.New(h), lvl))
	s.serving.Go(s.srv.Serve)
	port := cfg.ListenPort
	if port <= 0 {
		port = -1
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.ASN, RouterId: cfg.RouterID.String(), ListenPort: port,
	}}); err != nil {
		s.srv.Stop()
		s.serving.Wait()
		return nil, fmt.Errorf("start bgp (as %d, router id %s): %w", cfg.ASN, cfg.RouterID, err)
	}
	s.done = make(chan struct{})
	s.serving.Go(s.watchSessions)
	return s, nil
}

// sessionPoll is how often the sessions' states are read. gobgp's own
// event watch runs a goroutine that its Stop does not wait for; a poll
// on a goroutine of our own is one we can wait for.
const sessionPoll = 250 * time.Millisecond

// watchSessions follows the neighbours' session states until Stop.
func (s *Speaker) watchSessions() {
	t := time.NewTicker(sessionPoll)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		states := map[netip.Addr]*api.Peer{}
		_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
				states[a] = p
			}
		})
		cancel()
		for a, p := range states {
			state := fsmState(p.GetState().GetSessionState())
			s.sessionState(a, state, time.Now())
			s.backOff(a, state == "established", time.Now())
		}
	}
}

// backoff is a neighbour's connect retry: it doubles after
// backoffAttempts attempts without a session, up to MaxConnectRetry, and
// goes back to ConnectRetry once a session is up.
type backoff struct {
	interval time.Duration
	since    time.Time // when the interval was set
}

// backOff grows the retry interval of a neighbour that stays down. gobgp
// keeps the interval a connect loop started with, so the neighbour (which
// has no session to lose) is replaced with the longer one.
func (s *Speaker) backOff(addr netip.Addr, up bool, now time.Time) {
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	s.mu.Lock()
	r, n := s.retry[addr], s.neighbors[addr]
	if r == nil || s.stopped {
		s.mu.Unlock()
		return
	}
	if up {
		r.since = now
		reset := r.interval != s.cfg.ConnectRetry
		r.interval = s.cfg.ConnectRetry
		s.mu.Unlock()
		if reset {
			// The next outage starts with short retries again; a timer
			// change does not touch the session.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if _, err := s.srv.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: s.peerConfig(n, s.cfg.ConnectRetry)}); err != nil {
				s.log.Warn("bgp: resetting the connect retry", "neighbor", addr, "err", err)
			}
		}
		return
	}
	if r.interval >= s.cfg.MaxConnectRetry || now.Sub(r.since) < backoffAttempts*r.interval {
		s.mu.Unlock()
		return
	}
	r.interval, r.since = min(2*r.interval, s.cfg.MaxConnectRetry), now
	next := r.interval
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		s.log.Warn("bgp: backing off", "neighbor", addr, "err", err)
		return
	}
	if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peerConfig(n, next)}); err != nil {
		s.log.Error("bgp: backing off: the neighbour is gone", "neighbor", addr, "err", err)
		return
	}
	s.log.Info("bgp neighbor still down: retrying less often", "neighbor", addr, "asn", n.ASN, "retry", next)
}

// RetryInterval is the neighbour's current connect retry (0: not a neighbour).
func (s *Speaker) RetryInterval(addr netip.Addr) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.retry[addr]; r != nil {
		return r.interval
	}
	return 0
}

// sessionState records a neighbour's session state and logs a change.
func (s *Speaker) sessionState(addr netip.Addr, state string, at time.Time) {
	s.mu.Lock()
	cur := s.sessions[addr]
	if _, ok := s.neighbors[addr]; !ok || s.stopped || cur == nil || cur.State == state {
		s.mu.Unlock()
		return
	}
	old := cur.State
	cur.State, cur.Since = state, at
	snap := *cur
	s.mu.Unlock()

	attrs := []any{"neighbor", addr, "asn", snap.ASN, "state", state, "was", old}
	if snap.LastError != "" && state != "established" {
		attrs = append(attrs, "last_error", snap.LastError)
	}
	s.log.Info("bgp session changed", attrs...)
	if s.cfg.OnChange != nil {
		s.cfg.OnChange(snap)
	}
}

// notified records a notification sent to or received from a neighbour.
func (s *Speaker) notified(addr netip.Addr, text string) {
	s.mu.Lock()
	cur := s.sessions[addr]
	changed := cur != nil && cur.LastError != text
	if changed {
		cur.LastError = text
	}
	s.mu.Unlock()
	if changed {
		s.log.Warn("bgp session refused", "neighbor", addr, "err", text)
	}
}

// notifyHandler passes gobgp's warnings and errors on, and reports the
// BGP notifications it logs.
type notifyHandler struct {
	next     slog.Handler
	attrs    []slog.Attr
	notified func(netip.Addr, string)
}

func (h *notifyHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *notifyHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "sent notification" || r.Message == "received notification" {
		var addr netip.Addr
		var code, sub int64
		visit := func(a slog.Attr) bool {
			switch a.Key {
			case "Key":
				addr, _ = netip.ParseAddr(a.Value.String())
			case "Code":
				code = a.Value.Int64()
			case "Subcode":
				sub = a.Value.Int64()
			}
			return true
		}
		for _, a := range h.attrs {
			visit(a)
		}
		r.Attrs(visit)
		if addr.IsValid() {
			text := bgp.NewNotificationErrorCode(uint8(code), uint8(sub)).String()
			h.notified(addr, strings.TrimSuffix(r.Message, " notification")+" notification: "+text)
		}
	}
	if r.Level < slog.LevelWarn || !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *notifyHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &notifyHandler{next: h.next.WithAttrs(as), attrs: append(slices.Clip(h.attrs), as...), notified: h.notified}
}

func (h *notifyHandler) WithGroup(name string) slog.Handler {
	return &notifyHandler{next: h.next.WithGroup(name), attrs: h.attrs, notified: h.notified}
}

func fsmState(st api.PeerState_SessionState) string {
	switch st {
	case api.PeerState_SESSION_STATE_IDLE:
		return "idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "opensent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// SetNeighbors makes the speaker's neighbours next: new ones are added,
// missing ones removed (their sessions closed with a Cease), changed ones
// (AS, port, password) replaced; the sessions of the others are not
// touched.
func (s *Speaker) SetNeighbors(ctx context.Context, next []Neighbor) error {
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	want := map[netip.Addr]Neighbor{}
	for _, n := range next {
		want[n.Addr] = n
	}
	s.mu.Lock()
	cur := s.neighbors
	s.mu.Unlock()
	var errs []error
	for addr, n := range cur {
		if w, ok := want[addr]; ok && w == n {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("remove bgp neighbor %s: %w", addr, err))
			continue
		}
		s.mu.Lock()
		delete(s.neighbors, addr)
		delete(s.sessions, addr)
		delete(s.retry, addr)
		s.mu.Unlock()
		if _, ok := want[addr]; !ok {
			s.log.Info("bgp neighbor removed", "neighbor", addr, "asn", n.ASN)
		}
	}
	for _, addr := range sortedAddrs(want) {
		n := want[addr]
		s.mu.Lock()
		_, have := s.neighbors[addr]
		if !have {
			// Registered before AddPeer, so that its first events count.
			s.neighbors[addr] = n
			s.retry[addr] = &backoff{interval: s.cfg.ConnectRetry, since: time.Now()}
			s.sessions[addr] = &NeighborStatus{Addr: addr.String(), ASN: n.ASN, State: "idle", Since: time.Now()}
		}
		s.mu.Unlock()
		if have {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peerConfig(n, s.cfg.ConnectRetry)}); err != nil {
			s.mu.Lock()
			delete(s.neighbors, addr)
			delete(s.sessions, addr)
			delete(s.retry, addr)
			s.mu.Unlock()
			errs = append(errs, fmt.Errorf("add bgp neighbor %s (as %d): %w", addr, n.ASN, err))
			continue
		}
		s.log.Info("bgp neighbor added", "neighbor", addr, "asn", n.ASN, "port", cmpPort(n.Port), "md5", n.Password != "")
	}
	return errors.Join(errs...)
}

func cmpPort(p uint16) uint16 {
	if p == 0 {
		return 179
	}
	return p
}

func sortedAddrs(m map[netip.Addr]Neighbor) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// peerConfig is a neighbour's gobgp configuration: both unicast families
// (the next hop of each path says which it can use), graceful restart
// with the forwarding bit (a restarted weft's kernel kept forwarding), and
// a short connect retry.
func (s *Speaker) peerConfig(n Neighbor, retryEvery time.Duration) *api.Peer {
	fam := func(afi api.Family_Afi) *api.AfiSafi {
		return &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		}
	}
	retry := uint64(max(1, retryEvery/time.Second))
	return &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: n.Addr.String(),
			PeerAsn:         n.ASN,
			AuthPassword:    n.Password,
			Description:     "weft",
		},
		Transport: &api.Transport{RemotePort: uint32(cmpPort(n.Port)), PassiveMode: false},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:           retry,
			IdleHoldTimeAfterReset: retry,
		}},
		GracefulRestart: &api.GracefulRestart{
			Enabled:     true,
			RestartTime: uint32(s.cfg.RestartTime / time.Second),
			// Restarting: the forwarding-state bit tells a router that
			// holds our routes from a run that crashed to keep them until
			// we have sent ours again.
			LocalRestarting: true,
			DeferralTime:    uint32(deferralTime / time.Second),
		},
		AfiSafis: []*api.AfiSafi{fam(api.Family_AFI_IP), fam(api.Family_AFI_IP6)},
	}
}

// Announce makes the announced set next: paths that are new (or whose
// next hop changed) are sent, prefixes no longer in next are withdrawn.
func (s *Speaker) Announce(next []Path) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("bgp speaker stopped")
	}
	add, withdraw := Diff(s.announced, next)
	var errs []error
	for _, p := range withdraw {
		ap, err := toGoBGP(p)
		if err == nil {
			err = s.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{ap}})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p.Prefix, err))
			continue
		}
		s.log.Info("bgp: withdrew", "prefix", p.Prefix)
	}
	for _, p := range add {
		ap, err := toGoBGP(p)
		if err == nil {
			_, err = s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{ap}})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s: %w", p, err))
			continue
		}
		s.log.Info("bgp: announcing", "prefix", p.Prefix, "next_hop", p.NextHop)
	}
	s.announced = slices.Clone(next)
	return errors.Join(errs...)
}

// Announced is the set of paths announced now.
func (s *Speaker) Announced() []Path {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.announced)
}

func toGoBGP(p Path) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(p.Prefix)
	if err != nil {
		return nil, err
	}
	origin := bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	if p.Prefix.Addr().Is4() {
		nh, err := bgp.NewPathAttributeNextHop(p.NextHop)
		if err != nil {
			return nil, err
		}
		return &apiutil.Path{Family: bgp.RF_IPv4_UC, Nlri: nlri, Attrs: []bgp.PathAttributeInterface{origin, nh}}, nil
	}
	mp, err := bgp.NewPathAttributeMpReachNLRI(bgp.RF_IPv6_UC, []bgp.PathNLRI{{NLRI: nlri}}, p.NextHop)
	if err != nil {
		return nil, err
	}
	return &apiutil.Path{Family: bgp.RF_IPv6_UC, Nlri: nlri, Attrs: []bgp.PathAttributeInterface{origin, mp}}, nil
}

// Status lists the neighbours' sessions, sorted by address.
func (s *Speaker) Status(ctx context.Context) []NeighborStatus {
	counts := map[netip.Addr][2]uint64{}
	_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		var c [2]uint64
		for _, af := range p.GetAfiSafis() {
			c[0] += af.GetState().GetAdvertised()
			c[1] += af.GetState().GetReceived()
		}
		counts[a] = c
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	out := make([]NeighborStatus, 0, len(s.sessions))
	for _, a := range sortedAddrs(s.neighbors) {
		st := *s.sessions[a]
		st.Sent, st.Received = counts[a][0], counts[a][1]
		if st.Up() {
			st.UptimeSeconds = now.Sub(st.Since).Round(time.Second).Seconds()
		}
		out = append(out, st)
	}
	return out
}

// Stop withdraws every announced path, closes the sessions (a Cease, so
// routers drop our routes at once rather than keep them for a restart)
// and stops the server, waiting for its goroutines.
func (s *Speaker) Stop() {
	if err := s.Announce(nil); err != nil {
		s.log.Warn("bgp: withdrawing at shutdown", "err", err)
	}
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	close(s.done)
	s.srv.Stop()
	s.serving.Wait()
}
