package node

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/fakes"
	"github.com/weftnet/weft/tun"
)

// freeAddr is a loopback TCP address nobody listens on (a port the kernel
// gave and took back), so a test knows a listener's address before Start.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// client asks without keeping connections, so no goroutine outlives a test
// (goleak).
func client() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// /v1/status on the metrics listener, asked in a tight loop from the moment
// the listener exists while Start builds the data path, answers 503 until
// the node is ready and 200 after: never a half-built node (no panic, and
// under -race no data race), never a 200 followed by a 503 while running.
// While the TUN is being opened (the data path does not exist yet) it
// answers 503 for certain.
func TestStatusWaitsForTheDataPath(t *testing.T) {
	u := fakes.NewHub()
	a := newHost(t, u, "a", 1, "10.244.1.0/24")
	a.s.MetricsAddr = freeAddr(t)
	url := "http://" + a.s.MetricsAddr + "/v1/status"
	c := client()

	var during struct {
		code int
		err  error
	}
	a.mod = func(d *Deps) {
		open := d.OpenTUN
		d.OpenTUN = func(cfg tun.Config, log *slog.Logger) (TUN, error) {
			// The metrics listener serves; the data path is not built.
			during.code, _, during.err = get(c, url)
			time.Sleep(100 * time.Millisecond) // a wider window for the poller
			dev, err := open(cfg, log)
			return slowClose{dev}, err
		}
	}

	stop := make(chan struct{})
	var (
		wg                sync.WaitGroup
		codes             []int
		n503, n200, other int
	)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			code, body, err := get(c, url)
			if err != nil {
				continue // not listening yet
			}
			if len(codes) == 0 || codes[len(codes)-1] != code {
				codes = append(codes, code)
			}
			switch code {
			case http.StatusServiceUnavailable:
				n503++
				if !strings.Contains(body, "starting") {
					t.Errorf("503 body %q does not say the node is starting", body)
				}
			case http.StatusOK:
				n200++
				if n200 >= 5 {
					return
				}
			default:
				other++
			}
		}
	})
	a.mustStart()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		close(stop)
		<-done
		t.Fatal("the status never answered 200 after Start")
	}
	if during.err != nil || during.code != http.StatusServiceUnavailable {
		t.Errorf("/v1/status while the TUN opens: %d, %v; want 503", during.code, during.err)
	}
	if n503 == 0 || n200 == 0 || other != 0 || len(codes) != 2 || codes[0] != 503 || codes[1] != 200 {
		t.Errorf("answers in order %v (503: %d, 200: %d, other: %d); want 503s, then 200s", codes, n503, n200, other)
	}

	// Shutdown: once a 503 is seen, never a 200 again (the data path is
	// being taken apart), until the listener closes.
	var down []int
	polling := make(chan struct{})
	wg.Go(func() {
		for {
			code, _, err := get(c, url)
			if err != nil {
				return // closed
			}
			if len(down) == 0 {
				close(polling)
			}
			if len(down) == 0 || down[len(down)-1] != code {
				down = append(down, code)
			}
		}
	})
	<-polling
	a.stop()
	wg.Wait()
	if !slices.Equal(down, []int{200, 503}) {
		t.Errorf("answers during shutdown, in order: %v; want 200s, then 503s (the TUN takes 100 ms to close)", down)
	}
	t.Logf("answers during shutdown, in order: %v", down)
}

// slowClose is a TUN whose Close takes 100 ms: shutdown lasts long enough
// for a poller to see it.
type slowClose struct{ TUN }

func (d slowClose) Close() error {
	time.Sleep(100 * time.Millisecond)
	return d.TUN.Close()
}

// pprof is never on the metrics listener: with --pprof-addr it has a
// listener of its own, and /debug/pprof/ is 404 on the metrics one.
func TestPProfHasItsOwnListener(t *testing.T) {
	u := fakes.NewHub()
	a := newHost(t, u, "a", 1, "10.244.1.0/24")
	a.s.PProfAddr = "127.0.0.1:0"
	a.mustStart()
	c := client()
	if code, _, err := get(c, "http://"+a.n.MetricsAddr().String()+"/debug/pprof/"); err != nil || code != http.StatusNotFound {
		t.Errorf("metrics listener /debug/pprof/: %d, %v; want 404", code, err)
	}
	if a.n.PProfAddr() == nil {
		t.Fatal("no pprof listener")
	}
	if code, body, err := get(c, "http://"+a.n.PProfAddr().String()+"/debug/pprof/"); err != nil || code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof listener /debug/pprof/: %d, %v", code, err)
	}
	for _, path := range []string{"/metrics", "/v1/status"} {
		if code, _, err := get(c, "http://"+a.n.PProfAddr().String()+path); err != nil || code != http.StatusNotFound {
			t.Errorf("pprof listener %s: %d, %v; want 404", path, code, err)
		}
	}

	// Without pprof, no listener.
	b := newHost(t, u, "b", 2, "10.244.2.0/24")
	b.mustStart(a)
	if b.n.PProfAddr() != nil {
		t.Errorf("a pprof listener without --pprof-addr: %s", b.n.PProfAddr())
	}
}

// A start that fails after the listeners are up closes them: the pprof
// and metrics addresses are free again.
func TestFailedStartClosesPProf(t *testing.T) {
	u := fakes.NewHub()
	a := newHost(t, u, "a", 1, "10.244.1.0/24")
	a.s.MetricsAddr, a.s.PProfAddr = freeAddr(t), freeAddr(t)
	boom := errors.New("no TUN today")
	a.mod = func(d *Deps) {
		d.OpenTUN = func(tun.Config, *slog.Logger) (TUN, error) { return nil, boom }
	}
	if err := a.start(); !errors.Is(err, boom) {
		t.Fatalf("start: %v, want %v", err, boom)
	}
	for _, addr := range []string{a.s.MetricsAddr, a.s.PProfAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("%s still taken after a failed start: %v", addr, err)
			continue
		}
		ln.Close()
	}
}

// --encrypt with --direct-routing is refused by the node too: direct
// routes would carry on-link peers' traffic in plaintext.
func TestEncryptRefusesDirectRouting(t *testing.T) {
	u := fakes.NewHub()
	a := newHost(t, u, "a", 1, "10.244.1.0/24")
	a.s.Encrypt, a.s.DirectRouting = true, true
	err := a.start()
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "--encrypt") || !strings.Contains(err.Error(), "--direct-routing") {
		t.Fatalf("start with encrypt and direct routing: %v, want a ConfigError naming both", err)
	}
}
