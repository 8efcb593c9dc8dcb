package membership

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// Certificates travel beside the metadata, not in it: memberlist's node
// metadata holds at most 512 bytes, and a host certificate with its
// granted subnets does not fit beside the record. The metadata carries the
// certificate's SHA-256 (Proof.Cert); the certificate itself reaches peers
//   - in memberlist's push/pull state (LocalState), so that a join and
//     every periodic push/pull exchange the two hosts' certificates, and
//   - on demand: a host that sees a fingerprint it does not hold asks that
//     member for it (msgCertRequest, over memberlist's reliable channel),
//     and the member answers with the certificate (msgCert).
//
// The store is content-addressed: a certificate is kept only while a
// member's metadata names its fingerprint, so it is bound to that member
// by the hash, and the store never holds more than one certificate per
// member plus a few spares (certificates that arrived before the metadata
// that names them). The membership package never judges a certificate:
// the node does (node/pki.go).
const (
	msgCert        byte = 2 // type, then a certificate's DER
	msgCertRequest byte = 3 // type, the fingerprint (32 bytes), the asker's name
	// MaxCertSize bounds a certificate's DER; a weft certificate is about
	// 400 bytes.
	MaxCertSize = 4096
	// spareCerts bounds the certificates kept that no metadata names yet.
	spareCerts = 16
	// certAskEvery: a missing certificate is asked for again this often.
	certAskEvery = 2 * time.Second
	// certAnswerBurst answers per second at most (a member that asks in a
	// loop costs us this many small TCP writes, no more).
	certAnswerBurst = 64
	certQueue       = 64
)

// Refusal reasons for certificate messages (weft_gossip_refused_total).
const (
	RefusedCertTooBig = "cert_too_big" // a certificate message over MaxCertSize
	RefusedCertBusy   = "cert_busy"    // a certificate request over the answer rate, or the answer queue full
)

// certStore is the Cluster's certificates; guarded by Cluster.mu.
type certStore struct {
	own   []byte
	ownFP [32]byte
	byFP  map[[32]byte][]byte // named by a member's metadata
	spare [][]byte            // the most recent unnamed ones, oldest first
	asked map[string]time.Time
}

func newCertStore(own []byte) certStore {
	s := certStore{byFP: make(map[[32]byte][]byte), asked: make(map[string]time.Time)}
	s.setOwn(own)
	return s
}

func (s *certStore) setOwn(der []byte) {
	s.own = slices.Clone(der)
	s.ownFP = [32]byte{}
	if len(der) > 0 {
		s.ownFP = sha256.Sum256(der)
	}
}

// SetCert replaces the certificate this host hands to its peers (a renewal
// by reload). Call it before UpdateMeta with the new Proof, so that peers
// asking for the new fingerprint get it.
func (c *Cluster) SetCert(der []byte) error {
	if len(der) > MaxCertSize {
		return fmt.Errorf("membership: certificate of %d bytes exceeds %d", len(der), MaxCertSize)
	}
	c.mu.Lock()
	c.certs.setOwn(der)
	c.mu.Unlock()
	return nil
}

// certFor returns the certificate member m's metadata names, if held.
// Called with c.mu held.
func (c *Cluster) certFor(m *Member) []byte {
	if m.MetaErr != nil || !m.Meta.Proof.Present() {
		return nil
	}
	return c.certs.byFP[m.Meta.Proof.Cert]
}

// named reports whether a current member's metadata names fp. Called with
// c.mu held.
func (c *Cluster) named(fp [32]byte) bool {
	for _, m := range c.members {
		if m.MetaErr == nil && m.Meta.Proof.Cert == fp {
			return true
		}
	}
	return false
}

// admitCert keeps a certificate that arrived (push/pull state or an
// answer). It reports whether a member's certificate became known.
func (c *Cluster) admitCert(der []byte) bool {
	if len(der) == 0 {
		return false
	}
	if len(der) > MaxCertSize {
		c.refuse(RefusedCertTooBig, "certificate", "", fmt.Errorf("%d bytes", len(der)))
		return false
	}
	fp := sha256.Sum256(der)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.certs.byFP[fp]; ok {
		return false
	}
	if c.named(fp) {
		c.certs.byFP[fp] = slices.Clone(der)
		return true
	}
	if !slices.ContainsFunc(c.certs.spare, func(b []byte) bool { return sha256.Sum256(b) == fp }) {
		if len(c.certs.spare) == spareCerts {
			c.certs.spare = slices.Delete(c.certs.spare, 0, 1)
		}
		c.certs.spare = append(c.certs.spare, slices.Clone(der))
	}
	return false
}

// tidyCerts promotes a spare that a member's metadata now names and drops
// the certificates no member names any more. Called with c.mu held, after
// a member's metadata changed or members were reaped.
func (c *Cluster) tidyCerts() {
	named := make(map[[32]byte]bool, len(c.certs.byFP)+1)
	for _, m := range c.members {
		if m.MetaErr == nil && m.Meta.Proof.Present() {
			named[m.Meta.Proof.Cert] = true
		}
	}
	for fp := range c.certs.byFP {
		if !named[fp] {
			delete(c.certs.byFP, fp)
		}
	}
	c.certs.spare = slices.DeleteFunc(c.certs.spare, func(b []byte) bool {
		fp := sha256.Sum256(b)
		if named[fp] {
			c.certs.byFP[fp] = b
			return true
		}
		return false
	})
	for name := range c.certs.asked {
		if _, ok := c.members[name]; !ok {
			delete(c.certs.asked, name)
		}
	}
}

func encodeCertRequest(fp [32]byte, asker string) []byte {
	b := make([]byte, 0, 1+32+len(asker))
	b = append(b, msgCertRequest)
	b = append(b, fp[:]...)
	return append(b, asker...)
}

var errBadCertRequest = errors.New("certificate request: truncated, or the asker's name is empty or too long")

func decodeCertRequest(b []byte) (fp [32]byte, asker string, err error) {
	if len(b) < 1+32+1 || len(b) > 1+32+MaxNameLen || b[0] != msgCertRequest {
		return fp, "", errBadCertRequest
	}
	copy(fp[:], b[1:33])
	return fp, string(b[33:]), nil
}

// certJob is one reliable message for the certificate loop to send.
type certJob struct {
	to  string // member name
	msg []byte
}

// handleCertRequest queues our answer to a member that asks for a
// certificate we hold (ours, or one a member's metadata names: any host
// may relay a certificate, which proves itself through the fingerprint).
func (c *Cluster) handleCertRequest(b []byte) {
	fp, asker, err := decodeCertRequest(b)
	if err != nil {
		c.refuse(RefusedMalformed, "certificate request", "", err)
		return
	}
	c.mu.Lock()
	der := c.certs.byFP[fp]
	if fp == c.certs.ownFP && len(c.certs.own) > 0 {
		der = c.certs.own
	}
	_, member := c.members[asker]
	c.mu.Unlock()
	if der == nil || !member {
		return // not ours to answer, or not a member: say nothing
	}
	if ok, _ := c.certAnswers.allow(time.Now(), certAnswerBurst, time.Second); !ok {
		c.refuse(RefusedCertBusy, "certificate request", asker, nil)
		return
	}
	select {
	case c.certJobs <- certJob{to: asker, msg: append([]byte{msgCert}, der...)}:
	default:
		c.refuse(RefusedCertBusy, "certificate request", asker, errors.New("answer queue full"))
	}
}

// missingCerts lists the alive members whose metadata names a certificate
// we do not hold and that we have not asked for within certAskEvery, and
// marks them asked.
func (c *Cluster) missingCerts(now time.Time) []certJob {
	c.mu.Lock()
	defer c.mu.Unlock()
	var jobs []certJob
	for name, m := range c.members {
		if m.State != StateAlive || m.MetaErr != nil || !m.Meta.Proof.Present() || c.certFor(m) != nil {
			continue
		}
		if now.Sub(c.certs.asked[name]) < certAskEvery {
			continue
		}
		c.certs.asked[name] = now
		jobs = append(jobs, certJob{to: name, msg: encodeCertRequest(m.Meta.Proof.Cert, c.cfg.Name)})
	}
	return jobs
}

// certLoop sends certificate requests and answers. It owns every
// reliable send, so that neither memberlist's receive path nor the event
// delegate ever blocks on a TCP connection.
func (c *Cluster) certLoop(ctx context.Context) {
	defer c.wg.Done()
	tick := time.NewTicker(certAskEvery / 2)
	defer tick.Stop()
	send := func(j certJob) {
		node := c.memberlistNode(j.to)
		if node == nil {
			return
		}
		if err := c.ml.SendReliable(node, j.msg); err != nil {
			c.log.Debug("certificate message not sent", "to", logName(j.to), "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-c.certJobs:
			send(j)
		case <-c.certAsk:
			for _, j := range c.missingCerts(time.Now()) {
				send(j)
			}
		case now := <-tick.C:
			for _, j := range c.missingCerts(now) {
				send(j)
			}
		}
	}
}

// askCerts wakes the certificate loop (non-blocking: the event delegate
// calls it with memberlist's node lock held).
func (c *Cluster) askCerts() {
	select {
	case c.certAsk <- struct{}{}:
	default:
	}
}

func (c *Cluster) memberlistNode(name string) *memberlist.Node {
	for _, n := range c.ml.Members() {
		if n.Name == name {
			return n
		}
	}
	return nil
}
