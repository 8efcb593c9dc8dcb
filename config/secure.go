package config

import (
	"flag"
	"fmt"
	"time"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/node"
	"github.com/weftnet/weft/seal"
)

// encryptionFlags declares the encrypted data plane's flags.
func encryptionFlags(fs *flag.FlagSet, c *Config) {
	fs.BoolVar(&c.Encrypt, "encrypt", false, "authenticate and encrypt every datagram between weft hosts (needs --gossip-key-file; static peers need encrypt=false)")
	fs.StringVar(&c.EncryptCipher, "encrypt-cipher", "", "advanced: auto, aes-256-gcm or chacha20-poly1305, the same on every host (default auto: AES-256-GCM where the CPU has AES instructions)")
	fs.StringVar(&c.EncryptRekeyAfter, "encrypt-rekey-after", "", "advanced: session age at which a new handshake starts (default 2m; shorter only for tests)")
}

// validateEncryption checks --encrypt and what goes with it: the gossip
// key (each host's data-plane key travels in its gossip metadata, which
// must be authenticated), a tunnel, and an explicit encrypt=false on every
// static peer (a kernel VTEP speaks no handshake).
func validateEncryption(c Config, s *node.Settings, src source) error {
	if !c.Encrypt {
		for i, pc := range c.Peers {
			if pc.Encrypt != nil && *pc.Encrypt {
				return usagef("invalid %s %s: encrypt=true without %s", src.name("peer", fmt.Sprintf("peers[%d]", i)), describePeer(pc), src.name("encrypt", "encrypt"))
			}
		}
		if c.EncryptCipher != "" || c.EncryptRekeyAfter != "" {
			return usagef("%s and %s need %s", src.name("encrypt-cipher", "encryptCipher"), src.name("encrypt-rekey-after", "encryptRekeyAfter"), src.name("encrypt", "encrypt"))
		}
		return nil
	}
	if c.GossipKeyFile == "" {
		return usagef("%s needs %s: each host's data-plane key travels in its gossip metadata, which only an encrypted gossip authenticates (weft keygen makes a key)",
			src.name("encrypt", "encrypt"), src.name("gossip-key-file", "gossipKeyFile"))
	}
	if c.DirectRouting {
		return usagef("%s with %s: direct routes carry an on-link peer's traffic as plain kernel routes, past weft, and the kernel here cannot encrypt them; drop one of the two",
			src.name("encrypt", "encrypt"), src.name("direct-routing", "directRouting"))
	}
	if s.Encap == encap.None {
		return usagef("%s with %s none: host-gw has no tunnel to encrypt", src.name("encrypt", "encrypt"), src.name("encap", "encap"))
	}
	for i, pc := range c.Peers {
		if pc.Encrypt == nil || *pc.Encrypt {
			return usagef("invalid %s %s: a static peer gossips no data-plane key and cannot be encrypted; with %s it needs encrypt=false to carry plaintext",
				src.name("peer", fmt.Sprintf("peers[%d]", i)), describePeer(pc), src.name("encrypt", "encrypt"))
		}
		s.Live.Peers[i].Plaintext = true
	}
	var err error
	s.Encrypt = true
	if s.EncryptCipher, err = seal.ParseCipher(c.EncryptCipher); err != nil {
		return usagef("invalid %s %q: want auto, aes-256-gcm or chacha20-poly1305", src.name("encrypt-cipher", "encryptCipher"), c.EncryptCipher)
	}
	s.RekeyAfter = seal.DefaultRekeyAfter
	if c.EncryptRekeyAfter != "" {
		if s.RekeyAfter, err = time.ParseDuration(c.EncryptRekeyAfter); err != nil || s.RekeyAfter < time.Second || s.RekeyAfter > 10*time.Minute {
			return usagef("invalid %s %q: want a duration from 1s to 10m, such as 2m", src.name("encrypt-rekey-after", "encryptRekeyAfter"), c.EncryptRekeyAfter)
		}
	}
	return nil
}
