package seal

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"
)

// recvSlots is how many sessions a peer's datagrams are accepted under.
const recvSlots = 4

// Result is what became of a received datagram.
type Result uint8

// Results of Open.
const (
	Deliver   Result = iota // authenticated and decrypted: the plaintext (empty: a keepalive)
	Handshake               // a handshake message, handed to the Manager
	Malformed               // not a message of ours
	NoSession               // no session with that index (or it expired)
	BadAuth                 // failed authentication
	Replay                  // a counter seen before, or too old
	Backlog                 // a handshake message dropped: the Manager is behind
	BadMAC                  // a handshake message with a wrong mac1: dropped before the Manager saw it
)

// Peer is an encrypted peer: its static key, its underlay address, and its
// sessions. The forwarding workers call Seal and Open; everything else is
// the Manager's.
type Peer struct {
	m    *Manager
	name string
	key  PublicKey
	mac1 macKey // of the handshake messages we send it

	// current is the session we send with; recv are those we accept
	// datagrams under (current among them): the ones the peer may still
	// send with while a new handshake completes, in both directions at
	// once if both sides rekey together.
	current atomic.Pointer[session]
	recv    [recvSlots]atomic.Pointer[session]
	slotMu  sync.Mutex // changes of the slots: the Manager's installs, a worker's confirm
	kicked  atomic.Bool
	stage   stage // frames held while there is no session (stage.go)
	// inUse is the session the peer sends with: the last one a datagram
	// was received under (stored only when it changes).
	inUse atomic.Pointer[session]

	// The Manager's, under m.mu.
	addr          netip.AddrPort
	pending       *pending
	lastTS        uint64 // the newest initiation timestamp accepted
	tokens        float64
	tokensAt      time.Time
	gone          bool
	handshakes    uint64
	lastHandshake time.Time
}

// pending is a handshake we initiated and wait for the answer of.
type pending struct {
	hs    *noise.HandshakeState
	local uint32
	sent  time.Time
}

// Name is the peer's name.
func (p *Peer) Name() string { return p.name }

// Key is the peer's static public key.
func (p *Peer) Key() PublicKey { return p.key }

// Seal seals frames in place for the peer, with consecutive counters of its
// current session: each frame is HeaderLen bytes of room, the plaintext,
// and TagLen bytes of room, and keeps its length (equal-size frames stay
// equal-size, for UDP GSO). It reports false, sealing nothing, if there is
// no session to send with (none yet, expired, or out of counters); a
// handshake is then under way. now is the time in unix nanoseconds.
func (p *Peer) Seal(frames [][]byte, now int64) bool {
	s := p.current.Load()
	if s == nil || now-s.created >= p.m.rejectAfter {
		p.kick()
		return false
	}
	n := uint64(len(frames))
	base, ok := s.reserve(n, p.m.cfg.RejectAfterMessages)
	if !ok {
		p.kick()
		return false
	}
	if base+n >= p.m.cfg.RekeyAfterMessages {
		p.kick()
	}
	for i, f := range frames {
		s.sealFrame(f, base+uint64(i))
	}
	return true
}

// Open authenticates and decrypts the datagram d from the peer in place and
// returns its plaintext (d[HeaderLen:len(d)-TagLen]). A handshake message
// with a valid mac1 is copied to the Manager; one without is dropped and
// counted (bad_mac). now is the time in unix nanoseconds.
func (p *Peer) Open(d []byte, now int64) ([]byte, Result) {
	if len(d) == 0 {
		return nil, Malformed
	}
	switch d[0] {
	case TypeData:
	case TypeInitiation, TypeResponse:
		if len(d) != handshakeLen(d[0]) {
			return nil, Malformed
		}
		// The cheap check first, here in the worker: what fails it
		// spends none of the peer's handshake tokens and takes no room
		// in the Manager's backlog.
		if !p.m.mac1.check(d) {
			p.m.count(HSBadMAC)
			return nil, BadMAC
		}
		if !p.m.enqueue(p, d) {
			return nil, Backlog
		}
		return nil, Handshake
	default:
		return nil, Malformed
	}
	h, ok := dataHeader(d)
	if !ok {
		return nil, Malformed
	}
	s := p.find(h.Receiver)
	if s == nil || now-s.created >= p.m.rejectAfter {
		return nil, NoSession
	}
	pt, ok := s.openFrame(d)
	if !ok {
		return nil, BadAuth
	}
	if !s.win.accept(h.Counter, p.m.cfg.RejectAfterMessages) {
		return nil, Replay
	}
	if !s.confirmed.Load() {
		p.confirm(s)
	}
	if p.inUse.Load() != s {
		p.inUse.Store(s)
	}
	return pt, Deliver
}

func (p *Peer) find(idx uint32) *session {
	for i := range p.recv {
		if s := p.recv[i].Load(); s != nil && s.local == idx {
			return s
		}
	}
	return nil
}

// kick asks the Manager for a handshake (once until it has looked).
func (p *Peer) kick() {
	if p.kicked.CompareAndSwap(false, true) {
		select {
		case p.m.kick <- struct{}{}:
		default:
		}
	}
}

// confirm marks the responder's session s confirmed: the initiator has
// sent under it, so it has it too, and it becomes the one we send with
// unless that one is newer. The sessions we sent with before stay for
// receiving.
func (p *Peer) confirm(s *session) {
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	if s.confirmed.Swap(true) {
		return
	}
	if cur := p.current.Load(); cur == nil || s.created > cur.created {
		p.current.Store(s)
	}
	if p.stage.held.Load() > 0 {
		p.kick() // the Manager sends the held frames
	}
}

// install adds s to the receive slots, in place of an empty one, an
// unconfirmed one, or else the oldest that we do not send with. A session we initiated is confirmed and
// sent with at once; one we answered waits for the initiator's first
// datagram (confirm).
func (p *Peer) install(s *session) {
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	cur := p.current.Load()
	// What must stay: the session we send with, the one the peer sends
	// with (the last we received under), and the newest one we answered
	// (the peer may start sending with it at any moment) unless s
	// supersedes it. Initiations the peer superseded are dead: their
	// sessions go first, then the oldest of the rest.
	inUse := p.inUse.Load()
	var newest *session // the newest unconfirmed session
	for i := range p.recv {
		if o := p.recv[i].Load(); o != nil && !o.confirmed.Load() && (newest == nil || o.created > newest.created) {
			newest = o
		}
	}
	victim, rank := -1, 0
	for i := range p.recv {
		o := p.recv[i].Load()
		if o == nil {
			victim = i
			break
		}
		if o == cur || o == inUse {
			continue
		}
		r := 2 // confirmed, not in use
		switch {
		case o.confirmed.Load():
		case o != newest || !s.initiator:
			r = 3 // superseded by a newer initiation
		default:
			r = 1
		}
		if r > rank || (r == rank && o.created < p.recv[victim].Load().created) {
			victim, rank = i, r
		}
	}
	p.recv[victim].Store(s)
	if s.initiator {
		s.confirmed.Store(true)
		p.current.Store(s)
	}
}

// pendingResponder reports whether a session we answered, younger than
// maxAge, waits for its initiator's first datagram.
func (p *Peer) pendingResponder(now, maxAge int64) bool {
	for i := range p.recv {
		if s := p.recv[i].Load(); s != nil && !s.confirmed.Load() && now-s.created < maxAge {
			return true
		}
	}
	return false
}

// expire drops sessions older than rejectAfter.
func (p *Peer) expire(now, rejectAfter int64) {
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	if s := p.current.Load(); s != nil && now-s.created >= rejectAfter {
		p.current.Store(nil)
	}
	for i := range p.recv {
		if s := p.recv[i].Load(); s != nil && now-s.created >= rejectAfter {
			p.recv[i].Store(nil)
		}
	}
}

// clear drops every session (the peer is gone).
func (p *Peer) clear() {
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	p.current.Store(nil)
	for i := range p.recv {
		p.recv[i].Store(nil)
	}
}

// sessions lists the sessions in the receive slots.
func (p *Peer) sessions() []*session {
	var out []*session
	for i := range p.recv {
		if s := p.recv[i].Load(); s != nil {
			out = append(out, s)
		}
	}
	return out
}
