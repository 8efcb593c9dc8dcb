package tun

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inPrivateNetns runs f on a thread of its own in a new, empty network
// namespace, so the test's TUN device and traffic touch nothing else. The
// thread is discarded afterwards (the goroutine exits while still locked).
func inPrivateNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to create a network namespace and a TUN device (CI runs as root)")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare network namespace: %v", err)
			return
		}
		f()
	}()
	<-done
}

// withTestTUN runs f with a TUN device (10.99.0.1/24, MTU 1400) in a
// private network namespace, and closes it afterwards.
func withTestTUN(t *testing.T, f func(d *Device)) {
	t.Helper()
	inPrivateNetns(t, func() {
		d, err := Open(Config{Name: "wefttest0", MTU: 1400, Addrs: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/24")}}, discardLog())
		if err != nil {
			t.Errorf("open: %v", err)
			return
		}
		defer d.Close()
		f(d)
	})
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestReadableReportsAQueuedPacketWithoutAllocating(t *testing.T) {
	withTestTUN(t, func(d *Device) {
		if d.Readable() {
			t.Errorf("Readable before any packet was sent")
		}
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.99.0.2:9")))
		if err != nil {
			t.Errorf("dial: %v", err)
			return
		}
		defer c.Close()
		if _, err := c.Write([]byte("weft")); err != nil {
			t.Errorf("send: %v", err)
			return
		}
		deadline := time.Now().Add(2 * time.Second)
		for !d.Readable() {
			if time.Now().After(deadline) {
				t.Errorf("Readable stayed false after a datagram was routed into the TUN")
				return
			}
			time.Sleep(time.Millisecond)
		}
		if a := testing.AllocsPerRun(100, func() { d.Readable() }); a != 0 {
			t.Errorf("Readable allocates %.1f times per call, want 0", a)
		}
		bufs := [][]byte{make([]byte, 65535)}
		sizes := []int{0}
		n, err := d.Read(bufs, sizes, 32)
		if err != nil || n != 1 {
			t.Errorf("read = %d, %v; want the one packet", n, err)
			return
		}
		if got := bufs[0][32+sizes[0]-4 : 32+sizes[0]]; string(got) != "weft" {
			t.Errorf("read a packet ending %q, want the datagram's payload", got)
		}
		if d.Readable() {
			t.Errorf("Readable after the only packet was read")
		}
	})
}

// TestReadMore checks the batch's non-waiting read on a real TUN: nothing
// queued is 0 at once, queued packets are read in order, then 0 again; it
// allocates nothing, and a closed device is os.ErrClosed.
func TestReadMore(t *testing.T) {
	withTestTUN(t, func(d *Device) {
		bufs := [][]byte{make([]byte, 65535)}
		sizes := []int{0}
		start := time.Now()
		if n, err := d.ReadMore(bufs, sizes, 32); n != 0 || err != nil {
			t.Errorf("ReadMore of an empty queue = %d, %v; want 0, nil", n, err)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("ReadMore of an empty queue waited %v", el)
		}
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.99.0.2:9")))
		if err != nil {
			t.Errorf("dial: %v", err)
			return
		}
		defer c.Close()
		for _, m := range []string{"one", "two"} {
			if _, err := c.Write([]byte(m)); err != nil {
				t.Errorf("send: %v", err)
				return
			}
		}
		deadline := time.Now().Add(2 * time.Second)
		for !d.Readable() {
			if time.Now().After(deadline) {
				t.Errorf("no packet reached the TUN")
				return
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // the second datagram too
		for _, want := range []string{"one", "two"} {
			n, err := d.ReadMore(bufs, sizes, 32)
			if err != nil || n != 1 {
				t.Errorf("ReadMore = %d, %v; want the packet %q", n, err, want)
				return
			}
			if got := bufs[0][32+sizes[0]-len(want) : 32+sizes[0]]; string(got) != want {
				t.Errorf("ReadMore read a packet ending %q, want %q", got, want)
			}
		}
		if n, err := d.ReadMore(bufs, sizes, 32); n != 0 || err != nil {
			t.Errorf("ReadMore after the queue emptied = %d, %v; want 0, nil", n, err)
		}
		if a := testing.AllocsPerRun(100, func() { _, _ = d.ReadMore(bufs, sizes, 32) }); a != 0 {
			t.Errorf("ReadMore allocates %.1f times per call, want 0", a)
		}
		if _, err := d.ReadMore(bufs, sizes, 4); err == nil {
			t.Errorf("ReadMore with no room for the virtio-net header: no error")
		}
		d.Close()
		if _, err := d.ReadMore(bufs, sizes, 32); !errors.Is(err, os.ErrClosed) {
			t.Errorf("ReadMore after close: %v, want os.ErrClosed", err)
		}
	})
}

func TestCloseTwice(t *testing.T) {
	withTestTUN(t, func(d *Device) {
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("second close: %v", err)
		}
		if _, err := d.Read([][]byte{make([]byte, 65600)}, []int{0}, 32); !errors.Is(err, os.ErrClosed) {
			t.Errorf("read after close: %v, want os.ErrClosed", err)
		}
		if _, err := d.Write([][]byte{make([]byte, 60)}, 32, ChecksumFull); !errors.Is(err, os.ErrClosed) {
			t.Errorf("write after close: %v, want os.ErrClosed", err)
		}
	})
}

func TestWriteProbeOnThisKernel(t *testing.T) {
	withTestTUN(t, func(d *Device) {
		var uname unix.Utsname
		_ = unix.Uname(&uname)
		if err := d.probeWrites(d.queues[0]); err != nil {
			t.Errorf("probe: %v", err)
		}
		if f := d.Fallback(); f != FallbackNone {
			// Not a failure of weft's: this kernel has the 6.6.44 / 6.1 LTS
			// regression, and the probe found it.
			t.Logf("kernel %s refuses some coalesced TUN writes; fallback %s", unix.ByteSliceToString(uname.Release[:]), f)
		}
		// The probe's packets are dropped by the IP layer: nothing comes
		// back out of the TUN (no RST, no ICMP).
		time.Sleep(50 * time.Millisecond)
		if d.Readable() {
			t.Errorf("the probe provoked a packet back into the TUN")
		}
	})
}

func TestProbeSegmentChecksums(t *testing.T) {
	for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		p := probeSegment(proto, 1, 42, 61)
		if c := checksum(p[:20], 0); c != 0xffff {
			t.Errorf("proto %d: IPv4 header sums to %#04x, want 0xffff", proto, c)
		}
		pseudo := append(append([]byte{}, p[12:20]...), 0, proto, byte((len(p)-20)>>8), byte(len(p)-20))
		if c := checksum(p[20:], checksum(pseudo, 0)); c != 0xffff {
			t.Errorf("proto %d: transport checksum sums to %#04x, want 0xffff", proto, c)
		}
	}
}
