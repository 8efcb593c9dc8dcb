package membership

import (
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/weftnet/weft/internal/family"
)

// delegate implements memberlist.Delegate and memberlist.EventDelegate for a
// Cluster without adding those methods to Cluster's API.
//
// memberlist calls the event methods with its node lock held, so they only
// take c.mu (a leaf lock), never call back into memberlist and never block:
// Changes uses a coalescing, non-blocking send.
type delegate Cluster

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
)

func (d *delegate) cluster() *Cluster { return (*Cluster)(d) }

// NodeMeta returns the encoded local Meta.
func (d *delegate) NodeMeta(limit int) []byte {
	b := *d.localMeta.Load()
	if len(b) > limit { // cannot happen: MetaMaxSize is far below memberlist's limit
		d.log.Error("local metadata exceeds memberlist limit; advertising none", "size", len(b), "limit", limit)
		return nil
	}
	return b
}

// NotifyMsg receives user messages (leave intents).
func (d *delegate) NotifyMsg(b []byte) { d.cluster().handleMsg(b) }

// GetBroadcasts hands our queued user messages to memberlist's gossip.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.bcast.GetBroadcasts(overhead, limit)
}

// LocalState is our certificate (cert.go), for memberlist's push/pull:
// a join and every periodic push/pull hand it to the other host.
func (d *delegate) LocalState(bool) []byte {
	c := d.cluster()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.certs.own) == 0 {
		return nil
	}
	return append([]byte{msgCert}, c.certs.own...)
}

// MergeRemoteState takes the other host's certificate from a push/pull.
// memberlist merges the node states first, so the metadata that names it
// is already known.
func (d *delegate) MergeRemoteState(b []byte, _ bool) {
	c := d.cluster()
	switch {
	case len(b) == 0:
		return // a host without a certificate
	case b[0] != msgCert:
		c.refuse(RefusedMalformed, "push/pull state", "", fmt.Errorf("type %d, want a certificate (%d bytes)", b[0], len(b)))
	case c.admitCert(b[1:]):
		c.notify()
	}
}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.cluster().nodeEvent(n, evJoin) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.cluster().nodeEvent(n, evUpdate) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.cluster().nodeEvent(n, evLeave) }

type nodeEventKind uint8

const (
	evJoin nodeEventKind = iota
	evUpdate
	evLeave
)

// nodeEvent records a memberlist event in c.members and fires Changes.
func (c *Cluster) nodeEvent(n *memberlist.Node, ev nodeEventKind) {
	if n.Name == c.cfg.Name {
		return
	}
	now := time.Now()
	var meta Meta
	metaErr := meta.UnmarshalBinary(n.Meta) // leaves meta zero on error
	gossip := addrPort(n.Addr, n.Port)

	c.mu.Lock()
	m, known := c.members[n.Name]
	if !known {
		m = &Member{Name: n.Name}
		c.members[n.Name] = m
	}
	m.Gossip, m.Meta, m.MetaErr = gossip, meta, metaErr
	c.tidyCerts()
	missing := c.certFor(m) == nil && metaErr == nil && meta.Proof.Present()
	switch ev {
	case evJoin, evUpdate:
		if !known || m.State != StateAlive {
			m.State, m.Since = StateAlive, now
		}
		if ev == evJoin {
			delete(c.pendingLeave, n.Name) // a rejoin supersedes an earlier leave
		}
	case evLeave:
		// n.State is not usable here (see StateSuspect); a leave intent
		// tells a graceful leave from a failure.
		m.State, m.Since = StateDead, now
		if c.takeLeaveIntent(n.Name, now) {
			m.State = StateLeft
		}
	}
	state := m.State
	c.mu.Unlock()
	if missing && state == StateAlive {
		c.askCerts()
	}

	attrs := []any{"name", n.Name, "addr", gossip}
	if metaErr == nil {
		attrs = append(attrs, "subnet", family.First(meta.Subnets), "underlay", meta.Underlay, "encap", meta.Encap)
	}
	switch {
	case ev == evLeave && state == StateLeft:
		c.log.Info("gossip member left", attrs...)
	case ev == evLeave:
		c.log.Warn("gossip member failed", attrs...)
	case metaErr != nil:
		c.log.Warn("gossip member has invalid metadata; it must not be routed", append(attrs, "err", metaErr)...)
	case ev == evJoin:
		c.log.Info("gossip member joined", attrs...)
	default:
		c.log.Info("gossip member updated", attrs...)
	}
	c.notify()
}
