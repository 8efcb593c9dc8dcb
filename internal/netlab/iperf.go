package netlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DefaultIPerf3Port is iperf3's default port.
const DefaultIPerf3Port = 5201

// IPerf3Server starts "iperf3 -s" on port (0 means 5201) in the host and
// waits until it listens. Stop it with Proc.Stop or let Lab.Close do it.
func (h *Host) IPerf3Server(port int) (*Proc, error) {
	if port == 0 {
		port = DefaultIPerf3Port
	}
	p, err := h.Start("iperf3", "-s", "-p", strconv.Itoa(port), "--forceflush")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := h.Run(ctx, "ss", "-Hltn", "sport = :"+strconv.Itoa(port))
		cancel()
		if err == nil && strings.Contains(string(out), "LISTEN") {
			return p, nil
		}
		if p.Exited() {
			return nil, fmt.Errorf("netlab: [%s] iperf3 server exited: %s", h.name, strings.TrimSpace(p.Logs()))
		}
		if time.Now().After(deadline) {
			p.Kill()
			return nil, fmt.Errorf("netlab: [%s] iperf3 server not listening on port %d after 10s: %s", h.name, port, strings.TrimSpace(p.Logs()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// IPerf3Options configures IPerf3Client. Zero values mean iperf3's defaults.
type IPerf3Options struct {
	Port    int    // server port (default 5201)
	Seconds int    // -t (default 10)
	Streams int    // -P
	UDP     bool   // -u
	Len     int    // -l, bytes per write / UDP datagram payload
	Bitrate string // -b, e.g. "100M", "0" for unlimited
	Reverse bool   // -R, server sends
	Extra   []string
}

// IPerf3Result is the summary of an iperf3 -J run.
type IPerf3Result struct {
	Protocol string // "TCP" or "UDP"
	Seconds  float64
	// Bits per second as measured by the sender and by the receiver.
	SentBPS     float64
	ReceivedBPS float64
	SentBytes   int64
	RecvBytes   int64
	Retransmits int // TCP only
	// UDP only, as reported by the receiver.
	LostPackets int
	Packets     int
	LostPercent float64
	JitterMs    float64
	Raw         []byte // the JSON document
}

func (r IPerf3Result) String() string {
	if r.Protocol == "UDP" {
		return fmt.Sprintf("%s: %.1f Mbit/s sent, %.1f Mbit/s received, %d/%d lost (%.2f%%), jitter %.3f ms",
			r.Protocol, r.SentBPS/1e6, r.ReceivedBPS/1e6, r.LostPackets, r.Packets, r.LostPercent, r.JitterMs)
	}
	return fmt.Sprintf("%s: %.1f Mbit/s sent, %.1f Mbit/s received, %d retransmits",
		r.Protocol, r.SentBPS/1e6, r.ReceivedBPS/1e6, r.Retransmits)
}

// IPerf3Client runs "iperf3 -c dst -J" from the host and parses the result.
// It fails if iperf3 reports an error (e.g. connection refused).
func (h *Host) IPerf3Client(ctx context.Context, dst netip.Addr, o IPerf3Options) (IPerf3Result, error) {
	port := o.Port
	if port == 0 {
		port = DefaultIPerf3Port
	}
	args := []string{"-c", dst.String(), "-p", strconv.Itoa(port), "-J", "--connect-timeout", "5000"}
	if o.Seconds > 0 {
		args = append(args, "-t", strconv.Itoa(o.Seconds))
	}
	if o.Streams > 0 {
		args = append(args, "-P", strconv.Itoa(o.Streams))
	}
	if o.UDP {
		args = append(args, "-u")
	}
	if o.Len > 0 {
		args = append(args, "-l", strconv.Itoa(o.Len))
	}
	if o.Bitrate != "" {
		args = append(args, "-b", o.Bitrate)
	}
	if o.Reverse {
		args = append(args, "-R")
	}
	args = append(args, o.Extra...)
	// Bound the run even if the caller's ctx has no deadline.
	secs := o.Seconds
	if secs <= 0 {
		secs = 10
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	var stderr strings.Builder
	var out []byte
	var runErr error
	var res IPerf3Result
	var err error
	// An iperf3 server closes its listening socket when a test ends and
	// opens it again for the next one (cleanup_server), so a client that
	// starts right after another can find no listener for a moment and be
	// refused. Such a refusal, before any test ran, is retried for up to a
	// second; any other error, or a refusal that lasts, is returned.
	for attempt := 0; ; attempt++ {
		stderr.Reset()
		cmd := h.Command(ctx, "iperf3", args...)
		cmd.Stderr = &stderr
		out, runErr = cmd.Output()
		res, err = ParseIPerf3(out)
		if err == nil || attempt >= 5 || ctx.Err() != nil || !strings.Contains(err.Error(), "unable to connect to server: Connection refused") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if runErr != nil {
			return res, fmt.Errorf("netlab: [%s] iperf3 %s: %v: %v %s", h.name, strings.Join(args, " "), err, runErr, msg)
		}
		return res, fmt.Errorf("netlab: [%s] iperf3 %s: %v %s", h.name, strings.Join(args, " "), err, msg)
	}
	if runErr != nil {
		return res, fmt.Errorf("netlab: [%s] iperf3 %s: %v: %s", h.name, strings.Join(args, " "), runErr, strings.TrimSpace(stderr.String()))
	}
	return res, nil
}

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	Bytes         int64   `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Retransmits   int     `json:"retransmits"`
	JitterMs      float64 `json:"jitter_ms"`
	LostPackets   int     `json:"lost_packets"`
	Packets       int     `json:"packets"`
	LostPercent   float64 `json:"lost_percent"`
}

type iperfDoc struct {
	Start struct {
		TestStart struct {
			Protocol string `json:"protocol"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		SumSent     *iperfSum `json:"sum_sent"`
		SumReceived *iperfSum `json:"sum_received"`
		Sum         *iperfSum `json:"sum"` // UDP (older iperf3: the only UDP summary)
	} `json:"end"`
	Error string `json:"error"`
}

// ParseIPerf3 parses the JSON document printed by "iperf3 -c ... -J".
func ParseIPerf3(data []byte) (IPerf3Result, error) {
	res := IPerf3Result{Raw: data}
	var doc iperfDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return res, fmt.Errorf("parse iperf3 JSON: %w", err)
	}
	if doc.Error != "" {
		return res, fmt.Errorf("iperf3: %s", doc.Error)
	}
	res.Protocol = strings.ToUpper(doc.Start.TestStart.Protocol)
	e := doc.End
	if e.SumSent == nil && e.SumReceived == nil && e.Sum == nil {
		return res, errors.New("iperf3 JSON has no end summary")
	}
	if s := e.SumSent; s != nil {
		res.SentBPS = s.BitsPerSecond
		res.SentBytes = s.Bytes
		res.Retransmits = s.Retransmits
		res.Seconds = s.Seconds
	}
	if s := e.SumReceived; s != nil {
		res.ReceivedBPS = s.BitsPerSecond
		res.RecvBytes = s.Bytes
	}
	if res.Protocol == "UDP" {
		// The receiver's view of loss: sum_received in iperf3 >= 3.10,
		// otherwise "sum" (which then holds the receiver's counters).
		src := e.SumReceived
		if src == nil || src.Packets == 0 {
			src = e.Sum
		}
		if src != nil {
			res.LostPackets = src.LostPackets
			res.Packets = src.Packets
			res.LostPercent = src.LostPercent
			res.JitterMs = src.JitterMs
		}
		if e.SumSent == nil && e.Sum != nil {
			res.SentBPS = e.Sum.BitsPerSecond
			res.SentBytes = e.Sum.Bytes
			res.Seconds = e.Sum.Seconds
		}
		if e.SumReceived == nil && e.Sum != nil && e.Sum.Packets > 0 {
			// Old format: estimate delivered rate from loss.
			res.ReceivedBPS = e.Sum.BitsPerSecond * (1 - e.Sum.LostPercent/100)
		}
	}
	return res, nil
}
