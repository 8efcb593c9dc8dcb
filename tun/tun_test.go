package tun

import (
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

func TestReadableReportsAQueuedPacketWithoutAllocating(t *testing.T) {
	inPrivateNetns(t, func() {
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		d, err := Open(Config{Name: "wefttest0", MTU: 1400, Addr: netip.MustParsePrefix("10.99.0.1/24")}, log)
		if err != nil {
			t.Errorf("open: %v", err)
			return
		}
		defer d.Close()
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
