package tun

import (
	"net/netip"
	"os"
	"runtime"
	"testing"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// wireguard-go's split and GRO, the code weft used before, on the same
// inputs. They are unexported; linkname reaches them for the comparison
// (test only). The tables are opaque here.

//go:linkname wgHandleVirtioRead golang.zx2c4.com/wireguard/tun.handleVirtioRead
func wgHandleVirtioRead(in []byte, bufs [][]byte, sizes []int, offset int) (int, error)

//go:linkname wgNewTCPGROTable golang.zx2c4.com/wireguard/tun.newTCPGROTable
func wgNewTCPGROTable() unsafe.Pointer

//go:linkname wgNewUDPGROTable golang.zx2c4.com/wireguard/tun.newUDPGROTable
func wgNewUDPGROTable() unsafe.Pointer

//go:linkname wgTCPReset golang.zx2c4.com/wireguard/tun.(*tcpGROTable).reset
func wgTCPReset(unsafe.Pointer)

//go:linkname wgUDPReset golang.zx2c4.com/wireguard/tun.(*udpGROTable).reset
func wgUDPReset(unsafe.Pointer)

//go:linkname wgHandleGRO golang.zx2c4.com/wireguard/tun.handleGRO
func wgHandleGRO(bufs [][]byte, offset int, tcpTable, udpTable unsafe.Pointer, canUDPGRO bool, toWrite *[]int) error

var _ = wgtun.ErrTooManySegments // the package the linknames point into

// The superpacket of the benchmarks: 64,000 bytes of TCP payload over
// IPv4, MSS 1400 (46 segments), as the kernel hands it over.
var benchSuper = spec{payload: 64000, gso: 1400}

func BenchmarkSplit(b *testing.B) {
	sp := benchSuper.superpacket()
	bufs, sizes := newTestBufs(64)
	readBuf := make([]byte, len(sp))
	run := func(b *testing.B, f func()) {
		b.SetBytes(int64(benchSuper.payload))
		b.ReportAllocs()
		for b.Loop() {
			f()
		}
	}
	// Each iteration first copies the superpacket to where read() puts it
	// (in front of bufs[0] for weft, wireguard's own read buffer), so the
	// read's copy is in both.
	b.Run("weft-partial", func(b *testing.B) {
		run(b, func() { splitInPlace(sp, bufs, sizes) })
	})
	b.Run("weft-full", func(b *testing.B) { // split, then CompleteChecksum per segment (a legacy peer)
		run(b, func() {
			n, _ := splitInPlace(sp, bufs, sizes)
			for i := range n {
				CompleteChecksum(bufs[i][testOff : testOff+sizes[i]])
			}
		})
	})
	b.Run("wireguard", func(b *testing.B) {
		run(b, func() {
			copy(readBuf, sp)
			wgHandleVirtioRead(readBuf, bufs, sizes, testOff)
		})
	})
}

func BenchmarkCoalesce(b *testing.B) {
	const n, payload = 64, 1400
	for _, c := range []struct {
		name string
		mode Checksum
		wg   bool
	}{{"weft-partial", ChecksumPartial, false}, {"weft-full", ChecksumFull, false}, {"wireguard", ChecksumFull, true}} {
		b.Run(c.name, func(b *testing.B) {
			bufs := benchTCPBatch(n, payload, c.mode)
			pristine := make([][]byte, n)
			for i := range bufs {
				pristine[i] = append([]byte(nil), bufs[i][:testOff+60]...)
			}
			lens := make([]int, n)
			for i := range bufs {
				lens[i] = len(bufs[i])
			}
			var co coalescer
			tt, ut := wgNewTCPGROTable(), wgNewUDPGROTable()
			toWrite := make([]int, 0, n)
			b.SetBytes(n * payload)
			b.ReportAllocs()
			for b.Loop() {
				// wireguard's GRO changes the head's headers and lengths:
				// both get them back each time.
				for i := range bufs {
					bufs[i] = bufs[i][:lens[i]]
					copy(bufs[i], pristine[i])
				}
				if c.wg {
					toWrite = toWrite[:0]
					wgHandleGRO(bufs, testOff, tt, ut, true, &toWrite)
					wgTCPReset(tt)
					wgUDPReset(ut)
				} else {
					co.plan(bufs, testOff, c.mode, true, FallbackNone)
				}
			}
		})
	}
}

// BenchmarkTUNWrite writes 64 segments of one TCP flow to a real TUN (in a
// private namespace; the kernel drops them, not forwarding, right after
// the TUN takes them): weft's Write (gather writes) in both modes; the same
// plan with the payloads copied into one buffer first (what the gather
// write saves); wireguard's Write.
func BenchmarkTUNWrite(b *testing.B) {
	const n, payload = 64, 1400
	withTestTUNB(b, func(d *Device, wg wgtun.Device) {
		for _, mode := range []Checksum{ChecksumPartial, ChecksumFull} {
			b.Run("weft-"+mode.String(), func(b *testing.B) {
				bufs := benchTCPBatch(n, payload, mode)
				b.SetBytes(n * payload)
				b.ReportAllocs()
				for b.Loop() {
					d.Write(bufs, testOff, mode)
				}
			})
		}
		b.Run("weft-full-copy", func(b *testing.B) {
			bufs := benchTCPBatch(n, payload, ChecksumFull)
			q := d.queues[0]
			flat := make([]byte, maxIPLen+virtioNetHdrLen)
			b.SetBytes(n * payload)
			b.ReportAllocs()
			for b.Loop() {
				q.gro.plan(bufs, testOff, ChecksumFull, true, FallbackNone)
				for _, w := range q.gro.writes {
					f := flat[:0]
					for _, p := range q.gro.parts[w.lo:w.hi] {
						f = append(f, p...)
					}
					q.write1(f)
				}
			}
		})
		b.Run("wireguard", func(b *testing.B) {
			bufs := benchTCPBatch(n, payload, ChecksumFull)
			pristine := make([][]byte, n)
			for i := range bufs {
				pristine[i] = append([]byte(nil), bufs[i][:testOff+60]...)
			}
			lens := make([]int, n)
			for i := range bufs {
				lens[i] = len(bufs[i])
			}
			wd := wg
			b.SetBytes(n * payload)
			b.ReportAllocs()
			for b.Loop() {
				for i := range bufs {
					bufs[i] = bufs[i][:lens[i]]
					copy(bufs[i], pristine[i])
				}
				wd.Write(bufs, testOff)
			}
		})
	})
}

// withTestTUNB opens a TUN in a private network namespace, on a thread
// that stays there (keeping the namespace alive) until f returns; f runs
// on the benchmark's goroutine, so that it can call b.Run. I/O on the
// device's descriptor does not depend on the calling thread's namespace.
func withTestTUNB(b *testing.B, f func(d *Device, wg wgtun.Device)) {
	if os.Geteuid() != 0 {
		b.Skip("SKIPPED: needs root to create a network namespace and a TUN device")
	}
	var wg wgtun.Device
	ready, done, exited := make(chan *Device), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			b.Errorf("unshare network namespace: %v", err)
			ready <- nil
			return
		}
		d, err := Open(Config{Name: "weftbench0", MTU: 1400, Addrs: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/24")}}, discardLog())
		if err != nil {
			b.Errorf("open: %v", err)
			ready <- nil
			return
		}
		defer d.Close()
		// wireguard-go's device beside it, up, for the same writes.
		if wg, err = wgtun.CreateTUN("weftwg0", 1400); err == nil {
			defer wg.Close()
			var link netlink.Link
			if link, err = netlink.LinkByName("weftwg0"); err == nil {
				err = netlink.LinkSetUp(link)
			}
		}
		if err != nil {
			b.Errorf("wireguard TUN: %v", err)
			ready <- nil
			return
		}
		ready <- d
		<-done
	}()
	defer func() { close(done); <-exited }()
	if d := <-ready; d != nil {
		f(d, wg)
	}
}
