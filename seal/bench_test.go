package seal

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkSeal and BenchmarkOpen measure the in-place AEAD per datagram,
// in batches of 64 as the workers call them.
func BenchmarkSeal(b *testing.B) {
	for _, c := range []Cipher{AES256GCM, ChaCha20Poly1305} {
		for _, size := range []int{64, 1400, 8900} {
			b.Run(fmt.Sprintf("%s/%d", c, size), func(b *testing.B) {
				n := newNet(&testing.T{}, Config{Cipher: c}, "a", "b")
				n.ms["a"].tick()
				n.pump()
				pa := n.peers["a"]["b"]
				frames := make([][]byte, 64)
				for i := range frames {
					frames[i] = make([]byte, HeaderLen+size+TagLen)
				}
				now := n.clk.ns()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if i%64 == 0 {
						pa.Seal(frames, now)
					}
				}
			})
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, c := range []Cipher{AES256GCM, ChaCha20Poly1305} {
		for _, size := range []int{64, 1400, 8900} {
			b.Run(fmt.Sprintf("%s/%d", c, size), func(b *testing.B) {
				n := newNet(&testing.T{}, Config{Cipher: c}, "a", "b")
				n.ms["a"].tick()
				n.pump()
				pa, pb := n.peers["a"]["b"], n.peers["b"]["a"]
				const batch = 4096
				frames := make([][]byte, batch)
				for i := range frames {
					frames[i] = make([]byte, HeaderLen+size+TagLen)
				}
				now := n.clk.ns()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if i%batch == 0 {
						b.StopTimer()
						pa.Seal(frames, now)
						b.StartTimer()
					}
					if _, r := pb.Open(frames[i%batch], now); r != Deliver {
						b.Fatal(r)
					}
					i++
				}
			})
		}
	}
}

// BenchmarkReplayWindowParallel is the window's mutex under every CPU at
// once (the worst case: all workers receiving one session).
func BenchmarkReplayWindowParallel(b *testing.B) {
	var w window
	var next atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.accept(next.Add(1), DefaultRejectAfterMessages)
		}
	})
}
