package encap

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func listenLoopback(t testing.TB, batch int, offload bool) *Conn {
	t.Helper()
	c, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), batch, offload)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func bufs(n int) [][]byte {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, Headroom+65535)
	}
	return b
}

// TestConnRoundTrip sends batches of datagrams, equal-size runs (GSO) and
// odd sizes, and checks each arrives intact, in order, with its source.
func TestConnRoundTrip(t *testing.T) {
	for _, offload := range []bool{true, false} {
		t.Run(fmt.Sprintf("offload=%v", offload), func(t *testing.T) {
			tx, rx := listenLoopback(t, 128, offload), listenLoopback(t, 128, offload)
			if offload && !tx.GSO() {
				t.Log("kernel has no UDP GSO: testing the plain path only")
			}
			var want [][]byte
			for i := range 100 {
				size := 1400
				switch {
				case i%25 == 24:
					size = 700 // a short last segment ends a GSO run
				case i >= 90:
					size = 100 + i
				}
				p := bytes.Repeat([]byte{byte(i)}, size)
				want = append(want, p)
			}
			sent, err := tx.WriteTo(want, NewEndpoint(rx.LocalAddr()))
			if err != nil || sent != len(want) {
				t.Fatalf("WriteTo sent %d of %d: %v", sent, len(want), err)
			}
			in, views, srcs := bufs(128), make([][]byte, 128), make([]netip.AddrPort, 128)
			var got [][]byte
			deadline := time.Now().Add(5 * time.Second)
			for len(got) < len(want) && time.Now().Before(deadline) {
				n, err := rx.ReadViews(in, Headroom, views, srcs)
				if err != nil {
					t.Fatal(err)
				}
				for i := range n {
					if srcs[i] != tx.LocalAddr() {
						t.Fatalf("datagram from %v, want %v", srcs[i], tx.LocalAddr())
					}
					got = append(got, bytes.Clone(views[i]))
				}
			}
			if len(got) != len(want) {
				t.Fatalf("received %d datagrams, want %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("datagram %d: %d bytes %x..., want %d bytes %x...", i, len(got[i]), got[i][:1], len(want[i]), want[i][:1])
				}
			}
			if offload && tx.GSO() && tx.Stats.Sendmmsg.Load() != 1 {
				t.Errorf("sent 100 datagrams in %d sendmmsg calls, want 1", tx.Stats.Sendmmsg.Load())
			}
		})
	}
}

func TestConnBatchPathsAllocateNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; make unit runs this test without it")
	}
	tx, rx := listenLoopback(t, 64, true), listenLoopback(t, 64, true)
	pkts := make([][]byte, 32)
	for i := range pkts {
		pkts[i] = make([]byte, 1200)
	}
	ep := NewEndpoint(rx.LocalAddr())
	in, views, srcs := bufs(64), make([][]byte, 64), make([]netip.AddrPort, 64)
	round := func() {
		if _, err := tx.WriteTo(pkts, ep); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(pkts); {
			n, err := rx.ReadViews(in, Headroom, views, srcs)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	}
	round() // warm up pools
	if a := testing.AllocsPerRun(50, round); a != 0 {
		t.Errorf("a batch of %d datagrams sent and received allocates %.1f times, want 0", len(pkts), a)
	}
}

func BenchmarkConnLoopback(b *testing.B) {
	tx, rx := listenLoopback(b, 64, true), listenLoopback(b, 64, true)
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = make([]byte, 1400)
	}
	ep := NewEndpoint(rx.LocalAddr())
	in, views, srcs := bufs(64), make([][]byte, 64), make([]netip.AddrPort, 64)
	b.SetBytes(64 * 1400)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tx.WriteTo(pkts, ep); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < len(pkts); {
			n, err := rx.ReadViews(in, Headroom, views, srcs)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/packet")
}

// TestConnEmptyDatagrams: a zero-length datagram is a datagram: ReadViews
// returns it with size 0 (for the router to count as a drop), between the
// others and in order, with UDP GRO and without.
func TestConnEmptyDatagrams(t *testing.T) {
	for _, offload := range []bool{true, false} {
		t.Run(fmt.Sprintf("offload=%v", offload), func(t *testing.T) {
			tx, rx := listenLoopback(t, 128, offload), listenLoopback(t, 128, offload)
			if offload && !rx.GRO() {
				t.Log("kernel has no UDP GRO: testing the plain path only")
			}
			// Four each of: empty, 1400 bytes (a GRO run), empty, 3 bytes.
			var want []int
			for range 4 {
				want = append(want, 0, 1400, 1400, 0, 3)
			}
			ep := NewEndpoint(rx.LocalAddr())
			for _, size := range want {
				// One send each: WriteTo would gather equal sizes into a
				// GSO send, and a zero-length segment is not a thing.
				if n, err := tx.WriteTo([][]byte{make([]byte, size)}, ep); err != nil || n != 1 {
					t.Fatalf("send %d bytes: %d sent, %v", size, n, err)
				}
			}
			in, views, srcs := bufs(128), make([][]byte, 128), make([]netip.AddrPort, 128)
			var got []int
			// A lost datagram would block ReadViews: closing the socket
			// ends it.
			stop := time.AfterFunc(5*time.Second, func() { rx.Close() })
			defer stop.Stop()
			for len(got) < len(want) {
				// Small batches, so that a split resumes mid-datagram.
				n, err := rx.ReadViews(in, Headroom, views[:3], srcs)
				if err != nil {
					t.Fatalf("after %d of %d datagrams (sizes %v): %v", len(got), len(want), got, err)
				}
				for i := range n {
					if srcs[i] != tx.LocalAddr() {
						t.Fatalf("datagram from %v, want %v", srcs[i], tx.LocalAddr())
					}
					got = append(got, len(views[i]))
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("received sizes %v, want %v", got, want)
			}
		})
	}
}
