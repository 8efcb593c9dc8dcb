package e2e

// Forged handshake messages cannot starve the real ones (issue 21): a
// stranger on the underlay floods b's data port with handshake messages
// "from" a's underlay address while a sends to b across several rekeys.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/seal"
)

// hsFloodHelperEnv runs this binary as the handshake forger below (netlab
// re-executes it in a namespace with the variable set).
const hsFloodHelperEnv = "WEFT_E2E_HSFLOOD_HELPER"

func init() { helperMain(hsFloodHelperEnv, "hs-flood", hsFlood) }

// hsFloodSpec: forge handshake messages from Src (a raw socket, IP_HDRINCL)
// to Dst, Rate per second, until Count are sent or Duration has passed.
type hsFloodSpec struct {
	Src, Dst netip.AddrPort
	Rate     int
	Count    int
	Duration time.Duration
	Seed     uint64
}

type hsFloodReport struct {
	Initiations, Responses, Failed int
	FirstErr                       string
	Seconds                        float64
}

// hsFlood sends random handshake messages: the right type byte, zero
// bytes 1-3 and the right length (initiations and responses alternately),
// random everything else, mac1 included.
func hsFlood(spec hsFloodSpec) (hsFloodReport, error) {
	var rep hsFloodReport
	switch {
	case !spec.Src.Addr().Is4() || !spec.Dst.Addr().Is4():
		return rep, errors.New("IPv4 only")
	case spec.Rate <= 0 || spec.Rate > 50_000 || spec.Count <= 0 || spec.Count > 2_000_000 || spec.Duration <= 0 || spec.Duration > time.Minute:
		return rep, fmt.Errorf("rate %d / count %d / duration %v out of bounds", spec.Rate, spec.Count, spec.Duration)
	}
	raw, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW) // IPPROTO_RAW implies IP_HDRINCL
	if err != nil {
		return rep, fmt.Errorf("raw socket: %w", err)
	}
	defer syscall.Close(raw)
	to := &syscall.SockaddrInet4{Addr: spec.Dst.Addr().As4()}
	rng := rand.New(rand.NewPCG(spec.Seed, spec.Seed^0x9e3779b97f4a7c15))
	buf := make([]byte, 2048)
	msg := make([]byte, seal.InitiationLen)
	start := time.Now()
	deadline := start.Add(spec.Duration)
	interval := time.Second / time.Duration(spec.Rate)
	for i := 0; i < spec.Count; i++ {
		if i%64 == 0 {
			now := time.Now()
			if now.After(deadline) {
				break
			}
			// Paced: message i leaves at start + i × interval.
			if ahead := start.Add(time.Duration(i) * interval).Sub(now); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		typ, n := byte(seal.TypeInitiation), seal.InitiationLen
		if i%2 == 1 {
			typ, n = seal.TypeResponse, seal.ResponseLen
		}
		m := msg[:n]
		for j := 0; j < n; j += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], rng.Uint64())
			copy(m[j:], w[:])
		}
		m[0], m[1], m[2], m[3] = typ, 0, 0, 0
		if err := syscall.Sendto(raw, outerUDP(buf, spec.Src, spec.Dst, m, uint16(i)), 0, to); err != nil {
			rep.Failed++
			if rep.FirstErr == "" {
				rep.FirstErr = err.Error()
			}
			if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN) {
				time.Sleep(50 * time.Microsecond)
			}
			continue
		}
		if typ == seal.TypeInitiation {
			rep.Initiations++
		} else {
			rep.Responses++
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

func hsFloodIn(ctx context.Context, h *netlab.Host, spec hsFloodSpec) (hsFloodReport, error) {
	var rep hsFloodReport
	arg, err := json.Marshal(spec)
	if err != nil {
		return rep, err
	}
	cmd, err := h.SelfCommand(ctx, []string{hsFloodHelperEnv + "=1"}, string(arg))
	if err != nil {
		return rep, err
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return rep, fmt.Errorf("hs-flood in %s: %v: %s", h.Name(), err, stderr.String())
	}
	err = json.Unmarshal(stdout.Bytes(), &rep)
	return rep, err
}

// TestHandshakeFloodDoesNotStarveRekeys: a and b encrypt and rekey every
// 10 s. A stranger m on their segment forges ~10,000 handshake messages a
// second (initiations and responses of the right sizes, random contents)
// with a's underlay address as the outer source, at b's data port, for
// the whole of a 30 s TCP transfer a -> b. Before mac1, they spent a's
// handshake tokens at b (10 a second) and filled b's handshake queue, so
// a's real initiations and responses were rate_limited, no rekey
// completed, and the session expired (no_session drops, the transfer
// stalled). With mac1 the worker drops them (bad_mac) before the rate
// limit: the rekeys complete, nothing is dropped for want of a session and
// the transfer sees no more retransmits than it does without the flood.
func TestHandshakeFloodDoesNotStarveRekeys(t *testing.T) {
	c := newCluster(t, "a", "b")
	a, b := c.by["a"], c.by["b"]
	key := keygen(t, a)
	for _, n := range c.nodes {
		writeKeys(t, n, key)
		n.args = append(n.args, "--gossip-key-file", keyFile(n), "--encrypt", "--encrypt-rekey-after", "10s")
	}
	m, err := c.lab.Host("m")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Attach(c.seg, netip.MustParsePrefix("192.168.50.99/24")); err != nil {
		t.Fatal(err)
	}
	c.addExtra(m)
	c.startAll()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := pingWithin(ctx, a, b.overlay, 10*time.Second); err != nil {
		t.Fatalf("a cannot reach b: %v", err)
	}
	if err := pingOK(ctx, &node{name: "m", host: m}, b.underlay, 1); err != nil {
		t.Fatalf("m cannot reach b's underlay address: %v", err)
	}
	if _, err := b.host.IPerf3Server(5201); err != nil {
		t.Fatal(err)
	}

	hs := func(n *node, result string) float64 {
		return counter(ctx, t, n, "weft_handshakes_total", "result", result)
	}
	type sample struct{ badMAC, completed, rateLimited, noSession float64 }
	read := func() sample {
		return sample{
			badMAC:      hs(b, seal.HSBadMAC.String()),
			completed:   hs(a, seal.HSCompleted.String()) + hs(b, seal.HSCompleted.String()),
			rateLimited: hs(a, seal.HSRateLimited.String()) + hs(b, seal.HSRateLimited.String()),
			noSession:   drop(ctx, t, a, "no_session") + drop(ctx, t, b, "no_session"),
		}
	}

	// The baseline: the same transfer, 10 s, without the flood, for the
	// figure the flooded transfer's retransmits are compared with.
	const transfer = 30
	base, err := a.host.IPerf3Client(ctx, b.overlay, netlab.IPerf3Options{Port: 5201, Seconds: 10})
	if err != nil || base.ReceivedBPS <= 0 {
		t.Fatalf("baseline iperf3 a -> b: %v, %v", base, err)
	}
	t.Logf("baseline without the flood (10 s): %v", base)

	// The flood, from a second before the transfer to a second after it.
	before := read()
	spec := hsFloodSpec{
		Src:      netip.AddrPortFrom(a.underlay, dataPort),
		Dst:      netip.AddrPortFrom(b.underlay, dataPort),
		Rate:     10_000,
		Count:    (transfer + 3) * 10_000,
		Duration: (transfer + 3) * time.Second,
		Seed:     uint64(time.Now().UnixNano()),
	}
	type floodOut struct {
		rep hsFloodReport
		err error
	}
	floodDone := make(chan floodOut, 1)
	floodCtx, floodCancel := context.WithTimeout(ctx, spec.Duration+20*time.Second) // hard bound on the helper
	defer floodCancel()
	go func() {
		rep, err := hsFloodIn(floodCtx, m, spec)
		floodDone <- floodOut{rep, err}
	}()
	time.Sleep(time.Second)
	res, err := a.host.IPerf3Client(ctx, b.overlay, netlab.IPerf3Options{Port: 5201, Seconds: transfer})
	if err != nil || res.ReceivedBPS <= 0 {
		t.Errorf("iperf3 a -> b during the flood: %v, %v", res, err)
	}
	after := read()
	var fl floodOut
	select {
	case fl = <-floodDone:
	case <-time.After(spec.Duration + 20*time.Second):
		t.Fatal("the forger did not end")
	}
	if fl.err != nil {
		t.Fatalf("forger: %v", fl.err)
	}
	t.Logf("m forged %d initiations and %d responses in %.1f s (%.0f/s), %d failed %s",
		fl.rep.Initiations, fl.rep.Responses, fl.rep.Seconds, float64(fl.rep.Initiations+fl.rep.Responses)/fl.rep.Seconds, fl.rep.Failed, fl.rep.FirstErr)
	t.Logf("during the %d s transfer: %v; bad_mac at b +%.0f, handshakes completed +%.0f, rate_limited +%.0f, no_session +%.0f",
		transfer, res, after.badMAC-before.badMAC, after.completed-before.completed, after.rateLimited-before.rateLimited, after.noSession-before.noSession)

	// The forgeries reached b (so that the test cannot pass because none
	// arrived) and were refused before the rate limit.
	if d := after.badMAC - before.badMAC; d < 100_000 {
		t.Errorf("b counted %.0f bad_mac during the transfer, want at least 100,000 (the forgeries did not reach it)", d)
	}
	if d := after.rateLimited - before.rateLimited; d != 0 {
		t.Errorf("rate_limited +%.0f during the flood: forged messages spent the peer's handshake tokens", d)
	}
	// 30 s with a 10 s rekey: at least two new sessions.
	if d := after.completed - before.completed; d < 2 {
		t.Errorf("%.0f handshakes completed during the %d s transfer with a 10 s rekey, want at least 2", d, transfer)
	}
	if d := after.noSession - before.noSession; d != 0 {
		t.Errorf("no_session +%.0f during the transfer: a session expired or was missing", d)
	}
	// Retransmits: a fixed generous bound, not a ratio of the baseline
	// (a ratio of 0-2 retransmits means nothing, and this shared 2-core
	// machine varies from run to run; the baseline is logged beside).
	// Measured here: 0-2 retransmits in the 10 s baseline and 2 in the
	// flooded 30 s transfer; the bound is 200. (Before mac1 the flooded
	// transfer had only 8, at 40% of the throughput: the session expiring
	// stalls TCP more than it makes it retransmit, so the counters above,
	// not this bound, are what catches the starvation.)
	if res.Retransmits > 200 {
		t.Errorf("%d retransmits in %d bytes during the flood (baseline without it: %d in %d bytes in 10 s)", res.Retransmits, res.SentBytes, base.Retransmits, base.SentBytes)
	}
}
