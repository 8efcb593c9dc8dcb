// Package membership is weft's view of which hosts exist: a wrapper around
// hashicorp/memberlist that joins the cluster (retrying in the background),
// advertises this host's Meta, leaves gracefully, and notifies the rest of
// the daemon when membership changes. It knows nothing of packets or routes.
package membership

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's state as seen by this host.
type State uint8

// Member states.
//
// StateSuspect is defined for completeness but never reported: memberlist
// v0.7.0 exposes no suspicion event and never fills in Node.State (its
// internal nodeState shadows the field, hashicorp/memberlist#293), so a
// suspected member stays StateAlive until it is declared dead.
const (
	StateAlive State = iota
	StateSuspect
	StateDead
	StateLeft
)

// String returns "alive", "suspect", "dead" or "left".
func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	default:
		return fmt.Sprintf("state(%d)", uint8(s))
	}
}

// Member is another host as known locally.
type Member struct {
	Name    string
	Gossip  netip.AddrPort // memberlist address
	Meta    Meta           // decoded metadata (zero if MetaErr != nil)
	MetaErr error          // non-nil if the node's metadata did not decode (such a node must not be routed)
	// Cert is the certificate (DER) whose fingerprint Meta.Proof names,
	// once this host holds it (cert.go); nil before, and without a proof.
	// Shared: read it, never modify it.
	Cert  []byte
	State State
	Since time.Time // when this node last changed state (as seen locally)
}

// Config configures Start. Zero tuning values mean the
// memberlist.DefaultLANConfig() value or the default documented on the field.
type Config struct {
	Name          string     // node name, unique in the cluster; empty = os.Hostname()
	BindAddr      netip.Addr // address memberlist binds (invalid or unspecified = all)
	BindPort      int        // gossip port (TCP+UDP); the caller sets the 7946 default; 0 = any free port (tests)
	AdvertiseAddr netip.Addr // address advertised to others (the underlay IP); invalid → memberlist picks
	Seeds         []string   // "host" or "host:port" (port defaults to BindPort); IPv6 as "[::1]:7946" or "::1"
	Meta          Meta
	Cert          []byte   // this host's certificate (DER), handed to peers beside Meta.Proof (cert.go); nil = none
	SecretKey     []byte   // optional 16/24/32-byte AES key for memberlist encryption (nil = none)
	ExtraKeys     [][]byte // further keys accepted for decryption (key rotation); need SecretKey
	Logger        *slog.Logger
	Metrics       *Metrics // may be nil

	RetryInterval     time.Duration // join retry base interval, default 2s, doubling per failure
	MaxRetryInterval  time.Duration // join retry backoff cap, default 30s
	DeadReclaim       time.Duration // memberlist DeadNodeReclaimTime, default 3s: a host that restarts with the same name and a new address is accepted
	ReconnectInterval time.Duration // partition healing: how often to try to rejoin dead members and missing seeds, default 10s
	ReapAfter         time.Duration // how long dead and left members are kept (and dead ones retried), default 24h

	// memberlist failure-detection and gossip tuning, mainly for tests.
	ProbeInterval       time.Duration
	ProbeTimeout        time.Duration
	SuspicionMult       int
	GossipInterval      time.Duration
	PushPullInterval    time.Duration
	GossipToTheDeadTime time.Duration
	TCPTimeout          time.Duration

	// Tests only: smaller bounds than maxMembers and maxSeenIntents (0 =
	// the constant).
	maxMembers     int
	maxSeenIntents int
}

const (
	defaultRetryInterval    = 2 * time.Second
	defaultMaxRetryInterval = 30 * time.Second
	defaultDeadReclaim      = 3 * time.Second
	// settleFor and settleEvery: after start, re-announce ourselves with a
	// push/pull to a known member this often, for this long. A host that
	// restarted with a new address is refused by peers until they have
	// declared its old incarnation dead and DeadReclaim has passed; the
	// next push/pull after that is accepted.
	settleFor                = time.Minute
	settleEvery              = 3 * time.Second
	defaultReconnectInterval = 10 * time.Second
	defaultReapAfter         = 24 * time.Hour

	// updateTimeout bounds how long UpdateMeta waits for the first
	// transmission of the new metadata.
	updateTimeout = 5 * time.Second
	// seedResolveTimeout bounds the DNS lookup of a hostname seed when
	// checking whether all seeds are members.
	seedResolveTimeout = 2 * time.Second
	// gossipLabel is prepended to all memberlist traffic so that weft never
	// merges with another memberlist/serf cluster on the same port.
	gossipLabel = "weft"
)

// ErrShutdown is returned by operations on a Cluster after Shutdown.
var ErrShutdown = errors.New("membership: cluster is shut down")

// Cluster is this host's membership in the weft gossip cluster.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	ml      *memberlist.Memberlist
	self    netip.AddrPort // advertised gossip address
	seeds   []string       // normalized "host:port"; guarded by mu (SetSeeds)
	keyring *memberlist.Keyring
	bcast   *memberlist.TransmitLimitedQueue
	changes chan struct{}

	localMeta atomic.Pointer[[]byte] // encoded; read by memberlist via NodeMeta
	running   atomic.Bool

	mu   sync.Mutex // leaf lock: never held while calling into memberlist or the broadcast queue
	meta Meta
	// members: at most maxMembers (c.maxMembers) entries, alive, dead and
	// left; a new name is admitted only with room (NotifyAlive, bounds.go).
	members map[string]*Member
	// Leave intents, see intent.go. pendingLeave: node name → when its
	// leave intent arrived; only alive members get one, so at most one per
	// member. seenIntents: intent ids seen (deduplication), at most
	// maxSeenIntents (c.maxSeenIntents), the oldest forgotten first.
	pendingLeave map[string]time.Time
	seenIntents  intentIDs

	maxMembers     int           // maxMembers, or Config.maxMembers in tests
	maxSeenIntents int           // maxSeenIntents, or Config.maxSeenIntents in tests
	forgetGone     time.Duration // a member dead or left this long may make room in a full table
	ownIntent      atomic.Uint64 // the id of our own leave intent, once sent
	refuseLog      rateLimit     // refusal log lines: refuseLogBurst per logWindow
	certs          certStore     // guarded by mu
	certAnswers    rateLimit     // certificate answers: certAnswerBurst a second
	certJobs       chan certJob  // answers for certLoop, at most certQueue
	certAsk        chan struct{} // wakes certLoop to ask for missing certificates

	lifeMu     sync.Mutex // serializes UpdateMeta, Leave and Shutdown
	left       bool
	shut       bool
	cancelLoop context.CancelFunc
	wg         sync.WaitGroup
}

// Start creates the memberlist and starts the background loop that joins
// the seeds and heals partitions. It never blocks on seeds: a host whose
// seeds are not up yet starts alone and keeps retrying in the background.
//
// ctx bounds the background loop only; memberlist itself runs until
// Shutdown, so that Leave still works after ctx is cancelled. Always call
// Shutdown.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	metaBytes, err := cfg.Meta.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("membership: local metadata: %w", err)
	}
	seeds, err := normalizeSeeds(cfg.Seeds, cfg.BindPort)
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}

	c := &Cluster{
		cfg:            cfg,
		log:            cfg.Logger,
		seeds:          seeds,
		changes:        make(chan struct{}, 1),
		meta:           cfg.Meta,
		members:        make(map[string]*Member),
		pendingLeave:   make(map[string]time.Time),
		seenIntents:    newIntentIDs(),
		maxMembers:     cmp.Or(cfg.maxMembers, maxMembers),
		maxSeenIntents: cmp.Or(cfg.maxSeenIntents, maxSeenIntents),
		certs:          newCertStore(cfg.Cert),
		certJobs:       make(chan certJob, certQueue),
		certAsk:        make(chan struct{}, 1),
	}
	if len(cfg.Cert) > MaxCertSize {
		return nil, fmt.Errorf("membership: certificate of %d bytes exceeds %d", len(cfg.Cert), MaxCertSize)
	}
	c.localMeta.Store(&metaBytes)

	mlc, err := c.memberlistConfig()
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	c.forgetGone = mlc.GossipToTheDeadTime
	// The broadcast queue holds leave intents only: ours and relays of
	// current members', one per name; at most maxRelayQueue (queueIntent).
	c.bcast = &memberlist.TransmitLimitedQueue{
		NumNodes:       c.numAlive,
		RetransmitMult: mlc.RetransmitMult,
	}
	tr, port, err := newBoundedTransport(mlc.BindAddr, mlc.BindPort, mlc.Logger, func(reason string, err error) {
		c.refuse(reason, "gossip stream", "", err)
	})
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	mlc.Transport = tr
	mlc.BindPort, mlc.AdvertisePort = port, port
	ml, err := memberlist.Create(mlc)
	if err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("membership: create memberlist on %s:%d: %w", mlc.BindAddr, mlc.BindPort, err)
	}
	c.ml = ml
	local := ml.LocalNode()
	c.self = addrPort(local.Addr, local.Port)
	c.running.Store(true)
	cfg.Metrics.attach(c)

	loopCtx, cancel := context.WithCancel(ctx)
	c.cancelLoop = cancel
	c.wg.Add(2)
	go c.run(loopCtx)
	go c.certLoop(loopCtx)

	c.log.Info("gossip started", "name", cfg.Name, "addr", c.self,
		"seeds", seeds, "encrypted", len(cfg.SecretKey) > 0)
	return c, nil
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return cfg, fmt.Errorf("no node name and no hostname: %w", err)
		}
		cfg.Name = h
	}
	if !validName(cfg.Name) {
		return cfg, fmt.Errorf("node name %q: %w", logName(cfg.Name), errNameTooLong)
	}
	if cfg.BindPort < 0 || cfg.BindPort > 65535 {
		return cfg, fmt.Errorf("bind port %d out of range", cfg.BindPort)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	setDefault(&cfg.RetryInterval, defaultRetryInterval)
	setDefault(&cfg.MaxRetryInterval, defaultMaxRetryInterval)
	cfg.MaxRetryInterval = max(cfg.MaxRetryInterval, cfg.RetryInterval)
	setDefault(&cfg.DeadReclaim, defaultDeadReclaim)
	setDefault(&cfg.ReconnectInterval, defaultReconnectInterval)
	setDefault(&cfg.ReapAfter, defaultReapAfter)
	cfg.Seeds = slices.Clone(cfg.Seeds)
	cfg.SecretKey = slices.Clone(cfg.SecretKey)
	return cfg, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func (c *Cluster) memberlistConfig() (*memberlist.Config, error) {
	cfg := c.cfg
	mlc := memberlist.DefaultLANConfig()
	mlc.Name = cfg.Name
	mlc.BindAddr = "0.0.0.0"
	if cfg.BindAddr.IsValid() {
		mlc.BindAddr = cfg.BindAddr.Unmap().String()
	}
	mlc.BindPort = cfg.BindPort
	mlc.AdvertisePort = cfg.BindPort
	if cfg.AdvertiseAddr.IsValid() {
		mlc.AdvertiseAddr = cfg.AdvertiseAddr.Unmap().String()
	}
	mlc.Label = gossipLabel
	mlc.DeadNodeReclaimTime = cfg.DeadReclaim
	mlc.Delegate = (*delegate)(c)
	mlc.Events = (*delegate)(c)
	mlc.Alive = (*delegate)(c)
	mlc.Merge = (*delegate)(c)
	mlc.Logger = newMemberlistLogger(c.log.With("lib", "memberlist"), c.cfg.Metrics.keyError)

	// Tuning left at zero keeps memberlist's LAN default.
	setIfPositive(&mlc.ProbeInterval, cfg.ProbeInterval)
	setIfPositive(&mlc.ProbeTimeout, cfg.ProbeTimeout)
	setIfPositive(&mlc.SuspicionMult, cfg.SuspicionMult)
	setIfPositive(&mlc.GossipInterval, cfg.GossipInterval)
	setIfPositive(&mlc.PushPullInterval, cfg.PushPullInterval)
	setIfPositive(&mlc.GossipToTheDeadTime, cfg.GossipToTheDeadTime)
	setIfPositive(&mlc.TCPTimeout, cfg.TCPTimeout)

	if len(cfg.SecretKey) > 0 {
		kr, err := memberlist.NewKeyring(cfg.ExtraKeys, cfg.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("secret key: %w", err)
		}
		mlc.Keyring = kr
		c.keyring = kr
		mlc.GossipVerifyIncoming = true
		mlc.GossipVerifyOutgoing = true
	}
	return mlc, nil
}

// normalizeSeeds turns "host" and "host:port" into "host:port".
func normalizeSeeds(seeds []string, defPort int) ([]string, error) {
	out := make([]string, 0, len(seeds))
	for _, s := range seeds {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			// No port: a bare host name, IPv4 or IPv6 address (brackets optional).
			host = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
			if defPort == 0 {
				return nil, fmt.Errorf("seed %q has no port and the bind port is 0", s)
			}
			port = strconv.Itoa(defPort)
		}
		if host == "" {
			return nil, fmt.Errorf("seed %q has no host", s)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return nil, fmt.Errorf("seed %q: invalid port %q", s, port)
		}
		hp := net.JoinHostPort(host, port)
		if !slices.Contains(out, hp) {
			out = append(out, hp)
		}
	}
	return out, nil
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// Changes returns a channel that receives a value after any join, leave,
// update or state change. It is coalescing (capacity 1): a receiver should
// re-read Members after every receive.
func (c *Cluster) Changes() <-chan struct{} { return c.changes }

func (c *Cluster) notify() {
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// Members returns a snapshot of all other nodes known (alive, dead and
// left; see StateSuspect), sorted by name. It excludes this host. Dead and
// left members are kept for Config.ReapAfter.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		mm := *m
		mm.Cert = c.certFor(m)
		out = append(out, mm)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// LocalName returns this host's node name.
func (c *Cluster) LocalName() string { return c.cfg.Name }

// LocalAddr returns the gossip address this host advertises.
func (c *Cluster) LocalAddr() netip.AddrPort { return c.self }

// LocalMeta returns the metadata this host currently advertises.
func (c *Cluster) LocalMeta() Meta {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.meta
}

// UpdateMeta advertises new metadata for this host. It fails if m is
// invalid or the cluster has left or shut down. A broadcast that is slow to
// go out is logged, not returned: the new metadata is already in effect
// locally and also spreads through push/pull.
func (c *Cluster) UpdateMeta(m Meta) error {
	b, err := m.MarshalBinary()
	if err != nil {
		return fmt.Errorf("membership: update metadata: %w", err)
	}
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	switch {
	case c.shut:
		return fmt.Errorf("membership: update metadata: %w", ErrShutdown)
	case c.left:
		return errors.New("membership: update metadata: cluster has been left")
	}
	c.mu.Lock()
	c.meta = m
	c.mu.Unlock()
	c.localMeta.Store(&b)
	if err := c.ml.UpdateNode(updateTimeout); err != nil {
		c.log.Warn("metadata update broadcast is slow", "err", err)
	}
	return nil
}

// Health returns memberlist's health (awareness) score: 0 is healthy,
// higher means this host is failing to meet the protocol's deadlines.
func (c *Cluster) Health() int { return c.ml.GetHealthScore() }

// Running reports whether memberlist is created and not shut down.
func (c *Cluster) Running() bool { return c.running.Load() }

// Leave leaves the cluster gracefully: peers see this host as StateLeft at
// once instead of detecting a failure. It stops the background join loop.
// timeout bounds the whole call (≤ 0: no bound). Calling it again is a no-op.
func (c *Cluster) Leave(timeout time.Duration) error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.shut {
		return fmt.Errorf("membership: leave: %w", ErrShutdown)
	}
	if c.left {
		return nil
	}
	c.left = true
	c.cancelLoop()

	start := time.Now()
	if c.numAlive() > 1 {
		// Announce the intent first so that peers can tell the dead message
		// memberlist sends next from a failure (see intent.go).
		wait := 5 * time.Second
		if timeout > 0 {
			wait = timeout / 2
		}
		done := c.broadcastLeaveIntent()
		t := time.NewTimer(wait)
		select {
		case <-done:
		case <-t.C:
			c.log.Debug("leave intent broadcast not finished in time", "wait", wait)
		}
		t.Stop()
	}
	remaining := time.Duration(0)
	if timeout > 0 {
		remaining = max(timeout-time.Since(start), time.Millisecond)
	}
	if err := c.ml.Leave(remaining); err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	c.log.Info("left gossip cluster")
	return nil
}

// Shutdown stops memberlist and the background loop and waits for them. It
// does not announce a leave (call Leave first for that). It is idempotent.
func (c *Cluster) Shutdown() error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.shut {
		return nil
	}
	c.shut = true
	c.running.Store(false)
	c.cancelLoop()
	err := c.ml.Shutdown()
	c.wg.Wait() // a join in flight finishes within memberlist's TCPTimeout
	c.cfg.Metrics.detach(c)
	if err != nil {
		return fmt.Errorf("membership: shutdown: %w", err)
	}
	c.log.Info("gossip stopped")
	return nil
}

// numAlive counts alive members including self. It only takes c.mu, so it
// is safe to call from memberlist callbacks and the broadcast queue.
func (c *Cluster) numAlive() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 1
	for _, m := range c.members {
		if m.State == StateAlive {
			n++
		}
	}
	return n
}

// run is the background loop: (1) while no other member is alive and seeds
// are configured, join the seeds with exponential backoff, forever; (2)
// every ReconnectInterval, reap old dead/left members and try to reconnect
// to a random recently dead member and to seeds that are not members (like
// serf's reconnect), which heals partitions without a restart.
func (c *Cluster) run(ctx context.Context) {
	defer c.wg.Done()
	base, maxBackoff := c.cfg.RetryInterval, c.cfg.MaxRetryInterval
	backoff := base
	attempt := 0

	join := time.NewTimer(0)
	defer join.Stop()
	joinPending := len(c.currentSeeds()) > 0
	if !joinPending {
		join.Stop()
	}
	tick := time.NewTicker(c.cfg.ReconnectInterval)
	defer tick.Stop()
	settle := time.NewTicker(settleEvery)
	defer settle.Stop()
	started := time.Now()

	for {
		select {
		case <-ctx.Done():
			return
		case <-join.C:
			joinPending = false
			if c.numAlive() > 1 {
				backoff, attempt = base, 0
				continue
			}
			attempt++
			n, err := c.join(c.currentSeeds())
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				c.log.Info("joined gossip cluster", "attempt", attempt, "contacted", n, "members", c.numAlive())
				backoff, attempt = base, 0
				continue
			}
			c.log.Info("gossip join failed, retrying", "attempt", attempt, "seeds", c.currentSeeds(),
				"retry_in", backoff, "err", err)
			join.Reset(backoff)
			joinPending = true
			backoff = min(2*backoff, maxBackoff)
		case now := <-tick.C:
			c.reap(now)
			if c.numAlive() == 1 && len(c.currentSeeds()) > 0 {
				if !joinPending {
					// Lost every peer after having joined: start over.
					backoff, attempt = base, 0
					join.Reset(0)
					joinPending = true
				}
			}
			c.reconnect(ctx, now)
		case now := <-settle.C:
			if now.Sub(started) > settleFor {
				settle.Stop()
				continue
			}
			c.announce()
		}
	}
}

// announce pushes our state to one alive member (a memberlist push/pull).
func (c *Cluster) announce() {
	var targets []string
	for _, m := range c.Members() {
		if m.State == StateAlive {
			targets = append(targets, m.Gossip.String())
		}
	}
	if len(targets) == 0 {
		return
	}
	_, _ = c.ml.Join([]string{targets[rand.IntN(len(targets))]})
}

// join tries every address in targets concurrently (so that unreachable
// hosts cost one TCPTimeout, not one each) and reports how many were
// contacted. It fails if none was, or if no other member is alive
// afterwards (e.g. the only seed reached was this host itself).
func (c *Cluster) join(targets []string) (int, error) {
	c.cfg.Metrics.joinAttempt()
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		contacted int
		errs      []error
	)
	for _, t := range targets {
		wg.Go(func() {
			n, err := c.ml.Join([]string{t})
			mu.Lock()
			defer mu.Unlock()
			contacted += n
			if err != nil {
				// memberlist returns a multierror whose message spans lines.
				if me, ok := err.(interface{ WrappedErrors() []error }); ok {
					errs = append(errs, me.WrappedErrors()...)
				} else {
					errs = append(errs, err)
				}
			}
		})
	}
	wg.Wait()
	switch {
	case contacted == 0:
		c.cfg.Metrics.joinFailure()
		return 0, fmt.Errorf("join %v: %w", targets, joinedErrors(errs))
	case c.numAlive() == 1:
		c.cfg.Metrics.joinFailure()
		return contacted, fmt.Errorf("join %v: no other member reachable", targets)
	}
	return contacted, nil
}

// reconnect tries to rejoin one random member that died within ReapAfter,
// and, if we have peers at all, any seed that is not an alive member.
func (c *Cluster) reconnect(ctx context.Context, now time.Time) {
	var (
		dead   []string
		alive  = make(map[netip.AddrPort]bool)
		others int
	)
	c.mu.Lock()
	for _, m := range c.members {
		switch m.State {
		case StateAlive:
			alive[m.Gossip] = true
			others++
		case StateDead:
			if now.Sub(m.Since) < c.cfg.ReapAfter && m.Gossip.IsValid() {
				dead = append(dead, m.Gossip.String())
			}
		}
	}
	c.mu.Unlock()

	var targets []string
	if len(dead) > 0 {
		targets = append(targets, dead[rand.IntN(len(dead))])
	}
	if others > 0 { // when alone, the join loop handles the seeds
		for _, s := range c.missingSeeds(ctx, alive) {
			if !slices.Contains(targets, s) {
				targets = append(targets, s)
			}
		}
	}
	if len(targets) == 0 {
		return
	}
	n, err := c.join(targets)
	if err != nil {
		c.log.Debug("gossip reconnect failed", "targets", targets, "err", err)
		return
	}
	c.log.Info("gossip reconnect succeeded", "targets", targets, "contacted", n)
}

// missingSeeds returns the seeds that are neither this host nor an alive
// member. Hostname seeds are resolved; one that does not resolve counts as
// missing.
func (c *Cluster) missingSeeds(ctx context.Context, alive map[netip.AddrPort]bool) []string {
	var missing []string
	for _, s := range c.currentSeeds() {
		host, portStr, _ := net.SplitHostPort(s) // normalized in Start
		port, _ := strconv.ParseUint(portStr, 10, 16)
		var addrs []netip.Addr
		if a, err := netip.ParseAddr(host); err == nil {
			addrs = []netip.Addr{a}
		} else {
			rctx, cancel := context.WithTimeout(ctx, seedResolveTimeout)
			addrs, _ = net.DefaultResolver.LookupNetIP(rctx, "ip", host)
			cancel()
		}
		found := false
		for _, a := range addrs {
			ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
			if ap == c.self || alive[ap] {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, s)
		}
	}
	return missing
}

// reap forgets dead and left members older than ReapAfter and stale leave
// intents.
func (c *Cluster) reap(now time.Time) {
	removed := false
	c.mu.Lock()
	for name, m := range c.members {
		if m.State != StateAlive && now.Sub(m.Since) > c.cfg.ReapAfter {
			delete(c.members, name)
			removed = true
		}
	}
	c.expireIntents(now)
	if removed {
		c.tidyCerts()
	}
	c.mu.Unlock()
	if removed {
		c.notify()
	}
}

// joinedErrors is like errors.Join but prints on one line, for logs.
type joinedErrors []error

func (e joinedErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e joinedErrors) Unwrap() []error { return e }

func (c *Cluster) currentSeeds() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seeds
}

// SetSeeds replaces the hosts the background loop joins and keeps
// reconnecting to (a reload of the join list).
func (c *Cluster) SetSeeds(seeds []string) error {
	norm, err := normalizeSeeds(seeds, c.cfg.BindPort)
	if err != nil {
		return fmt.Errorf("membership: %w", err)
	}
	c.mu.Lock()
	c.seeds = norm
	c.mu.Unlock()
	return nil
}

// SetKeys makes primary the key that encrypts gossip and accepts others
// too; keys not listed are removed. It is the install-use-remove key
// rotation of serf: install a new key everywhere as an extra key, then make
// it primary everywhere, then remove the old one. Encryption cannot be
// turned on or off without a restart.
func (c *Cluster) SetKeys(primary []byte, others [][]byte) error {
	if c.keyring == nil {
		if len(primary) == 0 {
			return nil
		}
		return errors.New("membership: gossip encryption cannot be turned on without a restart")
	}
	if len(primary) == 0 {
		return errors.New("membership: gossip encryption cannot be turned off without a restart")
	}
	want := append([][]byte{primary}, others...)
	for _, k := range want {
		if err := c.keyring.AddKey(k); err != nil {
			return fmt.Errorf("membership: install key: %w", err)
		}
	}
	if err := c.keyring.UseKey(primary); err != nil {
		return fmt.Errorf("membership: use key: %w", err)
	}
	for _, k := range c.keyring.GetKeys() {
		if !slices.ContainsFunc(want, func(w []byte) bool { return bytes.Equal(w, k) }) {
			if err := c.keyring.RemoveKey(k); err != nil {
				return fmt.Errorf("membership: remove key: %w", err)
			}
		}
	}
	return nil
}

// setIfPositive sets *dst to v when v is above zero.
func setIfPositive[T time.Duration | int](dst *T, v T) {
	if v > 0 {
		*dst = v
	}
}
