package membership

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// Bounds on what gossip can make this host remember.
//
// Every table a remote message can grow has a bound, stated here and next
// to the table:
//
//	c.members        ≤ maxMembers entries (alive, dead and left; self excluded), enforced by NotifyAlive
//	memberlist's own node table: the same names, plus dead ones memberlist has not forgotten yet
//	c.pendingLeave   ≤ one entry per alive member (so ≤ maxMembers)
//	c.seenIntents    ≤ maxSeenIntents ids, the oldest forgotten first
//	c.bcast          ≤ maxRelayQueue queued broadcasts (one per name, pruned)
//	TCP streams      ≤ maxInboundStreams inbound at once, ≤ maxStreamBytes each (transport.go)
//
// Every refusal is counted in weft_gossip_refused_total{reason} and logged,
// at most refuseLogBurst lines per logWindow.

const (
	// MaxNameLen is the longest node name weft accepts, in bytes, from
	// gossip (joining members, leave intents) and for itself: what weft's
	// configuration allows for --name (at most 128 characters without
	// spaces, counted in bytes). memberlist has no limit of its own, but in
	// practice a name must fit, beside up to 512 bytes of metadata, in one
	// alive message of a ~1,400-byte UDP packet; 128 is well inside that,
	// and longer than any DNS label (63) or Linux hostname (64).
	MaxNameLen = 128

	// maxMembers bounds the member table: at most this many other hosts,
	// alive, dead or left, are remembered. A joining host with a new name
	// is refused (members_full) when the table is full and no entry has
	// been dead or left for longer than memberlist's GossipToTheDeadTime
	// (after which memberlist itself no longer gossips about it; the oldest
	// such entry makes room). 4,096 is far above any weft cluster we know
	// of and costs at most a few MB (name, address, metadata per entry).
	maxMembers = 4096

	// maxSeenIntents bounds the leave-intent ids remembered for
	// deduplication (intentSeenTTL). When it is full the oldest id is
	// forgotten to make room (counted as intents_full), rather than the new
	// intent refused: refusing would let a flood of forged intents block
	// every genuine leave for intentSeenTTL, while forgetting an old id only
	// lets a late duplicate of it through, which then counts as a fresh
	// intent for a current member, as a forged one would anyway. At 16
	// bytes an id plus the map's overhead, 4,096 ids are ~200 KB; a real
	// cluster sees one id per leave.
	maxSeenIntents = 4096

	// maxRelayQueue bounds the queue of leave intents waiting to be
	// gossiped (ours and relays). Only intents for current members are
	// queued and a newer one for a name replaces the older, so it cannot
	// exceed one per member and ourselves; Prune enforces the bound anyway.
	maxRelayQueue = maxMembers + 1

	// refuseLogBurst refusals are logged per logWindow; the rest are
	// counted and summarized in one line when the next window opens.
	refuseLogBurst = 5

	// logNameMax is how much of a refused name a log line shows.
	logNameMax = 64
)

// Refusal reasons, the values of weft_gossip_refused_total's reason label.
const (
	RefusedNameTooLong = "name_too_long" // a joining node's or a leave intent's name is empty or longer than MaxNameLen
	RefusedNotMember   = "not_member"    // a leave intent for a host that is not a current member
	RefusedSelf        = "self"          // a leave intent in our name that we did not send
	RefusedMembersFull = "members_full"  // a new member while the member table is full
	RefusedIntentsFull = "intents_full"  // the oldest remembered intent id was forgotten to make room
	RefusedMalformed   = "malformed"     // a user message that does not decode
)

// RefusalReasons lists every reason, for the metric and its tests.
var RefusalReasons = []string{RefusedNameTooLong, RefusedNotMember, RefusedSelf, RefusedMembersFull,
	RefusedIntentsFull, RefusedMalformed, RefusedStreamsFull, RefusedStreamTooBig}

var (
	errNameTooLong = fmt.Errorf("name empty or longer than %d bytes", MaxNameLen)
	errMembersFull = errors.New("member table is full")
)

// validName reports whether name is acceptable as a node name.
func validName(name string) bool { return len(name) > 0 && len(name) <= MaxNameLen }

var (
	_ memberlist.AliveDelegate = (*delegate)(nil)
	_ memberlist.MergeDelegate = (*delegate)(nil)
)

// NotifyAlive is memberlist's AliveDelegate: it is asked about every alive
// message, before memberlist records the node. Returning an error makes
// memberlist ignore the message (and log a warning, which logging.go
// rate-limits). memberlist holds its node lock: this only takes c.mu.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	return d.cluster().admit(n.Name, time.Now())
}

// NotifyMerge is memberlist's MergeDelegate, asked before a join's
// push/pull merges a remote node list (each node is then still checked by
// NotifyAlive): a list that could never fit is refused as a whole.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	if len(peers) > maxMembers+1 { // +1: the list may include us
		c := d.cluster()
		c.refuse(RefusedMembersFull, "gossip merge", "", fmt.Errorf("%d nodes", len(peers)))
		return fmt.Errorf("%w: a merge of %d nodes", errMembersFull, len(peers))
	}
	return nil
}

// admit decides whether a node that gossip says is alive may be a member:
// its name must be valid, and a name we do not know yet needs room in the
// member table. It makes room by forgetting the oldest member that has
// been dead or left for longer than c.forgetGone.
func (c *Cluster) admit(name string, now time.Time) error {
	if !validName(name) {
		c.refuse(RefusedNameTooLong, "joining node", name, nil)
		return errNameTooLong
	}
	if name == c.cfg.Name {
		return nil
	}
	c.mu.Lock()
	if _, known := c.members[name]; known || len(c.members) < c.maxMembers {
		c.mu.Unlock()
		return nil
	}
	var (
		oldest string
		since  time.Time
	)
	for n, m := range c.members {
		if m.State != StateAlive && now.Sub(m.Since) >= c.forgetGone && (oldest == "" || m.Since.Before(since)) {
			oldest, since = n, m.Since
		}
	}
	if oldest != "" {
		delete(c.members, oldest)
		delete(c.pendingLeave, oldest)
	}
	c.mu.Unlock()
	if oldest == "" {
		c.refuse(RefusedMembersFull, "joining node", name, nil)
		return errMembersFull
	}
	c.log.Debug("gossip member table full: forgot the oldest departed member", "forgot", oldest, "for", logName(name))
	return nil
}

// refuse counts a refusal and logs it, rate-limited. what says what was
// refused; name (may be empty) is shown truncated. c.mu must not be held.
func (c *Cluster) refuse(reason, what, name string, err error) {
	c.cfg.Metrics.refused(reason)
	ok, suppressed := c.refuseLog.allow(time.Now(), refuseLogBurst, logWindow)
	if suppressed > 0 {
		c.log.Warn("suppressed gossip refusal log lines (rate limit)", "lines", suppressed, "window", logWindow)
	}
	if !ok {
		return
	}
	attrs := []any{"what", what, "reason", reason}
	if name != "" {
		attrs = append(attrs, "name", logName(name), "name_len", len(name))
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	c.log.Warn("gossip refused", attrs...)
}

// logName is name cut to logNameMax bytes of valid UTF-8, for a log line.
func logName(name string) string {
	if len(name) <= logNameMax {
		return strings.ToValidUTF8(name, "?")
	}
	cut := name[:logNameMax]
	for len(cut) > 0 && !utf8.ValidString(cut) {
		cut = cut[:len(cut)-1]
	}
	return strings.ToValidUTF8(cut, "?") + "..."
}

// intentIDs remembers leave-intent ids, at most max, in arrival order, so
// that the oldest are the first forgotten (by age or to make room).
type intentIDs struct {
	when map[uint64]time.Time
	ring []uint64 // ids in arrival order, from head; len(ring) == max once allocated
	head int
	n    int
}

func newIntentIDs() intentIDs { return intentIDs{when: make(map[uint64]time.Time)} }

func (s *intentIDs) has(id uint64) bool {
	_, ok := s.when[id]
	return ok
}

func (s *intentIDs) len() int { return s.n }

// add remembers id (which must not be remembered yet); if max ids are
// remembered already, it forgets the oldest first and reports that.
func (s *intentIDs) add(id uint64, now time.Time, max int) (evicted bool) {
	if s.ring == nil {
		s.ring = make([]uint64, max)
	}
	if s.n == len(s.ring) {
		delete(s.when, s.ring[s.head])
		s.head = (s.head + 1) % len(s.ring)
		s.n--
		evicted = true
	}
	s.ring[(s.head+s.n)%len(s.ring)] = id
	s.n++
	s.when[id] = now
	return evicted
}

// expire forgets the ids first seen ttl or longer before now.
func (s *intentIDs) expire(now time.Time, ttl time.Duration) {
	for s.n > 0 {
		id := s.ring[s.head]
		if now.Sub(s.when[id]) < ttl {
			return
		}
		delete(s.when, id)
		s.head = (s.head + 1) % len(s.ring)
		s.n--
	}
}
