package router

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/fakes"
	"github.com/weftnet/weft/tun"
)

// loadOut copies pkts into a fresh outbound working set as a TUN read would.
func loadOut(r *Router, pkts ...[]byte) *outboundState {
	s := r.w(0).newOutbound()
	for i, p := range pkts {
		s.sizes[i] = copy(s.bufs[i][encap.Headroom:], p)
	}
	return s
}

func TestForwardOutGroupsByPeerInOrder(t *testing.T) {
	r, _, conn := newTestRouter(encap.UDP, true)
	p1 := ipv4("10.244.1.0", "10.244.2.7", 100)
	p2 := ipv4("10.244.1.0", "10.244.3.1", 200)
	p3 := ipv4("10.244.1.0", "10.244.2.8", 300)
	noRoute := ipv4("10.244.1.0", "10.244.99.1", 60)
	own := ipv4("10.244.1.0", "10.244.1.9", 60) // our own subnet is never sent out
	garbage := []byte{0x45, 0, 0}
	s := loadOut(r, p1, p2, noRoute, p3, garbage, own)
	r.w(0).forwardOut(s, 6)

	got := conn.Groups()
	if len(got) != 2 {
		t.Fatalf("sent %d groups, want 2 (one per peer): %+v", len(got), got)
	}
	if got[0].Dst != addrB || len(got[0].Pkts) != 2 || !bytes.Equal(got[0].Pkts[0], p1) || !bytes.Equal(got[0].Pkts[1], p3) {
		t.Errorf("group to b = %v with %d packets, want p1, p3 in order to %v", got[0].Dst, len(got[0].Pkts), addrB)
	}
	if got[1].Dst != addrC || len(got[1].Pkts) != 1 || !bytes.Equal(got[1].Pkts[0], p2) {
		t.Errorf("group to c wrong: %+v", got[1])
	}
	d := r.Drops()
	if d["no_route"] != 2 || d["malformed"] != 1 {
		t.Errorf("drops = %v, want no_route=2 malformed=1", d)
	}
	tot := r.Totals()
	if tot.TxPackets != 3 || tot.TxBytes != 600 {
		t.Errorf("totals = %+v, want 3 packets, 600 bytes", tot)
	}
}

func TestForwardOutVXLANHeader(t *testing.T) {
	r, _, conn := newTestRouter(encap.VXLAN, true)
	p := ipv4("10.244.1.0", "10.244.2.7", 64)
	r.w(0).forwardOut(loadOut(r, p), 1)
	got := conn.Groups()
	if len(got) != 1 || len(got[0].Pkts) != 1 {
		t.Fatalf("sent %+v, want one datagram", got)
	}
	d := got[0].Pkts[0]
	want := append([]byte{0x08, 0, 0, 0, 0, 0, 1, 0}, macB[:]...)
	want = append(want, macA[:]...)
	want = append(want, 0x08, 0x00)
	want = append(want, p...)
	if !bytes.Equal(d, want) {
		t.Fatalf("datagram\n got %x\nwant %x", d, want)
	}
}

func TestForwardInChecksSourceAndDestination(t *testing.T) {
	r, dev, _ := newTestRouter(encap.UDP, true)
	good := ipv4("10.244.2.7", "10.244.1.0", 100)
	padded := append(ipv4("10.244.2.7", "10.244.1.5", 40), 0, 0, 0, 0) // trailing padding is trimmed
	s := r.w(0).newInbound()
	in := []datagram{
		{addrB, good},
		{netip.MustParseAddrPort("198.51.100.1:8285"), good},           // stranger
		{addrB, ipv4("10.244.3.1", "10.244.1.0", 100)},                 // b claims c's address
		{addrC, ipv4("10.244.3.1", "10.244.9.9", 100)},                 // not for us
		{addrB, []byte{0x45, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2}}, // truncated
		{addrB, padded},
	}
	for i, d := range in {
		s.load(i, d.payload)
		s.srcs[i] = d.src
	}
	r.w(0).forwardIn(s, len(in))
	got := dev.Packets()
	if len(got) != 2 || !bytes.Equal(got[0], good) || !bytes.Equal(got[1], padded[:40]) {
		t.Fatalf("wrote %d packets to the TUN, want the good one and the trimmed padded one: %x", len(got), got)
	}
	want := map[string]uint64{"unknown_peer": 1, "spoofed": 1, "not_local": 1, "malformed": 1}
	for k, v := range r.Drops() {
		if v != want[k] {
			t.Errorf("drops[%s] = %d, want %d", k, v, want[k])
		}
	}
	st := r.Status()
	if st[0].Name != "b" || st[0].RxPackets != 2 || st[0].LastSeen.IsZero() {
		t.Errorf("peer b status = %+v, want 2 packets received and a last-seen time", st[0])
	}
}

func vxlanDatagram(vni uint32, dst, src encap.MAC, etherType uint16, payload []byte) []byte {
	d := make([]byte, 22+len(payload))
	encap.PutVXLAN(d, vni, dst, src, etherType)
	copy(d[22:], payload)
	return d
}

func TestForwardInVXLAN(t *testing.T) {
	r, dev, conn := newTestRouter(encap.VXLAN, true)
	inner := ipv4("10.244.2.7", "10.244.1.0", 80)
	arpReq := make([]byte, 28)
	binary.BigEndian.PutUint16(arpReq[0:], 1)
	binary.BigEndian.PutUint16(arpReq[2:], 0x0800)
	arpReq[4], arpReq[5] = 6, 4
	binary.BigEndian.PutUint16(arpReq[6:], 1)
	copy(arpReq[8:14], macB[:])
	copy(arpReq[14:18], []byte{10, 244, 2, 0})
	copy(arpReq[24:28], []byte{10, 244, 1, 0})

	in := []datagram{
		{addrB, vxlanDatagram(1, macA, macB, encap.EtherTypeIPv4, inner)},
		{addrB, vxlanDatagram(7, macA, macB, encap.EtherTypeIPv4, inner)},            // wrong VNI
		{addrB, vxlanDatagram(1, macB, macB, encap.EtherTypeIPv4, inner)},            // not our MAC
		{addrB, vxlanDatagram(1, macA, macB, 0x88cc, inner)},                         // LLDP
		{addrB, vxlanDatagram(1, encap.Broadcast, macB, encap.EtherTypeARP, arpReq)}, // who has 10.244.1.0?
		{addrB, []byte{0x00, 0, 0, 0, 0, 0, 1, 0}},                                   // short, no I flag
	}
	s := r.w(0).newInbound()
	for i, d := range in {
		s.load(i, d.payload)
		s.srcs[i] = d.src
	}
	r.w(0).forwardIn(s, len(in))
	if got := dev.Packets(); len(got) != 1 || !bytes.Equal(got[0], inner) {
		t.Fatalf("TUN got %x, want only the inner packet", got)
	}
	want := map[string]uint64{"vni_mismatch": 1, "not_our_mac": 1, "bad_ethertype": 1, "malformed": 1}
	for k, v := range r.Drops() {
		if v != want[k] {
			t.Errorf("drops[%s] = %d, want %d", k, v, want[k])
		}
	}
	if len(conn.OneSent()) != 1 {
		t.Fatalf("sent %d ARP replies, want 1", len(conn.OneSent()))
	}
	reply := conn.OneSent()[0]
	f, err := encap.ParseVXLAN(reply)
	if err != nil || f.Dst != macB || f.Src != macA || f.EtherType != encap.EtherTypeARP {
		t.Fatalf("ARP reply frame %+v, %v", f, err)
	}
	if op := binary.BigEndian.Uint16(f.Payload[6:8]); op != 2 || !bytes.Equal(f.Payload[8:14], macA[:]) {
		t.Errorf("ARP reply op %d sha %x, want 2 and our MAC", op, f.Payload[8:14])
	}
}

func TestForwardIPv6(t *testing.T) {
	dev, conn := fakes.NewDevice(true), fakes.NewSocket(true)
	cfg := testConfig(encap.UDP)
	cfg.Local.Subnets = []netip.Prefix{netip.MustParsePrefix("fd00:1::/64")}
	r := New(cfg, Worker{Dev: dev, In: conn, Out: conn})
	r.SetPeers([]Peer{{Name: "b", Subnets: []netip.Prefix{netip.MustParsePrefix("fd00:2::/64")}, Underlay: addrB, State: "alive"}})
	out := ipv6("fd00:1::1", "fd00:2::9", 100)
	r.w(0).forwardOut(loadOut(r, out), 1)
	if g := conn.Groups(); len(g) != 1 || !bytes.Equal(g[0].Pkts[0], out) {
		t.Fatalf("IPv6 packet not sent to b: %+v", g)
	}
	s := r.w(0).newInbound()
	in := ipv6("fd00:2::9", "fd00:1::1", 50)
	s.load(0, in)
	s.srcs[0] = addrB
	r.w(0).forwardIn(s, 1)
	if got := dev.Packets(); len(got) != 1 || !bytes.Equal(got[0], in) {
		t.Fatalf("IPv6 packet not written: %x", got)
	}
}

func TestLoopsForwardAndStopWhenClosed(t *testing.T) {
	r, dev, conn := newTestRouter(encap.UDP, true)
	r.Start()

	dev.In <- [][]byte{ipv4("10.244.1.0", "10.244.2.1", 80)}
	conn.In <- []fakes.Datagram{{Src: addrC, Payload: ipv4("10.244.3.1", "10.244.1.0", 90)}}
	deadline := time.Now().Add(5 * time.Second)
	for (len(conn.Groups()) == 0 || len(dev.Packets()) == 0) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if len(conn.Groups()) != 1 || len(dev.Packets()) != 1 {
		t.Fatalf("forwarded %d out, %d in; want 1 each", len(conn.Groups()), len(dev.Packets()))
	}
	dev.Close()
	conn.Close()
	stopped := make(chan struct{})
	go func() { r.Wait(); close(stopped) }()
	select {
	case <-stopped:
		if err := r.Err(); err != nil {
			t.Fatalf("a loop failed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the loops did not stop after the device and socket closed")
	}
}

// Packets that the TUN returns one per read leave together when they were
// already queued: the loop reads on while ReadMore finds another.
func TestOutboundSendsQueuedReadsAsOneBatch(t *testing.T) {
	r, dev, conn := newTestRouter(encap.UDP, true)
	for i := range 5 {
		dev.In <- [][]byte{ipv4("10.244.1.0", "10.244.2.1", 100+i)}
	}
	r.Start()
	defer func() { dev.Close(); conn.Close(); r.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for len(conn.Groups()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	g := conn.Groups()
	if len(g) != 1 || len(g[0].Pkts) != 5 {
		t.Fatalf("sent %d groups (first %v), want the 5 queued packets in one", len(g), g)
	}
	for i, p := range g[0].Pkts {
		if len(p) != 100+i {
			t.Errorf("packet %d is %d bytes, want %d: order lost", i, len(p), 100+i)
		}
	}
	// A lone packet on an idle device goes out on its own, at once.
	dev.In <- [][]byte{ipv4("10.244.1.0", "10.244.2.1", 60)}
	for len(conn.Groups()) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if g := conn.Groups(); len(g) != 2 || len(g[1].Pkts) != 1 {
		t.Fatalf("after a lone packet: %d groups, want 2 with the last holding 1", len(g))
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
}

func loadIn(r *Router, n int) *inboundState {
	s := r.w(0).newInbound()
	for i := range n {
		s.load(i, ipv4("10.244.2.1", "10.244.1.0", 200))
		s.srcs[i] = addrB
	}
	return s
}

// What the TUN refused is counted as tun_write_error, and neither as
// received packets nor as received bytes.
func TestTUNWriteLossCountedOnce(t *testing.T) {
	r, dev, _ := newTestRouter(encap.UDP, false)
	dev.Refuse = 1
	r.w(0).forwardIn(loadIn(r, 3), 3)
	if got := r.Drops()["tun_write_error"]; got != 1 {
		t.Errorf("tun_write_error = %d after one refused packet of 3, want 1", got)
	}
	if tot := r.Totals(); tot.RxPackets != 2 || tot.RxBytes != 400 {
		t.Errorf("totals %+v, want 2 packets and 400 bytes received (the 2 written)", tot)
	}
	if _, w := r.TUNSyscalls(); w != 1 {
		t.Errorf("tun_write syscalls = %d, want the 1 the device reported", w)
	}
}

// Each peer's packets are written with its checksum mode: partial for a
// peer with the capability, full for the others.
func TestForwardInWritesByChecksumMode(t *testing.T) {
	dev, conn := fakes.NewDevice(true), fakes.NewSocket(true)
	r := New(testConfig(encap.UDP), Worker{Dev: dev, In: conn, Out: conn})
	peers := testPeers()
	peers[1].PartialChecksums = true // c
	r.SetPeers(peers)
	s := r.w(0).newInbound()
	in := []datagram{
		{addrB, ipv4("10.244.2.7", "10.244.1.0", 100)},
		{addrC, ipv4("10.244.3.7", "10.244.1.0", 110)},
		{addrB, ipv4("10.244.2.7", "10.244.1.0", 120)},
	}
	for i, d := range in {
		s.load(i, d.payload)
		s.srcs[i] = d.src
	}
	r.w(0).forwardIn(s, len(in))
	got := dev.Packets()
	if len(dev.Modes()) != 2 || dev.Modes()[0] != tun.ChecksumFull || dev.Modes()[1] != tun.ChecksumPartial {
		t.Fatalf("write modes %v, want full (b) then partial (c)", dev.Modes())
	}
	if len(got) != 3 || len(got[0]) != 100 || len(got[1]) != 120 || len(got[2]) != 110 {
		t.Fatalf("wrote %d packets, want b's two in order, then c's", len(got))
	}
}

// tcp4 is an IPv4 TCP segment with a partial checksum, as Read returns one.
func tcp4(src, dst string, payload int) []byte {
	p := make([]byte, 40+payload)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, 6
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	p[32], p[33] = 5<<4, 0x10
	for i := 40; i < len(p); i++ {
		p[i] = byte(i * 7)
	}
	var ps uint32 = 6 + uint32(len(p)-20)
	for i := 12; i < 20; i += 2 {
		ps += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for ps > 0xffff {
		ps = ps>>16 + ps&0xffff
	}
	binary.BigEndian.PutUint16(p[36:], uint16(ps))
	return p
}

func onesSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// A peer without the capability gets complete checksums; one with it gets
// the partial checksum as read.
func TestForwardOutCompletesChecksumsForLegacyPeers(t *testing.T) {
	r, _, conn := newTestRouter(encap.UDP, true)
	peers := testPeers()
	peers[1].PartialChecksums = true // c
	r.SetPeers(peers)
	toB, toC := tcp4("10.244.1.0", "10.244.2.7", 300), tcp4("10.244.1.0", "10.244.3.7", 300)
	r.w(0).forwardOut(loadOut(r, toB, toC), 2)
	g := conn.Groups()
	if len(g) != 2 {
		t.Fatalf("sent %d groups, want 2", len(g))
	}
	b, c := g[0].Pkts[0], g[1].Pkts[0]
	pseudo := append(append([]byte{}, b[12:20]...), 0, 6, byte((len(b)-20)>>8), byte(len(b)-20))
	if onesSum(append(pseudo, b[20:]...)) != 0xffff {
		t.Errorf("the legacy peer b got a TCP checksum that does not verify")
	}
	if !bytes.Equal(c, toC) {
		t.Errorf("the capable peer c got its packet changed")
	}
}

func TestSteadyStateForwardingAllocatesNothing(t *testing.T) {
	for _, kind := range []encap.Kind{encap.UDP, encap.VXLAN} {
		r, _, _ := newTestRouter(kind, false)
		const n = 64
		pkts := make([][]byte, n)
		for i := range pkts {
			pkts[i] = ipv4("10.244.1.0", []string{"10.244.2.1", "10.244.3.1"}[i%2], 1400)
		}
		out := loadOut(r, pkts...)
		if a := testing.AllocsPerRun(100, func() { r.w(0).forwardOut(out, n) }); a != 0 {
			t.Errorf("%s: forwardOut allocates %.1f times per batch of %d, want 0", kind, a, n)
		}
		in := r.w(0).newInbound()
		for i := range n {
			p := ipv4("10.244.2.1", "10.244.1.0", 1400)
			if kind == encap.VXLAN {
				p = vxlanDatagram(1, macA, macB, encap.EtherTypeIPv4, p)
			}
			in.load(i, p)
			in.srcs[i] = addrB
		}
		if a := testing.AllocsPerRun(100, func() { r.w(0).forwardIn(in, n) }); a != 0 {
			t.Errorf("%s: forwardIn allocates %.1f times per batch of %d, want 0", kind, a, n)
		}
		if d := r.Drops(); d["malformed"]+d["spoofed"]+d["unknown_peer"]+d["not_local"] != 0 {
			t.Errorf("%s: unexpected drops %v", kind, d)
		}
	}
}

func benchmarkOut(b *testing.B, kind encap.Kind, size int) {
	r, _, _ := newTestRouter(kind, false)
	const n = 64
	pkts := make([][]byte, n)
	for i := range pkts {
		pkts[i] = ipv4("10.244.1.0", "10.244.2.1", size)
	}
	s := loadOut(r, pkts...)
	b.SetBytes(int64(n * size))
	b.ReportAllocs()
	for b.Loop() {
		r.w(0).forwardOut(s, n)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/packet")
}

func benchmarkIn(b *testing.B, kind encap.Kind, size int) {
	r, _, _ := newTestRouter(kind, false)
	const n = 64
	s := r.w(0).newInbound()
	for i := range n {
		p := ipv4("10.244.2.1", "10.244.1.0", size)
		if kind == encap.VXLAN {
			p = vxlanDatagram(1, macA, macB, encap.EtherTypeIPv4, p)
		}
		s.load(i, p)
		s.srcs[i] = addrB
	}
	b.SetBytes(int64(n * size))
	b.ReportAllocs()
	for b.Loop() {
		r.w(0).forwardIn(s, n)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/packet")
}

func BenchmarkForwardOutUDP(b *testing.B)   { benchmarkOut(b, encap.UDP, 1400) }
func BenchmarkForwardOutVXLAN(b *testing.B) { benchmarkOut(b, encap.VXLAN, 1400) }
func BenchmarkForwardInUDP(b *testing.B)    { benchmarkIn(b, encap.UDP, 1400) }
func BenchmarkForwardInVXLAN(b *testing.B)  { benchmarkIn(b, encap.VXLAN, 1400) }
