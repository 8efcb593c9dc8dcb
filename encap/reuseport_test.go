package encap

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestListenReusePortSpreadsFlows: two sockets share a port; datagrams from
// many source ports are spread over both, and every datagram of one source
// port reaches the same socket (a flow stays on one worker).
func TestListenReusePortSpreadsFlows(t *testing.T) {
	first, err := ListenReusePort(netip.MustParseAddrPort("127.0.0.1:0"), 16, true)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := ListenReusePort(first.LocalAddr(), 16, true)
	if err != nil {
		t.Fatalf("second socket on %s: %v", first.LocalAddr(), err)
	}
	defer second.Close()
	if _, err := Listen(first.LocalAddr(), 16, true); err == nil {
		t.Fatal("a socket without SO_REUSEPORT bound the group's port")
	}

	const senders, each = 32, 5
	var mu sync.Mutex
	seenBy := map[netip.AddrPort]map[int]int{} // source → socket → datagrams
	var wg sync.WaitGroup
	for i, c := range []*Conn{first, second} {
		wg.Go(func() {
			in, views, srcs := bufs(16), make([][]byte, 16), make([]netip.AddrPort, 16)
			for {
				n, err := c.ReadViews(in, Headroom, views, srcs)
				if err != nil {
					return
				}
				mu.Lock()
				for _, src := range srcs[:n] {
					if seenBy[src] == nil {
						seenBy[src] = map[int]int{}
					}
					seenBy[src][i]++
				}
				mu.Unlock()
			}
		})
	}
	for range senders {
		tx := listenLoopback(t, 16, false)
		for range each {
			if err := tx.WriteOne([]byte("flow"), first.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		total := 0
		for _, by := range seenBy {
			for _, n := range by {
				total += n
			}
		}
		mu.Unlock()
		if total == senders*each || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	first.Close()
	second.Close()
	wg.Wait()
	perSocket := map[int]int{}
	for src, by := range seenBy {
		if len(by) != 1 {
			t.Errorf("datagrams from %s reached both sockets: %v", src, by)
		}
		for i, n := range by {
			perSocket[i] += n
		}
	}
	if len(seenBy) != senders || perSocket[0]+perSocket[1] != senders*each {
		t.Fatalf("%d sources, %v datagrams per socket; want %d sources, %d datagrams", len(seenBy), perSocket, senders, senders*each)
	}
	if perSocket[0] == 0 || perSocket[1] == 0 {
		t.Errorf("the kernel gave every flow to one socket: %v", perSocket)
	}
	t.Logf("datagrams per socket: %v", perSocket)
}

// TestSteerBySourcePort: with the group steered, a datagram from source
// port p reaches socket p mod 2, whatever the kernel's hash would say.
func TestSteerBySourcePort(t *testing.T) {
	for _, lo := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(lo, func(t *testing.T) { testSteerBySourcePort(t, netip.MustParseAddrPort(lo)) })
	}
}

func testSteerBySourcePort(t *testing.T, lo netip.AddrPort) {
	first, err := ListenReusePort(lo, 16, true)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := ListenReusePort(first.LocalAddr(), 16, true)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if err := first.SteerBySourcePort(2); err != nil {
		t.Fatal(err)
	}
	const senders = 16
	for range senders {
		tx, err := Listen(lo, 16, false)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Close()
		if err := tx.WriteOne([]byte("flow"), first.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	in, views, srcs := bufs(16), make([][]byte, 16), make([]netip.AddrPort, 16)
	got := 0
	for i, c := range []*Conn{first, second} {
		for got < senders {
			_ = c.uc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := c.ReadViews(in, Headroom, views, srcs)
			if err != nil {
				break
			}
			for _, src := range srcs[:n] {
				if int(src.Port())%2 != i {
					t.Errorf("datagram from port %d reached socket %d", src.Port(), i)
				}
				got++
			}
		}
	}
	if got != senders {
		t.Fatalf("%d of %d datagrams received", got, senders)
	}
}
