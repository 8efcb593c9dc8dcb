package membership

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
)

// Optional sections after the fixed record of every metadata version. Each
// is a tag byte, a length byte and the value; tags are known, ascending and
// appear once, so the encoding stays canonical. A weft that predates a
// section refuses metadata carrying it (it sees trailing bytes), which is
// what a section that changes the data plane needs: a host that cannot
// speak it must not route to the one that advertises it.
//
//	tag  len       value
//	1    33        data-plane encryption: cipher (1 byte, nonzero), static X25519 public key (32 bytes, not all zero)
//	2    5|17|22   the cluster networks (--network): each a prefix length (1 byte) and an address (4 or 16
//	               bytes), IPv4 first; the length says which: 5 IPv4, 17 IPv6, 22 both
//	3    104       the host's proof (weft run --cert, proof.go): its certificate's SHA-256 (32 bytes), when it
//	               signed (int64 unix ms), and the Ed25519 signature (64 bytes) over ProofMessage
const (
	sectionEncryption    = 1
	sectionEncryptionLen = 1 + 32
	sectionNetworks      = 2
	networkLen4          = 1 + 4
	networkLen6          = 1 + 16
	sectionNetworksMax   = networkLen4 + networkLen6
	sectionProof         = 3
	sectionProofLen      = 32 + 8 + 64
)

// validateNetworks reports why m's Networks cannot be advertised: at most one
// per family, IPv4 first, each canonical (no host bits), and each subnet
// inside the network of its family.
func (m Meta) validateNetworks() error {
	if len(m.Networks) == 0 {
		return nil // a weft that predates the section advertises none
	}
	if len(m.Networks) > 2 {
		return metaErrorf("%d networks: at most two, an IPv4 and an IPv6 one", len(m.Networks))
	}
	n4 := m.Networks[0]
	for i, n := range m.Networks {
		if !n.IsValid() {
			return metaErrorf("networks: network %d is not a valid prefix", i+1)
		}
		if n.Addr().Is4In6() || n.Masked() != n {
			return metaErrorf("network %v is not a canonical prefix", n)
		}
		if i == 1 && (!n.Addr().Is6() || !n4.Addr().Is4()) {
			return metaErrorf("networks %v and %v: want an IPv4 network, then an IPv6 one", n4, n)
		}
	}
	for _, sub := range m.Subnets {
		if !slices.ContainsFunc(m.Networks, func(n netip.Prefix) bool { return Inside(sub, n) }) {
			return metaErrorf("subnet %v is not inside the advertised network(s) %v", sub, m.networksString())
		}
	}
	return nil
}

// Inside reports whether sub lies wholly inside n (same family, n no
// longer than sub).
func Inside(sub, n netip.Prefix) bool {
	return n.IsValid() && sub.IsValid() && sub.Addr().Is4() == n.Addr().Is4() && n.Bits() <= sub.Bits() && n.Contains(sub.Addr())
}

func (m Meta) networksString() string {
	out := make([]string, len(m.Networks))
	for i, n := range m.Networks {
		out[i] = n.String()
	}
	return strings.Join(out, ",")
}

// Encryption is a host's encrypted data plane as advertised in gossip
// (weft run --encrypt): the cipher it seals datagrams with and its static
// X25519 public key, from which peers derive session keys. The zero value
// means the host sends plaintext.
type Encryption struct {
	Cipher uint8
	Key    [32]byte
}

// Enabled reports whether the host advertises an encrypted data plane.
func (e Encryption) Enabled() bool { return e != Encryption{} }

func (e Encryption) validate() error {
	if !e.Enabled() {
		return nil
	}
	if e.Cipher == 0 {
		return metaErrorf("encryption section without a cipher")
	}
	if e.Key == [32]byte{} {
		return metaErrorf("encryption section with an all-zero key")
	}
	return nil
}

// appendSections appends m's optional sections to b.
func (m Meta) appendSections(b []byte) []byte {
	if m.Encryption.Enabled() {
		b = append(b, sectionEncryption, sectionEncryptionLen, m.Encryption.Cipher)
		b = append(b, m.Encryption.Key[:]...)
	}
	if len(m.Networks) > 0 {
		n := 0
		for _, nw := range m.Networks {
			n += networkLen(nw)
		}
		b = append(b, sectionNetworks, byte(n))
		for _, nw := range m.Networks {
			b = append(b, byte(nw.Bits()))
			b = append(b, nw.Addr().AsSlice()...)
		}
	}
	if m.Proof.Present() {
		b = append(b, sectionProof, sectionProofLen)
		b = append(b, m.Proof.Cert[:]...)
		b = binary.BigEndian.AppendUint64(b, uint64(m.Proof.Signed))
		b = append(b, m.Proof.Sig[:]...)
	}
	return b
}

func networkLen(n netip.Prefix) int {
	if n.Addr().Is4() {
		return networkLen4
	}
	return networkLen6
}

// parseNetworks decodes the networks section's value.
func parseNetworks(v []byte, out *Meta) bool {
	prefix := func(p []byte) (netip.Prefix, bool) {
		a, _ := netip.AddrFromSlice(p[1:])
		if int(p[0]) > a.BitLen() {
			return netip.Prefix{}, false
		}
		return netip.PrefixFrom(a, int(p[0])), true
	}
	var parts [][]byte
	switch len(v) {
	case networkLen4, networkLen6:
		parts = [][]byte{v}
	case networkLen4 + networkLen6:
		parts = [][]byte{v[:networkLen4], v[networkLen4:]}
	default:
		return false
	}
	for _, part := range parts {
		p, ok := prefix(part)
		if !ok {
			return false
		}
		out.Networks = append(out.Networks, p)
	}
	return true
}

// parseSections decodes the sections in rest, the bytes after a record of
// recordLen bytes, into out.
func parseSections(rest []byte, recordLen int, out *Meta) error {
	trailing := func(why string) error {
		return metaErrorf("%d trailing bytes after %d-byte record (%s)", len(rest), recordLen, why)
	}
	last := 0
	for p := rest; len(p) > 0; {
		if len(p) < 2 {
			return trailing("a truncated section")
		}
		tag, n := int(p[0]), int(p[1])
		if len(p) < 2+n {
			return trailing("a truncated section")
		}
		if tag <= last {
			return trailing("sections out of order or repeated")
		}
		v := p[2 : 2+n]
		switch tag {
		case sectionEncryption:
			if n != sectionEncryptionLen {
				return trailing("an encryption section of the wrong length")
			}
			out.Encryption.Cipher = v[0]
			copy(out.Encryption.Key[:], v[1:])
		case sectionNetworks:
			if !parseNetworks(v, out) {
				return trailing("a networks section of the wrong length or prefix length")
			}
		case sectionProof:
			if n != sectionProofLen {
				return trailing("a proof section of the wrong length")
			}
			copy(out.Proof.Cert[:], v[:32])
			out.Proof.Signed = int64(binary.BigEndian.Uint64(v[32:40]))
			copy(out.Proof.Sig[:], v[40:])
		default:
			return trailing("an unknown section")
		}
		last = tag
		p = p[2+n:]
	}
	return nil
}
