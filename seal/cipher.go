package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"strings"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// Cipher is the AEAD that seals datagrams (and the handshake's cipher). It
// is cluster-wide: a peer advertising another one is refused.
type Cipher uint8

// The ciphers. The values are carried in node metadata.
const (
	AES256GCM        Cipher = 1
	ChaCha20Poly1305 Cipher = 2
)

func (c Cipher) String() string {
	switch c {
	case AES256GCM:
		return "aes-256-gcm"
	case ChaCha20Poly1305:
		return "chacha20-poly1305"
	}
	return fmt.Sprintf("cipher(%d)", uint8(c))
}

// Valid reports whether c is a known cipher.
func (c Cipher) Valid() bool { return c == AES256GCM || c == ChaCha20Poly1305 }

// ParseCipher parses "aes-256-gcm", "chacha20-poly1305" or "auto" (the
// CPU's choice, DefaultCipher).
func ParseCipher(s string) (Cipher, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return DefaultCipher(), nil
	case "aes-256-gcm", "aes256gcm", "aes":
		return AES256GCM, nil
	case "chacha20-poly1305", "chacha20poly1305", "chacha":
		return ChaCha20Poly1305, nil
	}
	return 0, fmt.Errorf("unknown cipher %q (want auto, aes-256-gcm or chacha20-poly1305)", s)
}

// DefaultCipher is AES-256-GCM where the CPU has AES and carry-less
// multiply instructions (constant time and fast), else ChaCha20-Poly1305.
func DefaultCipher() Cipher {
	if hasAESHardware() {
		return AES256GCM
	}
	return ChaCha20Poly1305
}

func hasAESHardware() bool {
	return (cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ) ||
		(cpu.ARM64.HasAES && cpu.ARM64.HasPMULL) ||
		(cpu.S390X.HasAES && cpu.S390X.HasAESGCM)
}

// newAEAD returns c keyed with key.
func (c Cipher) newAEAD(key [32]byte) (cipher.AEAD, error) {
	switch c {
	case AES256GCM:
		b, err := aes.NewCipher(key[:])
		if err != nil {
			return nil, fmt.Errorf("aes: %w", err)
		}
		a, err := cipher.NewGCM(b)
		if err != nil {
			return nil, fmt.Errorf("gcm: %w", err)
		}
		return a, nil
	case ChaCha20Poly1305:
		a, err := chacha20poly1305.New(key[:])
		if err != nil {
			return nil, fmt.Errorf("chacha20poly1305: %w", err)
		}
		return a, nil
	}
	return nil, fmt.Errorf("unknown cipher %d", uint8(c))
}

// suite is the Noise cipher suite of the handshake: X25519, the data
// plane's cipher, SHA-256.
func (c Cipher) suite() noise.CipherSuite {
	f := noise.CipherAESGCM
	if c == ChaCha20Poly1305 {
		f = noise.CipherChaChaPoly
	}
	return noise.NewCipherSuite(noise.DH25519, f, noise.HashSHA256)
}
