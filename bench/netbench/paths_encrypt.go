package main

// encryptedPath is weft-udp with every datagram sealed (--encrypt): the
// cost of the Noise-keyed AES-256-GCM data plane beside the plain one.
var encryptedPath = pathDef{
	Name: "weft-udp-encrypt",
	Desc: "weft --encap udp --encrypt: the weft-udp data path with every datagram sealed (AES-256-GCM, Noise KK sessions)",
	Kind: kindWeft, Args: []string{"--encap", "udp", "--encrypt"}, Via: "tunnel",
}

// encryptedChaChaPath is the same with ChaCha20-Poly1305, wireguard-go's
// cipher: the like-for-like comparison with it (only when named).
var encryptedChaChaPath = pathDef{
	Name: "weft-udp-encrypt-chacha",
	Desc: "weft --encap udp --encrypt --encrypt-cipher chacha20-poly1305: the encrypted path with wireguard-go's cipher (only when named)",
	Kind: kindWeft, Args: []string{"--encap", "udp", "--encrypt", "--encrypt-cipher", "chacha20-poly1305"}, Via: "tunnel",
	Extra: true,
}

// Both daemons of a path share the lab's gossip key (weftrun.FilesIn), which
// --encrypt needs and weft run requires anyway.
