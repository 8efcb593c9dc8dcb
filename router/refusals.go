package router

// Refusal says why a known peer is not routed. Each is a bounded label
// value of weft_peers_refused, defined next to its label.
type Refusal uint8

// Refusals. RefusedNone is a peer that is routed (or not routable for its
// state alone: dead, left).
const (
	RefusedNone           Refusal = iota
	RefusedInvalidMeta            // its metadata did not decode
	RefusedEncap                  // another encapsulation, or another VNI
	RefusedNetwork                // another cluster network (--network), or none advertised
	RefusedSubnet                 // a subnet outside our network, or not one per family
	RefusedClaimTime              // a subnet claim dated in the future or before weft existed
	RefusedUnderlay               // an underlay address another routed peer (or this host) already has
	RefusedSubnetConflict         // a subnet overlapping one held by another host
	RefusedNoKey                  // --encrypt: it advertises no data-plane key
	RefusedCipher                 // --encrypt: another cipher
	RefusedEncrypts               // it encrypts, we do not
	// With a CA (weft run --ca-cert; node/pki.go):
	RefusedCertMissing      // it shows no certificate
	RefusedCertUntrusted    // no trusted CA issued its certificate (or it does not parse)
	RefusedCertExpired      // its certificate is outside its lifetime
	RefusedCertRevoked      // its certificate is on a revocation list
	RefusedBadSignature     // its metadata is not signed by its certificate's key
	RefusedCertName         // its certificate is for another name
	RefusedSignatureTime    // its metadata's signature is dated ahead of our clock, or older than one we believed
	RefusedSubnetNotGranted // it claims a subnet its certificate does not grant
	numRefusals
)

var refusalNames = [numRefusals]string{
	"", "invalid_metadata", "encap", "network", "subnet_outside_network", "claim_time",
	"underlay_conflict", "subnet_conflict", "no_key", "cipher", "encrypts",
	"cert_missing", "cert_untrusted", "cert_expired", "cert_revoked", "bad_signature", "cert_name",
	"signature_time", "subnet_not_granted",
}

// String is the label value ("" for RefusedNone).
func (r Refusal) String() string {
	if r < numRefusals {
		return refusalNames[r]
	}
	return "unknown"
}

// Refusals lists every refusal's label value, for dashboards and tests.
func Refusals() []string {
	return append([]string(nil), refusalNames[1:]...)
}
