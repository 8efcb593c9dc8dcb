package e2e

// Trust and failure: automatic subnets and their conflicts, a host that
// comes back with a new underlay address, a partition that heals, a flood of
// forged datagrams while real traffic flows, and gossip encryption keys.
//
// The flood generator and a small UDP sender are helpers of this test
// binary: netlab re-executes it inside a namespace (Host.SelfCommand) with
// trustHelperEnv set, and the init function below runs the helper instead of
// the tests. Every helper is bounded in count and in time.

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
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// ---------------------------------------------------------------------------
// Helpers run inside a namespace by re-executing the test binary.

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
	kindGarbage = "garbage" // random bytes of random length
	kindForged  = "forged"  // a well-formed packet "from" a peer's subnet to the victim
	// Outer source forged to a peer's underlay address (raw socket):
	kindSpoofedInner   = "spoofed_inner"   // inner source outside that peer's subnet: spoofed
	kindNotLocal       = "not_local"       // inner destination outside the victim's subnet: not_local
	kindSpoofedGarbage = "spoofed_garbage" // not an IP packet: malformed
)

// floodPattern interleaves the kinds: 30% garbage, 30% forged, 15%
// spoofed inner source, 15% foreign destination, 10% spoofed garbage.
var floodPattern = [20]string{
	kindGarbage, kindForged, kindGarbage, kindForged, kindSpoofedInner,
	kindGarbage, kindForged, kindNotLocal, kindGarbage, kindForged,
	kindSpoofedGarbage, kindGarbage, kindForged, kindSpoofedInner, kindNotLocal,
	kindGarbage, kindForged, kindSpoofedInner, kindNotLocal, kindSpoofedGarbage,
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

type floodReport struct {
	Sent     map[string]int    `json:"sent"`
	Failed   map[string]int    `json:"failed"`
	FirstErr map[string]string `json:"firstErr,omitempty"`
	Attempts int               `json:"attempts"`
	Seconds  float64           `json:"seconds"`
	Stop     string            `json:"stop"` // "count" or "deadline"
}

func (r floodReport) total() int {
	n := 0
	for _, v := range r.Sent {
		n += v
	}
	return n
}

// flood sends up to spec.Count datagrams to spec.Target for at most
// spec.Duration: the non-spoofed kinds from an ordinary UDP socket, the
// spoofed ones from a raw socket (IPPROTO_RAW implies IP_HDRINCL) with the
// outer source set to spec.Spoof.
func flood(spec floodSpec) (floodReport, error) {
	rep := floodReport{Sent: map[string]int{}, Failed: map[string]int{}, FirstErr: map[string]string{}}
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
}

// udpSend sends spec.Count (at most 100) datagrams, 50 ms apart.
func udpSend(spec udpSendSpec) (map[string]int, error) {
	if spec.Count <= 0 || spec.Count > 100 {
		return nil, fmt.Errorf("count %d out of bounds", spec.Count)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: spec.LocalPort})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	sent := 0
	for i := range spec.Count {
		if i > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := c.WriteToUDPAddrPort([]byte(spec.Payload), spec.To); err != nil {
			return map[string]int{"sent": sent}, err
		}
		sent++
	}
	return map[string]int{"sent": sent}, nil
}

// ---------------------------------------------------------------------------
// Test helpers.

// nodeView is "weft status --json" with the fields these tests need.
type nodeView struct {
	Node struct {
		Name       string `json:"name"`
		Network    string `json:"network"`
		Subnet     string `json:"subnet"`
		AutoSubnet bool   `json:"autoSubnet"`
		Address    string `json:"address"`
		Underlay   string `json:"underlay"`
	} `json:"node"`
	Peers []peerRoute       `json:"peers"`
	Drops map[string]uint64 `json:"drops"`
}

func (v *nodeView) peer(name string) *peerRoute {
	for i := range v.Peers {
		if v.Peers[i].Name == name {
			return &v.Peers[i]
		}
	}
	return nil
}

func (v *nodeView) summary() string {
	var parts []string
	for _, p := range v.Peers {
		s := fmt.Sprintf("%s(%s %s %s via=%s", p.Name, p.State, p.Subnet, p.Underlay, p.Via)
		if p.Reason != "" {
			s += " reason=" + p.Reason
		}
		parts = append(parts, s+")")
	}
	return fmt.Sprintf("node %s subnet %s: peers [%s]", v.Node.Name, v.Node.Subnet, strings.Join(parts, " "))
}

func view(n *node) (*nodeView, error) {
	st, err := status(n)
	if err != nil {
		return nil, err
	}
	var v nodeView
	if err := json.Unmarshal(st.raw, &v); err != nil {
		return nil, fmt.Errorf("weft status --json on %s: %v", n.name, err)
	}
	return &v, nil
}

// seesAlive requires v to list every name as an alive peer reached through
// the tunnel.
func seesAlive(v *nodeView, names ...string) error {
	for _, name := range names {
		p := v.peer(name)
		switch {
		case p == nil:
			return fmt.Errorf("%s does not list %s: %s", v.Node.Name, name, v.summary())
		case !strings.EqualFold(p.State, "alive"):
			return fmt.Errorf("%s lists %s as %q: %s", v.Node.Name, name, p.State, v.summary())
		case p.Via != "tunnel":
			return fmt.Errorf("%s does not route %s (via %q, reason %q): %s", v.Node.Name, name, p.Via, p.Reason, v.summary())
		}
	}
	return nil
}

func otherNames(nodes []*node, n *node) []string {
	var out []string
	for _, o := range nodes {
		if o != n {
			out = append(out, o.name)
		}
	}
	return out
}

func otherUnderlays(nodes []*node, n *node) []string {
	var out []string
	for _, o := range nodes {
		if o != n {
			out = append(out, o.underlay.String())
		}
	}
	return out
}

// withoutSubnet returns args without the --subnet flag and its value.
func withoutSubnet(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		if args[i] == "--subnet" {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// autoCluster is newCluster whose daemons choose their own subnets: no
// --subnet flag, and n.subnet / n.overlay unknown until learnSubnet.
func autoCluster(t *testing.T, names ...string) *cluster {
	t.Helper()
	c := newCluster(t, names...)
	for _, n := range c.nodes {
		n.args = withoutSubnet(n.args)
		n.subnet, n.overlay = netip.Prefix{}, netip.Addr{}
	}
	return c
}

func stateDir(n *node) string { return filepath.Join(filepath.Dir(n.sock), n.name+"-state") }

func subnetFile(n *node) string { return filepath.Join(filepath.Dir(n.sock), n.name+"-subnet.env") }

// leaseFile is the JSON weft keeps in --state-dir.
type leaseFile struct {
	Network string `json:"network"`
	Subnet  string `json:"subnet"`
	Claimed int64  `json:"claimed"`
}

func readLease(n *node) (leaseFile, error) {
	var l leaseFile
	b, err := os.ReadFile(filepath.Join(stateDir(n), "subnet.json"))
	if err != nil {
		return l, err
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return l, fmt.Errorf("%s: %v: %q", n.name, err, b)
	}
	return l, nil
}

func writeLease(n *node, l leaseFile) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir(n), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(stateDir(n), "subnet.json"), b, 0o644)
}

// subnetFileValue returns KEY's value in n's subnet file.
func subnetFileValue(n *node, key string) (string, error) {
	b, err := os.ReadFile(subnetFile(n))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s has no %s: %q", subnetFile(n), key, b)
}

// tunAddrs returns the IPv4 addresses (CIDR) of weft0 in n.
func tunAddrs(ctx context.Context, n *node) ([]string, error) {
	out, err := n.host.IP(ctx, "-o", "-4", "addr", "show", "dev", "weft0")
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" {
				addrs = append(addrs, f[i+1])
			}
		}
	}
	return addrs, nil
}

// pingWithin pings dst from src once per try until a reply comes or
// within passes.
func pingWithin(ctx context.Context, src *node, dst netip.Addr, within time.Duration) error {
	return pollUntil(time.Now().Add(within), func() error {
		if src.proc.Exited() {
			return errExited(src)
		}
		return pingOK(ctx, src, dst, 1)
	})
}

// pingAll pings every ordered pair of nodes concurrently (one goroutine per
// source): each pair must answer within the given time, then 2 of 2.
func pingAll(ctx context.Context, nodes []*node, within time.Duration) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, src := range nodes {
		wg.Go(func() {
			for _, dst := range nodes {
				if dst == src {
					continue
				}
				err := pingWithin(ctx, src, dst.overlay, within)
				if err == nil {
					err = pingOK(ctx, src, dst.overlay, 2)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("overlay %s -> %s (%s): %v", src.name, dst.name, dst.overlay, err))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errs
}

// waitReady waits until n's /readyz answers 200.
func waitReady(n *node, timeout time.Duration) error {
	return pollUntil(time.Now().Add(timeout), func() error {
		if n.proc.Exited() {
			return errExited(n)
		}
		return readyz(n)
	})
}

func countLines(s, substr string) int {
	n := 0
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

func grepLines(s string, re *regexp.Regexp, max int) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if re.MatchString(line) {
			out = append(out, line)
			if len(out) == max {
				break
			}
		}
	}
	return out
}

// procStatusKB returns a "kB" field (VmHWM, VmRSS) of /proc/<pid>/status.
func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// udpSocketDrops returns the kernel's drop counter of the UDP socket(s)
// bound to port in h (the last column of /proc/net/udp{,6}).
func udpSocketDrops(ctx context.Context, h *netlab.Host, port int) (uint64, error) {
	var total uint64
	found := false
	hexPort := fmt.Sprintf(":%04X", port)
	for _, file := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		out, err := h.Run(ctx, "cat", file)
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(out), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 13 || !strings.HasSuffix(f[1], hexPort) {
				continue
			}
			d, err := strconv.ParseUint(f[len(f)-1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %q: %v", file, line, err)
			}
			total += d
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("no UDP socket on port %d in %s", port, h.Name())
	}
	return total, nil
}

// linkDrops returns the rx and tx drop counters of ifname in namespace ns.
func linkDrops(ctx context.Context, ns, ifname string) (rx, tx uint64, err error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-s", "-j", "link", "show", "dev", ifname).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("ip -n %s -s link show %s: %v", ns, ifname, err)
	}
	var links []struct {
		Stats struct {
			RX struct {
				Dropped uint64 `json:"dropped"`
			} `json:"rx"`
			TX struct {
				Dropped uint64 `json:"dropped"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return 0, 0, fmt.Errorf("ip -s -j link show %s: %v: %s", ifname, err, out)
	}
	return links[0].Stats.RX.Dropped, links[0].Stats.TX.Dropped, nil
}

// ---------------------------------------------------------------------------
// Automatic subnets.

// settledSubnets polls until every node of c runs on an automatic /24 of
// the overlay network, all distinct and non-overlapping, and every node
// routes every other one through the tunnel with the subnet that node
// reports for itself. It sets each node's subnet and overlay address.
func settledSubnets(t *testing.T, c *cluster, timeout time.Duration) map[string]*nodeView {
	t.Helper()
	network := netip.MustParsePrefix(overlayNetwork)
	var views map[string]*nodeView
	err := pollUntil(time.Now().Add(timeout), func() error {
		views = map[string]*nodeView{}
		own := map[string]netip.Prefix{}
		for _, n := range c.nodes {
			if n.proc.Exited() {
				return errExited(n)
			}
			v, err := view(n)
			if err != nil {
				return err
			}
			views[n.name] = v
			sub, err := netip.ParsePrefix(v.Node.Subnet)
			switch {
			case err != nil:
				return fmt.Errorf("%s: node.subnet %q: %v", n.name, v.Node.Subnet, err)
			case !v.Node.AutoSubnet:
				return permanent{fmt.Errorf("%s: node.autoSubnet is false without --subnet", n.name)}
			case sub.Bits() != 24 || sub.Masked() != sub || !network.Contains(sub.Addr()):
				return permanent{fmt.Errorf("%s: automatic subnet %s is not a /24 of %s", n.name, sub, network)}
			case v.Node.Address != sub.Addr().String():
				return permanent{fmt.Errorf("%s: node.address %q, want the subnet's first address %s", n.name, v.Node.Address, sub.Addr())}
			}
			for name, o := range own {
				if o.Overlaps(sub) {
					return fmt.Errorf("%s and %s both hold %s / %s (conflict not resolved yet)", name, n.name, o, sub)
				}
			}
			own[n.name] = sub
		}
		for _, n := range c.nodes {
			v := views[n.name]
			if err := seesAlive(v, otherNames(c.nodes, n)...); err != nil {
				return err
			}
			for _, p := range v.Peers {
				if want, ok := own[p.Name]; ok && p.Subnet != want.String() {
					return fmt.Errorf("%s sees %s with subnet %s, but %s reports %s", n.name, p.Name, p.Subnet, p.Name, want)
				}
			}
		}
		for _, n := range c.nodes {
			n.subnet = own[n.name]
			n.overlay = n.subnet.Addr()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("automatic subnets did not settle within %v: %v", timeout, err)
	}
	return views
}

// TestAutomaticSubnets: six hosts started at once without --subnet end on
// six distinct /24s of the network, every one routes the other five, the
// overlay works between them, and a restarted host keeps its subnet.
func TestAutomaticSubnets(t *testing.T) {
	c := autoCluster(t, "a", "b", "c", "d", "e", "f")
	start := time.Now()
	c.startAll()
	c.waitFormed(60 * time.Second)
	settledSubnets(t, c, 60*time.Second)
	var subnets []string
	for _, n := range c.nodes {
		subnets = append(subnets, n.name+"="+n.subnet.String())
	}
	t.Logf("six hosts settled on distinct subnets %v after %v", subnets, time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// What each host keeps and publishes: the lease in its state directory,
	// the subnet file, and weft0's address (the network's prefix length).
	for _, n := range c.nodes {
		l, err := readLease(n)
		if err != nil {
			t.Errorf("%s: lease: %v", n.name, err)
		} else if l.Subnet != n.subnet.String() || l.Network != overlayNetwork || l.Claimed <= 0 {
			t.Errorf("%s: lease %+v, want subnet %s in %s with a claim time", n.name, l, n.subnet, overlayNetwork)
		}
		if v, err := subnetFileValue(n, "WEFT_SUBNET"); err != nil || v != n.subnet.String() {
			t.Errorf("%s: subnet file WEFT_SUBNET=%q (%v), want %s", n.name, v, err, n.subnet)
		}
		addrs, err := tunAddrs(ctx, n)
		if want := n.overlay.String() + "/16"; err != nil || !slices.Equal(addrs, []string{want}) {
			t.Errorf("%s: weft0 addresses %v (%v), want [%s]", n.name, addrs, err, want)
		}
		if got := countLines(n.proc.Logs(), "took a free subnet"); got < 1 {
			t.Errorf("%s: log does not say it took a free subnet", n.name)
		}
	}

	// Every ordered pair (30), concurrently per source.
	pingStart := time.Now()
	if errs := pingAll(ctx, c.nodes, 10*time.Second); len(errs) > 0 {
		t.Fatalf("overlay pings failed:\n%v", errors.Join(errs...))
	}
	t.Logf("all 30 ordered pairs ping over the overlay (%v)", time.Since(pingStart).Round(time.Millisecond))

	// Restart c with the same flags: it keeps its subnet.
	cc := c.by["c"]
	before := cc.subnet
	stopNode(t, cc)
	c.start(cc)
	restartedAt := time.Now()
	if err := waitReady(cc, 30*time.Second); err != nil {
		t.Fatalf("restarted c not ready: %v", err)
	}
	v, err := view(cc)
	if err != nil {
		t.Fatal(err)
	}
	if v.Node.Subnet != before.String() {
		t.Fatalf("after a restart c runs on %s, want the subnet it had: %s", v.Node.Subnet, before)
	}
	if !strings.Contains(cc.proc.Logs(), "keeping the subnet leased before") {
		t.Errorf("restarted c does not log that it kept its lease:\n%s", tail(cc.proc.Logs(), 30))
	}
	settledSubnets(t, c, 30*time.Second)
	if cc.subnet != before {
		t.Fatalf("after the restart the cluster settled with c on %s, want %s", cc.subnet, before)
	}
	if err := pingWithin(ctx, c.by["a"], cc.overlay, 10*time.Second); err != nil {
		t.Fatalf("a -> restarted c (%s): %v", cc.overlay, err)
	}
	if err := pingWithin(ctx, cc, c.by["f"].overlay, 10*time.Second); err != nil {
		t.Fatalf("restarted c -> f: %v", err)
	}
	t.Logf("c restarted on the same subnet %s; everyone routes it again %v after the restart", before, time.Since(restartedAt).Round(time.Millisecond))
}

// TestSubnetConflictResolves: two hosts whose leases hold the same subnet
// start together; the later claim moves to a free subnet and says so, and
// the overlay works between them.
func TestSubnetConflictResolves(t *testing.T) {
	c := autoCluster(t, "a", "b")
	a, b := c.by["a"], c.by["b"]
	contested := netip.MustParsePrefix("10.244.77.0/24")
	now := time.Now().UnixMilli()
	claims := map[string]int64{"a": now - 120_000, "b": now - 60_000} // a claimed first
	for _, n := range c.nodes {
		if err := writeLease(n, leaseFile{Network: overlayNetwork, Subnet: contested.String(), Claimed: claims[n.name]}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	c.startAll()
	c.waitFormed(formationTimeout)
	settledSubnets(t, c, 30*time.Second)
	t.Logf("conflict resolved %v after start: a=%s b=%s", time.Since(start).Round(time.Millisecond), a.subnet, b.subnet)

	if a.subnet != contested {
		t.Errorf("a claimed %s first but now runs on %s", contested, a.subnet)
	}
	if b.subnet == contested {
		t.Fatalf("b (the later claim) still runs on %s", contested)
	}
	const moved = "lost a subnet conflict: moved to a free subnet"
	if err := pollUntil(time.Now().Add(5*time.Second), func() error {
		if !strings.Contains(b.proc.Logs(), moved) {
			return errors.New("b's log does not say it moved")
		}
		return nil
	}); err != nil {
		t.Errorf("%v:\n%s", err, tail(b.proc.Logs(), 40))
	}
	for _, line := range strings.Split(b.proc.Logs(), "\n") {
		if strings.Contains(line, moved) {
			t.Logf("b: %s", line)
		}
	}
	if strings.Contains(a.proc.Logs(), moved) {
		t.Errorf("a, the earlier claim, moved too:\n%s", tail(a.proc.Logs(), 40))
	}

	// b's lease, subnet file and TUN follow the move; a's lease is untouched.
	if l, err := readLease(b); err != nil || l.Subnet != b.subnet.String() || l.Claimed <= claims["b"] {
		t.Errorf("b's lease after the move: %+v (%v), want subnet %s with a new claim time", l, err, b.subnet)
	}
	if l, err := readLease(a); err != nil || l.Subnet != contested.String() || l.Claimed != claims["a"] {
		t.Errorf("a's lease: %+v (%v), want %s claimed at %d", l, err, contested, claims["a"])
	}
	if v, err := subnetFileValue(b, "WEFT_SUBNET"); err != nil || v != b.subnet.String() {
		t.Errorf("b's subnet file WEFT_SUBNET=%q (%v), want %s", v, err, b.subnet)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range c.nodes {
		addrs, err := tunAddrs(ctx, n)
		if want := n.overlay.String() + "/16"; err != nil || !slices.Equal(addrs, []string{want}) {
			t.Errorf("%s: weft0 addresses %v (%v), want [%s]", n.name, addrs, err, want)
		}
	}
	if err := pingWithin(ctx, a, b.overlay, 10*time.Second); err != nil {
		t.Errorf("a -> b (%s) after the move: %v", b.overlay, err)
	}
	if err := pingWithin(ctx, b, a.overlay, 10*time.Second); err != nil {
		t.Errorf("b -> a (%s) after the move: %v", a.overlay, err)
	}
}

// ---------------------------------------------------------------------------
// Failures.

// TestRestartWithNewAddress: b crashes and comes back with the same name
// and subnet on a new underlay address; a reaches it within 15 s of the
// restart and shows the new address.
func TestRestartWithNewAddress(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	c.startAll()
	c.waitFormed(formationTimeout)
	a, b, cc := c.by["a"], c.by["b"], c.by["c"]

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := pingWithin(ctx, a, b.overlay, 5*time.Second); err != nil {
		t.Fatalf("before the crash, a cannot reach b: %v", err)
	}

	killedAt := time.Now()
	if err := b.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	oldUnderlay := b.underlay
	newUnderlay := netip.MustParseAddr("192.168.50.12")
	if _, err := b.host.IP(ctx, "addr", "del", netip.PrefixFrom(oldUnderlay, 24).String(), "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.host.IP(ctx, "addr", "add", netip.PrefixFrom(newUnderlay, 24).String(), "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	b.underlay = newUnderlay
	b.args = runArgs(b, otherUnderlays(c.nodes, b))
	c.start(b)
	restartedAt := time.Now()
	t.Logf("b killed, moved %s -> %s and restarted %v after the kill", oldUnderlay, newUnderlay, restartedAt.Sub(killedAt).Round(time.Millisecond))

	const within = 15 * time.Second
	err := pingWithin(ctx, a, b.overlay, within)
	if err != nil {
		// Keep watching, to report when (if ever) it is accepted.
		t.Errorf("a cannot reach b's overlay address %s within %v of b's restart on %s: %v", b.overlay, within, newUnderlay, err)
		late := pingWithin(ctx, a, b.overlay, 45*time.Second)
		if late == nil {
			t.Logf("a reached b only %v after the restart (%v after the kill)", time.Since(restartedAt).Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond))
		} else {
			t.Logf("a still cannot reach b %v after the restart: %v", time.Since(restartedAt).Round(time.Millisecond), late)
		}
		for _, n := range []*node{a, b} {
			re := regexp.MustCompile(`(?i)conflicting address|updating address|gossip member|gossip join|reconnect|refut`)
			t.Logf("%s's gossip log lines about the move:\n%s", n.name, strings.Join(grepLines(n.proc.Logs(), re, 40), "\n"))
		}
		t.FailNow()
	}
	t.Logf("a reaches b at its new address %v after the restart (%v after the kill)", time.Since(restartedAt).Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond))

	want := netip.AddrPortFrom(newUnderlay, dataPort).String()
	for _, n := range []*node{a, cc} {
		if err := pollUntil(time.Now().Add(10*time.Second), func() error {
			v, err := view(n)
			if err != nil {
				return err
			}
			if err := seesAlive(v, "b"); err != nil {
				return err
			}
			if p := v.peer("b"); p.Underlay != want {
				return fmt.Errorf("%s lists b at %s, want %s", n.name, p.Underlay, want)
			}
			return nil
		}); err != nil {
			t.Errorf("status after b's move: %v", err)
		}
	}
	if err := pollUntil(time.Now().Add(10*time.Second), func() error {
		v, err := view(b)
		if err != nil {
			return err
		}
		return seesAlive(v, "a", "c")
	}); err != nil {
		t.Errorf("restarted b: %v", err)
	}
	if err := pingWithin(ctx, cc, b.overlay, 10*time.Second); err != nil {
		t.Errorf("c -> moved b: %v", err)
	}
	if err := pingWithin(ctx, b, a.overlay, 10*time.Second); err != nil {
		t.Errorf("moved b -> a: %v", err)
	}
}

// TestPartitionHeals: c's underlay link goes down for 20 s; a and b
// withdraw c within the failure-detection time; when the link comes back
// the cluster heals by itself (no daemon restarts) and the overlay works
// both ways within 30 s.
func TestPartitionHeals(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	c.startAll()
	c.waitFormed(formationTimeout)
	a, b, cc := c.by["a"], c.by["b"], c.by["c"]
	pids := map[string]int{}
	for _, n := range c.nodes {
		pids[n.name] = n.proc.PID()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := pingWithin(ctx, a, cc.overlay, 5*time.Second); err != nil {
		t.Fatalf("before the partition, a cannot reach c: %v", err)
	}

	const (
		outage = 20 * time.Second
		// memberlist's LAN failure detection: a probe round, indirect
		// probes, then a suspicion timeout of 4 s for three members once
		// another member confirms (24 s without confirmation); 15 s is
		// what TestCrashAndRestart allows for a crash too.
		detect = 15 * time.Second
		heal   = 30 * time.Second
	)
	downAt := time.Now()
	if err := cc.host.SetLinkDown("eth0"); err != nil {
		t.Fatal(err)
	}
	linkUp := func() {
		if err := cc.host.SetLinkUp("eth0"); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*node{a, b} {
		err := pollUntil(downAt.Add(detect), func() error {
			if n.proc.Exited() {
				return errExited(n)
			}
			v, err := view(n)
			if err != nil {
				return err
			}
			p := v.peer("c")
			if p != nil && (strings.EqualFold(p.State, "alive") || p.Via != "none") {
				return fmt.Errorf("%s still lists c as %s via %s: %s", n.name, p.State, p.Via, v.summary())
			}
			return nil
		})
		if err != nil {
			linkUp()
			t.Fatalf("%s did not withdraw c within %v of the link going down: %v", n.name, detect, err)
		}
		t.Logf("%s withdrew c %v after the link went down", n.name, time.Since(downAt).Round(time.Millisecond))
	}
	if res, err := a.host.Ping(ctx, cc.overlay, 1); err == nil && res.Received > 0 {
		t.Errorf("a still gets replies from c's overlay address during the partition: %v", res)
	}
	time.Sleep(time.Until(downAt.Add(outage)))
	linkUp()
	upAt := time.Now()
	t.Logf("c's link back up after %v", upAt.Sub(downAt).Round(time.Millisecond))

	if err := pingWithin(ctx, a, cc.overlay, heal); err != nil {
		t.Fatalf("a cannot reach c's overlay address %s within %v of the link coming back: %v", cc.overlay, heal, err)
	}
	t.Logf("a reaches c again %v after the link came back", time.Since(upAt).Round(time.Millisecond))
	if err := pingWithin(ctx, cc, a.overlay, time.Until(upAt.Add(heal))); err != nil {
		t.Fatalf("c cannot reach a's overlay address %s within %v of the link coming back: %v", a.overlay, heal, err)
	}
	t.Logf("c reaches a again %v after the link came back", time.Since(upAt).Round(time.Millisecond))

	if err := pollUntil(time.Now().Add(15*time.Second), func() error {
		for _, n := range c.nodes {
			v, err := view(n)
			if err != nil {
				return err
			}
			if err := seesAlive(v, otherNames(c.nodes, n)...); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Errorf("after healing: %v", err)
	}
	if err := pingOK(ctx, b, cc.overlay, 2); err != nil {
		t.Errorf("after healing, b -> c: %v", err)
	}
	for _, n := range c.nodes {
		if len(n.procs) != 1 || n.proc.Exited() || n.proc.PID() != pids[n.name] {
			t.Errorf("%s's daemon was restarted or exited (pid %d, was %d, exited %v)", n.name, n.proc.PID(), pids[n.name], n.proc.Exited())
		}
	}
	re := regexp.MustCompile(`gossip reconnect succeeded|joined gossip cluster|gossip member (failed|joined)`)
	for _, n := range c.nodes {
		t.Logf("%s:\n%s", n.name, strings.Join(grepLines(n.proc.Logs(), re, 20), "\n"))
	}
}

// ---------------------------------------------------------------------------
// Forged traffic.

// TestGarbageFloodWhileTransferring: while TCP flows a -> b over the
// overlay, a stranger x on the same bridge (not a member, no weft) sends up
// to 500,000 forged datagrams at b's data port: garbage and well-formed
// packets from its own address, and, with a raw socket forging a's underlay
// address as the outer source, packets whose inner source is not in a's
// subnet, whose inner destination is not in b's subnet, or that are not IP
// at all. None may reach b's TUN; each is counted under its drop reason;
// the transfer completes; b stays small and logs no line per packet.
//
// What this cannot stop, by design: a stranger on the underlay who forges a
// peer's outer address AND an inner source inside that peer's subnet is
// indistinguishable from the peer (the UDP encapsulation carries no
// authentication), so b accepts such packets and writes them to its TUN.
// The test sends none of those.
func TestGarbageFloodWhileTransferring(t *testing.T) {
	netlab.RequireTools(t, "tcpdump", "cat")
	c := newCluster(t, "a", "b")
	a, b := c.by["a"], c.by["b"]
	xAddr := netip.MustParseAddr("192.168.50.99")
	x, err := c.lab.Host("x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Attach(c.seg, netip.PrefixFrom(xAddr, 24)); err != nil {
		t.Fatal(err)
	}
	c.startAll()
	c.waitFormed(formationTimeout)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := pingWithin(ctx, a, b.overlay, 5*time.Second); err != nil {
		t.Fatalf("a cannot reach b: %v", err)
	}
	if err := pingOK(ctx, &node{name: "x", host: x}, b.underlay, 1); err != nil {
		t.Fatalf("x cannot reach b's underlay address: %v", err)
	}

	// Watch b's TUN for anything to or from UDP port 9. A control packet
	// sent by a through the tunnel proves the capture sees what arrives.
	dump, err := b.host.Start("tcpdump", "-i", "weft0", "-nn", "-l", "-c", "100000", "udp port 9")
	if err != nil {
		t.Fatal(err)
	}
	if err := pollUntil(time.Now().Add(15*time.Second), func() error {
		if dump.Exited() {
			return permanent{fmt.Errorf("tcpdump exited: %s", dump.Logs())}
		}
		if !strings.Contains(dump.Logs(), "listening on weft0") {
			return errors.New("tcpdump is not listening yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	const controls = 3
	var sent map[string]int
	if err := runTrustHelperIn(ctx, a.host, "udp-send", udpSendSpec{
		LocalPort: controlSrcPort, To: netip.AddrPortFrom(b.overlay, floodDstPort), Count: controls, Payload: controlTag,
	}, &sent); err != nil {
		t.Fatal(err)
	}
	controlLine := fmt.Sprintf("%s.%d > %s.%d:", a.overlay, controlSrcPort, b.overlay, floodDstPort)
	if err := pollUntil(time.Now().Add(10*time.Second), func() error {
		if got := countLines(dump.Logs(), controlLine); got < controls {
			return fmt.Errorf("tcpdump on b's weft0 saw %d of %d control packets from a", got, controls)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v:\n%s", err, dump.Logs())
	}

	// Counters before.
	reasons := []string{"unknown_peer", "spoofed", "not_local", "malformed"}
	series := func(r string) string { return `weft_dropped_packets_total{reason="` + r + `"}` }
	readCounters := func() (map[string]float64, error) {
		body, err := metrics(ctx, b)
		if err != nil {
			return nil, err
		}
		m := map[string]float64{}
		for _, r := range reasons {
			v, ok := metricValue(body, series(r))
			if !ok {
				return nil, fmt.Errorf("b's /metrics has no %s", series(r))
			}
			m[r] = v
		}
		v, ok := metricValue(body, "weft_rx_packets_total")
		if !ok {
			return nil, errors.New("b's /metrics has no weft_rx_packets_total")
		}
		m["rx"] = v
		return m, nil
	}
	// Datagrams lost on the way (veth backlog, b's socket buffer), an upper
	// bound on what never reached b's forwarding loop.
	readLost := func() (uint64, error) {
		sock, err := udpSocketDrops(ctx, b.host, dataPort)
		if err != nil {
			return 0, err
		}
		_, xTx, err := linkDrops(ctx, x.NS(), "eth0")
		if err != nil {
			return 0, err
		}
		_, swTx, err := linkDrops(ctx, c.lab.SwitchNS(), "b-eth0")
		if err != nil {
			return 0, err
		}
		_, bRx, err := linkDrops(ctx, b.host.NS(), "eth0")
		if err != nil {
			return 0, err
		}
		return sock + xTx + swTx + bRx, nil
	}
	before, err := readCounters()
	if err != nil {
		t.Fatal(err)
	}
	lostBefore, err := readLost()
	if err != nil {
		t.Fatal(err)
	}
	logOffset := len(b.proc.Logs())

	// The transfer, and one second into it the flood.
	if _, err := b.host.IPerf3Server(5201); err != nil {
		t.Fatal(err)
	}
	iperfDone := iperfInBackground(ctx, a, b.overlay, netlab.IPerf3Options{Port: 5201, Seconds: 10})
	time.Sleep(time.Second)
	spec := floodSpec{
		Target:  netip.AddrPortFrom(b.underlay, dataPort),
		Spoof:   a.underlay,
		PeerNet: a.subnet,
		Dst:     b.overlay,
		// Outside a's subnet: another subnet of the network, b's own, and
		// an address outside the overlay (TEST-NET-1).
		SpoofSrcs: []netip.Addr{netip.MustParseAddr("10.244.200.7"), b.overlay.Next(), netip.MustParseAddr("192.0.2.1")},
		// Outside b's subnet: nobody's subnet, a's own, and TEST-NET-2.
		ForeignDsts: []netip.Addr{netip.MustParseAddr("10.244.3.5"), a.overlay.Next(), netip.MustParseAddr("198.51.100.7")},
		Count:       500_000,
		Duration:    9 * time.Second,
		Seed:        uint64(time.Now().UnixNano()),
	}
	floodCtx, floodCancel := context.WithTimeout(ctx, 30*time.Second) // hard bound on the helper process
	var rep floodReport
	floodStart := time.Now()
	err = runTrustHelperIn(floodCtx, x, "flood", spec, &rep)
	floodCancel()
	if err != nil {
		t.Fatalf("flood from x: %v", err)
	}
	t.Logf("x sent %d datagrams in %.1f s (%.0f/s, stopped by %s): sent %v, failed %v %v",
		rep.total(), rep.Seconds, float64(rep.total())/rep.Seconds, rep.Stop, rep.Sent, rep.Failed, rep.FirstErr)
	floodLogs := b.proc.Logs()[logOffset:]

	ip := awaitIperf(t, iperfDone, 60*time.Second, "iperf3 after the flood's end")
	if ip.err != nil {
		t.Errorf("iperf3 a -> b during the flood: %v", ip.err)
	} else if ip.res.ReceivedBPS <= 0 {
		t.Errorf("iperf3 a -> b during the flood: %v", ip.res)
	} else {
		t.Logf("iperf3 TCP a -> b during the flood: %v", ip.res)
	}

	// Let b's forwarding loop drain its socket before reading counters.
	time.Sleep(time.Second)
	after, err := readCounters()
	if err != nil {
		t.Fatal(err)
	}
	lostAfter, err := readLost()
	if err != nil {
		t.Fatal(err)
	}
	d := map[string]float64{}
	for k := range after {
		d[k] = after[k] - before[k]
	}
	lost := float64(lostAfter - lostBefore)
	nonSpoofed := float64(rep.Sent[kindGarbage] + rep.Sent[kindForged])
	spoofedOuter := float64(rep.Sent[kindSpoofedInner] + rep.Sent[kindNotLocal] + rep.Sent[kindSpoofedGarbage])
	t.Logf("b's drops during the flood: unknown_peer +%.0f (of %.0f sent from x's own address), spoofed +%.0f (of %d), not_local +%.0f (of %d), malformed +%.0f (of %d); rx +%.0f; lost before weft read them (socket + veth drops, all traffic) %.0f",
		d["unknown_peer"], nonSpoofed, d["spoofed"], rep.Sent[kindSpoofedInner], d["not_local"], rep.Sent[kindNotLocal],
		d["malformed"], rep.Sent[kindSpoofedGarbage], d["rx"], lost)

	// Each reason counts at most what was sent of its kind, and at least
	// what arrived (sent minus every drop on the way, which also counts the
	// tunnel's own losses, so this is a lower bound).
	check := func(reason string, sent, min float64) {
		t.Helper()
		got := d[reason]
		switch {
		case got > sent:
			t.Errorf("%s drops +%.0f exceed the %.0f datagrams of that kind x sent", reason, got, sent)
		case got <= 0:
			t.Errorf("%s drops did not increase (x sent %.0f datagrams of that kind)", reason, sent)
		case got < min:
			t.Errorf("%s drops +%.0f, want at least %.0f (90%% of %.0f sent minus %.0f lost on the way)", reason, got, min, sent, lost)
		}
	}
	atLeast := func(sent float64) float64 { return max(0, 0.9*(sent-lost)) }
	check("unknown_peer", nonSpoofed, atLeast(nonSpoofed))
	check("spoofed", float64(rep.Sent[kindSpoofedInner]), 0)
	check("not_local", float64(rep.Sent[kindNotLocal]), 0)
	check("malformed", float64(rep.Sent[kindSpoofedGarbage]), 0)
	if got := d["spoofed"] + d["not_local"] + d["malformed"]; got < atLeast(spoofedOuter) {
		t.Errorf("datagrams with a forged outer source: %.0f dropped as spoofed/not_local/malformed, want at least %.0f (90%% of %.0f sent minus %.0f lost)", got, atLeast(spoofedOuter), spoofedOuter, lost)
	}
	if d["rx"] <= 0 {
		t.Errorf("b wrote no packet to its TUN during the transfer (weft_rx_packets_total +%.0f)", d["rx"])
	}

	// Nothing forged reached b's TUN: stop the capture and read it.
	if err := dump.Stop(5 * time.Second); err != nil {
		t.Logf("tcpdump: %v", err)
	}
	capture := dump.Logs()
	var leaked []string
	for _, line := range strings.Split(capture, "\n") {
		if strings.Contains(line, " > ") && strings.Contains(line, "UDP") && !strings.Contains(line, controlLine) {
			leaked = append(leaked, line)
		}
	}
	if len(leaked) > 0 {
		t.Errorf("%d forged packets reached b's TUN, e.g.:\n%s", len(leaked), strings.Join(leaked[:min(len(leaked), 10)], "\n"))
	}
	if got := countLines(capture, controlLine); got != controls {
		t.Errorf("tcpdump saw %d control packets, want %d", got, controls)
	}
	if m := regexp.MustCompile(`(\d+) packets? dropped by kernel`).FindStringSubmatch(capture); m == nil || m[1] != "0" {
		t.Errorf("tcpdump's capture is not complete: %q", strings.TrimSpace(capture[max(0, len(capture)-300):]))
	}
	t.Logf("tcpdump on b's weft0 (udp port 9): %d control packets, %d forged; %s", controls, len(leaked),
		strings.Join(grepLines(capture, regexp.MustCompile(`packets (captured|received by filter|dropped by kernel)`), 3), "; "))

	// b's memory and log.
	hwm, err := procStatusKB(b.proc.PID(), "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	rss, _ := procStatusKB(b.proc.PID(), "VmRSS")
	t.Logf("b's weft: peak RSS (VmHWM) %.1f MiB, RSS now %.1f MiB", float64(hwm)/1024, float64(rss)/1024)
	if hwm >= 64*1024 {
		t.Errorf("b's weft peak RSS %.1f MiB, want < 64 MiB", float64(hwm)/1024)
	}
	floodRe := regexp.MustCompile(`(?i)unknown_peer|spoof|not_local|malformed|dropped|` + regexp.QuoteMeta(xAddr.String()) + `|` + regexp.QuoteMeta(a.underlay.String()) + `:` + strconv.Itoa(dataPort))
	mentions := grepLines(floodLogs, floodRe, 100)
	lines := len(strings.Split(strings.TrimRight(floodLogs, "\n"), "\n"))
	t.Logf("b logged %d line(s) during the %.1f s flood, %d of them about dropped or forged datagrams", lines, time.Since(floodStart).Seconds(), len(mentions))
	if len(mentions) > 3 {
		t.Errorf("b logged %d lines about the flood, want at most a few summary lines:\n%s", len(mentions), strings.Join(mentions[:min(len(mentions), 20)], "\n"))
	}
	if lines > 300 {
		t.Errorf("b logged %d lines during the flood:\n%s", lines, tail(floodLogs, 30))
	}
	if b.proc.Exited() || a.proc.Exited() {
		t.Fatalf("a daemon exited during the flood: a %v, b %v", a.proc.ProcessState(), b.proc.ProcessState())
	}
	if err := pingOK(ctx, a, b.overlay, 2); err != nil {
		t.Errorf("after the flood, a -> b: %v", err)
	}
}

// ---------------------------------------------------------------------------
// Gossip keys.

// keygen runs "weft keygen" in n's namespace.
func keygen(t *testing.T, n *node) string {
	t.Helper()
	code, stdout, stderr := runWeft(t, n, "keygen")
	key := strings.TrimSpace(stdout)
	if code != 0 || key == "" {
		t.Fatalf("weft keygen: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	return key
}

func keyFile(n *node) string { return filepath.Join(filepath.Dir(n.sock), n.name+".keys") }

func writeKeys(t *testing.T, n *node, keys ...string) {
	t.Helper()
	if err := os.WriteFile(keyFile(n), []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// neverSeen watches n's status for d and fails if name appears in it.
func neverSeen(n *node, name string, d time.Duration) error {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if n.proc.Exited() {
			return errExited(n)
		}
		v, err := view(n)
		if err != nil {
			return err
		}
		if p := v.peer(name); p != nil {
			return fmt.Errorf("%s lists %s (%s): %s", n.name, name, p.State, v.summary())
		}
		time.Sleep(500 * time.Millisecond)
	}
	return nil
}

// gossipCounters returns n's gossip key-error and join-failure counters.
func gossipCounters(ctx context.Context, n *node) (keyErrs, joinFails float64, err error) {
	body, err := metrics(ctx, n)
	if err != nil {
		return 0, 0, err
	}
	keyErrs, ok1 := metricValue(body, "weft_gossip_key_errors_total")
	joinFails, ok2 := metricValue(body, "weft_gossip_join_failures_total")
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("%s's /metrics lacks weft_gossip_key_errors_total or weft_gossip_join_failures_total", n.name)
	}
	return keyErrs, joinFails, nil
}

// TestWrongGossipKeyRefused: a and b share a gossip key, c has another: a
// and b form a cluster, c never becomes a member, and the refusal is
// counted.
func TestWrongGossipKeyRefused(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	a, b, cc := c.by["a"], c.by["b"], c.by["c"]
	k1, k2 := keygen(t, a), keygen(t, a)
	if k1 == k2 {
		t.Fatal("weft keygen printed the same key twice")
	}
	writeKeys(t, a, k1)
	writeKeys(t, b, k1)
	writeKeys(t, cc, k2)
	for _, n := range c.nodes {
		n.args = append(n.args, "--gossip-key-file", keyFile(n))
	}
	c.startAll()

	// a and b form a cluster of two; c, whose key differs, must not join.
	if err := pollUntil(time.Now().Add(formationTimeout), func() error {
		for _, pair := range [][2]*node{{a, b}, {b, a}} {
			if pair[0].proc.Exited() {
				return errExited(pair[0])
			}
			v, err := view(pair[0])
			if err != nil {
				return err
			}
			if err := seesAlive(v, pair[1].name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("a and b (same key) did not form a cluster: %v", err)
	}
	if err := waitReady(cc, formationTimeout); err != nil {
		t.Fatal(err)
	}
	// Long enough for c's join retries (backoff from 2 s) and a's and b's
	// reconnect to their missing seed c (every 10 s).
	const watch = 12 * time.Second
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, w := range []struct {
		n    *node
		name string
	}{{a, "c"}, {b, "c"}, {cc, "a"}} {
		wg.Go(func() { errs[i] = neverSeen(w.n, w.name, watch) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("a member with another gossip key was accepted: %v", err)
		}
	}
	if v, err := view(cc); err == nil && len(v.Peers) > 0 {
		t.Errorf("c, whose key differs, knows peers: %s", v.summary())
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	counted := false
	for _, n := range c.nodes {
		ke, jf, err := gossipCounters(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: weft_gossip_key_errors_total %.0f, weft_gossip_join_failures_total %.0f", n.name, ke, jf)
		if n == cc && (ke > 0 || jf > 0) {
			counted = true
		}
		if n == a && ke > 0 {
			t.Logf("a counts c's traffic as key errors")
		}
	}
	if !counted {
		t.Errorf("c counts neither key errors nor join failures")
	}
	ka, _, _ := gossipCounters(ctx, a)
	kc, _, _ := gossipCounters(ctx, cc)
	if ka == 0 && kc == 0 {
		t.Errorf("neither a nor c counts a gossip key error")
	}
	re := regexp.MustCompile(`(?i)decrypt|encrypt|join failed`)
	for _, n := range []*node{a, cc} {
		t.Logf("%s's log about the refusal:\n%s", n.name, strings.Join(grepLines(n.proc.Logs(), re, 5), "\n"))
	}
}

// TestGossipKeyRotation: a and b rotate their gossip key K1 -> K2 by
// rewriting their key files and sending SIGHUP (install, use, remove) and
// stay joined throughout; then d, with only K2, joins, and e, with only K1,
// is refused.
func TestGossipKeyRotation(t *testing.T) {
	c := newCluster(t, "a", "b", "d", "e")
	a, b, d, e := c.by["a"], c.by["b"], c.by["d"], c.by["e"]
	k1, k2 := keygen(t, a), keygen(t, a)
	writeKeys(t, a, k1)
	writeKeys(t, b, k1)
	writeKeys(t, d, k2)
	writeKeys(t, e, k1)
	for _, n := range c.nodes {
		n.args = append(n.args, "--gossip-key-file", keyFile(n))
	}
	pair := []*node{a, b}
	for _, n := range pair {
		c.start(n)
	}
	joined := func(within time.Duration) error {
		return pollUntil(time.Now().Add(within), func() error {
			for _, n := range pair {
				if n.proc.Exited() {
					return errExited(n)
				}
				v, err := view(n)
				if err != nil {
					return err
				}
				if err := seesAlive(v, otherNames(pair, n)...); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := joined(formationTimeout); err != nil {
		t.Fatalf("a and b did not form a cluster: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	keyErrs := func() map[string]float64 {
		m := map[string]float64{}
		for _, n := range pair {
			ke, _, err := gossipCounters(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			m[n.name] = ke
		}
		return m
	}
	errsBefore := keyErrs()

	// Watch a and b throughout the rotation: each must list the other as
	// alive at every look.
	watchCtx, stopWatch := context.WithCancel(ctx)
	var (
		watchWG   sync.WaitGroup
		watchMu   sync.Mutex
		lapses    []string
		lookCount int
	)
	for _, n := range []*node{a, b} {
		other := otherNames([]*node{a, b}, n)
		watchWG.Go(func() {
			for watchCtx.Err() == nil {
				v, err := view(n)
				watchMu.Lock()
				lookCount++
				if err != nil {
					lapses = append(lapses, err.Error())
				} else if err := seesAlive(v, other...); err != nil {
					lapses = append(lapses, time.Now().Format("15:04:05.000")+" "+err.Error())
				}
				watchMu.Unlock()
				select {
				case <-watchCtx.Done():
				case <-time.After(300 * time.Millisecond):
				}
			}
		})
	}
	defer func() { stopWatch(); watchWG.Wait() }()

	const reloaded = `msg="configuration reloaded"`
	steps := []struct {
		what string
		keys []string
	}{
		{"install K2", []string{k1, k2}},
		{"use K2", []string{k2, k1}},
		{"remove K1", []string{k2}},
	}
	for _, step := range steps {
		for _, n := range pair {
			writeKeys(t, n, step.keys...)
		}
		for _, n := range pair {
			was := countLines(n.proc.Logs(), reloaded)
			if err := n.proc.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			if err := pollUntil(time.Now().Add(10*time.Second), func() error {
				if n.proc.Exited() {
					return errExited(n)
				}
				if countLines(n.proc.Logs(), reloaded) <= was {
					return errors.New("no reload logged yet")
				}
				return nil
			}); err != nil {
				t.Fatalf("%s: %s: SIGHUP: %v\n%s", step.what, n.name, err, tail(n.proc.Logs(), 20))
			}
			logs := n.proc.Logs()
			if i := strings.LastIndex(logs, reloaded); !strings.Contains(logs[i:], "gossip keys") {
				t.Errorf("%s: %s's reload did not change the gossip keys:\n%s", step.what, n.name, tail(logs, 10))
			}
			if strings.Contains(logs, "reload: gossip keys") || strings.Contains(logs, "reload refused") {
				t.Fatalf("%s: %s refused the new keys:\n%s", step.what, n.name, tail(logs, 20))
			}
		}
		// A few probe rounds under the new keys, then: still joined, the
		// overlay works, and no gossip message was refused.
		time.Sleep(3 * time.Second)
		if err := joined(5 * time.Second); err != nil {
			t.Fatalf("after %s: %v", step.what, err)
		}
		if err := pingOK(ctx, a, b.overlay, 1); err != nil {
			t.Errorf("after %s: a -> b: %v", step.what, err)
		}
		if err := pingOK(ctx, b, a.overlay, 1); err != nil {
			t.Errorf("after %s: b -> a: %v", step.what, err)
		}
		if now := keyErrs(); now["a"] != errsBefore["a"] || now["b"] != errsBefore["b"] {
			t.Errorf("after %s: gossip key errors went from %v to %v", step.what, errsBefore, now)
		}
		t.Logf("%s: a and b still joined, overlay ok", step.what)
	}
	stopWatch()
	watchWG.Wait()
	if len(lapses) > 0 {
		t.Errorf("a or b did not list the other as alive at %d of %d looks during the rotation:\n%s", len(lapses), lookCount, strings.Join(lapses[:min(len(lapses), 10)], "\n"))
	} else {
		t.Logf("a and b listed each other as alive at all %d looks during the rotation", lookCount)
	}

	// d (K2 only) joins the rotated cluster; e (K1 only) is refused.
	c.start(d)
	c.start(e)
	startedAt := time.Now()
	pair = []*node{a, b, d}
	if err := joined(formationTimeout); err != nil {
		t.Fatalf("d, with the new key, did not join: %v", err)
	}
	t.Logf("d (K2) joined %v after its start", time.Since(startedAt).Round(time.Millisecond))
	if err := waitReady(e, formationTimeout); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i, w := range []struct {
		n    *node
		name string
	}{{a, "e"}, {b, "e"}, {d, "e"}, {e, "a"}} {
		wg.Go(func() { errs[i] = neverSeen(w.n, w.name, time.Until(startedAt.Add(15*time.Second))) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("e, with only the removed key, was accepted: %v", err)
		}
	}
	ke, jf, err := gossipCounters(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("e: weft_gossip_key_errors_total %.0f, weft_gossip_join_failures_total %.0f", ke, jf)
	if ke == 0 && jf == 0 {
		t.Errorf("e counts neither key errors nor join failures")
	}
}
