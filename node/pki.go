package node

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/pki"
	"github.com/weftnet/weft/router"
)

// PKI is this host's certificate material (weft run --ca-cert, --cert,
// --key, --crl, or --pki-dir), read and checked by config: the CAs it
// trusts with their revocation lists, its own certificate and the key
// that certificate binds. nil: no CA (a cluster that trusts its gossip
// key, with issue 21's checks only).
//
// With a PKI, a peer's claims are believed only when its metadata carries
// a proof (membership.Proof) signed with the key of a certificate that a
// trusted CA issued for the peer's name, that is within its lifetime and
// not revoked, and that grants every subnet the peer claims. The data-plane
// key (--encrypt) is part of the signed metadata, so the Noise handshake,
// which proves possession of that key, proves it for the certified host.
type PKI struct {
	Trust *pki.Trust
	Cert  *pki.Cert
	Key   ed25519.PrivateKey
	// Digest identifies the files' contents (config: SHA-256 over them
	// all), so that a reload tells a renewal or a new list from the same
	// files read again.
	Digest [32]byte
}

// same reports whether p and q are the same material (both nil, or the
// same files' contents).
func (p *PKI) same(q *PKI) bool {
	if p == nil || q == nil {
		return p == q
	}
	return p.Digest == q.Digest
}

// checkNewPKI refuses a reloaded PKI whose certificate does not grant the
// subnets we hold (config checked the rest: name, key, trust).
func (n *Node) checkNewPKI(p *PKI) error {
	if p == nil {
		return nil
	}
	l := n.getLocal()
	for _, sub := range l.Subnets {
		if sub.IsValid() && !p.Cert.Grants(sub) {
			return fmt.Errorf("cert: the new certificate does not grant our subnet %s (it grants %s): kept the running certificate and CAs", sub, grantsString(p.Cert))
		}
	}
	return nil
}

// readvertise hands peers our new certificate, then the metadata signed
// with its key. Peers that see the new metadata first ask for the
// certificate, and keep our routes while they wait (certWait).
func (n *Node) readvertise(old, nw *PKI) {
	c := n.gossip()
	if err := c.SetCert(n.ownCert()); err != nil {
		n.log.Error("handing out our new certificate", "err", err)
		return
	}
	if old != nil && nw != nil && old.Cert.Fingerprint == nw.Cert.Fingerprint {
		return // the same certificate: new CAs or lists only
	}
	if err := c.UpdateMeta(n.advertised()); err != nil {
		n.log.Error("advertising metadata signed with our new certificate", "err", err)
	}
}

// Certificate checks' timing.
const (
	// certRecheck: how often the peers are judged again without a
	// membership change (a certificate that runs out), and how long a
	// refusal is kept; a belief is kept until its certificate or a
	// trusted CA runs out. A reload (revocation) judges at once.
	certRecheck = 10 * time.Second
	// certWait: how long a peer whose new certificate (a renewal) has not
	// arrived yet keeps the routes its previous, believed metadata gave
	// it; a peer never believed waits unrouted ("pending"). After it,
	// either is refused (cert_missing).
	certWait = 10 * time.Second
	// certWarn: how long before our certificate runs out the log warns.
	certWarn = 24 * time.Hour
)

// certState is what the node remembers of its peers' certificates;
// guarded by Node.syncMu. Every map holds current members only (pruned at
// each judgement).
type certState struct {
	verdicts map[string]certVerdict
	signed   map[string]int64       // the newest proof time believed, per member
	good     map[string]router.Peer // the peer as last believed, per member
	waiting  map[string]time.Time   // since when a believed peer waits for its new certificate
	warned   time.Time              // when we last warned that our certificate runs out
}

// signState is our own newest proof time: each signature is later than
// the last, as peers require.
type signState struct {
	mu   sync.Mutex
	last int64
}

// certVerdict is one member's judgement, kept while its metadata and our
// trust are unchanged and until expires.
type certVerdict struct {
	meta    membership.Meta
	trust   *pki.Trust
	expires time.Time
	refused router.Refusal
	why     string
}

// signMeta adds our proof to m: our certificate's fingerprint, the time,
// and the signature over ProofMessage. Without a PKI, m is returned as is.
func (n *Node) signMeta(m membership.Meta) membership.Meta {
	p := n.live.Load().PKI
	if p == nil {
		return m
	}
	n.signed.mu.Lock()
	signed := max(n.d.Now().UnixMilli(), n.signed.last+1) // never older than our last
	n.signed.last = signed
	n.signed.mu.Unlock()
	m.Proof = membership.Proof{Cert: p.Cert.Fingerprint, Signed: signed}
	msg, err := membership.ProofMessage(n.s.Name, m)
	if err != nil { // cannot happen: config checks the name, and m is ours
		n.log.Error("signing our metadata", "err", err)
		return m
	}
	copy(m.Proof.Sig[:], ed25519.Sign(p.Key, msg))
	return m
}

// advertised is the metadata we advertise: meta, signed.
func (n *Node) advertised() membership.Meta { return n.signMeta(n.meta()) }

// ownCert is our certificate's DER for the gossip to hand out (nil
// without a PKI).
func (n *Node) ownCert() []byte {
	if p := n.live.Load().PKI; p != nil {
		return p.Cert.Raw
	}
	return nil
}

// certPeers judges the gossip peers' certificates (static peers are the
// operator's word and have none): a peer that fails is refused with the
// reason; one whose certificate has not arrived yet waits ("pending"),
// keeping for certWait the routes its last believed metadata gave it, and
// is refused after that.
// Called with syncMu held, before securePeers (a refused peer gets no
// session).
func (n *Node) certPeers(peers []router.Peer, members []membership.Member, now time.Time) []router.Peer {
	p := n.live.Load().PKI
	st := &n.certs
	if p == nil {
		*st = certState{warned: st.warned}
		return peers
	}
	if st.verdicts == nil {
		st.verdicts, st.signed = make(map[string]certVerdict), make(map[string]int64)
		st.good, st.waiting = make(map[string]router.Peer), make(map[string]time.Time)
	}
	byName := make(map[string]*membership.Member, len(members))
	for i := range members {
		byName[members[i].Name] = &members[i]
	}
	for i := range peers {
		pr := &peers[i]
		m := byName[pr.Name]
		if pr.Static || m == nil || pr.Incompatible != "" {
			continue
		}
		if pr.State != "alive" && pr.State != "suspect" {
			// Gone (dead, left): its next life starts afresh, with
			// a new signature time from a restarted clock.
			delete(st.signed, pr.Name)
			delete(st.good, pr.Name)
			delete(st.waiting, pr.Name)
			continue
		}
		if m.Meta.Proof.Present() && m.Cert == nil {
			g, ok := st.good[pr.Name]
			since, waiting := st.waiting[pr.Name]
			if !waiting {
				since = now
				st.waiting[pr.Name] = now
			}
			switch {
			case now.Sub(since) >= certWait:
				// Asked for every 2 s and never answered: a forged
				// fingerprint, or a host that cannot hand it out.
				pr.Refused, pr.Incompatible = router.RefusedCertMissing,
					fmt.Sprintf("the certificate its metadata names (sha256:%x) has not arrived in %v", m.Meta.Proof.Cert[:8], certWait)
				delete(st.good, pr.Name)
			case ok:
				g.State = pr.State
				*pr = g // a renewal in flight: keep what we believed
			default:
				pr.State = "pending" // not routed, not refused (yet): its certificate is on its way
			}
			continue
		}
		delete(st.waiting, pr.Name)
		v := st.judge(m, p.Trust, now)
		if v.refused != router.RefusedNone {
			pr.Refused, pr.Incompatible = v.refused, v.why
			delete(st.good, pr.Name)
			continue
		}
		st.good[pr.Name] = *pr
	}
	pruneTo(st.verdicts, byName)
	pruneTo(st.signed, byName)
	pruneTo(st.good, byName)
	pruneTo(st.waiting, byName)
	return peers
}

// pruneTo drops the entries of m whose member is gone.
func pruneTo[V any](m map[string]V, members map[string]*membership.Member) {
	for k := range m {
		if _, ok := members[k]; !ok {
			delete(m, k)
		}
	}
}

// judge returns member m's verdict, from the cache while its metadata and
// our trust are unchanged.
func (st *certState) judge(m *membership.Member, trust *pki.Trust, now time.Time) certVerdict {
	if v, ok := st.verdicts[m.Name]; ok && v.meta.Equal(m.Meta) && v.trust == trust && now.Before(v.expires) {
		return v
	}
	v := certVerdict{meta: m.Meta, trust: trust, expires: now.Add(certRecheck)}
	var cert *pki.Cert
	v.refused, v.why, cert = st.check(m, trust, now)
	if v.refused == router.RefusedNone {
		st.signed[m.Name] = m.Meta.Proof.Signed
		// Nothing but the clock changes a belief while the metadata
		// and the trust stay: keep it until the certificate or a
		// trusted CA runs out, not a verification every recheck.
		v.expires = cert.NotAfter
		for _, ca := range trust.CAs() {
			if ca.NotAfter.Before(v.expires) {
				v.expires = ca.NotAfter
			}
		}
	}
	st.verdicts[m.Name] = v
	return v
}

// check is the judgement itself: the certificate chains to a trusted CA,
// is within its lifetime and not revoked; the metadata is signed with its
// key under the member's name, not in the future, and not older than what
// we last believed (a replay); the certificate names the member and grants
// every subnet it claims.
func (st *certState) check(m *membership.Member, trust *pki.Trust, now time.Time) (router.Refusal, string, *pki.Cert) {
	proof := m.Meta.Proof
	if !proof.Present() {
		return router.RefusedCertMissing, "it shows no certificate: this host trusts a CA (--ca-cert) and refuses peers without one", nil
	}
	cert, err := pki.ParseCert(m.Cert)
	if err != nil {
		return router.RefusedCertUntrusted, fmt.Sprintf("its certificate does not parse: %v", err), nil
	}
	if err := trust.Verify(cert, now); err != nil {
		r := router.RefusedCertUntrusted
		if ve, ok := err.(*pki.VerifyError); ok {
			switch ve.Reason {
			case pki.ReasonExpired:
				r = router.RefusedCertExpired
			case pki.ReasonRevoked:
				r = router.RefusedCertRevoked
			}
		}
		return r, fmt.Sprintf("its certificate (serial %x): %v", cert.X509.SerialNumber, err), nil
	}
	msg, err := membership.ProofMessage(m.Name, m.Meta)
	if err != nil || !ed25519.Verify(cert.PublicKey, msg, proof.Sig[:]) {
		return router.RefusedBadSignature, fmt.Sprintf("its metadata is not signed by the key of the certificate it shows (%q, serial %x): a copied certificate, or forged metadata", cert.Name, cert.X509.SerialNumber), nil
	}
	if cert.Name != m.Name {
		return router.RefusedCertName, fmt.Sprintf("its certificate is for %q", cert.Name), nil
	}
	signed := time.UnixMilli(proof.Signed).UTC()
	if latest := now.Add(MaxClaimSkew); signed.After(latest) {
		return router.RefusedSignatureTime, fmt.Sprintf("its metadata is signed at %s, more than %v ahead of our clock", signed.Format(time.RFC3339), MaxClaimSkew), nil
	}
	if last, ok := st.signed[m.Name]; ok && proof.Signed < last {
		return router.RefusedSignatureTime, fmt.Sprintf("its metadata is signed at %s, before the metadata we believed (signed %s): a replay",
			signed.Format(time.RFC3339Nano), time.UnixMilli(last).UTC().Format(time.RFC3339Nano)), nil
	}
	for _, sub := range m.Meta.Subnets {
		if sub.IsValid() && !cert.Grants(sub) {
			return router.RefusedSubnetNotGranted, fmt.Sprintf("claims %s, which its certificate does not grant (it grants %s)", sub, grantsString(cert)), nil
		}
	}
	return router.RefusedNone, "", cert
}

func grantsString(c *pki.Cert) string {
	s := prefixList(c.Subnets)
	if len(c.Pools) > 0 {
		if s != "" {
			s += ", "
		}
		s += "pool " + prefixList(c.Pools)
	}
	return s
}

// checkOwnCert warns, at most hourly, when our certificate runs out within
// certWarn, and says so as an error once it has.
func (n *Node) checkOwnCert(now time.Time) {
	p := n.live.Load().PKI
	if p == nil || now.Sub(n.certs.warned) < time.Hour {
		return
	}
	left := p.Cert.NotAfter.Sub(now)
	switch {
	case left <= 0:
		n.certs.warned = now
		n.log.Error("our certificate has expired: every peer refuses us; renew it (weft cert sign) and reload", "not_after", p.Cert.NotAfter, "name", p.Cert.Name)
	case left < certWarn:
		n.certs.warned = now
		n.log.Warn("our certificate runs out soon: renew it (weft cert sign) and reload", "not_after", p.Cert.NotAfter, "left", left.Round(time.Minute))
	}
}

var descCertExpiry = prometheus.NewDesc("weft_cert_expiry_seconds",
	"Seconds until a certificate runs out, negative once it has: this host's (cert=host) and the soonest of the CAs it trusts (cert=ca). With --ca-cert only.",
	[]string{"cert"}, nil)

// certCollector exports weft_cert_expiry_seconds from the live PKI.
type certCollector struct{ n *Node }

func (c certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descCertExpiry }

func (c certCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.n.live.Load().PKI
	if p == nil {
		return
	}
	now := c.n.d.Now()
	ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, p.Cert.NotAfter.Sub(now).Seconds(), "host")
	var soonest time.Time
	for _, ca := range p.Trust.CAs() {
		if soonest.IsZero() || ca.NotAfter.Before(soonest) {
			soonest = ca.NotAfter
		}
	}
	if !soonest.IsZero() {
		ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, soonest.Sub(now).Seconds(), "ca")
	}
}

// certStatus adds our certificate to the status.
func (n *Node) certStatus(st *Status) {
	p := n.live.Load().PKI
	if p == nil {
		return
	}
	c := p.Cert
	cs := &CertStatus{Name: c.Name, Serial: fmt.Sprintf("%x", c.X509.SerialNumber), Fingerprint: hex.EncodeToString(c.Fingerprint[:]),
		NotAfter: c.NotAfter, Groups: c.Groups}
	for _, s := range c.Subnets {
		cs.Grants = append(cs.Grants, s.String())
	}
	for _, s := range c.Pools {
		cs.Grants = append(cs.Grants, "pool "+s.String())
	}
	for _, ca := range p.Trust.CAs() {
		cs.CAs = append(cs.CAs, ca.Name)
	}
	st.Node.Cert = cs
}
