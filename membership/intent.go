package membership

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Leave intents.
//
// memberlist v0.7.0 records internally whether a node left gracefully, but
// the Node it passes to NotifyLeave always has State == StateAlive
// (hashicorp/memberlist#293). So, like serf, a leaving host first broadcasts
// a small "leave intent" user message, which every receiver relays once,
// and only then calls memberlist's Leave. A NotifyLeave within intentWindow
// of the intent (whichever arrives first) is a leave; otherwise a failure.
// Each intent carries a random id for deduplication, so a late duplicate
// cannot mark a restarted host as left, and a rejoin clears a pending intent.
//
// Wire format: type (1) | version (1) | id (8, big endian) | node name
// (1 to MaxNameLen bytes).
//
// Nothing in an intent is believed unchecked (bounds.go): it is accepted only
// for a current member (alive, or dead within intentWindow: the dead message
// overtook the intent), never for ourselves; a name longer than MaxNameLen
// is refused at decode; a refused intent is counted, not remembered and not
// relayed.

const (
	msgLeaveIntent byte = 1
	intentVersion  byte = 1
	intentHdrLen        = 2 + 8
	intentMaxLen        = intentHdrLen + MaxNameLen

	intentWindow  = time.Minute      // max distance between intent and NotifyLeave
	intentSeenTTL = 10 * time.Minute // how long intent ids are remembered
)

func encodeLeaveIntent(id uint64, name string) []byte {
	b := make([]byte, 0, intentHdrLen+len(name))
	b = append(b, msgLeaveIntent, intentVersion)
	b = binary.BigEndian.AppendUint64(b, id)
	return append(b, name...)
}

func decodeLeaveIntent(b []byte) (id uint64, name string, err error) {
	switch {
	case len(b) < intentHdrLen+1:
		return 0, "", fmt.Errorf("leave intent: truncated (%d bytes)", len(b))
	case len(b) > intentMaxLen:
		return 0, "", fmt.Errorf("leave intent: %w (%d bytes)", errNameTooLong, len(b)-intentHdrLen)
	case b[0] != msgLeaveIntent:
		return 0, "", fmt.Errorf("leave intent: wrong message type %d", b[0])
	case b[1] != intentVersion:
		return 0, "", fmt.Errorf("leave intent: unsupported version %d", b[1])
	}
	return binary.BigEndian.Uint64(b[2:intentHdrLen]), string(b[intentHdrLen:]), nil
}

// intentBroadcast is a queued leave intent. Queuing an intent for a name
// replaces one already queued for that name.
type intentBroadcast struct {
	name string
	msg  []byte
	done chan struct{} // closed by Finished; nil for relays
	once sync.Once
}

var _ memberlist.NamedBroadcast = (*intentBroadcast)(nil)

func (b *intentBroadcast) Name() string    { return "leave-intent/" + b.name }
func (b *intentBroadcast) Message() []byte { return b.msg }

func (b *intentBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(memberlist.NamedBroadcast)
	return ok && o.Name() == b.Name()
}

func (b *intentBroadcast) Finished() {
	if b.done != nil {
		b.once.Do(func() { close(b.done) })
	}
}

// broadcastLeaveIntent queues our leave intent; the returned channel is
// closed once it has been transmitted as often as memberlist's retransmit
// limit asks.
func (c *Cluster) broadcastLeaveIntent() <-chan struct{} {
	done := make(chan struct{})
	id := rand.Uint64()
	c.ownIntent.Store(id)
	c.queueIntent(&intentBroadcast{
		name: c.cfg.Name,
		msg:  encodeLeaveIntent(id, c.cfg.Name),
		done: done,
	})
	return done
}

// queueIntent queues an intent for gossip and keeps the queue within
// maxRelayQueue.
func (c *Cluster) queueIntent(b *intentBroadcast) {
	c.bcast.QueueBroadcast(b)
	if c.bcast.NumQueued() > maxRelayQueue {
		c.bcast.Prune(maxRelayQueue)
	}
}

// handleMsg processes a user message from memberlist. b is only valid during
// the call.
func (c *Cluster) handleMsg(b []byte) {
	if len(b) == 0 {
		c.refuse(RefusedMalformed, "gossip message", "", errors.New("empty"))
		return
	}
	switch b[0] {
	case msgLeaveIntent:
		id, name, err := decodeLeaveIntent(b)
		if err != nil {
			reason := RefusedMalformed
			if errors.Is(err, errNameTooLong) {
				reason = RefusedNameTooLong
			}
			c.refuse(reason, "leave intent", "", err)
			return
		}
		c.handleLeaveIntent(id, name, slices.Clone(b))
	case msgCert:
		if c.admitCert(b[1:]) {
			c.notify()
		}
	case msgCertRequest:
		c.handleCertRequest(b)
	default:
		c.refuse(RefusedMalformed, "gossip message", "", fmt.Errorf("unknown type %d (%d bytes)", b[0], len(b)))
	}
}

func (c *Cluster) handleLeaveIntent(id uint64, name string, msg []byte) {
	if name == c.cfg.Name {
		// An echo of our own intent is expected; any other intent in our
		// name (a forgery, or a relay of an earlier run's) is refused.
		if id != c.ownIntent.Load() {
			c.refuse(RefusedSelf, "leave intent", name, nil)
		}
		return
	}
	now := time.Now()
	changed, evicted, accepted := false, false, true
	c.mu.Lock()
	if c.seenIntents.has(id) {
		c.mu.Unlock()
		return // a duplicate of one already handled (and relayed)
	}
	m, known := c.members[name]
	switch {
	case known && m.State == StateAlive:
		c.pendingLeave[name] = now
	case known && m.State == StateDead && now.Sub(m.Since) < intentWindow:
		m.State = StateLeft // the dead message overtook the intent
		changed = true
	default:
		accepted = false // unknown, left, or dead too long ago
	}
	if accepted {
		evicted = c.seenIntents.add(id, now, c.maxSeenIntents)
	}
	c.mu.Unlock()

	if !accepted {
		c.refuse(RefusedNotMember, "leave intent", name, nil)
		return
	}
	if evicted {
		c.refuse(RefusedIntentsFull, "leave intent id (the oldest remembered one was forgotten)", name, nil)
	}
	c.queueIntent(&intentBroadcast{name: name, msg: msg}) // relay once
	if changed {
		c.log.Info("gossip member left", "name", name)
		c.notify()
	}
}

// takeLeaveIntent reports whether name announced a leave within
// intentWindow, and consumes the intent. c.mu must be held.
func (c *Cluster) takeLeaveIntent(name string, now time.Time) bool {
	at, ok := c.pendingLeave[name]
	delete(c.pendingLeave, name)
	return ok && now.Sub(at) < intentWindow
}

// expireIntents drops stale intents. c.mu must be held.
func (c *Cluster) expireIntents(now time.Time) {
	for name, at := range c.pendingLeave {
		if now.Sub(at) >= intentWindow {
			delete(c.pendingLeave, name)
		}
	}
	c.seenIntents.expire(now, intentSeenTTL)
}
