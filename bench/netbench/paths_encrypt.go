package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// encryptedPath is weft-udp with every datagram sealed (--encrypt): the
// cost of the Noise-keyed AES-256-GCM data plane beside the plain one.
var encryptedPath = pathDef{
	Name: "weft-udp-encrypt",
	Desc: "weft --encap udp --encrypt: the weft-udp data path with every datagram sealed (AES-256-GCM, Noise KK sessions)",
	Kind: kindWeft, Args: []string{"--encap", "udp", "--encrypt"}, Via: "tunnel",
	Files: gossipKeyFlags,
}

// encryptedChaChaPath is the same with ChaCha20-Poly1305, wireguard-go's
// cipher: the like-for-like comparison with it (only when named).
var encryptedChaChaPath = pathDef{
	Name: "weft-udp-encrypt-chacha",
	Desc: "weft --encap udp --encrypt --encrypt-cipher chacha20-poly1305: the encrypted path with wireguard-go's cipher (only when named)",
	Kind: kindWeft, Args: []string{"--encap", "udp", "--encrypt", "--encrypt-cipher", "chacha20-poly1305"}, Via: "tunnel",
	Files: gossipKeyFlags, Extra: true,
}

// benchGossipKey is the gossip key both daemons of the path share (a
// fixed test key: the lab is private and torn down after the run).
const benchGossipKey = "d2VmdC1uZXRiZW5jaC1nb3NzaXAta2V5LTMyYnl0ZXM="

// gossipKeyFlags writes the gossip key that --encrypt needs into the
// daemon's directory (mode 0600) and returns the flag naming it.
func gossipKeyFlags(dir string) ([]string, error) {
	path := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(path, []byte(benchGossipKey+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("gossip key for the encrypted path: %w", err)
	}
	return []string{"--gossip-key-file", path}, nil
}
