// Package pki is weft's cluster certificate authority: host certificates
// that bind a host's name, the subnets it may claim (or the pools it may
// pick automatic subnets from) and its groups to an Ed25519 key, the CA
// that signs them, revocation lists, and the check a peer runs before it
// believes a host's claims (Trust.Verify).
//
// # Why X.509
//
// A certificate is plain X.509 v3 with Ed25519 keys and signatures, made
// and read by Go's crypto/x509 and crypto/ed25519 (no new dependency), and
// readable by operators with the tools they have: `openssl x509 -text`
// prints the host's name, groups, validity and granted subnets. A bespoke
// format would be smaller, but would need its own parser, its own
// inspection tool and its own review; X.509's cost (DER, a large spec) is
// held down by a strict profile: ParseCert accepts only what this package
// writes.
//
// # The profile
//
//   - Keys and signatures: Ed25519 only (PureEd25519).
//   - Host name: Subject CommonName, 1 to 128 bytes of UTF-8 without
//     control characters. Groups: Subject OrganizationalUnit, one value
//     each (at most 32, each 1 to 64 bytes, no commas, no control
//     characters, no duplicates). The subject holds nothing else.
//   - Granted subnets: the RFC 3779 IP Address Delegation extension
//     (id-pe-ipAddrBlocks, 1.3.6.1.5.5.7.1.7), in the subset weft uses: an
//     IPv4 family (AFI 0001) and/or an IPv6 family (AFI 0002), no SAFI, no
//     "inherit", address prefixes only (no ranges), each a BIT STRING of
//     exactly its prefix length. Families and prefixes are sorted, and no
//     two prefixes overlap or touch, as RFC 3779 requires of a canonical
//     encoding. At most one subnet per family. openssl prints it as
//     "sbgp-ipAddrBlock". The decoder reads the whole RFC 3779 syntax
//     strictly (DER, sorting, minimal range bounds) and then refuses what
//     weft does not use by name.
//   - Granted pools (for automatic subnets): a weft extension, OID
//     1.3.6.1.4.1.32473.119.101.102.116.1 (see below), non-critical,
//     its value encoded exactly like IPAddrBlocks. Any number of pools per
//     family.
//   - A host certificate carries at least one subnet or pool and at most
//     16 grants in all; it is no CA, and its KeyUsage is DigitalSignature
//     alone.
//   - A CA certificate: BasicConstraints critical with IsCA and MaxPathLen
//     0 (host certificates are signed by the CA itself: no intermediates),
//     KeyUsage CertSign|CRLSign, no pools, and its networks (Cert.Networks)
//     in the RFC 3779 extension, critical, encoded as for hosts: at most
//     one prefix per family, all of IPv4 and IPv6 (0.0.0.0/0, ::/0) unless
//     made with NewCAFor (`weft ca init --network`). A family without a
//     block grants nothing in it. A CA certificate without the extension
//     (made before CAs carried it) still parses, and grants everything.
//   - Serial numbers: 128 random bits, positive. Fingerprint: SHA-256 of
//     the DER.
//   - Unknown non-critical extensions are ignored (as X.509 requires);
//     unknown critical ones are refused.
//
// # The critical RFC 3779 extension
//
// RFC 3779 says the IP Address Delegation extension SHOULD be critical, and
// weft marks it critical: a verifier that does not know it must not accept
// the certificate as if it granted nothing in particular. Go's x509 leaves
// it in UnhandledCriticalExtensions, and x509.Certificate.Verify refuses any
// certificate that has one. ParseCert decodes the extension and then takes
// its OID out of UnhandledCriticalExtensions, which is what that field
// means: the extension has now been handled. The verification itself
// (Trust.Verify) does not use x509's Verify at all: a host certificate is
// signed by a CA directly, so there is no path to build, and the checks
// are few and explicit: the signature (CheckSignatureFrom, which also
// requires the issuer to be a CA allowed to sign certificates), the CA's
// and the host's validity periods, every granted subnet and pool inside
// the CA's networks, revocation. Each failure maps to one Reason, which
// x509's path-building errors would not give.
//
// `openssl verify` checks RFC 3779 resources along the path as well: a host
// certificate's subnets must lie inside its CA's blocks. It accepts weft
// host certificates ("OK"), except those of a CA made before CAs carried
// blocks ("RFC 3779 resource not subset of parent's resources"), which
// weft still trusts. openssl knows nothing of the pool extension: Sign and
// Trust.Verify hold pools to the CA's networks.
//
// # The pool extension's OID
//
// The natural choice, a UUID-derived OID (2.25.<a random 128-bit UUID as a
// decimal>), cannot be used: Go's x509 parser reads extension OIDs with
// cryptobyte, which refuses any arc of 2^31 or more, so a certificate
// carrying such an extension fails to parse at all
// (TestUUIDArcUnparseable shows it). weft owns no IANA Private Enterprise
// Number yet, and taking an unassigned one would squat on somebody's
// future number. So the OID sits under 1.3.6.1.4.1.32473, the enterprise
// number IANA assigned for use in documentation (RFC 5612) and so to no
// organisation, followed by "weft" in ASCII (119.101.102.116) and 1: it
// collides with no organisation's OID, and reads as weft's. It is a
// stopgap: once weft registers its own enterprise number (free, from IANA)
// the OID should move there. A certificate whose only grant is in the old
// extension then carries no grant and is refused (fails closed).
//
// # Revocation
//
// Revocation is by X.509 CRLs signed by the CA, listing serial numbers.
// Trust holds the CRLs it was given; it checks their signatures once, in
// NewTrust. A CRL past its NextUpdate still counts: a stale list must not
// un-revoke anybody, so weft never ignores an old CRL, it only hopes for a
// newer one. A CRL is never required either: with none, nothing is
// revoked.
package pki
