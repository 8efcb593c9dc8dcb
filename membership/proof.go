package membership

import (
	"encoding/binary"
	"errors"
	"slices"
)

// Proof binds a host's metadata to its certificate (weft run --cert): the
// host signs its name and metadata with the certificate's private key, so
// that whoever copies the certificate, or the metadata, cannot advertise
// anything the holder of the key did not sign. The membership package
// carries it and never judges it: the node checks the signature and the
// certificate (node/pki.go).
//
// The zero Proof means none (a cluster without a CA).
type Proof struct {
	Cert   [32]byte // SHA-256 of the certificate's DER (its fingerprint)
	Signed int64    // unix milliseconds when the host signed; never older than its last signature
	Sig    [64]byte // Ed25519 over ProofMessage
}

// Equal reports whether m and o are the same metadata.
func (m Meta) Equal(o Meta) bool {
	return slices.Equal(m.Subnets, o.Subnets) && m.Underlay == o.Underlay && m.Port == o.Port && m.Encap == o.Encap &&
		m.VNI == o.VNI && m.VTEPMAC == o.VTEPMAC && m.Claimed == o.Claimed && m.PartialChecksums == o.PartialChecksums &&
		m.Encryption == o.Encryption && slices.Equal(m.Networks, o.Networks) && m.Proof == o.Proof
}

// Present reports whether the metadata carries a proof.
func (p Proof) Present() bool { return p != Proof{} }

func (p Proof) validate() error {
	if !p.Present() {
		return nil
	}
	if p.Cert == [32]byte{} {
		return metaErrorf("proof without a certificate fingerprint")
	}
	if p.Sig == [64]byte{} {
		return metaErrorf("proof without a signature")
	}
	return nil
}

// proofDomain separates weft's metadata signatures from any other use of
// the certificate's key.
const proofDomain = "weft metadata proof v1\x00"

// ProofMessage is what a host signs for metadata m under its gossip name:
// the domain, the name, m's encoding without the proof section, and the
// proof's fingerprint and time. The metadata encoding is canonical, so the
// receiver rebuilds the same bytes from what it decoded.
func ProofMessage(name string, m Meta) ([]byte, error) {
	if len(name) == 0 || len(name) > MaxNameLen {
		return nil, errors.New("membership: proof: name empty or too long")
	}
	proof := m.Proof
	m.Proof = Proof{}
	b := append(make([]byte, 0, 256), proofDomain...)
	b = append(b, byte(len(name)))
	b = append(b, name...)
	b, err := m.AppendBinary(b)
	if err != nil {
		return nil, err
	}
	b = append(b, proof.Cert[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(proof.Signed)), nil
}
