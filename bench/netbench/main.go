// Command netbench measures weft's data path against the kernel: raw veth,
// the kernel's VXLAN device (flannel's vxlan backend), and weft in several
// modes, between two network namespaces joined by a veth pair.
//
// Run it as root from the repository root (make bench does):
//
//	go run ./bench/netbench [-reps 3] [-duration 5] [-paths veth,kvxlan,weft-udp] [-profile]
//
// It prints one table and the targets as pass/fail lines, and writes
// the same as JSON to bench/results/<UTC timestamp>.json. It exits 0 when
// every measurement ran (whether or not the targets are met), 1 when a
// measurement failed, 2 on bad flags and 130 when interrupted.
//
// Safety: all traffic stays inside two namespaces this program creates
// (internal/netlab); nothing is routed to or from the root namespace. Every
// namespace, link and process it creates is removed on exit, on Ctrl-C
// (first signal: orderly cleanup; second: immediate exit, netlab's reaper
// then deletes the namespaces and the kernel kills the daemons).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1 // a measurement (or the setup) failed
	exitUsage       = 2
	exitInterrupted = 130
)

// options are the command-line flags; they are recorded in the JSON.
type options struct {
	Reps       int      `json:"reps"`
	UDPReps    int      `json:"udp_reps"`
	Duration   int      `json:"duration_s"`
	UDPDur     int      `json:"udp_duration_s"`
	Paths      []string `json:"paths"`
	Pings      int      `json:"pings"`
	PingIntvl  float64  `json:"ping_interval_s"`
	UDPLen     int      `json:"udp_len"`
	UDPRate    string   `json:"udp_rate"`
	UDPRcvbuf  string   `json:"udp_rcvbuf"`
	BusyPoll   string   `json:"busy_poll"`
	Profile    bool     `json:"profile"`
	ProfileSec int      `json:"profile_s"`
	// ProfileTest is the transfer the profiles are taken during: "tcp1"
	// (one TCP stream) or "udp" (the small-datagram test).
	ProfileTest string `json:"profile_test"`
	WeftBin     string `json:"weft_bin,omitempty"`
	OutDir      string `json:"out_dir"`
	NoJSON      bool   `json:"-"`
	Verbose     bool   `json:"-"`
}

// rcvbufRE is a size as iperf3 -w takes it.
var rcvbufRE = regexp.MustCompile(`^[1-9][0-9]*[KMG]?$`)

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	var paths string
	fs := flag.NewFlagSet("netbench", flag.ContinueOnError)
	fs.IntVar(&o.Reps, "reps", 3, "repetitions of each TCP test (the table shows the median)")
	fs.IntVar(&o.Duration, "duration", 5, "seconds per iperf3 TCP run")
	fs.IntVar(&o.UDPReps, "udp-reps", 3, "repetitions of the UDP small-datagram test (the table shows the median)")
	fs.IntVar(&o.UDPDur, "udp-duration", 2, "seconds per iperf3 UDP run")
	fs.StringVar(&paths, "paths", strings.Join(defaultPathNames(), ","), "comma-separated paths to measure (\"all\": every one), in this order: "+strings.Join(allPathNames(), ", "))
	fs.IntVar(&o.Pings, "pings", 20, "echo requests for the RTT (after 3 warm-up pings)")
	fs.Float64Var(&o.PingIntvl, "ping-interval", 0.05, "seconds between echo requests")
	fs.IntVar(&o.UDPLen, "udp-len", 64, "UDP datagram payload (iperf3 -l)")
	fs.StringVar(&o.UDPRate, "udp-rate", "0", "UDP target bitrate (iperf3 -b; 0 = as fast as the sender can)")
	fs.StringVar(&o.UDPRcvbuf, "udp-rcvbuf", "4M", "repeat the UDP test with this socket buffer size for iperf3 (-w, both ends; \"\": do not)")
	fs.StringVar(&o.BusyPoll, "busy-poll", "50us", "weft --busy-poll duration of the weft-udp-bp path")
	fs.BoolVar(&o.Profile, "profile", false, "capture a CPU profile of the sending weft (and the receiving one) during an extra TCP 1-stream run; needs weft --pprof-addr, which the bench passes")
	fs.IntVar(&o.ProfileSec, "profile-seconds", 5, "length of the CPU profile")
	fs.StringVar(&o.ProfileTest, "profile-test", "tcp1", "the transfer during which -profile captures: tcp1 (one TCP stream) or udp (the small-datagram test; files *-udp-cpu.pprof)")
	fs.StringVar(&o.WeftBin, "weft", "", "use this weft binary instead of building ./cmd/weft")
	fs.StringVar(&o.OutDir, "out", "", "results directory (default <repo>/bench/results)")
	fs.BoolVar(&o.NoJSON, "no-json", false, "do not write the JSON results file")
	fs.BoolVar(&o.Verbose, "v", false, "print every iperf3 repetition")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./bench/netbench [flags]   (as root)\n\npaths:\n")
		for _, p := range pathDefs {
			fmt.Fprintf(fs.Output(), "  %-18s %s\n", p.Name, p.Desc)
		}
		fmt.Fprintln(fs.Output(), "\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "netbench: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	var err error
	if o.Paths, err = parsePaths(paths); err != nil {
		fmt.Fprintln(os.Stderr, "netbench:", err)
		return exitUsage
	}
	switch {
	case o.Reps < 1 || o.UDPReps < 1:
		err = errors.New("-reps and -udp-reps must be at least 1")
	case o.Duration < 1 || o.Duration > 600 || o.UDPDur < 1 || o.UDPDur > 600:
		err = errors.New("-duration and -udp-duration must be 1-600 seconds")
	case o.Pings < 1 || o.PingIntvl < 0.002:
		err = errors.New("-pings must be at least 1 and -ping-interval at least 0.002")
	case o.UDPLen < 16 || o.UDPLen > 1400:
		err = errors.New("-udp-len must be 16-1400")
	case o.ProfileSec < 1 || o.ProfileSec > 60:
		err = errors.New("-profile-seconds must be 1-60")
	case o.ProfileTest != "tcp1" && o.ProfileTest != "udp":
		err = fmt.Errorf("-profile-test %q: want tcp1 or udp", o.ProfileTest)
	}
	if err == nil && o.UDPRcvbuf != "" && !rcvbufRE.MatchString(o.UDPRcvbuf) {
		err = fmt.Errorf("-udp-rcvbuf %q: want a size iperf3 -w takes, such as 4M or 512K, or \"\"", o.UDPRcvbuf)
	}
	if err == nil {
		if d, perr := time.ParseDuration(o.BusyPoll); perr != nil || d <= 0 || d > time.Second {
			err = fmt.Errorf("-busy-poll %q: want a duration above 0 and at most 1s, such as 50us", o.BusyPoll)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netbench:", err)
		return exitUsage
	}

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "netbench: must run as root: it creates network namespaces, veth pairs and TUN devices (CAP_NET_ADMIN).")
		fmt.Fprintln(os.Stderr, "          Run it as root, e.g. `sudo make bench` or `sudo env PATH=$PATH go run ./bench/netbench`.")
		return exitFailed
	}
	if missing := netlab.MissingTools("ip", "iperf3", "ping", "ss", "bridge"); len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "netbench: required tools not in PATH: %s (apt-get install -y iproute2 iperf3 iputils-ping)\n", strings.Join(missing, ", "))
		return exitFailed
	}

	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "netbench:", err)
		return exitFailed
	}
	if o.OutDir == "" {
		o.OutDir = filepath.Join(root, "bench", "results")
	}

	// First signal: cancel, clean up, exit 130. Second: exit at once (the
	// netlab reaper removes the namespaces; PDEATHSIG kills the daemons).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\nnetbench: %v: stopping and cleaning up (send it again to exit at once)\n", s)
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "netbench: exiting now; the lab's reaper removes the namespaces")
		os.Exit(exitInterrupted)
	}()

	b := &bench{opts: o, root: root, start: time.Now().UTC()}
	code := b.run(ctx)
	if ctx.Err() != nil {
		return exitInterrupted
	}
	return code
}

// repoRoot finds the module root (the directory of go.mod) from the
// working directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(data), "module github.com/weftnet/weft") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("run me from inside the weft repository (no go.mod of github.com/weftnet/weft above %s)", dir)
		}
	}
}
