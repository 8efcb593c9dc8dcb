package node

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/fakes"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/seal"
)

func encrypted(h *host) *host {
	h.s.Encrypt, h.s.EncryptCipher, h.s.RekeyAfter = true, seal.AES256GCM, seal.DefaultRekeyAfter
	h.s.Live.GossipKeys = [][]byte{bytes.Repeat([]byte{7}, 32)}
	return h
}

// Two encrypted hosts carry packets both ways, sealed on the hub; a third
// without --encrypt is refused by both (and refuses them); the handshake
// goroutine ends with the node (goleak).
func TestEncryptedHostsForward(t *testing.T) {
	u := fakes.NewHub()
	a := encrypted(newHost(t, u, "a", 1, "10.244.1.0/24"))
	b := encrypted(newHost(t, u, "b", 2, "10.244.2.0/24"))
	c := newHost(t, u, "c", 3, "10.244.3.0/24")
	c.s.Live.GossipKeys = a.s.Live.GossipKeys
	a.mustStart()
	b.mustStart(a)
	c.mustStart(a)
	eventually(t, "a routes b", routedVia(a, "b", router.ViaTunnel))
	for _, pair := range [][2]*host{{b, a}, {a, b}} {
		h, peer := pair[0], pair[1]
		eventually(t, h.name+" has a session with "+peer.name, func() error {
			if p := h.n.Status().Peer(peer.name); p == nil || p.Encryption == nil || p.Encryption.Session != "established" {
				return fmt.Errorf("%s's status of %s: %+v", h.name, peer.name, p)
			}
			return nil
		})
	}

	out := ipv4("10.244.1.0", "10.244.2.7")
	a.dev.Send(out)
	if got := recv(t, b.dev); !slices.Equal(got, out) {
		t.Fatalf("b's TUN got %x, want %x", got, out)
	}
	b.dev.Send(ipv4("10.244.2.7", "10.244.1.0"))
	recv(t, a.dev)

	eventually(t, "c refused", func() error {
		pa, pc := a.n.Status().Peer("c"), c.n.Status().Peer("a")
		if pa == nil || pa.Via != router.ViaNone || !strings.Contains(pa.Reason, "no data-plane key") {
			return fmt.Errorf("a's status of c: %+v", pa)
		}
		if pc == nil || pc.Via != router.ViaNone || !strings.Contains(pc.Reason, "we do not") {
			return fmt.Errorf("c's status of a: %+v", pc)
		}
		return nil
	})
	st := a.n.Status()
	if st.Node.Encryption == nil || st.Node.Encryption.Cipher != "aes-256-gcm" || st.Node.Encryption.Handshakes[seal.HSCompleted.String()]+st.Node.Encryption.Handshakes[seal.HSResponded.String()] == 0 {
		t.Errorf("a's encryption status: %+v", st.Node.Encryption)
	}
	if st.Node.MTU != 0 && st.Node.MTU != 1440 {
		t.Errorf("MTU %d, want 1440 (1500 - 28 - 32)", st.Node.MTU)
	}
	fi, err := os.Stat(filepath.Join(a.s.StateDir, seal.KeyFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("a's key file: %v %v", fi, err)
	}
}

// A key file readable by others is refused at start, naming it.
func TestEncryptedKeyFileModeRefused(t *testing.T) {
	a := encrypted(newHost(t, fakes.NewHub(), "a", 1, "10.244.1.0/24"))
	if err := os.MkdirAll(a.s.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(a.s.StateDir, seal.KeyFileName)
	if err := os.WriteFile(path, []byte("bm90IGEga2V5IGJ1dCAzMiBieXRlcyBsb25nLi4uLi4=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	err := a.start()
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("start with a 0644 key file: %v", err)
	}
}

// Under Encrypt a static peer must be marked Plaintext, at start and on
// reload: a library caller cannot send a peer plaintext by omission.
func TestEncryptedStaticPeerNeedsPlaintext(t *testing.T) {
	u := fakes.NewHub()
	k := StaticPeer{Name: "k", Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")}, IP: netip.MustParseAddr("127.0.0.9"), Port: 8285}
	a := encrypted(newHost(t, u, "a", 1, "10.244.1.0/24"))
	a.s.Live.Peers = []StaticPeer{k}
	if err := a.start(); err == nil || !strings.Contains(err.Error(), "static peer k (127.0.0.9)") || !strings.Contains(err.Error(), "Plaintext") {
		t.Fatalf("start with an unmarked static peer: %v", err)
	}

	b := encrypted(newHost(t, u, "b", 2, "10.244.2.0/24"))
	b.mustStart()
	next := b.s
	next.Live.Peers = []StaticPeer{k}
	if changed, err := b.n.Reload(next); err == nil || changed != nil || !strings.Contains(err.Error(), "static peer k") {
		t.Fatalf("reload with an unmarked static peer: changed %v, err %v", changed, err)
	}
	if b.n.Status().Peer("k") != nil {
		t.Fatal("a refused reload added the peer")
	}
	k.Plaintext = true
	next.Live.Peers = []StaticPeer{k}
	if _, err := b.n.Reload(next); err != nil {
		t.Fatalf("reload with a plaintext static peer: %v", err)
	}
	if p := b.n.Status().Peer("k"); p == nil || p.Encryption == nil || p.Encryption.Session != "plaintext" {
		t.Fatalf("the plaintext static peer's status: %+v", p)
	}
}

// The cipher is cluster-wide: hosts that seal with ChaCha20-Poly1305 carry
// packets between them, and refuse (and are refused by) one that seals with
// AES-256-GCM, with the reason in the status.
func TestEncryptedCipherMismatchRefused(t *testing.T) {
	u := fakes.NewHub()
	a := encrypted(newHost(t, u, "a", 1, "10.244.1.0/24"))
	b := encrypted(newHost(t, u, "b", 2, "10.244.2.0/24"))
	c := encrypted(newHost(t, u, "c", 3, "10.244.3.0/24"))
	b.s.EncryptCipher, c.s.EncryptCipher = seal.ChaCha20Poly1305, seal.ChaCha20Poly1305
	a.mustStart()
	b.mustStart(a)
	c.mustStart(a)
	eventually(t, "b and c have a session", func() error {
		for _, pair := range [][2]*host{{b, c}, {c, b}} {
			if p := pair[0].n.Status().Peer(pair[1].name); p == nil || p.Encryption == nil || p.Encryption.Session != "established" {
				return fmt.Errorf("%s's status of %s: %+v", pair[0].name, pair[1].name, p)
			}
		}
		return nil
	})
	out := ipv4("10.244.2.0", "10.244.3.9")
	b.dev.Send(out)
	if got := recv(t, c.dev); !slices.Equal(got, out) {
		t.Fatalf("c's TUN got %x, want %x", got, out)
	}
	if st := c.n.Status(); st.Node.Encryption == nil || st.Node.Encryption.Cipher != "chacha20-poly1305" {
		t.Errorf("c's encryption status: %+v", st.Node.Encryption)
	}
	eventually(t, "a and b refuse each other", func() error {
		for _, pair := range [][2]*host{{a, b}, {b, a}, {a, c}} {
			p := pair[0].n.Status().Peer(pair[1].name)
			if p == nil || p.Via != router.ViaNone || !strings.Contains(p.Reason, "the cipher is cluster-wide") {
				return fmt.Errorf("%s's status of %s: %+v", pair[0].name, pair[1].name, p)
			}
		}
		return nil
	})
}
