package tun

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// udpTo builds IPv4 UDP datagrams from 10.99.0.2:7000 to 10.99.0.1:port
// (the test TUN's own address), with complete checksums, as a peer would
// send a train of them.
func udpTo(port uint16, n, size int) [][]byte {
	var pkts [][]byte
	for i := range n {
		s := spec{udp: true, full: true, payload: size, id: uint16(i)}
		p := s.packet()
		copy(p[12:20], []byte{10, 99, 0, 2, 10, 99, 0, 1})
		binary.BigEndian.PutUint16(p[20:], 7000)
		binary.BigEndian.PutUint16(p[22:], port)
		for j := 28; j < len(p); j++ {
			p[j] = byte(i)
		}
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^refSum(p[:20]))
		p[26], p[27] = 0, 0
		binary.BigEndian.PutUint16(p[26:], ^refSum(append(refPseudo(p, false, unix.IPPROTO_UDP, len(p)-20), p[20:]...)))
		pkts = append(pkts, p)
	}
	return pkts
}

func withHeadroom(pkts [][]byte) [][]byte {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = append(make([]byte, testOff, testOff+len(p)), p...)
	}
	return bufs
}

// packed lays the packets back to back in one buffer, as UDP GRO leaves
// datagrams, and returns views of them without headroom: a write that
// touched the bytes in front of a packet would corrupt the one before.
func packed(pkts [][]byte) [][]byte {
	var all []byte
	for _, p := range pkts {
		all = append(all, p...)
	}
	views := make([][]byte, len(pkts))
	at := 0
	for i, p := range pkts {
		views[i] = all[at : at+len(p) : at+len(p)]
		at += len(p)
	}
	return views
}

// layouts are the two ways the router hands packets to Write: in buffers
// with headroom for the virtio-net header, and as views without any.
var layouts = []struct {
	name   string
	offset int
	bufs   func([][]byte) [][]byte
}{{"headroom", testOff, withHeadroom}, {"views", 0, packed}}

func listenUDP(t *testing.T) *net.UDPConn {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.99.0.1:0")))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return c
}

// received reads datagrams until none comes for a while.
func received(c *net.UDPConn) [][]byte {
	var got [][]byte
	b := make([]byte, 65536)
	for {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(b)
		if err != nil {
			return got
		}
		got = append(got, bytes.Clone(b[:n]))
	}
}

// The kernel takes what Write coalesces, in both checksum modes, and drops
// (only) a datagram whose checksum is wrong in full mode.
func TestWriteDeliversThroughTheKernel(t *testing.T) {
	withTestTUN(t, func(d *Device) {
		if !d.USO() {
			t.Skip("SKIPPED: the kernel has no UDP segmentation offload on TUN")
		}
		c := listenUDP(t)
		defer c.Close()
		port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		for _, l := range layouts {
			for _, mode := range []Checksum{ChecksumFull, ChecksumPartial} {
				pkts := udpTo(port, 8, 1000)
				pkts[7] = pkts[7][:len(pkts[7])-300] // a short last one
				binary.BigEndian.PutUint16(pkts[7][2:], uint16(len(pkts[7])))
				binary.BigEndian.PutUint16(pkts[7][24:], uint16(len(pkts[7])-20))
				pkts[7][10], pkts[7][11], pkts[7][26], pkts[7][27] = 0, 0, 0, 0
				binary.BigEndian.PutUint16(pkts[7][10:], ^refSum(pkts[7][:20]))
				binary.BigEndian.PutUint16(pkts[7][26:], ^refSum(append(refPseudo(pkts[7], false, unix.IPPROTO_UDP, len(pkts[7])-20), pkts[7][20:]...)))
				if mode == ChecksumFull {
					pkts[3][40] ^= 0xff // corrupt one: it must not be delivered
				} else {
					for _, p := range pkts {
						p[26], p[27] = 0, 0
						binary.BigEndian.PutUint16(p[26:], refPartial(p, false, 20, unix.IPPROTO_UDP))
					}
				}
				payloads := map[string]bool{}
				for i, p := range pkts {
					if mode == ChecksumPartial || i != 3 {
						payloads[string(p[28:])] = true
					}
				}
				res, err := d.Write(l.bufs(pkts), l.offset, mode)
				if err != nil || res.Packets != 8 || res.Lost != 0 {
					t.Fatalf("%s, %v: write %+v, %v", l.name, mode, res, err)
				}
				want := 8
				if mode == ChecksumFull {
					want = 7
					if res.Syscalls != 3 {
						t.Errorf("%v: %d writes, want 3 (3 segments, the bad one alone, 4 segments)", mode, res.Syscalls)
					}
				} else if res.Syscalls != 1 {
					t.Errorf("%v: %d writes, want 1", mode, res.Syscalls)
				}
				got := received(c)
				if len(got) != want {
					t.Fatalf("%v: %d datagrams delivered, want %d", mode, len(got), want)
				}
				for _, g := range got {
					if len(g) == 0 || (mode == ChecksumFull && g[0] == 3) {
						t.Errorf("%s, %v: datagram %d delivered (the corrupted one?)", l.name, mode, g[0])
					} else if !payloads[string(g)] {
						t.Errorf("%s, %v: datagram %d delivered changed", l.name, mode, g[0])
					}
				}
			}
		}
	})
}

// A local UDP GSO send reaches the TUN as one superpacket; Read splits it.
func TestReadSplitsAKernelSuperpacket(t *testing.T) {
	withTestTUN(t, func(d *Device) {
		if !d.USO() {
			t.Skip("SKIPPED: the kernel has no UDP segmentation offload on TUN")
		}
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.99.0.2:9")))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		raw, _ := c.SyscallConn()
		raw.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, 1000) })
		if err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, 4500)
		for i := range payload {
			payload[i] = byte(i / 1000)
		}
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		bufs, sizes := newTestBufs(batchSize)
		var n int
		for n == 0 || bufs[0][testOff+9] != unix.IPPROTO_UDP { // skip any IPv6/ICMP noise
			if n, err = d.Read(bufs, sizes, testOff); err != nil {
				t.Fatal(err)
			}
		}
		if n != 5 {
			t.Fatalf("read %d packets, want the 5 segments", n)
		}
		for i := range n {
			p := bufs[i][testOff : testOff+sizes[i]]
			CompleteChecksum(p)
			if refSum(p[:20]) != 0xffff || !refL4Valid(p, false, 20, unix.IPPROTO_UDP) || p[28] != byte(i) {
				t.Errorf("segment %d wrong: %x", i, p[:32])
			}
		}
	})
}

// When the kernel refuses a coalesced write, its packets are written one by
// one (none lost) and the device backs off: equal segments only after a
// short tail was refused, then serial.
func TestWriteFallbackLosesNothing(t *testing.T) {
	withTestTUN(t, func(d *Device) {
		c := listenUDP(t)
		defer c.Close()
		port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		q := d.queues[0]
		refuse := func(fd uintptr) bool { // a 6.6.44 kernel: coalesced writes refused
			if len(q.iovs) > 2 {
				q.wvErr = unix.EINVAL
				return true
			}
			return q.doWritev(fd) // a lone packet behind its header
		}
		pkts := udpTo(port, 4, 1000)
		pkts = append(pkts, udpTo(port, 1, 500)...)
		binary.BigEndian.PutUint16(pkts[4][4:], 4)
		pkts[4][10], pkts[4][11] = 0, 0
		binary.BigEndian.PutUint16(pkts[4][10:], ^refSum(pkts[4][:20]))
		for _, l := range layouts {
			q.state.fallback.Store(int32(FallbackNone))
			q.writevFn = refuse
			res, err := q.Write(l.bufs(pkts), l.offset, ChecksumFull)
			if err != nil || res.Packets != 5 || res.Lost != 0 || res.Syscalls != 6 {
				t.Errorf("%s: refused write: %+v, %v; want 5 packets in 1 refused and 5 single writes", l.name, res, err)
			}
			if d.Fallback() != FallbackEqualSegments || !d.WriteFallback() {
				t.Errorf("%s: fallback %v, want equal-segments", l.name, d.Fallback())
			}
			res, err = q.Write(l.bufs(pkts), l.offset, ChecksumFull)
			if err != nil || res.Packets != 5 || res.Syscalls != 6 { // 4 equal refused, then 4 + 1 alone
				t.Errorf("%s: second write: %+v, %v", l.name, res, err)
			}
			if d.Fallback() != FallbackSerial {
				t.Errorf("%s: fallback %v, want serial", l.name, d.Fallback())
			}
			res, _ = q.Write(l.bufs(pkts), l.offset, ChecksumFull)
			if res.Syscalls != 5 || res.Packets != 5 {
				t.Errorf("%s: serial write: %+v", l.name, res)
			}
			if got := received(c); len(got) != 15 {
				t.Errorf("%s: %d datagrams delivered, want all 15", l.name, len(got))
			}
		}
	})
}

func TestQueueWriteAllocatesNothing(t *testing.T) {
	withTestTUN(t, func(d *Device) {
		for _, mode := range []Checksum{ChecksumFull, ChecksumPartial} {
			bufs := benchTCPBatch(64, 1400, mode)
			if a := testing.AllocsPerRun(50, func() { d.Write(bufs, testOff, mode) }); a != 0 {
				t.Errorf("%v: Write allocates %.1f times per batch, want 0", mode, a)
			}
			pkts := make([][]byte, len(bufs))
			for i, b := range bufs {
				pkts[i] = b[testOff:]
			}
			views := packed(pkts)
			views = append(views, packed(udpTo(9, 1, 100))...) // and one alone
			if a := testing.AllocsPerRun(50, func() { d.Write(views, 0, mode) }); a != 0 {
				t.Errorf("%v: Write of views allocates %.1f times per batch, want 0", mode, a)
			}
		}
	})
}

func TestMultiQueue(t *testing.T) {
	inPrivateNetns(t, func() {
		d, err := Open(Config{Name: "wefttest1", MTU: 1400, Addrs: []netip.Prefix{netip.MustParsePrefix("10.98.0.1/24")}, Queues: 3}, discardLog())
		if err != nil {
			t.Errorf("open: %v", err)
			return
		}
		defer d.Close()
		if err := d.MultiQueueErr(); err != nil {
			t.Logf("kernel refused multi-queue: %v", err)
			return
		}
		if len(d.Queues()) != 3 {
			t.Errorf("%d queues, want 3", len(d.Queues()))
		}
		if link, err := netlink.LinkByName("wefttest1"); err != nil || link.Attrs().GSOMaxSegs != batchSize {
			t.Logf("gso_max_segs not bounded to %d (err %v): the kernel keeps its own", batchSize, err)
		}
		for i, q := range d.Queues() {
			if q.BatchSize() != batchSize || q.Readable() {
				t.Errorf("queue %d: batch %d, readable %v", i, q.BatchSize(), q.Readable())
			}
		}
	})
}

func TestNoOffloadOnePacketPerCall(t *testing.T) {
	inPrivateNetns(t, func() {
		d, err := Open(Config{Name: "wefttest2", MTU: 1400, Addrs: []netip.Prefix{netip.MustParsePrefix("10.97.0.1/24")}, NoOffload: true}, discardLog())
		if err != nil {
			t.Errorf("open: %v", err)
			return
		}
		defer d.Close()
		if d.VNetHdr() || d.BatchSize() != 1 {
			t.Errorf("no-offload device: vnet %v, batch %d", d.VNetHdr(), d.BatchSize())
		}
		c := listenUDPOn(t, "10.97.0.1:0")
		defer c.Close()
		pkts := udpTo(uint16(c.LocalAddr().(*net.UDPAddr).Port), 3, 200)
		for _, p := range pkts {
			copy(p[12:20], []byte{10, 97, 0, 2, 10, 97, 0, 1})
			p[10], p[11], p[26], p[27] = 0, 0, 0, 0 // no UDP checksum
			binary.BigEndian.PutUint16(p[10:], ^refSum(p[:20]))
		}
		res, err := d.Write(withHeadroom(pkts), testOff, ChecksumFull)
		if err != nil || res.Packets != 3 || res.Syscalls != 3 {
			t.Errorf("write %+v, %v", res, err)
		}
		if got := received(c); len(got) != 3 {
			t.Errorf("%d datagrams delivered, want 3", len(got))
		}
	})
}

func listenUDPOn(t *testing.T, addr string) *net.UDPConn {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return c
}

// benchTCPBatch is n TCP segments of one flow from 10.99.0.3 to 10.99.0.2
// (routed to the TUN, not local: with forwarding off the kernel drops them
// right after the TUN takes them), behind headroom, with complete or
// partial checksums.
func benchTCPBatch(n, payload int, mode Checksum) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		s := spec{payload: payload, seq: uint32(i * payload), id: uint16(i), full: mode == ChecksumFull}
		p := s.packet()
		copy(p[12:20], []byte{10, 99, 0, 3, 10, 99, 0, 2})
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^refSum(p[:20]))
		binary.BigEndian.PutUint16(p[36:], refPartial(p, false, 20, unix.IPPROTO_TCP))
		if mode == ChecksumFull {
			CompleteChecksum(p)
		}
		b := make([]byte, testOff, testOff+maxIPLen)
		bufs[i] = append(b, p...)
	}
	return bufs
}
