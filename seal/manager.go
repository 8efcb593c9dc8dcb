package seal

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"
)

// Defaults, as WireGuard's timers.
const (
	DefaultRekeyAfter = 2 * time.Minute
	// DefaultRetryAfter is how long an initiation waits for its response
	// before another is sent.
	DefaultRetryAfter = time.Second
	// DefaultRekeyAfterMessages is the send counter at which a new
	// handshake starts; DefaultRejectAfterMessages the one at which the
	// session stops sending (and receiving) altogether, long before the
	// 64-bit counter could wrap.
	DefaultRekeyAfterMessages  = 1 << 60
	DefaultRejectAfterMessages = 1<<64 - 1<<13 - 1
	// DefaultHandshakeRate and DefaultHandshakeBurst bound the handshake
	// messages a peer can make us process (a token bucket each).
	DefaultHandshakeRate  = 10 // per second
	DefaultHandshakeBurst = 5

	backlog = 64 // handshake messages waiting for the Manager
)

// prologue binds the handshake to this protocol, its wire version and the
// cipher. v2: handshake messages end in a mac1 (mac.go).
var prologue = []byte("weft data plane v2")

// Config is a Manager's configuration. Zero values take the defaults.
type Config struct {
	Static KeyPair
	Cipher Cipher
	// Send sends a handshake message or a keepalive to a peer's data port.
	Send func(b []byte, dst netip.AddrPort) error
	// Now is the clock (time.Now).
	Now func() time.Time
	// Rand is the source of ephemeral keys and session indices
	// (crypto/rand).
	Rand io.Reader
	// RekeyAfter is the age at which the session's initiator starts a new
	// handshake; RejectAfter (default 1.5 × RekeyAfter) the age at which a
	// session is no longer used at all.
	RekeyAfter, RejectAfter time.Duration
	RetryAfter              time.Duration
	// Tick is how often the Manager looks at its peers' timers
	// (default RetryAfter/4).
	Tick                                    time.Duration
	RekeyAfterMessages, RejectAfterMessages uint64
	HandshakeRate                           float64
	HandshakeBurst                          int
	Logger                                  *slog.Logger
}

// PeerConfig names an encrypted peer: its static key (from its gossip
// metadata) and its data-plane address.
type PeerConfig struct {
	Name string
	Key  PublicKey
	Addr netip.AddrPort
}

// HSResult is a handshake outcome: a counter of Manager, and a label value
// of weft_handshakes_total.
type HSResult uint8

// Handshake outcomes.
const (
	HSInitiated   HSResult = iota // initiations sent (first tries and retries)
	HSResponded                   // initiations answered
	HSCompleted                   // responses accepted: a session as initiator
	HSInvalid                     // handshake messages that failed authentication
	HSBadMAC                      // messages whose mac1 is wrong: dropped by the worker, before the rate limit
	HSReplayed                    // initiations older than one already accepted
	HSUnexpected                  // responses to no initiation of ours
	HSRateLimited                 // messages dropped by the per-peer limit or a full backlog
	HSSendError                   // messages the socket refused
	numHS
)

var hsLabels = [numHS]string{
	HSInitiated: "initiated", HSResponded: "responded", HSCompleted: "completed", HSInvalid: "invalid",
	HSBadMAC: "bad_mac", HSReplayed: "replayed", HSUnexpected: "unexpected", HSRateLimited: "rate_limited",
	HSSendError: "send_error",
}

// String is the outcome's label value.
func (r HSResult) String() string {
	if r < numHS {
		return hsLabels[r]
	}
	return "unknown"
}

// HandshakeResults lists the label values of weft_handshakes_total.
func HandshakeResults() []string { return append([]string(nil), hsLabels[:]...) }

type hsMsg struct {
	p   *Peer
	n   int
	buf [InitiationLen]byte
}

// Manager runs the handshakes of every encrypted peer and owns their
// sessions. Run is its one goroutine; Seal and Open (on Peer) are the
// forwarding workers'.
type Manager struct {
	cfg         Config
	log         *slog.Logger
	rejectAfter int64 // ns
	in          chan hsMsg
	kick        chan struct{}

	mu      sync.Mutex
	peers   map[string]*Peer
	indices map[uint32]bool // our session indices in use
	lastTS  uint64          // the newest timestamp we sent

	mac1   *mac1Checker             // of the messages to us
	hs     [numHS]atomic.Uint64     // by HSResult
	staged [numStaged]atomic.Uint64 // by StagedResult
}

// New returns a Manager with no peers.
func New(cfg Config) (*Manager, error) {
	if !cfg.Cipher.Valid() {
		return nil, fmt.Errorf("seal: unknown cipher %d", uint8(cfg.Cipher))
	}
	if cfg.Send == nil {
		return nil, errors.New("seal: no Send")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.RekeyAfter <= 0 {
		cfg.RekeyAfter = DefaultRekeyAfter
	}
	if cfg.RejectAfter <= cfg.RekeyAfter {
		cfg.RejectAfter = cfg.RekeyAfter * 3 / 2
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.Tick <= 0 {
		cfg.Tick = cfg.RetryAfter / 4
	}
	if cfg.RejectAfterMessages == 0 {
		cfg.RejectAfterMessages = DefaultRejectAfterMessages
	}
	if cfg.RekeyAfterMessages == 0 || cfg.RekeyAfterMessages > cfg.RejectAfterMessages {
		cfg.RekeyAfterMessages = min(DefaultRekeyAfterMessages, cfg.RejectAfterMessages/2)
	}
	if cfg.HandshakeRate <= 0 {
		cfg.HandshakeRate = DefaultHandshakeRate
	}
	if cfg.HandshakeBurst <= 0 {
		cfg.HandshakeBurst = DefaultHandshakeBurst
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		cfg:         cfg,
		log:         cfg.Logger,
		mac1:        newMAC1Checker(cfg.Static.Public),
		rejectAfter: int64(cfg.RejectAfter),
		in:          make(chan hsMsg, backlog),
		kick:        make(chan struct{}, 1),
		peers:       map[string]*Peer{},
		indices:     map[uint32]bool{},
	}, nil
}

// Cipher is the cluster's cipher.
func (m *Manager) Cipher() Cipher { return m.cfg.Cipher }

// PublicKey is our static public key.
func (m *Manager) PublicKey() PublicKey { return m.cfg.Static.Public }

func (m *Manager) count(result HSResult) { m.hs[result].Add(1) }

// Handshakes returns the handshake counters by outcome.
func (m *Manager) Handshakes() map[string]uint64 {
	out := make(map[string]uint64, numHS)
	for r := range numHS {
		out[r.String()] = m.hs[r].Load()
	}
	return out
}

// SetPeers replaces the set of encrypted peers. A peer whose name and key
// are unchanged keeps its sessions (its address may change); a new key is
// a new peer. It returns each peer's Peer, for the forwarding tables, and
// asks Run to handshake with the new ones at once.
func (m *Manager) SetPeers(peers []PeerConfig) map[string]*Peer {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]*Peer, len(peers))
	fresh := false
	for _, pc := range peers {
		p := m.peers[pc.Name]
		if p == nil || p.key != pc.Key {
			p = &Peer{m: m, name: pc.Name, key: pc.Key, mac1: mac1KeyOf(pc.Key)}
			fresh = true
		}
		p.addr = pc.Addr
		out[pc.Name] = p
	}
	for name, p := range m.peers {
		if out[name] != p {
			m.forget(p)
		}
	}
	m.peers = out
	if fresh {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
	return out
}

// forget drops a peer that left (or changed its key). m.mu is held.
func (m *Manager) forget(p *Peer) {
	p.gone = true
	m.flush(p, m.cfg.Now())
	for _, s := range p.sessions() {
		delete(m.indices, s.local)
	}
	if p.pending != nil {
		delete(m.indices, p.pending.local)
		p.pending = nil
	}
	p.clear()
}

// enqueue hands a handshake message to Run, without blocking.
func (m *Manager) enqueue(p *Peer, d []byte) bool {
	var msg hsMsg
	msg.p = p
	msg.n = copy(msg.buf[:], d)
	select {
	case m.in <- msg:
		return true
	default:
		m.count(HSRateLimited)
		return false
	}
}

// Run does the handshakes until ctx ends: it answers initiations, accepts
// responses, and starts a handshake with every peer that has no session,
// whose session is due for a rekey, or whose handshake went unanswered.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.Tick)
	defer t.Stop()
	m.tick()
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-m.in:
			m.handle(msg.p, msg.buf[:msg.n])
		case <-m.kick:
			m.tick()
		case <-t.C:
			m.tick()
		}
	}
}

// tick starts the handshakes that are due and drops expired sessions.
func (m *Manager) tick() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Now()
	clear(m.indices)
	for _, p := range m.peers {
		p.kicked.Store(false)
		p.expire(now.UnixNano(), m.rejectAfter)
		for _, s := range p.sessions() {
			m.indices[s.local] = true
		}
		if p.pending != nil {
			m.indices[p.pending.local] = true
		}
		m.flush(p, now)
		if !m.due(p, now) {
			continue
		}
		if p.pending != nil && now.Sub(p.pending.sent) < m.cfg.RetryAfter {
			continue
		}
		m.initiate(p, now)
	}
}

// due reports whether p needs a new session: it has none, or the one it
// sends with is old or has used up its counters. The initiator of a session
// rekeys it after RekeyAfter; the responder only if the initiator has not
// by halfway to RejectAfter, so that both rarely start at once. A fresh
// session answered but not yet confirmed is waited for.
func (m *Manager) due(p *Peer, now time.Time) bool {
	cur := p.current.Load()
	if p.pendingResponder(now.UnixNano(), int64(m.cfg.RetryAfter)*2) {
		return false
	}
	if cur == nil {
		return true
	}
	age := time.Duration(now.UnixNano() - cur.created)
	if cur.sendCtr.Load() >= m.cfg.RekeyAfterMessages {
		return true
	}
	if cur.initiator {
		return age >= m.cfg.RekeyAfter
	}
	return age >= m.cfg.RekeyAfter+(m.cfg.RejectAfter-m.cfg.RekeyAfter)/2
}

func (m *Manager) newIndex() (uint32, error) {
	var b [4]byte
	for {
		if _, err := io.ReadFull(m.cfg.Rand, b[:]); err != nil {
			return 0, fmt.Errorf("session index: %w", err)
		}
		idx := binary.BigEndian.Uint32(b[:])
		if !m.indices[idx] {
			m.indices[idx] = true
			return idx, nil
		}
	}
}

func (m *Manager) handshakeState(p *Peer, initiator bool) (*noise.HandshakeState, error) {
	return noise.NewHandshakeState(noise.Config{
		CipherSuite:   m.cfg.Cipher.suite(),
		Random:        m.cfg.Rand,
		Pattern:       noise.HandshakeKK,
		Initiator:     initiator,
		Prologue:      append(append([]byte(nil), prologue...), byte(m.cfg.Cipher)),
		StaticKeypair: noise.DHKey{Private: m.cfg.Static.Private[:], Public: m.cfg.Static.Public[:]},
		PeerStatic:    p.key[:],
	})
}

// initiate sends p a new initiation. m.mu is held.
func (m *Manager) initiate(p *Peer, now time.Time) {
	if p.pending != nil {
		delete(m.indices, p.pending.local)
		p.pending = nil
	}
	hs, err := m.handshakeState(p, true)
	if err != nil {
		m.log.Error("handshake: initiator state", "peer", p.name, "err", err)
		return
	}
	idx, err := m.newIndex()
	if err != nil {
		m.log.Error("handshake: session index for an initiation", "peer", p.name, "err", err)
		return
	}
	// The timestamp only grows, so a recorded initiation cannot be
	// replayed to the responder.
	ts := max(uint64(now.UnixNano()), m.lastTS+1)
	m.lastTS = ts
	msg, _, _, err := hs.WriteMessage(appendInitiation(make([]byte, 0, InitiationLen), idx), binary.BigEndian.AppendUint64(nil, ts))
	if err != nil {
		delete(m.indices, idx)
		m.log.Error("handshake: writing the initiation", "peer", p.name, "err", err)
		return
	}
	msg = appendMAC1(msg, &p.mac1)
	p.pending = &pending{hs: hs, local: idx, sent: now}
	m.count(HSInitiated)
	m.log.Debug("handshake initiated", "peer", p.name, "index", idx)
	m.send(p, msg)
}

func (m *Manager) send(p *Peer, msg []byte) {
	if err := m.cfg.Send(msg, p.addr); err != nil {
		m.count(HSSendError)
		m.log.Debug("sending a handshake message", "peer", p.name, "to", p.addr, "err", err)
	}
}

// allow takes a token of p's handshake bucket. m.mu is held.
func (m *Manager) allow(p *Peer, now time.Time) bool {
	burst := float64(m.cfg.HandshakeBurst)
	if p.tokensAt.IsZero() {
		p.tokens = burst
	} else {
		p.tokens = min(burst, p.tokens+now.Sub(p.tokensAt).Seconds()*m.cfg.HandshakeRate)
	}
	p.tokensAt = now
	if p.tokens < 1 {
		return false
	}
	p.tokens--
	return true
}

// handle processes one handshake message from p, whose mac1 Peer.Open has
// checked. Nothing that fails authentication is answered.
func (m *Manager) handle(p *Peer, b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.gone {
		return
	}
	now := m.cfg.Now()
	if !m.allow(p, now) {
		m.count(HSRateLimited)
		return
	}
	switch b[0] {
	case TypeInitiation:
		m.respond(p, b, now)
	case TypeResponse:
		m.complete(p, b, now)
	}
}

// respond answers a valid initiation and keeps the new session as next.
func (m *Manager) respond(p *Peer, b []byte, now time.Time) {
	in, err := parseInitiation(b)
	if err != nil {
		m.count(HSInvalid)
		return
	}
	hs, err := m.handshakeState(p, false)
	if err != nil {
		m.log.Error("handshake: responder state", "peer", p.name, "err", err)
		return
	}
	payload, _, _, err := hs.ReadMessage(nil, in.noise)
	if err != nil || len(payload) != timestampLen {
		m.count(HSInvalid)
		return
	}
	ts := binary.BigEndian.Uint64(payload)
	if ts <= p.lastTS {
		m.count(HSReplayed)
		return
	}
	idx, err := m.newIndex()
	if err != nil {
		m.log.Error("handshake: session index for a response", "peer", p.name, "err", err)
		return
	}
	msg, c1, c2, err := hs.WriteMessage(appendResponse(make([]byte, 0, ResponseLen), idx, in.sender), nil)
	if err != nil || c1 == nil {
		delete(m.indices, idx)
		m.log.Error("handshake: writing the response", "peer", p.name, "err", err)
		return
	}
	msg = appendMAC1(msg, &p.mac1)
	s, err := newSession(m.cfg.Cipher, idx, in.sender, c2.UnsafeKey(), c1.UnsafeKey(), false, now.UnixNano())
	if err != nil {
		delete(m.indices, idx)
		m.log.Error("handshake: responder's session", "peer", p.name, "err", err)
		return
	}
	p.lastTS = ts
	p.install(s)
	p.handshakes++
	p.lastHandshake = now
	m.count(HSResponded)
	m.log.Debug("handshake answered", "peer", p.name, "index", idx, "peer_index", in.sender)
	m.send(p, msg)
}

// complete accepts the response to our pending initiation: the new session
// is current at once, and a keepalive under it tells the responder so.
func (m *Manager) complete(p *Peer, b []byte, now time.Time) {
	r, err := parseResponse(b)
	if err != nil {
		m.count(HSInvalid)
		return
	}
	pd := p.pending
	if pd == nil || r.receiver != pd.local {
		m.count(HSUnexpected)
		return
	}
	_, c1, c2, err := pd.hs.ReadMessage(nil, r.noise)
	if err != nil || c1 == nil {
		m.count(HSInvalid)
		return
	}
	s, err := newSession(m.cfg.Cipher, pd.local, r.sender, c1.UnsafeKey(), c2.UnsafeKey(), true, now.UnixNano())
	if err != nil {
		m.log.Error("handshake: initiator's session", "peer", p.name, "err", err)
		return
	}
	p.pending = nil
	p.install(s)
	p.handshakes++
	p.lastHandshake = now
	m.count(HSCompleted)
	m.log.Debug("handshake completed", "peer", p.name, "index", pd.local, "peer_index", r.sender)
	// The frames held while there was no session go first; any of them
	// also confirms the session to the responder, as the keepalive does.
	m.flush(p, now)
	ka := make([]byte, Overhead)
	if base, ok := s.reserve(1, m.cfg.RejectAfterMessages); ok {
		s.sealFrame(ka, base)
		m.send(p, ka)
	}
}
