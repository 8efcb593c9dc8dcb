package e2e

// The encrypted data plane (--encrypt): three encrypted hosts and one that
// runs without encryption; plaintext never on the wire; forged and replayed
// datagrams dropped; a rekey under load loses nothing; a peer killed with
// -9 carries traffic again soon after it is back.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/seal"
)

// encryptHelperEnv runs this binary as the raw sender below (netlab
// re-executes it in a namespace with the variable set).
const encryptHelperEnv = "WEFT_E2E_ENCRYPT_HELPER"

func init() { helperMain(encryptHelperEnv, "raw-send", rawSend) }

// rawSendSpec: send each payload Repeat times from Src (forged: a raw
// socket) to Dst.
type rawSendSpec struct {
	Src, Dst netip.AddrPort
	Payloads [][]byte
	Repeat   int
}

func rawSend(spec rawSendSpec) (int, error) {
	if spec.Repeat < 1 || spec.Repeat > 100_000 || len(spec.Payloads) > 100 {
		return 0, errors.New("out of bounds")
	}
	raw, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return 0, fmt.Errorf("raw socket: %w", err)
	}
	defer syscall.Close(raw)
	to := &syscall.SockaddrInet4{Addr: spec.Dst.Addr().As4()}
	buf := make([]byte, 65536)
	sent := 0
	for i := range spec.Repeat {
		for _, p := range spec.Payloads {
			if err := syscall.Sendto(raw, outerUDP(buf, spec.Src, spec.Dst, p, uint16(i)), 0, to); err != nil {
				return sent, err
			}
			sent++
		}
		if i%64 == 63 {
			time.Sleep(time.Millisecond) // no socket-buffer overflow at the victim
		}
	}
	return sent, nil
}

func rawSendIn(ctx context.Context, h *netlab.Host, spec rawSendSpec) (int, error) {
	arg, err := json.Marshal(spec)
	if err != nil {
		return 0, err
	}
	cmd, err := h.SelfCommand(ctx, []string{encryptHelperEnv + "=1"}, string(arg))
	if err != nil {
		return 0, err
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("raw-send in %s: %v: %s", h.Name(), err, stderr.String())
	}
	var sent int
	err = json.Unmarshal(stdout.Bytes(), &sent)
	return sent, err
}

// udpPayloads reads a pcap file (Ethernet) and returns the UDP payloads
// sent from src to dst (either port 0: any), with their source ports.
func udpPayloads(path string, src, dst netip.AddrPort) ([][]byte, []uint16, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if len(data) < 24 || binary.LittleEndian.Uint32(data) != 0xa1b2c3d4 {
		return nil, nil, fmt.Errorf("%s: not a little-endian pcap file", path)
	}
	var out [][]byte
	var ports []uint16
	for p := data[24:]; len(p) >= 16; {
		n := int(binary.LittleEndian.Uint32(p[8:12]))
		if len(p) < 16+n {
			break
		}
		f := p[16 : 16+n]
		p = p[16+n:]
		if len(f) < 14+28 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
			continue
		}
		ip := f[14:]
		hl := int(ip[0]&0x0f) * 4
		if ip[9] != 17 || len(ip) < hl+8 {
			continue
		}
		s, _ := netip.AddrFromSlice(ip[12:16])
		d, _ := netip.AddrFromSlice(ip[16:20])
		u := ip[hl:]
		sp, dp := binary.BigEndian.Uint16(u[0:2]), binary.BigEndian.Uint16(u[2:4])
		if s != src.Addr() || d != dst.Addr() || (src.Port() != 0 && sp != src.Port()) || (dst.Port() != 0 && dp != dst.Port()) {
			continue
		}
		out = append(out, bytes.Clone(u[8:]))
		ports = append(ports, sp)
	}
	return out, ports, nil
}

// underlayCapture runs tcpdump on h's eth0 into a file until stop is called.
func underlayCapture(t *testing.T, h *netlab.Host, path, filter string) (stop func()) {
	t.Helper()
	p := startTcpdump(t, h, "eth0", 10*time.Second, "-nn", "-U", "--immediate-mode", "-s", "0", "-w", path, filter)
	return func() {
		time.Sleep(500 * time.Millisecond) // the last packets reach the capture
		_ = p.Signal(syscall.SIGINT)
		if err := p.Wait(10 * time.Second); err != nil && !p.Exited() {
			t.Errorf("tcpdump did not stop: %v", err)
		}
		t.Logf("tcpdump: %s", strings.Join(strings.Fields(p.Logs()), " "))
	}
}

// counter reads one sample of n's metrics.
func counter(ctx context.Context, t *testing.T, n *node, name string, labels ...string) float64 {
	t.Helper()
	m, _, err := metrics(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := m.value(name, labels...)
	if !ok {
		t.Fatalf("%s's /metrics has no %s%v", n.name, name, labels)
	}
	return v
}

func drop(ctx context.Context, t *testing.T, n *node, reason string) float64 {
	return counter(ctx, t, n, "weft_dropped_packets_total", "reason", reason)
}

func TestEncryptedDataPlane(t *testing.T) {
	netlab.RequireTools(t, "tcpdump")
	c := newCluster(t, "a", "b", "cc", "d")
	a, b, cc, d := c.by["a"], c.by["b"], c.by["cc"], c.by["d"]
	key := keygen(t, a)
	for _, n := range c.nodes {
		writeKeys(t, n, key)
		n.args = append(n.args, "--gossip-key-file", keyFile(n))
		if n != d {
			n.args = append(n.args, "--encrypt", "--encrypt-rekey-after", "10s")
		}
	}
	enc := []*node{a, b, cc}

	// --encrypt without a gossip key is a usage error naming both.
	code, _, stderr := runWeft(t, a, insecureArgs(a, nil, "--encrypt")...)
	if code != 2 || !strings.Contains(stderr, "--encrypt") || !strings.Contains(stderr, "--gossip-key-file") {
		t.Fatalf("--encrypt without --gossip-key-file: exit %d, %q", code, stderr)
	}

	c.startAll()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// The static key: created in the state directory, mode 0600.
	fi, err := os.Stat(filepath.Join(a.files.StateDir, seal.KeyFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("a's data-plane key: %v, %v", fi, err)
	}

	// All pairs of encrypted hosts ping.
	if errs := pingAll(ctx, enc, 10*time.Second); len(errs) > 0 {
		t.Fatalf("encrypted hosts do not all reach each other: %v", errs)
	}

	// d runs without --encrypt: refused by the encrypted ones, visibly (in
	// status, the log and a metric), and not routed either way.
	if err := pollUntil(time.Now().Add(10*time.Second), func() error {
		for _, n := range enc {
			st, err := status(n)
			if err != nil {
				return err
			}
			p := st.Peer("d")
			if p == nil || p.Via != "none" || !strings.Contains(p.Reason, "no data-plane key") {
				return fmt.Errorf("%s does not show d refused: %s", n.name, st.summary())
			}
			if st.Node.Encryption == nil || st.Peer("b") == nil && n != b {
				return fmt.Errorf("%s's status has no encryption section", n.name)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if v := counter(ctx, t, a, "weft_peers_refused", "reason", "no_key"); v != 1 {
		t.Errorf("a: weft_peers_refused{reason=no_key} = %v, want 1", v)
	}
	if !strings.Contains(a.proc.Logs(), `msg="peer refused" component=router peer=d`) || !strings.Contains(a.proc.Logs(), "refused=no_key") {
		t.Error("a's log does not say that d is refused")
	}
	if err := pingOK(ctx, a, d.overlay, 1); err == nil {
		t.Error("a reaches d, which does not encrypt")
	}
	if err := pingOK(ctx, d, a.overlay, 1); err == nil {
		t.Error("d reaches a, which encrypts")
	}
	st, _ := status(a)
	if p := st.Peer("b"); p == nil || p.Encryption == nil || p.Encryption.Session != "established" {
		t.Fatalf("a's status of b has no established session: %s", st.raw)
	}

	// Plaintext never on the wire: an iperf3 transfer of a file full of a
	// marker, captured on b's underlay, never shows the marker.
	const marker = "WEFT-E2E-PLAINTEXT-MARKER-7f3a"
	file := filepath.Join(a.files.Dir, "marker")
	if err := os.WriteFile(file, bytes.Repeat([]byte(marker), 16<<20/len(marker)), 0o644); err != nil {
		t.Fatal(err)
	}
	pcap := filepath.Join(b.files.Dir, "underlay.pcap")
	stop := underlayCapture(t, b.host, pcap, "udp port 8285")
	if _, err := b.host.IPerf3Server(5201); err != nil {
		t.Fatal(err)
	}
	res, err := a.host.IPerf3Client(ctx, b.overlay, netlab.IPerf3Options{Port: 5201, Seconds: 5, Bitrate: "200M", Extra: []string{"--file", file}})
	stop()
	if err != nil || res.RecvBytes < 1<<20 {
		t.Fatalf("iperf3 of the marker file: %v, %v", res, err)
	}
	raw, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) < int(res.RecvBytes)/2 {
		t.Fatalf("the capture holds %d bytes for %d received: it missed the transfer", len(raw), res.RecvBytes)
	}
	if bytes.Contains(raw, []byte(marker[:16])) {
		t.Fatal("the marker appears on the underlay: plaintext on the wire")
	}
	t.Logf("marker transfer: %d bytes received, capture %d bytes, no marker", res.RecvBytes, len(raw))

	// Forged and replayed datagrams from a's address: a captured genuine
	// datagram sent again is a replay; with its header and a wrong tag, it
	// fails authentication; none reaches b's TUN.
	pcap2 := filepath.Join(b.files.Dir, "capture2.pcap")
	stop = underlayCapture(t, b.host, pcap2, "udp port 8285")
	if err := pingOK(ctx, a, b.overlay, 3); err != nil {
		t.Fatal(err)
	}
	stop()
	pls, ports, err := udpPayloads(pcap2, netip.AddrPortFrom(a.underlay, 0), netip.AddrPortFrom(b.underlay, dataPort))
	if err != nil {
		t.Fatal(err)
	}
	var genuine []byte
	var port uint16
	for i, p := range pls {
		if len(p) > seal.Overhead+20 && p[0] == seal.TypeData {
			genuine, port = p, ports[i]
		}
	}
	if genuine == nil {
		out, _ := exec.Command("tcpdump", "-nn", "-r", pcap2).CombinedOutput()
		t.Fatalf("no data datagram from a captured (%d datagrams): %s", len(pls), out)
	}
	before := map[string]float64{}
	for _, r := range []string{"replay", "bad_auth", "no_session"} {
		before[r] = drop(ctx, t, b, r)
	}
	rxBefore := counter(ctx, t, b, "weft_rx_packets_total")
	spoof := netip.AddrPortFrom(a.underlay, port)
	target := netip.AddrPortFrom(b.underlay, dataPort)
	if _, err := rawSendIn(ctx, cc.host, rawSendSpec{Src: spoof, Dst: target, Payloads: [][]byte{genuine}, Repeat: 1}); err != nil {
		t.Fatal(err)
	}
	forged := bytes.Clone(genuine)
	for i := seal.HeaderLen; i < len(forged); i++ {
		forged[i] ^= byte(i)
	}
	const forgeries = 2000
	sent, err := rawSendIn(ctx, cc.host, rawSendSpec{Src: spoof, Dst: target, Payloads: [][]byte{forged}, Repeat: forgeries})
	if err != nil || sent != forgeries {
		t.Fatalf("sent %d forgeries: %v", sent, err)
	}
	if err := pollUntil(time.Now().Add(5*time.Second), func() error {
		r, ba := drop(ctx, t, b, "replay")-before["replay"], drop(ctx, t, b, "bad_auth")-before["bad_auth"]
		if r != 1 || ba != forgeries {
			return fmt.Errorf("b counted replay +%v (want 1), bad_auth +%v (want %d), no_session +%v", r, ba, forgeries, drop(ctx, t, b, "no_session")-before["no_session"])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if rx := counter(ctx, t, b, "weft_rx_packets_total") - rxBefore; rx != 0 {
		t.Fatalf("%v forged or replayed datagrams reached b's TUN", rx)
	}

	// A rekey (every 10 s) during a 30 s transfer loses nothing: no
	// datagram without a session, none out of the window.
	hsBefore := counter(ctx, t, a, "weft_handshakes_total", "result", "completed") + counter(ctx, t, cc, "weft_handshakes_total", "result", "completed")
	nsBefore := drop(ctx, t, a, "no_session") + drop(ctx, t, cc, "no_session")
	rpBefore := drop(ctx, t, a, "replay") + drop(ctx, t, cc, "replay")
	if _, err := cc.host.IPerf3Server(5202); err != nil {
		t.Fatal(err)
	}
	res, err = a.host.IPerf3Client(ctx, cc.overlay, netlab.IPerf3Options{Port: 5202, Seconds: 30})
	if err != nil || res.ReceivedBPS <= 0 {
		t.Fatalf("30 s iperf3 a -> cc: %v, %v", res, err)
	}
	hs := counter(ctx, t, a, "weft_handshakes_total", "result", "completed") + counter(ctx, t, cc, "weft_handshakes_total", "result", "completed") - hsBefore
	ns := drop(ctx, t, a, "no_session") + drop(ctx, t, cc, "no_session") - nsBefore
	rp := drop(ctx, t, a, "replay") + drop(ctx, t, cc, "replay") - rpBefore
	t.Logf("30 s transfer a -> cc: %.0f Mbit/s, %d retransmits, %v handshakes, no_session +%v, replay +%v", res.ReceivedBPS/1e6, res.Retransmits, hs, ns, rp)
	if hs < 2 {
		t.Errorf("%v handshakes completed in 30 s with a 10 s rekey", hs)
	}
	if ns != 0 || rp != 0 {
		t.Errorf("the rekey lost datagrams: no_session +%v, replay +%v", ns, rp)
	}
	if segs := res.SentBytes / 1400; res.Retransmits > 100 && int64(res.Retransmits) > segs/1000 {
		t.Errorf("%d retransmits in %d bytes: a retransmit spike", res.Retransmits, res.SentBytes)
	}

	// A peer killed with -9 and started again carries traffic within 2 s
	// of being alive again.
	if err := b.proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = b.proc.Wait(10 * time.Second)
	c.start(b)
	if err := pollFast(time.Now().Add(formationTimeout), func() error {
		if err := readyz(b); err != nil {
			return err
		}
		for _, pair := range [][2]*node{{a, b}, {b, a}} {
			st, err := status(pair[0])
			if err != nil {
				return err
			}
			if err := seesAlive(st, pair[1].name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	aliveAt := time.Now()
	for _, pair := range [][2]*node{{a, b}, {b, a}} {
		if err := pingWithin(ctx, pair[0], pair[1].overlay, 2*time.Second); err != nil {
			t.Fatalf("%s -> %s: no traffic within 2 s of b being alive again: %v", pair[0].name, pair[1].name, err)
		}
	}
	t.Logf("after kill -9: traffic both ways %v after b was alive again", time.Since(aliveAt).Round(time.Millisecond))

	// Rotating b's static key as README says: stop it, remove data.key,
	// start it. b advertises the new key; a and cc drop the old sessions
	// and handshake with the new key: traffic flows both ways again soon
	// after b is alive again, and their status shows the new key. Then the
	// same after a crash (kill -9), where a and cc still hold b, alive,
	// with its old key and sessions when it comes back with a new one.
	for _, crash := range []bool{false, true} {
		rotateStaticKey(t, ctx, c, b, []*node{a, cc}, crash)
	}
}

// rotateStaticKey stops n (SIGTERM, or with crash SIGKILL), removes its
// data.key, starts it, and requires its peers to reach it, and it them,
// with the new key within 3 s of it being alive again.
func rotateStaticKey(t *testing.T, ctx context.Context, c *cluster, n *node, peers []*node, crash bool) {
	t.Helper()
	began := time.Now()
	how := "stop"
	if crash {
		how = "kill -9"
	}
	oldKey := publicKey(t, n)
	for _, o := range peers {
		st, err := status(o)
		if err != nil {
			t.Fatal(err)
		}
		if p := st.Peer(n.name); p == nil || p.Encryption == nil || p.Encryption.Key != oldKey || p.Encryption.Session != "established" {
			t.Fatalf("%s: %s's status of %s before the key rotation: %+v, want an established session with key %s", how, o.name, n.name, p, oldKey)
		}
	}
	if crash {
		if err := n.proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = n.proc.Wait(10 * time.Second)
	} else {
		stopNode(t, n)
	}
	if err := os.Remove(filepath.Join(n.files.StateDir, seal.KeyFileName)); err != nil {
		t.Fatal(err)
	}
	logOffs := map[string]int{}
	for _, o := range peers {
		logOffs[o.name] = len(o.proc.Logs())
	}
	c.start(n)
	startedAt := time.Now()
	var newKey string
	if err := pollFast(time.Now().Add(formationTimeout), func() error {
		if err := readyz(n); err != nil {
			return err
		}
		st, err := status(n)
		if err != nil {
			return err
		}
		if st.Node.Encryption == nil {
			return fmt.Errorf("%s's status has no encryption section", n.name)
		}
		newKey = st.Node.Encryption.PublicKey
		if err := seesAlive(st, otherNames(peers, nil)...); err != nil {
			return err
		}
		for _, o := range peers {
			st, err := status(o)
			if err != nil {
				return err
			}
			if err := seesAlive(st, n.name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("%s: %v", how, err)
	}
	aliveAt := time.Now()
	if newKey == oldKey {
		t.Fatalf("%s: %s kept its static key %s after data.key was removed", how, n.name, oldKey)
	}
	if !strings.Contains(n.proc.Logs(), "created the data-plane key") {
		t.Errorf("%s: %s's log does not say that it created a new data-plane key", how, n.name)
	}
	for _, o := range peers {
		for _, pair := range [][2]*node{{o, n}, {n, o}} {
			if err := pingWithin(ctx, pair[0], pair[1].overlay, 3*time.Second); err != nil {
				t.Fatalf("%s: %s -> %s: no traffic within 3 s of %s being alive again with a new key: %v", how, pair[0].name, pair[1].name, n.name, err)
			}
		}
	}
	flowing := time.Since(aliveAt)
	for _, o := range peers {
		st, err := status(o)
		if err != nil {
			t.Fatal(err)
		}
		p := st.Peer(n.name)
		if p == nil || p.Encryption == nil || p.Encryption.Key != newKey || p.Encryption.Session != "established" ||
			p.Encryption.Handshakes == 0 || !p.Encryption.LastHandshake.After(startedAt) {
			t.Errorf("%s: %s's status of %s after the key rotation: %+v, want an established session with key %s, handshaken since the restart", how, o.name, n.name, p.Encryption, newKey)
		}
		nst, err := status(n)
		if err != nil {
			t.Fatal(err)
		}
		if q := nst.Peer(o.name); q == nil || q.Encryption == nil || q.Encryption.Session != "established" {
			t.Errorf("%s: %s's status of %s after the key rotation: %+v", how, n.name, o.name, q)
		}
		if strings.Contains(o.proc.Logs()[logOffs[o.name]:], "peer refused") {
			t.Errorf("%s: %s refused %s after its key rotation:\n%s", how, o.name, n.name, tail(o.proc.Logs(), 20))
		}
	}
	t.Logf("static key rotation (%s) on %s: %s -> %s; alive again %v after its start, traffic both ways with %s %v later; the step took %v",
		how, n.name, oldKey, newKey, aliveAt.Sub(startedAt).Round(time.Millisecond), strings.Join(otherNames(peers, nil), ", "), flowing.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
}

// publicKey is n's data-plane public key from its status.
func publicKey(t *testing.T, n *node) string {
	t.Helper()
	st, err := status(n)
	if err != nil {
		t.Fatal(err)
	}
	if st.Node.Encryption == nil {
		t.Fatalf("%s's status has no encryption section: %s", n.name, st.raw)
	}
	return st.Node.Encryption.PublicKey
}

// TestEncryptedStaticPeer: an encrypted host a has a kernel VXLAN VTEP k as
// a static peer with encrypt=false, and an encrypted weft peer b. a and k
// ping each other in plaintext while a and b encrypt: on a's underlay the
// pings' pattern is in the datagrams between a and k and never in those
// between a and b. A static peer without encrypt=false is a usage error at
// start and makes a reload refused: such a peer gets no datagram.
func TestEncryptedStaticPeer(t *testing.T) {
	tp := newLab(t, "bridge", "ethtool", "tcpdump")
	seg := tp.segment("lan0", underlayNet)
	a := tp.addNode("a", seg, netip.MustParseAddr("192.168.50.1"), 1)
	b := tp.addNode("b", seg, netip.MustParseAddr("192.168.50.2"), 2)
	kAddr, kOverlay := netip.MustParseAddr("192.168.50.9"), netip.MustParseAddr("10.244.9.0")
	// k2: a host at the address of the static peer that a reload tries to
	// add without encrypt=false (it runs nothing: it must get nothing).
	k2Addr := netip.MustParseAddr("192.168.50.10")
	k, err := tp.lab.Host("k")
	if err != nil {
		t.Fatal(err)
	}
	k2, err := tp.lab.Host("k2")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []struct {
		h    *netlab.Host
		addr netip.Addr
	}{{k, kAddr}, {k2, k2Addr}} {
		if _, err := h.h.Attach(seg, netip.PrefixFrom(h.addr, 24)); err != nil {
			t.Fatal(err)
		}
	}
	tp.addExtra(k, []string{"ip", "-s", "link", "show", "vxlan0"}, []string{"bridge", "fdb", "show", "dev", "vxlan0"})

	key := keygen(t, a)
	enc := func(n *node) []string {
		return []string{"--encap", "vxlan", "--encrypt", "--gossip-key-file", keyFile(n)}
	}
	for _, n := range []*node{a, b} {
		writeKeys(t, n, key)
	}
	kFlag := "name=k,subnet=10.244.9.0/24,ip=" + kAddr.String() + ",mac=" + kernelVTEPMAC

	// Without encrypt=false the static peer is a usage error naming it.
	code, _, stderr := runWeft(t, a, runArgs(a, nil, append(enc(a), "--peer", kFlag)...)...)
	if code != 2 || !strings.Contains(stderr, "--peer") || !strings.Contains(stderr, "encrypt=false") {
		t.Fatalf("--encrypt with a static peer without encrypt=false: exit %d, %q", code, stderr)
	}

	// a's static peers come from its config file, so that a reload can
	// change them.
	cfg := filepath.Join(a.files.Dir, "peers.yaml")
	kPeer := "  - {name: k, subnet: 10.244.9.0/24, ip: " + kAddr.String() + ", mac: \"" + kernelVTEPMAC + "\", encrypt: false}\n"
	writeFile(t, cfg, "peers:\n"+kPeer)
	a.args = runArgs(a, []string{b.underlay.String()}, append(enc(a), "--config", cfg)...)
	b.args = runArgs(b, []string{a.underlay.String()}, enc(b)...)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kernelVTEP(t, ctx, k, kAddr, a.underlay, false)
	tp.startAll()
	if err := pollUntil(time.Now().Add(formationTimeout), func() error {
		for _, pair := range [][2]*node{{a, b}, {b, a}} {
			if pair[0].proc.Exited() {
				return errExited(pair[0])
			}
			st, err := status(pair[0])
			if err != nil {
				return err
			}
			if err := seesAlive(st, pair[1].name); err != nil {
				return err
			}
			if err := hasSession(st, pair[1].name); err != nil {
				return err
			}
		}
		st, err := status(a)
		if err != nil {
			return err
		}
		p := st.Peer("k")
		if p == nil || p.State != "static" || p.Via != "tunnel" || p.Encryption == nil || p.Encryption.Session != "plaintext" {
			return fmt.Errorf("a's status of k: %+v, want static via tunnel, session plaintext", p)
		}
		return nil
	}); err != nil {
		t.Fatalf("a and b encrypted, k plaintext: %v", err)
	}

	kNode := &node{name: "k", host: k}
	// The first ping may wait for routes and neighbours.
	for _, p := range []struct {
		src *node
		dst netip.Addr
	}{{a, kOverlay}, {kNode, a.overlay}, {a, b.overlay}, {b, a.overlay}} {
		if err := pingWithin(ctx, p.src, p.dst, 5*time.Second); err != nil {
			t.Fatalf("ping %s -> %s: %v", p.src.name, p.dst, err)
		}
	}

	// Pings with a pattern, captured on a's underlay.
	const pattern = "WEFT-E2E-PLAIN16"
	hexPattern := fmt.Sprintf("%x", pattern)
	pcap := filepath.Join(a.files.Dir, "static.pcap")
	stop := underlayCapture(t, a.host, pcap, "udp port 8472")
	pingPattern := func(src *node, dst netip.Addr) {
		t.Helper()
		out, err := src.host.Run(ctx, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-w", "5", "-p", hexPattern, dst.String())
		res, perr := netlab.ParsePing(out)
		if err != nil || perr != nil || res.Received != 3 {
			t.Errorf("ping -p %s -> %s: %v %v %v\n%s", src.name, dst, res, err, perr, out)
		}
	}
	pingPattern(a, kOverlay)
	pingPattern(kNode, a.overlay)
	pingPattern(a, b.overlay)
	pingPattern(b, a.overlay)
	stop()
	for _, dir := range []struct {
		what     string
		src, dst netip.Addr
		plain    bool
	}{
		{"a -> k", a.underlay, kAddr, true},
		{"k -> a", kAddr, a.underlay, true},
		{"a -> b", a.underlay, b.underlay, false},
		{"b -> a", b.underlay, a.underlay, false},
	} {
		pls, _, err := udpPayloads(pcap, netip.AddrPortFrom(dir.src, 0), netip.AddrPortFrom(dir.dst, 8472))
		if err != nil {
			t.Fatal(err)
		}
		withPattern, vxlan := 0, 0
		for _, p := range pls {
			if bytes.Contains(p, []byte(pattern)) {
				withPattern++
			}
			if len(p) >= 8 && p[0] == 0x08 { // VXLAN flags: the VNI is valid
				vxlan++
			}
		}
		t.Logf("%s: %d datagrams, %d plain VXLAN, %d with the pattern", dir.what, len(pls), vxlan, withPattern)
		switch {
		case dir.plain && (withPattern < 3 || vxlan != len(pls)):
			t.Errorf("%s (encrypt=false): %d of %d datagrams plain VXLAN, %d with the pattern; want plaintext VXLAN carrying the 3 pings", dir.what, vxlan, len(pls), withPattern)
		case !dir.plain && (len(pls) < 3 || withPattern > 0 || vxlan > 0):
			t.Errorf("%s (encrypted): %d datagrams, %d plain VXLAN, %d with the pattern; want at least 3, all encrypted", dir.what, len(pls), vxlan, withPattern)
		}
	}

	// A reload that adds a static peer without encrypt=false is refused:
	// a keeps its peers, k2 is neither listed nor reached.
	writeFile(t, cfg, "peers:\n"+kPeer+"  - {name: k2, subnet: 10.244.10.0/24, ip: "+k2Addr.String()+", mac: \"02:00:00:00:00:0a\"}\n")
	pcap2 := filepath.Join(a.files.Dir, "reload.pcap")
	stop = underlayCapture(t, a.host, pcap2, "host "+k2Addr.String())
	logOff := len(a.proc.Logs())
	if err := a.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line, err := waitLogLine(a.proc, logOff, time.Now().Add(10*time.Second), "reload refused")
	if err != nil {
		t.Fatalf("a did not refuse a static peer without encrypt=false on reload: %v\n%s", err, tail(a.proc.Logs(), 10))
	}
	if !strings.Contains(line, "encrypt=false") {
		t.Errorf("the refusal does not say encrypt=false: %s", line)
	}
	st, err := status(a)
	if err != nil {
		t.Fatal(err)
	}
	if p := st.Peer("k2"); p != nil {
		t.Errorf("a lists k2 after the refused reload: %+v", *p)
	}
	if err := pingOK(ctx, a, netip.MustParseAddr("10.244.10.1"), 1); err == nil {
		t.Error("a reaches k2's subnet after the refused reload")
	}
	pingPattern(a, kOverlay)
	pingPattern(a, b.overlay)
	stop()
	if pls, _, err := udpPayloads(pcap2, netip.AddrPortFrom(a.underlay, 0), netip.AddrPortFrom(k2Addr, 0)); err != nil || len(pls) > 0 {
		t.Errorf("a sent %d datagrams to k2 (%v)", len(pls), err)
	}
	t.Logf("reload refused: %s", line)
}

// ChaCha20-Poly1305 end to end, and the cipher being cluster-wide: a and b
// seal with ChaCha20-Poly1305 and carry a ping and an iperf3 transfer; c
// seals with AES-256-GCM and is refused by both (and refuses them), in
// status and in weft_peers_refused{reason="cipher"}, and not routed.
func TestEncryptedChaChaAndCipherMismatch(t *testing.T) {
	c := newCluster(t, "a", "b", "cc")
	a, b, cc := c.by["a"], c.by["b"], c.by["cc"]
	key := keygen(t, a)
	for _, n := range c.nodes {
		writeKeys(t, n, key)
		cipher := "chacha20-poly1305"
		if n == cc {
			cipher = "aes-256-gcm"
		}
		n.args = append(n.args, "--gossip-key-file", keyFile(n), "--encrypt", "--encrypt-cipher", cipher)
	}
	c.startAll()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if errs := pingAll(ctx, []*node{a, b}, 10*time.Second); len(errs) > 0 {
		t.Fatalf("the ChaCha20 hosts do not reach each other: %v", errs)
	}
	if _, err := b.host.IPerf3Server(5201); err != nil {
		t.Fatal(err)
	}
	res, err := a.host.IPerf3Client(ctx, b.overlay, netlab.IPerf3Options{Port: 5201, Seconds: 2})
	if err != nil || res.RecvBytes < 1<<20 {
		t.Fatalf("iperf3 a → b under ChaCha20-Poly1305: %+v, %v", res, err)
	}
	t.Logf("iperf3 a → b, ChaCha20-Poly1305: %.2f Gbit/s", res.ReceivedBPS/1e9)
	for _, n := range []*node{a, b} {
		st, err := status(n)
		if err != nil {
			t.Fatal(err)
		}
		if st.Node.Encryption == nil || st.Node.Encryption.Cipher != "chacha20-poly1305" {
			t.Fatalf("%s's encryption status: %s", n.name, st.raw)
		}
	}

	if err := pollUntil(time.Now().Add(10*time.Second), func() error {
		for _, pair := range [][2]*node{{a, cc}, {b, cc}, {cc, a}, {cc, b}} {
			st, err := status(pair[0])
			if err != nil {
				return err
			}
			p := st.Peer(pair[1].name)
			if p == nil || p.Via != "none" || !strings.Contains(p.Reason, "the cipher is cluster-wide") {
				return fmt.Errorf("%s does not show %s refused for its cipher: %s", pair[0].name, pair[1].name, st.summary())
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[*node]float64{a: 1, b: 1, cc: 2} {
		if v := counter(ctx, t, n, "weft_peers_refused", "reason", "cipher"); v != want {
			t.Errorf("%s: weft_peers_refused{reason=cipher} = %v, want %v", n.name, v, want)
		}
	}
	if err := pingOK(ctx, a, cc.overlay, 1); err == nil {
		t.Error("a reaches cc, which seals with another cipher")
	}
	if err := pingOK(ctx, cc, b.overlay, 1); err == nil {
		t.Error("cc reaches b, which seals with another cipher")
	}
}

// TestEncryptRefusesDirectRouting: --encrypt with --direct-routing would
// send on-link peers' traffic by plain kernel routes, unencrypted: weft run
// refuses it (and --check too) with exit 2, naming both flags, before it
// makes anything.
func TestEncryptRefusesDirectRouting(t *testing.T) {
	c := newCluster(t, "a")
	a := c.by["a"]
	for _, extra := range [][]string{{"--encrypt", "--direct-routing"}, {"--direct-routing", "--encrypt", "--check"}} {
		code, _, stderr := runWeft(t, a, runArgs(a, nil, extra...)...)
		if code != 2 || !strings.Contains(stderr, "--encrypt") || !strings.Contains(stderr, "--direct-routing") {
			t.Errorf("weft run %s: exit %d, %q; want 2 naming --encrypt and --direct-routing", strings.Join(extra, " "), code, stderr)
		}
		t.Logf("%s: %s", strings.Join(extra, " "), strings.TrimSpace(stderr))
		if links, err := weftLinks(a.host); err != nil || len(links) != 0 {
			t.Errorf("after the refusal, TUN links %v exist (%v)", links, err)
		}
	}
}
