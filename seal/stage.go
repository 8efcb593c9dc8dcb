package seal

import (
	"sync"
	"sync/atomic"
	"time"
)

// While a peer has no session to send with (its first handshake, or again
// after a restart of either side), the forwarding workers hand the frames
// they cannot seal to Stage instead of dropping them, as WireGuard's
// staged queue does: the first packets of a flow toward a new peer (a TCP
// SYN, the first ping) then arrive one handshake round trip late instead
// of a retransmission timeout late. The Manager seals and sends them as
// soon as a session is there. The queue is small and bounded: it bridges
// one handshake, it is no buffer for a peer that does not answer.

const (
	// StageFrames is how many frames a peer holds while it has no session;
	// more are dropped (the router counts them as no_session).
	StageFrames = 32
	// StageMaxAge is how long a held frame waits for a session before it
	// is dropped (counted in weft_staged_packets_total{result="expired"}).
	StageMaxAge = 5 * time.Second
)

// StagedResult is what became of a held frame: a counter of Manager, and
// a label value of weft_staged_packets_total.
type StagedResult uint8

// Outcomes of held frames.
const (
	StagedSent    StagedResult = iota // sealed and sent once the session was there
	StagedExpired                     // no session within StageMaxAge, or the peer left
	numStaged
)

var stagedLabels = [numStaged]string{StagedSent: "sent", StagedExpired: "expired"}

// String is the outcome's label value.
func (r StagedResult) String() string {
	if r < numStaged {
		return stagedLabels[r]
	}
	return "unknown"
}

// StagedResults lists the label values of weft_staged_packets_total.
func StagedResults() []string { return append([]string(nil), stagedLabels[:]...) }

// stage is a peer's held frames. Workers add under mu (only while there is
// no session: not the steady state); the Manager takes them.
type stage struct {
	mu     sync.Mutex
	frames [][]byte
	since  int64        // unix ns when the oldest held frame came
	held   atomic.Int32 // len(frames), read without mu
}

// Stage holds copies of frames (each as Seal takes it: header room,
// plaintext, tag room) until the peer has a session, and returns how many
// it took; the rest did not fit. now is the time in unix nanoseconds.
// Staged frames are sent by the Manager and keep their order.
func (p *Peer) Stage(frames [][]byte, now int64) int {
	st := &p.stage
	st.mu.Lock()
	n := min(len(frames), StageFrames-len(st.frames))
	if n > 0 && len(st.frames) == 0 {
		st.since = now
	}
	for _, f := range frames[:max(n, 0)] {
		st.frames = append(st.frames, append([]byte(nil), f...))
	}
	st.held.Store(int32(len(st.frames)))
	st.mu.Unlock()
	p.kick()
	return max(n, 0)
}

// take removes and returns the held frames.
func (st *stage) take() [][]byte {
	if st.held.Load() == 0 {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	f := st.frames
	st.frames = nil
	st.held.Store(0)
	return f
}

// flush sends p's held frames if p has a session now, and drops them if
// they waited too long or p is gone. m.mu is held.
func (m *Manager) flush(p *Peer, now time.Time) {
	if p.stage.held.Load() == 0 {
		return
	}
	s := p.current.Load()
	ready := s != nil && now.UnixNano()-s.created < m.rejectAfter && !p.gone
	if !ready && !p.gone && now.UnixNano()-p.stage.since < int64(StageMaxAge) {
		return
	}
	frames := p.stage.take()
	if len(frames) == 0 {
		return
	}
	if !ready || !p.Seal(frames, now.UnixNano()) {
		m.staged[StagedExpired].Add(uint64(len(frames)))
		return
	}
	for _, f := range frames {
		if err := m.cfg.Send(f, p.addr); err != nil {
			m.staged[StagedExpired].Add(1)
			m.log.Debug("sending a held datagram", "peer", p.name, "to", p.addr, "err", err)
			continue
		}
		m.staged[StagedSent].Add(1)
	}
}

// Staged reports the held frames' outcomes, by label.
func (m *Manager) Staged() map[string]uint64 {
	out := make(map[string]uint64, numStaged)
	for r := range numStaged {
		out[r.String()] = m.staged[r].Load()
	}
	return out
}
