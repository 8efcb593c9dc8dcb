package netlab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Some operations need a Go client inside a namespace (an HTTP GET of a
// daemon's /readyz, say). Rather than switching a goroutine's thread into
// another namespace, netlab re-executes the current binary under
// "ip netns exec" with NETLAB_REEXEC set; this init function notices and runs
// the helper instead of the program. It works in any binary that imports
// netlab (test binaries, benchmarks).
const reexecEnv = "NETLAB_REEXEC"

func init() {
	mode := os.Getenv(reexecEnv)
	if mode == "" {
		return
	}
	os.Unsetenv(reexecEnv)
	os.Exit(runHelper(mode, os.Args[1:]))
}

func runHelper(mode string, args []string) int {
	switch mode {
	case "http-get":
		if len(args) != 2 {
			fmt.Fprintln(os.Stderr, "netlab http-get: want URL TIMEOUT")
			return 2
		}
		timeout, err := time.ParseDuration(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, "netlab http-get:", err)
			return 2
		}
		c := &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
		resp, err := c.Get(args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		defer resp.Body.Close()
		w := bufio.NewWriter(os.Stdout)
		fmt.Fprintf(w, "%d\n", resp.StatusCode)
		if _, err := io.Copy(w, io.LimitReader(resp.Body, 16<<20)); err != nil {
			fmt.Fprintln(os.Stderr, "read body:", err)
			w.Flush()
			return 3
		}
		w.Flush()
		return 0
	case "http-serve":
		// Test helper: serve "ok" on every path at args[0] until killed.
		if len(args) != 1 {
			fmt.Fprintln(os.Stderr, "netlab http-serve: want ADDR")
			return 2
		}
		ln, err := net.Listen("tcp", args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("listening on", ln.Addr())
		err = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "ok %s\n", r.URL.Path)
		}))
		fmt.Fprintln(os.Stderr, err)
		return 1
	case "udp-echo-serve":
		return echoServe(args)
	case "udp-echo-rtt":
		return echoRTT(args)
	default:
		fmt.Fprintf(os.Stderr, "netlab: unknown %s mode %q\n", reexecEnv, mode)
		return 2
	}
}

func (h *Host) reexecCommand(ctx context.Context, mode string, args ...string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("netlab: cannot find own executable: %w", err)
	}
	cmd := h.Command(ctx, self, args...)
	cmd.Env = append(os.Environ(), reexecEnv+"="+mode)
	return cmd, nil
}

// HTTPGet performs an HTTP GET of url from inside the host's namespace (by
// re-executing the current binary there) and returns the status code and
// body. A connection failure is an error; a non-2xx status is not.
func (h *Host) HTTPGet(ctx context.Context, url string) (int, []byte, error) {
	timeout := 5 * time.Second // without a deadline in ctx
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return 0, nil, context.DeadlineExceeded
	}
	cmd, err := h.reexecCommand(ctx, "http-get", url, timeout.String())
	if err != nil {
		return 0, nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, nil, fmt.Errorf("netlab: [%s] GET %s: %v: %s", h.name, url, err, strings.TrimSpace(stderr.String()))
	}
	line, body, _ := bytes.Cut(out, []byte("\n"))
	code, err := strconv.Atoi(string(line))
	if err != nil {
		return 0, nil, fmt.Errorf("netlab: [%s] GET %s: bad helper output %q", h.name, url, out)
	}
	return code, body, nil
}

// StartHTTPServer starts a trivial HTTP server (answers "ok <path>") on addr
// inside the host; used to test HTTPGet and handy as a dummy service.
func (h *Host) StartHTTPServer(addr string) (*Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return h.startEnv([]string{reexecEnv + "=http-serve"}, self, addr)
}
