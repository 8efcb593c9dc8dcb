package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/config"
	"github.com/weftnet/weft/kernelvx"
	"github.com/weftnet/weft/node"
	"github.com/weftnet/weft/tun"
)

// version and buildRevision are set at build time with -ldflags
// "-X main.version=... -X main.buildRevision=...".
var (
	version       = "dev"
	buildRevision = ""
)

func revision() string {
	if buildRevision != "" {
		return buildRevision
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// cmdRun is `weft run`: it starts the node and serves until SIGTERM or
// SIGINT, reloading on SIGHUP.
func cmdRun(ctx context.Context, args []string, stderr io.Writer) int {
	s, check, cleanup, err := config.Parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "weft: %v\n", err)
		return exitUsage
	}
	if check {
		fmt.Fprintln(stderr, "weft: configuration is valid")
		return exitOK
	}
	logs := newSwitchHandler(stderr, s.Live.LogFormat, s.Live.LogLevel)
	log := slog.New(logs)
	if cleanup {
		if err := runCleanup(s, log); err != nil {
			log.Error("cleanup", "err", err)
			return exitFailure
		}
		return exitOK
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d := node.SystemDeps(log)
	d.SetLogging = logs.set
	d.Notify = func(state string) { _, _ = daemon.SdNotify(false, state) }
	if interval, err := daemon.SdWatchdogEnabled(false); err == nil {
		d.Watchdog = interval
	}
	d.Version, d.Revision = version, revision()
	n, err := node.Start(ctx, s, d)
	if err != nil {
		if ce := (*node.ConfigError)(nil); errors.As(err, &ce) {
			fmt.Fprintf(stderr, "weft: %v\n", err)
			return exitUsage
		}
		log.Error("weft failed", "err", err)
		return exitFailure
	}
	for {
		select {
		case <-n.Done():
			if err := n.Wait(); err != nil {
				log.Error("weft failed", "err", err)
				return exitFailure
			}
			return exitOK
		case <-hup:
			reload(n, args, d, log)
		}
	}
}

// runCleanup removes what a crashed or killed run left, whatever its data
// path: the TUN link and the routes carrying weft's protocol, and the
// kernel data path's VXLAN device (with its routes, neighbour and FDB
// entries) and peer filter. Nothing left is success.
func runCleanup(s node.Settings, log *slog.Logger) error {
	errs := []error{tun.Cleanup(s.TUN, log)}
	k, err := kernelvx.NewSystem()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("open netlink: %w", err))...)
	}
	defer k.Close()
	return errors.Join(append(errs, kernelvx.Cleanup(k, s.VXLANDevice, log))...)
}

// reload re-reads the configuration (SIGHUP) and hands it to the node. A
// change that needs a restart is refused with a log line naming the
// settings, and the running configuration stays.
func reload(n *node.Node, args []string, d node.Deps, log *slog.Logger) {
	d.Notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
	defer d.Notify("READY=1")
	next, _, _, err := config.Parse(args, io.Discard)
	if err != nil {
		log.Error("reload refused: the configuration is invalid; keeping the running one", "err", err)
		return
	}
	changed, err := n.Reload(next)
	var re *node.RestartError
	switch {
	case errors.As(err, &re):
		log.Error("reload refused: these settings need a restart; keeping the running configuration", "changed", strings.Join(re.Settings, ", "))
		return
	case err != nil:
		log.Error("reload: some settings did not change", "err", err)
	}
	if len(changed) == 0 {
		log.Info("configuration reloaded: nothing changed")
		return
	}
	log.Info("configuration reloaded", "changed", strings.Join(changed, ", "))
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() / 1000
}
