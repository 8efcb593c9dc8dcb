package membership

// Optional sections after the fixed record of every metadata version. Each
// is a tag byte, a length byte and the value; tags are known, ascending and
// appear once, so the encoding stays canonical. A weft that predates a
// section refuses metadata carrying it (it sees trailing bytes), which is
// what a section that changes the data plane needs: a host that cannot
// speak it must not route to the one that advertises it.
//
//	tag  len  value
//	1    33   data-plane encryption: cipher (1 byte, nonzero), static X25519 public key (32 bytes, not all zero)
const (
	sectionEncryption    = 1
	sectionEncryptionLen = 1 + 32
)

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
	return b
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
		default:
			return trailing("an unknown section")
		}
		last = tag
		p = p[2+n:]
	}
	return nil
}
