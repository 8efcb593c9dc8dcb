package netlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// PingResult is the summary of one ping run.
type PingResult struct {
	Sent     int
	Received int
	Errors   int // ICMP errors such as "Destination Host Unreachable"
	RTTMin   time.Duration
	RTTAvg   time.Duration
	RTTMax   time.Duration
	RTTMDev  time.Duration
	Output   string // raw ping output
}

// Loss returns the fraction of lost packets (0..1); 1 if nothing was sent.
func (r PingResult) Loss() float64 {
	if r.Sent == 0 {
		return 1
	}
	return float64(r.Sent-r.Received) / float64(r.Sent)
}

func (r PingResult) String() string {
	return fmt.Sprintf("%d/%d received, rtt avg %v", r.Received, r.Sent, r.RTTAvg)
}

// PingInterval is the interval between echo requests used by Host.Ping.
const PingInterval = 200 * time.Millisecond

// Ping sends count echo requests (200 ms apart, 1 s reply timeout) from the
// host to dst and parses the iputils summary. Packet loss is not an error:
// check Received. The error is non-nil when ping printed no statistics (for
// example "Network is unreachable", a bad address, or ctx expired).
func (h *Host) Ping(ctx context.Context, dst netip.Addr, count int) (PingResult, error) {
	if count <= 0 {
		count = 1
	}
	deadline := int((time.Duration(count)*PingInterval)/time.Second) + 2
	args := []string{"-n", "-c", strconv.Itoa(count), "-i", fmtSeconds(PingInterval), "-W", "1", "-w", strconv.Itoa(deadline)}
	if dst.Is6() {
		args = append(args, "-6")
	}
	args = append(args, dst.String())
	out, runErr := h.Run(ctx, "ping", args...)
	res, err := ParsePing(out)
	if err != nil {
		if runErr != nil {
			return res, runErr
		}
		return res, fmt.Errorf("netlab: [%s] ping %s: %w", h.name, dst, err)
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

func fmtSeconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

var (
	pingStatsRe = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received(?:, \+(\d+) errors)?`)
	pingRTTRe   = regexp.MustCompile(`(?:rtt|round-trip) min/avg/max(?:/mdev)? = ([\d.]+)/([\d.]+)/([\d.]+)(?:/([\d.]+))? ms`)
)

// ErrNoPingStats is returned by ParsePing when the output has no summary.
var ErrNoPingStats = errors.New("no ping statistics in output")

// ParsePing parses the summary printed by iputils (or busybox) ping.
func ParsePing(out []byte) (PingResult, error) {
	s := string(out)
	res := PingResult{Output: s}
	m := pingStatsRe.FindStringSubmatch(s)
	if m == nil {
		line := strings.TrimSpace(s)
		if i := strings.LastIndexByte(line, '\n'); i >= 0 {
			line = line[i+1:]
		}
		if line != "" {
			return res, fmt.Errorf("%w: %s", ErrNoPingStats, line)
		}
		return res, ErrNoPingStats
	}
	res.Sent, _ = strconv.Atoi(m[1])
	res.Received, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		res.Errors, _ = strconv.Atoi(m[3])
	}
	if r := pingRTTRe.FindStringSubmatch(s); r != nil {
		res.RTTMin = parseMillis(r[1])
		res.RTTAvg = parseMillis(r[2])
		res.RTTMax = parseMillis(r[3])
		res.RTTMDev = parseMillis(r[4])
	}
	return res, nil
}

func parseMillis(s string) time.Duration {
	if s == "" {
		return 0
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return time.Duration(f * float64(time.Millisecond))
}
