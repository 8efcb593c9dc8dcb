package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// A UDP echo between two hosts is the floor of any user-space forwarder's
// round trip: two processes that sleep between datagrams, each woken by
// one, with nothing else on the path. The benchmark sets it beside the
// overlay's ping (same hosts, same interval), so the cost of a thread wakeup
// on the machine is measured, not assumed.

// EchoResult is the summary of one UDPEchoRTT run.
type EchoResult struct {
	Sent     int
	Received int
	RTTMin   time.Duration
	RTTAvg   time.Duration
	RTTMax   time.Duration
}

// StartUDPEcho starts a UDP echo server on addr (ip:port) inside the host:
// it sends every datagram back to where it came from, until stopped.
func (h *Host) StartUDPEcho(addr netip.AddrPort) (*Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("netlab: cannot find own executable: %w", err)
	}
	return h.startEnv([]string{reexecEnv + "=udp-echo-serve"}, self, addr.String())
}

// UDPEchoRTT sends count 64-byte datagrams from the host to the echo server
// at dst, interval apart, each waiting up to a second for its echo, and
// returns the round-trip times of those answered.
func (h *Host) UDPEchoRTT(ctx context.Context, dst netip.AddrPort, count int, interval time.Duration) (EchoResult, error) {
	if count < 1 {
		return EchoResult{}, errors.New("netlab: UDPEchoRTT needs a count of at least 1")
	}
	cmd, err := h.reexecCommand(ctx, "udp-echo-rtt", dst.String(), strconv.Itoa(count), interval.String())
	if err != nil {
		return EchoResult{}, err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return EchoResult{}, fmt.Errorf("netlab: [%s] UDP echo to %s: %v: %s", h.name, dst, err, strings.TrimSpace(string(out)))
	}
	return parseEcho(string(out))
}

// parseEcho reads the helper's one line: sent received min avg max (ns).
func parseEcho(out string) (EchoResult, error) {
	f := strings.Fields(out)
	if len(f) != 5 {
		return EchoResult{}, fmt.Errorf("netlab: bad UDP echo helper output %q", out)
	}
	var v [5]int64
	for i, s := range f {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return EchoResult{}, fmt.Errorf("netlab: bad UDP echo helper output %q", out)
		}
		v[i] = n
	}
	r := EchoResult{Sent: int(v[0]), Received: int(v[1]), RTTMin: time.Duration(v[2]), RTTAvg: time.Duration(v[3]), RTTMax: time.Duration(v[4])}
	if r.Received == 0 {
		return r, fmt.Errorf("netlab: no echo of %d datagrams", r.Sent)
	}
	return r, nil
}

func echoServe(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "netlab udp-echo-serve: want ADDR")
		return 2
	}
	ap, err := netip.ParseAddrPort(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "netlab udp-echo-serve:", err)
		return 2
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		fmt.Fprintln(os.Stderr, "netlab udp-echo-serve:", err)
		return 1
	}
	fmt.Println("listening on", c.LocalAddr())
	buf := make([]byte, 65535)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "netlab udp-echo-serve:", err)
			return 1
		}
		if _, err := c.WriteToUDPAddrPort(buf[:n], from); err != nil {
			fmt.Fprintln(os.Stderr, "netlab udp-echo-serve:", err)
		}
	}
}

func echoRTT(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "netlab udp-echo-rtt: want ADDR COUNT INTERVAL")
		return 2
	}
	ap, err1 := netip.ParseAddrPort(args[0])
	count, err2 := strconv.Atoi(args[1])
	interval, err3 := time.ParseDuration(args[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		fmt.Fprintln(os.Stderr, "netlab udp-echo-rtt:", err)
		return 2
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		fmt.Fprintln(os.Stderr, "netlab udp-echo-rtt:", err)
		return 1
	}
	msg := make([]byte, 64)
	buf := make([]byte, 2048)
	var sum, lo, hi time.Duration
	got := 0
	for i := range count {
		if i > 0 {
			time.Sleep(interval)
		}
		msg[0], msg[1] = byte(i>>8), byte(i)
		t := time.Now()
		if _, err := c.Write(msg); err != nil {
			fmt.Fprintln(os.Stderr, "netlab udp-echo-rtt:", err)
			return 1
		}
		deadline := t.Add(time.Second)
		for {
			_ = c.SetReadDeadline(deadline)
			n, err := c.Read(buf)
			if err != nil {
				break // lost: counted by sent - received
			}
			if n == len(msg) && buf[0] == msg[0] && buf[1] == msg[1] {
				d := time.Since(t)
				if got == 0 || d < lo {
					lo = d
				}
				hi = max(hi, d)
				sum += d
				got++
				break
			}
		}
	}
	var avg time.Duration
	if got > 0 {
		avg = sum / time.Duration(got)
	}
	fmt.Printf("%d %d %d %d %d\n", count, got, lo.Nanoseconds(), avg.Nanoseconds(), hi.Nanoseconds())
	return 0
}
