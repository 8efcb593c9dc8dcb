package membership

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// slogWriter adapts memberlist's *log.Logger output to slog. memberlist
// writes one line per Printf, prefixed with a level tag such as "[DEBUG] ";
// the tag selects the slog level and is stripped, as is the "memberlist: "
// prefix most messages carry. Lines without a tag are logged at info.
//
// Warnings and errors are rate-limited: a stranger spraying the gossip port
// makes memberlist log a line per packet, which must not fill the log. At
// most logBurst such lines pass per logWindow; the rest are counted and
// reported in one line when the next window opens.
type slogWriter struct {
	log        *slog.Logger
	onKeyError func()
	limit      rateLimit // logBurst per logWindow
}

const (
	logBurst  = 20
	logWindow = 10 * time.Second
	// maxLogLine is the longest memberlist line logged; the rest is cut.
	maxLogLine = 1024
)

// newMemberlistLogger returns a *log.Logger for memberlist.Config.Logger
// that forwards to l. onKeyError, if not nil, is called for every message
// memberlist could not decrypt (or that was not encrypted as configured).
func newMemberlistLogger(l *slog.Logger, onKeyError func()) *log.Logger {
	return log.New(&slogWriter{log: l, onKeyError: onKeyError}, "", 0)
}

// isKeyError reports whether a memberlist message says a peer uses another
// gossip key or none.
func isKeyError(msg string) bool {
	return strings.Contains(msg, "decrypt") || strings.Contains(msg, "encryption is not configured") ||
		strings.Contains(msg, "remote state is not encrypted")
}

// allow applies the rate limit to one warning or error line.
func (w *slogWriter) allow(now time.Time) (ok bool, suppressed int) {
	return w.limit.allow(now, logBurst, logWindow)
}

// rateLimit lets at most burst events pass per window (a fixed window that
// opens with the first event after the previous one closed) and counts the
// rest. Its zero value is ready to use.
type rateLimit struct {
	mu         sync.Mutex
	start      time.Time
	passed     int
	suppressed int
}

// allow reports whether one more event may pass, and, when this event opens
// a new window, how many were suppressed in the windows since the last
// report (to be reported once, by the caller).
func (r *rateLimit) allow(now time.Time, burst int, window time.Duration) (ok bool, suppressed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.start) >= window {
		r.start, r.passed, suppressed, r.suppressed = now, 0, r.suppressed, 0
	}
	if r.passed >= burst {
		r.suppressed++
		return false, suppressed
	}
	r.passed++
	return true, suppressed
}

// parseMemberlistLine splits a memberlist log line into level and message.
func parseMemberlistLine(line string) (slog.Level, string) {
	line = strings.TrimRight(line, "\r\n")
	levelTags := [...]struct {
		tag   string
		level slog.Level
	}{
		{"[DEBUG]", slog.LevelDebug},
		{"[INFO]", slog.LevelInfo},
		{"[WARN]", slog.LevelWarn},
		{"[ERR]", slog.LevelError},
		{"[ERROR]", slog.LevelError},
	}
	level := slog.LevelInfo
	for _, t := range levelTags {
		if rest, ok := strings.CutPrefix(line, t.tag); ok {
			level, line = t.level, rest
			break
		}
	}
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "memberlist: ")
	return level, line
}

func (w *slogWriter) Write(p []byte) (int, error) {
	if len(p) > maxLogLine {
		// memberlist quotes names from the wire in its lines (e.g. an
		// alive message it was told to ignore): keep a line a line.
		p = append(p[:maxLogLine:maxLogLine], fmt.Sprintf("... (%d bytes)", len(p))...)
	}
	level, msg := parseMemberlistLine(string(p))
	if w.onKeyError != nil && isKeyError(strings.ToLower(msg)) {
		w.onKeyError()
	}
	if strings.Contains(msg, "use of closed network connection") {
		// memberlist's Shutdown closes its transport before it stops its
		// gossip ticker, so one last send can fail: expected, not an error.
		level = slog.LevelDebug
	}
	ctx := context.Background()
	if !w.log.Enabled(ctx, level) {
		return len(p), nil
	}
	if level >= slog.LevelWarn {
		ok, suppressed := w.allow(time.Now())
		if suppressed > 0 {
			w.log.Warn("suppressed memberlist log lines (rate limit)", "lines", suppressed, "window", logWindow)
		}
		if !ok {
			return len(p), nil
		}
	}
	w.log.Log(ctx, level, msg)
	return len(p), nil
}
