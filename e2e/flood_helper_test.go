package e2e

// Helpers of this test binary that run inside a namespace: the forged
// datagram flood and a small UDP sender. netlab re-executes the binary there
// (Host.SelfCommand) with trustHelperEnv set, and the init function below
// runs the helper instead of the tests. Every helper is bounded in count and
// in time.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

const trustHelperEnv = "WEFT_E2E_TRUST_HELPER"

func init() {
	mode := os.Getenv(trustHelperEnv)
	if mode == "" {
		return
	}
	os.Unsetenv(trustHelperEnv)
	os.Exit(runTrustHelper(mode, os.Args[1:]))
}

func runTrustHelper(mode string, args []string) int {
	if len(args) != 1 {
		fmt.Fprintf(os.Stderr, "trust helper %s: want one JSON argument\n", mode)
		return 2
	}
	var (
		rep any
		err error
	)
	switch mode {
	case "flood":
		var spec floodSpec
		if err := json.Unmarshal([]byte(args[0]), &spec); err != nil {
			fmt.Fprintln(os.Stderr, "flood:", err)
			return 2
		}
		rep, err = flood(spec)
	case "udp-send":
		var spec udpSendSpec
		if err := json.Unmarshal([]byte(args[0]), &spec); err != nil {
			fmt.Fprintln(os.Stderr, "udp-send:", err)
			return 2
		}
		rep, err = udpSend(spec)
	case "impostor":
		var spec impostorSpec
		if err := json.Unmarshal([]byte(args[0]), &spec); err != nil {
			fmt.Fprintln(os.Stderr, "impostor:", err)
			return 2
		}
		rep, err = impostor(spec)
	default:
		fmt.Fprintf(os.Stderr, "unknown %s mode %q\n", trustHelperEnv, mode)
		return 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", mode, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// runTrustHelperIn runs a helper in h (bounded by ctx) and decodes its JSON
// report into out.
func runTrustHelperIn(ctx context.Context, h *netlab.Host, mode string, spec, out any) error {
	arg, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	cmd, err := h.SelfCommand(ctx, []string{trustHelperEnv + "=" + mode}, string(arg))
	if err != nil {
		return err
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("[%s] helper %s: %v: %s", h.Name(), mode, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("[%s] helper %s: bad report %q: %v", h.Name(), mode, stdout.String(), err)
	}
	return nil
}

// Kinds of forged datagram the flood sends, and the drop reason each must
// get at the victim.
const (
	// From the stranger's own address (not a peer): unknown_peer.
	kindGarbage = "garbage" // random bytes of random length (1-1400)
	kindForged  = "forged"  // a well-formed packet "from" a peer's subnet to the victim
	kindEmpty   = "empty"   // a zero-length datagram
	// Outer source forged to a peer's underlay address (raw socket):
	kindSpoofedInner   = "spoofed_inner"   // inner source outside that peer's subnet: spoofed
	kindNotLocal       = "not_local"       // inner destination outside the victim's subnet: not_local
	kindSpoofedGarbage = "spoofed_garbage" // not an IP packet: malformed
	kindSpoofedEmpty   = "spoofed_empty"   // a zero-length datagram: malformed
)

// floodReasons maps each kind to the drop reason the victim must count it
// under.
var floodReasons = map[string]string{
	kindGarbage:        "unknown_peer",
	kindForged:         "unknown_peer",
	kindEmpty:          "unknown_peer",
	kindSpoofedInner:   "spoofed",
	kindNotLocal:       "not_local",
	kindSpoofedGarbage: "malformed",
	kindSpoofedEmpty:   "malformed",
}

// floodPattern interleaves the kinds: 20% garbage, 20% forged, 15% empty,
// 15% spoofed inner source, 10% foreign destination, 10% spoofed garbage,
// 10% spoofed empty.
var floodPattern = [20]string{
	kindGarbage, kindForged, kindEmpty, kindSpoofedInner, kindNotLocal,
	kindGarbage, kindForged, kindSpoofedGarbage, kindEmpty, kindSpoofedEmpty,
	kindGarbage, kindForged, kindSpoofedInner, kindEmpty, kindNotLocal,
	kindGarbage, kindForged, kindSpoofedInner, kindSpoofedGarbage, kindSpoofedEmpty,
}

// Every inner packet the flood forges is UDP from floodSrcPort to
// floodDstPort carrying floodTag, so that a capture on the victim's TUN
// can tell whether any got through.
const (
	floodSrcPort   = 4242
	floodDstPort   = 9
	floodTag       = "WEFT-E2E-FLOOD"
	controlSrcPort = 4343
	controlTag     = "WEFT-E2E-CONTROL"
)

type floodSpec struct {
	Target      netip.AddrPort `json:"target"`      // the victim's data socket
	Spoof       netip.Addr     `json:"spoof"`       // outer source of the spoofed kinds: a peer's underlay address
	PeerNet     netip.Prefix   `json:"peerNet"`     // that peer's subnet
	Dst         netip.Addr     `json:"dst"`         // the victim's overlay address
	SpoofSrcs   []netip.Addr   `json:"spoofSrcs"`   // inner sources outside PeerNet
	ForeignDsts []netip.Addr   `json:"foreignDsts"` // inner destinations outside the victim's subnet
	Count       int            `json:"count"`       // attempts, at most
	Duration    time.Duration  `json:"duration"`    // and no longer than this
	Seed        uint64         `json:"seed"`
}

// sendTally is what a flooding helper sent and failed to send, by kind,
// with the first error of each kind.
type sendTally struct {
	Sent     map[string]int    `json:"sent"`
	Failed   map[string]int    `json:"failed"`
	FirstErr map[string]string `json:"firstErr,omitempty"`
}

func newSendTally() sendTally {
	return sendTally{Sent: map[string]int{}, Failed: map[string]int{}, FirstErr: map[string]string{}}
}

func (r sendTally) total() int {
	n := 0
	for _, v := range r.Sent {
		n += v
	}
	return n
}

type floodReport struct {
	sendTally
	Attempts int     `json:"attempts"`
	Seconds  float64 `json:"seconds"`
	Stop     string  `json:"stop"` // "count" or "deadline"
}

// flood sends up to spec.Count datagrams to spec.Target for at most
// spec.Duration: the non-spoofed kinds from an ordinary UDP socket, the
// spoofed ones from a raw socket (IPPROTO_RAW implies IP_HDRINCL) with the
// outer source set to spec.Spoof.
func flood(spec floodSpec) (floodReport, error) {
	rep := floodReport{sendTally: newSendTally()}
	switch {
	case !spec.Target.Addr().Is4() || !spec.Spoof.Is4() || !spec.Dst.Is4() || !spec.PeerNet.Addr().Is4():
		return rep, errors.New("IPv4 only")
	case spec.Count <= 0 || spec.Count > 2_000_000 || spec.Duration <= 0 || spec.Duration > 30*time.Second:
		return rep, fmt.Errorf("count %d / duration %v out of bounds", spec.Count, spec.Duration)
	case len(spec.SpoofSrcs) == 0 || len(spec.ForeignDsts) == 0:
		return rep, errors.New("no spoofed sources or foreign destinations")
	}
	uc, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(spec.Target))
	if err != nil {
		return rep, err
	}
	defer uc.Close()
	raw, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return rep, fmt.Errorf("raw socket: %w", err)
	}
	defer syscall.Close(raw)
	to := &syscall.SockaddrInet4{Addr: spec.Target.Addr().As4()}
	outerSrc := netip.AddrPortFrom(spec.Spoof, spec.Target.Port())

	rng := rand.New(rand.NewPCG(spec.Seed, spec.Seed^0x9e3779b97f4a7c15))
	buf := make([]byte, 2048)
	inner := make([]byte, 1500)
	peerBase := spec.PeerNet.Masked().Addr().As4()
	hostBits := 32 - spec.PeerNet.Bits()
	peerHost := func() netip.Addr {
		a := peerBase
		h := uint32(1)
		if hostBits > 1 {
			h = 1 + rng.Uint32N(uint32(1)<<hostBits-2)
		}
		binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])|h)
		return netip.AddrFrom4(a)
	}

	start := time.Now()
	deadline := start.Add(spec.Duration)
	rep.Stop = "count"
	for i := 0; i < spec.Count; i++ {
		if i%128 == 0 && time.Now().After(deadline) {
			rep.Stop = "deadline"
			break
		}
		rep.Attempts++
		kind := floodPattern[i%len(floodPattern)]
		var err error
		switch kind {
		case kindGarbage:
			n := 1 + rng.IntN(1400)
			fillRandom(rng, buf[:n])
			_, err = uc.Write(buf[:n])
		case kindForged:
			p := innerUDP(inner, peerHost(), spec.Dst, uint32(i))
			_, err = uc.Write(p)
		case kindEmpty:
			_, err = uc.Write(nil)
		case kindSpoofedInner:
			src := spec.SpoofSrcs[rng.IntN(len(spec.SpoofSrcs))]
			p := innerUDP(inner, src, spec.Dst, uint32(i))
			err = syscall.Sendto(raw, outerUDP(buf, outerSrc, spec.Target, p, uint16(i)), 0, to)
		case kindNotLocal:
			dst := spec.ForeignDsts[rng.IntN(len(spec.ForeignDsts))]
			p := innerUDP(inner, peerHost(), dst, uint32(i))
			err = syscall.Sendto(raw, outerUDP(buf, outerSrc, spec.Target, p, uint16(i)), 0, to)
		case kindSpoofedGarbage:
			p := notIP(rng, inner)
			err = syscall.Sendto(raw, outerUDP(buf, outerSrc, spec.Target, p, uint16(i)), 0, to)
		case kindSpoofedEmpty:
			err = syscall.Sendto(raw, outerUDP(buf, outerSrc, spec.Target, nil, uint16(i)), 0, to)
		}
		if err != nil {
			rep.Failed[kind]++
			if _, ok := rep.FirstErr[kind]; !ok {
				rep.FirstErr[kind] = err.Error()
			}
			if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN) {
				time.Sleep(50 * time.Microsecond)
			}
			continue
		}
		rep.Sent[kind]++
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(b[i:], w[:])
	}
}

// notIP returns random bytes that encap.IPAddrs must refuse: a version
// nibble other than 4 or 6, or an IPv4 header that is truncated or whose
// total length exceeds the datagram.
func notIP(rng *rand.Rand, b []byte) []byte {
	switch rng.IntN(3) {
	case 0: // IPv4, shorter than a header
		n := 1 + rng.IntN(19)
		fillRandom(rng, b[:n])
		b[0] = 0x45
		return b[:n]
	case 1: // IPv4 header claiming more bytes than there are
		n := 20 + rng.IntN(200)
		fillRandom(rng, b[:n])
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:4], uint16(n+1+rng.IntN(1000)))
		return b[:n]
	default: // no IP version at all
		n := 1 + rng.IntN(1400)
		fillRandom(rng, b[:n])
		v := byte(rng.IntN(14))
		if v >= 4 {
			v++ // skip 4
		}
		if v >= 6 {
			v++ // skip 6
		}
		b[0] = v<<4 | b[0]&0x0f
		return b[:n]
	}
}

// innerUDP writes into b a valid IPv4/UDP packet from src:floodSrcPort to
// dst:floodDstPort whose payload is floodTag and seq.
func innerUDP(b []byte, src, dst netip.Addr, seq uint32) []byte {
	payload := binary.BigEndian.AppendUint32([]byte(floodTag), seq)
	udpLen := 8 + len(payload)
	p := b[:20+udpLen]
	putIPv4Header(p, src, dst, uint16(seq), len(p))
	u := p[20:]
	binary.BigEndian.PutUint16(u[0:2], floodSrcPort)
	binary.BigEndian.PutUint16(u[2:4], floodDstPort)
	binary.BigEndian.PutUint16(u[4:6], uint16(udpLen))
	binary.BigEndian.PutUint16(u[6:8], 0)
	copy(u[8:], payload)
	// UDP checksum over the pseudo-header, so that the packet would be
	// accepted by the victim's kernel if it ever got through.
	s, d := src.As4(), dst.As4()
	pseudo := make([]byte, 0, 12+udpLen)
	pseudo = append(pseudo, s[:]...)
	pseudo = append(pseudo, d[:]...)
	pseudo = append(pseudo, 0, 17, byte(udpLen>>8), byte(udpLen))
	pseudo = append(pseudo, u...)
	cs := checksum(pseudo)
	if cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:8], cs)
	return p
}

// outerUDP writes into b an IPv4/UDP datagram from src to dst carrying
// payload (UDP checksum 0: none, as IPv4 allows).
func outerUDP(b []byte, src, dst netip.AddrPort, payload []byte, id uint16) []byte {
	n := 28 + len(payload)
	p := b[:n]
	putIPv4Header(p, src.Addr(), dst.Addr(), id, n)
	u := p[20:]
	binary.BigEndian.PutUint16(u[0:2], src.Port())
	binary.BigEndian.PutUint16(u[2:4], dst.Port())
	binary.BigEndian.PutUint16(u[4:6], uint16(8+len(payload)))
	binary.BigEndian.PutUint16(u[6:8], 0)
	copy(u[8:], payload)
	return p
}

func putIPv4Header(p []byte, src, dst netip.Addr, id uint16, total int) {
	p[0] = 0x45
	p[1] = 0
	binary.BigEndian.PutUint16(p[2:4], uint16(total))
	binary.BigEndian.PutUint16(p[4:6], id)
	binary.BigEndian.PutUint16(p[6:8], 0x4000) // DF
	p[8] = 64
	p[9] = 17 // UDP
	p[10], p[11] = 0, 0
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[10:12], checksum(p[:20]))
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

type udpSendSpec struct {
	LocalPort int            `json:"localPort"`
	To        netip.AddrPort `json:"to"`
	Count     int            `json:"count"`
	Payload   string         `json:"payload"`
	Raw       []byte         `json:"raw,omitempty"` // binary payload (instead of Payload)
}

// udpSend sends spec.Count (at most 100) datagrams, 50 ms apart.
func udpSend(spec udpSendSpec) (map[string]int, error) {
	if spec.Count <= 0 || spec.Count > 100 {
		return nil, fmt.Errorf("count %d out of bounds", spec.Count)
	}
	network := "udp4"
	if spec.To.Addr().Is6() {
		network = "udp6"
	}
	payload := []byte(spec.Payload)
	if spec.Raw != nil {
		payload = spec.Raw
	}
	c, err := net.ListenUDP(network, &net.UDPAddr{Port: spec.LocalPort})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	sent := 0
	for i := range spec.Count {
		if i > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := c.WriteToUDPAddrPort(payload, spec.To); err != nil {
			return map[string]int{"sent": sent}, err
		}
		sent++
	}
	return map[string]int{"sent": sent}, nil
}

// helperMain runs this test binary as one of its in-namespace helpers when
// env is set (netlab re-executes the binary there, Host.SelfCommand): its
// one argument is the helper's JSON spec, its report goes to standard
// output as JSON, and the process exits: 2 for a bad spec, 1 if the helper
// failed. Called from an init function, before the tests could start.
func helperMain[S, R any](env, name string, run func(S) (R, error)) {
	if os.Getenv(env) == "" {
		return
	}
	os.Unsetenv(env)
	var spec S
	if len(os.Args) != 2 {
		fmt.Fprintf(os.Stderr, "%s: want one JSON argument\n", name)
		os.Exit(2)
	}
	if err := json.Unmarshal([]byte(os.Args[1]), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	rep, err := run(spec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}
