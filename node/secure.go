package node

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/seal"
)

// The encrypted data plane (--encrypt): the node loads the static key,
// advertises it in its metadata, runs the seal.Manager's handshakes in its
// background goroutines, and gives the router a seal.Peer for each peer
// that advertises a matching key. The hooks in the node's other files call
// the functions here and do nothing without --encrypt.

// secureState is the node's share of the encrypted data plane.
type secureState struct {
	sec *seal.Manager
}

// loadSecure loads (or creates) the static key and makes the Manager,
// before the gossip starts advertising the key.
func (n *Node) loadSecure() error {
	if !n.s.Encrypt {
		n.reg.MustRegister(seal.Off{})
		return nil
	}
	kp, path, created, err := seal.LoadOrCreateKey(n.s.StateDir)
	if err != nil {
		return fmt.Errorf("--encrypt: %w", err)
	}
	if created {
		n.log.Info("created the data-plane key", "path", path, "public_key", kp.Public)
	}
	m, err := seal.New(seal.Config{
		Static:     kp,
		Cipher:     n.s.EncryptCipher,
		RekeyAfter: n.s.RekeyAfter,
		Send:       n.sendHandshake,
		Logger:     n.log.With("component", "seal"),
	})
	if err != nil {
		return fmt.Errorf("--encrypt: %w", err)
	}
	n.secure.sec = m
	n.reg.MustRegister(m)
	n.log.Info("data plane encrypted", "cipher", n.s.EncryptCipher, "public_key", kp.Public, "rekey_after", n.s.RekeyAfter)
	return nil
}

// checkPlaintextPeers refuses, under encrypt, a static peer that is not
// marked Plaintext. A static peer gossips no data-plane key, so its traffic
// can only be plaintext, and the mark is the caller's consent to that (the
// config's encrypt=false); a library caller that forgot it gets an error,
// not a peer silently sent in the clear.
func checkPlaintextPeers(encrypt bool, peers []StaticPeer) error {
	if !encrypt {
		return nil
	}
	for _, p := range peers {
		if !p.Plaintext {
			return fmt.Errorf("static peer %s (%s): with Encrypt a static peer carries plaintext, and only if it is marked Plaintext (encrypt=false)", p.Name, p.IP)
		}
	}
	return nil
}

// sealOverhead is what encryption adds to each datagram (for the MTU).
func (n *Node) sealOverhead() int {
	if n.s.Encrypt {
		return seal.Overhead
	}
	return 0
}

// sendHandshake sends a handshake message or keepalive from the data port.
func (n *Node) sendHandshake(b []byte, dst netip.AddrPort) error {
	return n.dp.WriteOne(b, dst)
}

// runSecure is the handshake goroutine, one of the node's background ones.
func (n *Node) runSecure(ctx context.Context) {
	if m := n.secure.sec; m != nil {
		n.bg.Go(func() { m.Run(ctx) })
	}
}

// secureMeta is the encryption section of our metadata.
func (n *Node) secureMeta() membership.Encryption {
	if m := n.secure.sec; m != nil {
		return membership.Encryption{Cipher: uint8(m.Cipher()), Key: m.PublicKey()}
	}
	return membership.Encryption{}
}

// securePeers refuses the peers whose data plane does not match ours (no
// key, another cipher; or, without --encrypt, one that encrypts) and gives
// every other gossiping peer its seal.Peer. The router logs and counts the
// refusals. syncMu is held.
func (n *Node) securePeers(peers []router.Peer, members []membership.Member) []router.Peer {
	meta := make(map[string]membership.Encryption, len(members))
	for _, m := range members {
		if m.MetaErr == nil {
			meta[m.Name] = m.Meta.Encryption
		}
	}
	mgr := n.secure.sec
	var want []seal.PeerConfig
	for i := range peers {
		p := &peers[i]
		if p.Static || p.Incompatible != "" {
			continue
		}
		enc, ok := meta[p.Name]
		if !ok {
			continue
		}
		switch {
		case mgr == nil && enc.Enabled():
			p.Refused, p.Incompatible = router.RefusedEncrypts, "it encrypts its data plane (--encrypt), we do not"
		case mgr == nil:
		case !enc.Enabled():
			p.Refused, p.Incompatible = router.RefusedNoKey, "it advertises no data-plane key (runs without --encrypt): refused, we send no plaintext"
		case seal.Cipher(enc.Cipher) != mgr.Cipher():
			p.Refused, p.Incompatible = router.RefusedCipher, fmt.Sprintf("it encrypts with %s, we with %s (the cipher is cluster-wide)", seal.Cipher(enc.Cipher), mgr.Cipher())
		case p.State == "alive" || p.State == "suspect":
			want = append(want, seal.PeerConfig{Name: p.Name, Key: enc.Key, Addr: p.Underlay})
		}
	}
	if mgr == nil {
		return peers
	}
	sp := mgr.SetPeers(want)
	for i := range peers {
		if s := sp[peers[i].Name]; s != nil && peers[i].Incompatible == "" {
			peers[i].Secure = s
		}
	}
	return peers
}

// secureStatus adds the encryption state to a status.
func (n *Node) secureStatus(st *Status) {
	m := n.secure.sec
	if m == nil {
		return
	}
	es := m.Status()
	st.Node.Encryption = &es
	for i := range st.Peers {
		p := &st.Peers[i]
		if ps := m.PeerStatus(p.Name); ps != nil {
			p.Encryption = ps
		} else if p.Static {
			p.Encryption = &seal.PeerStatus{Session: "plaintext"}
		}
	}
}
