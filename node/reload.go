package node

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// ErrNeedsRestart matches (errors.Is) Reload's *RestartError.
var ErrNeedsRestart = errors.New("these settings need a restart")

// RestartError is Reload's refusal: Settings (config keys) differ from the
// running ones outside Live.
type RestartError struct{ Settings []string }

func (e *RestartError) Error() string {
	return "these settings need a restart: " + strings.Join(e.Settings, ", ")
}

// Is makes errors.Is(err, ErrNeedsRestart) hold.
func (e *RestartError) Is(target error) bool { return target == ErrNeedsRestart }

// Reload applies next's Live settings: log level and format, the join list,
// the gossip keys and the static peers change without dropping traffic. If
// any other setting differs from the running one, nothing changes and the
// error names them. It returns what changed, by config key.
func (n *Node) Reload(next Settings) ([]string, error) {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	cur := n.s
	cur.Live = *n.live.Load()
	if fixed := fixedChanges(cur, next); len(fixed) > 0 {
		return nil, &RestartError{Settings: fixed}
	}
	if err := checkPlaintextPeers(cur.Encrypt, next.Live.Peers); err != nil {
		return nil, err
	}
	old, nw := cur.Live, next.Live
	var changed []string
	var errs []error
	if nw.LogLevel != old.LogLevel || nw.LogFormat != old.LogFormat {
		if n.d.SetLogging != nil {
			n.d.SetLogging(nw.LogFormat, nw.LogLevel)
		}
		changed = append(changed, "logLevel/logFormat")
	}
	if !slices.Equal(nw.Join, old.Join) {
		if err := n.gossip().SetSeeds(nw.Join); err != nil {
			errs = append(errs, fmt.Errorf("join: %w", err))
			nw.Join = old.Join
		} else {
			changed = append(changed, "join")
		}
	}
	if !reflect.DeepEqual(nw.GossipKeys, old.GossipKeys) {
		var key []byte
		var extra [][]byte
		if len(nw.GossipKeys) > 0 {
			key, extra = nw.GossipKeys[0], nw.GossipKeys[1:]
		}
		if err := n.gossip().SetKeys(key, extra); err != nil {
			errs = append(errs, fmt.Errorf("gossip keys: %w", err))
			nw.GossipKeys = old.GossipKeys
		} else {
			changed = append(changed, "gossip keys")
		}
	}
	pkiChanged := !old.PKI.same(nw.PKI)
	if pkiChanged {
		if err := n.checkNewPKI(nw.PKI); err != nil {
			errs = append(errs, err)
			nw.PKI, pkiChanged = old.PKI, false
		}
	}
	peersChanged := !reflect.DeepEqual(nw.Peers, old.Peers)
	n.live.Store(&nw)
	if pkiChanged {
		n.readvertise(old.PKI, nw.PKI)
		changed = append(changed, "caCert/cert/key/crl")
	}
	if peersChanged || pkiChanged {
		n.syncPeers()
	}
	if peersChanged {
		changed = append(changed, "peers")
	}
	if did, err := n.reloadBGP(old, nw); did {
		changed = append(changed, "bgpPeers")
		errs = append(errs, err)
	}
	return changed, errors.Join(errs...)
}
