package membership

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func withProof(m Meta, der []byte) Meta {
	m.Proof = Proof{Cert: sha256.Sum256(der), Signed: time.Now().UnixMilli()}
	m.Proof.Sig[0], m.Proof.Sig[63] = 1, 2
	return m
}

func TestMetaProofSection(t *testing.T) {
	tested := 0
	for name, m := range validMetas() {
		m.Networks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
		if m.Subnets[0].Addr().Is6() {
			m.Networks = []netip.Prefix{netip.MustParsePrefix("fd00::/8")}
		}
		m.Encryption = Encryption{Cipher: 1, Key: [32]byte{1}}
		if m.Validate() != nil {
			continue // networks that do not hold this case's subnets
		}
		plain := mustMarshal(t, m)
		m = withProof(m, []byte(name))
		b := mustMarshal(t, m)
		if len(b) != len(plain)+2+sectionProofLen || !bytes.Equal(b[:len(plain)], plain) {
			t.Fatalf("%s: the proof is not a trailer of the record: %x", name, b)
		}
		if len(b) > 512 {
			t.Fatalf("%s: %d bytes, over memberlist's limit", name, len(b))
		}
		var got Meta
		if err := got.UnmarshalBinary(b); err != nil || !got.Equal(m) {
			t.Fatalf("%s: round trip: %+v, %v", name, got, err)
		}
		tested++
	}
	if tested < len(validMetas())/2 {
		t.Fatalf("only %d of %d metadata cases tested", tested, len(validMetas()))
	}
	m := validMetas()["v4 udp"]
	base := mustMarshal(t, m)
	body := bytes.Repeat([]byte{5}, sectionProofLen)
	for _, tt := range []struct {
		name string
		sec  []byte
		want string
	}{
		{"short", append([]byte{3, sectionProofLen}, body[:50]...), "truncated"},
		{"wrong length", append([]byte{3, sectionProofLen - 1}, body[1:]...), "wrong length"},
		{"no fingerprint", append(append([]byte{3, sectionProofLen}, make([]byte, 40)...), body[40:]...), "without a certificate fingerprint"},
		{"no signature", append(append([]byte{3, sectionProofLen}, body[:40]...), make([]byte, 64)...), "without a signature"},
	} {
		var got Meta
		err := got.UnmarshalBinary(append(bytes.Clone(base), tt.sec...))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !got.Equal(Meta{}) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestProofMessage(t *testing.T) {
	m := withProof(validMetas()["v4 udp"], []byte("cert"))
	msg, err := ProofMessage("a", m)
	if err != nil {
		t.Fatal(err)
	}
	// The signature itself is not signed; everything else is.
	other := m
	other.Proof.Sig[5] ^= 1
	if b, _ := ProofMessage("a", other); !bytes.Equal(b, msg) {
		t.Error("the message depends on the signature")
	}
	var decoded Meta
	if err := decoded.UnmarshalBinary(mustMarshal(t, m)); err != nil {
		t.Fatal(err)
	}
	if b, _ := ProofMessage("a", decoded); !bytes.Equal(b, msg) {
		t.Error("the receiver rebuilds another message from the decoded metadata")
	}
	for what, change := range map[string]func(*Meta, *string){
		"name":        func(_ *Meta, n *string) { *n = "b" },
		"name suffix": func(_ *Meta, n *string) { *n = "aa" },
		"subnet":      func(m *Meta, _ *string) { m.Subnets = []netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")} },
		"underlay":    func(m *Meta, _ *string) { m.Underlay = netip.MustParseAddr("192.0.2.9") },
		"claimed":     func(m *Meta, _ *string) { m.Claimed++ },
		"key":         func(m *Meta, _ *string) { m.Encryption = Encryption{Cipher: 1, Key: [32]byte{9}} },
		"fingerprint": func(m *Meta, _ *string) { m.Proof.Cert[0] ^= 1 },
		"time":        func(m *Meta, _ *string) { m.Proof.Signed++ },
	} {
		mm, name := m, "a"
		change(&mm, &name)
		b, err := ProofMessage(name, mm)
		if err != nil || bytes.Equal(b, msg) {
			t.Errorf("%s: the message does not change (%v)", what, err)
		}
	}
	if _, err := ProofMessage("", m); err == nil {
		t.Error("an empty name was accepted")
	}
	if _, err := ProofMessage(strings.Repeat("n", MaxNameLen+1), m); err == nil {
		t.Error("a name over MaxNameLen was accepted")
	}
}

// TestCertExchange: certificates reach every member, through push/pull and
// on demand, follow a renewal, and the store keeps only what metadata
// names.
func TestCertExchange(t *testing.T) {
	certA, certB, certA2 := []byte("certificate of a"), []byte("certificate of b"), []byte("renewed certificate of a")
	cfgA := testConfig(t, "a", 1)
	cfgA.Meta, cfgA.Cert = withProof(cfgA.Meta, certA), certA
	a := start(t, cfgA)
	cfgB := testConfig(t, "b", 2, seedOf(a))
	cfgB.Meta, cfgB.Cert = withProof(cfgB.Meta, certB), certB
	b := start(t, cfgB)
	c := start(t, testConfig(t, "c", 3, seedOf(b))) // no certificate of its own

	certOf := func(on *Cluster, name string, want []byte) func() error {
		return func() error {
			m, ok := member(on, name)
			if !ok || !bytes.Equal(m.Cert, want) {
				return fmt.Errorf("%s sees %s's certificate %q (member %v)", on.LocalName(), name, m.Cert, ok)
			}
			return nil
		}
	}
	for _, w := range []struct {
		on   *Cluster
		name string
		want []byte
	}{{a, "b", certB}, {b, "a", certA}, {c, "a", certA}, {c, "b", certB}, {a, "c", nil}} {
		waitFor(t, 10*time.Second, "certificate exchange", certOf(w.on, w.name, w.want))
	}

	if err := a.SetCert(certA2); err != nil {
		t.Fatal(err)
	}
	if err := a.UpdateMeta(withProof(cfgA.Meta, certA2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "renewal reaches b", certOf(b, "a", certA2))
	waitFor(t, 10*time.Second, "renewal reaches c", certOf(c, "a", certA2))
	for _, cl := range []*Cluster{b, c} {
		cl.mu.Lock()
		_, stale := cl.certs.byFP[sha256.Sum256(certA)]
		n := len(cl.certs.byFP)
		cl.mu.Unlock()
		if stale || n > 2 {
			t.Errorf("%s keeps %d certificates (the old one of a: %v)", cl.LocalName(), n, stale)
		}
	}
}

func TestCertStoreBounds(t *testing.T) {
	metrics := NewMetrics(prometheus.NewRegistry())
	cfg := testConfig(t, "a", 1)
	cfg.Metrics = metrics
	a := start(t, cfg)
	for i := range 3 * spareCerts {
		if a.admitCert(fmt.Appendf(nil, "unnamed %d", i)) {
			t.Fatal("an unnamed certificate was taken as a member's")
		}
	}
	a.mu.Lock()
	spares, held := len(a.certs.spare), len(a.certs.byFP)
	last := slices.Clone(a.certs.spare[len(a.certs.spare)-1])
	a.mu.Unlock()
	if spares != spareCerts || held != 0 || string(last) != fmt.Sprintf("unnamed %d", 3*spareCerts-1) {
		t.Errorf("spares %d (want %d, the newest kept), named %d", spares, spareCerts, held)
	}
	if a.admitCert(make([]byte, MaxCertSize+1)) {
		t.Error("an oversized certificate was admitted")
	}
	if got := refusedCount(t, metrics, RefusedCertTooBig); got != 1 {
		t.Errorf("cert_too_big refusals %v, want 1", got)
	}
	a.handleMsg([]byte{msgCertRequest, 1, 2})
	if got := refusedCount(t, metrics, RefusedMalformed); got != 1 {
		t.Errorf("malformed refusals %v, want 1", got)
	}
	// A request from a name that is not a member is not answered.
	a.handleMsg(encodeCertRequest(sha256.Sum256(last), "stranger"))
	if len(a.certJobs) != 0 {
		t.Error("answered a stranger")
	}
}

// Equal compares every field: a field added to Meta and forgotten there
// fails this test.
func TestMetaEqualCoversEveryField(t *testing.T) {
	base := withProof(validMetas()["v4 udp"], []byte("c"))
	base.Networks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	base.Encryption = Encryption{Cipher: 1, Key: [32]byte{1}}
	if !base.Equal(base) {
		t.Fatal("a Meta is not Equal to itself")
	}
	v := reflect.ValueOf(&base).Elem()
	for i := range v.NumField() {
		other := base
		other.Subnets, other.Networks = slices.Clone(base.Subnets), slices.Clone(base.Networks)
		f := reflect.ValueOf(&other).Elem().Field(i)
		switch f.Kind() {
		case reflect.Slice:
			f.Set(reflect.Append(f, reflect.ValueOf(netip.MustParsePrefix("fd00::/64"))))
		case reflect.Bool:
			f.SetBool(!f.Bool())
		case reflect.Uint8, reflect.Uint16, reflect.Uint32:
			f.SetUint(f.Uint() + 1)
		case reflect.Int64:
			f.SetInt(f.Int() + 1)
		case reflect.Array:
			f.Index(0).Set(reflect.ValueOf(byte(f.Index(0).Uint() + 1)).Convert(f.Index(0).Type()))
		case reflect.Struct:
			// netip.Addr and the sections: a zero value differs from base's.
			f.Set(reflect.Zero(f.Type()))
		default:
			t.Fatalf("field %s: kind %v not covered by this test", v.Type().Field(i).Name, f.Kind())
		}
		if base.Equal(other) {
			t.Errorf("Equal ignores field %s", v.Type().Field(i).Name)
		}
	}
}

// Push/pull state carries a certificate and nothing else.
func TestMergeRemoteStateTakesOnlyCertificates(t *testing.T) {
	metrics := NewMetrics(prometheus.NewRegistry())
	cfg := testConfig(t, "a", 1)
	cfg.Metrics = metrics
	a := start(t, cfg)
	d := (*delegate)(a)
	d.MergeRemoteState(nil, false)
	d.MergeRemoteState(encodeLeaveIntent(7, "b"), false)
	if got := refusedCount(t, metrics, RefusedMalformed); got != 1 {
		t.Errorf("a leave intent in push/pull state: malformed refusals %v, want 1", got)
	}
	d.MergeRemoteState(append([]byte{msgCert}, "a certificate"...), false)
	a.mu.Lock()
	spares := len(a.certs.spare)
	a.mu.Unlock()
	if spares != 1 {
		t.Errorf("the certificate was not kept (spares %d)", spares)
	}
}
