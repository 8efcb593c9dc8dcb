package membership

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type record struct {
	level slog.Level
	msg   string
}

// recordHandler is a slog.Handler that keeps records in memory.
type recordHandler struct {
	mu      sync.Mutex
	min     slog.Level
	records []record
}

func (h *recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *recordHandler) WithGroup(string) slog.Handler                { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, record{r.Level, r.Message})
	return nil
}

func TestMemberlistLogBridge(t *testing.T) {
	h := &recordHandler{min: slog.LevelDebug}
	l := newMemberlistLogger(slog.New(h), nil)
	l.Printf("[DEBUG] memberlist: Stream connection from=%s", "127.0.0.1:1")
	l.Printf("[INFO] memberlist: Updating address for left or failed node b")
	l.Printf("[WARN] memberlist: Refuting a dead message (from: a)")
	l.Printf("[ERR] memberlist: Failed fallback TCP ping: EOF")
	l.Printf("[ERROR] memberlist: failed to receive: EOF")
	l.Printf("Err: Could not set the deadline: closed")
	want := []record{
		{slog.LevelDebug, "Stream connection from=127.0.0.1:1"},
		{slog.LevelInfo, "Updating address for left or failed node b"},
		{slog.LevelWarn, "Refuting a dead message (from: a)"},
		{slog.LevelError, "Failed fallback TCP ping: EOF"},
		{slog.LevelError, "failed to receive: EOF"},
		{slog.LevelInfo, "Err: Could not set the deadline: closed"},
	}
	if len(h.records) != len(want) {
		t.Fatalf("got %d records %v, want %d", len(h.records), h.records, len(want))
	}
	for i, w := range want {
		if h.records[i] != w {
			t.Errorf("record %d = %+v, want %+v", i, h.records[i], w)
		}
	}

	// Debug is dropped by a logger at info level.
	h = &recordHandler{min: slog.LevelInfo}
	l = newMemberlistLogger(slog.New(h), nil)
	l.Printf("[DEBUG] memberlist: chatty")
	l.Printf("[WARN] memberlist: not chatty")
	if len(h.records) != 1 || h.records[0].level != slog.LevelWarn {
		t.Errorf("records at info level = %v, want only the warning", h.records)
	}
}

func TestLeaveIntentCodec(t *testing.T) {
	b := encodeLeaveIntent(0x0102030405060708, "host-1")
	id, name, err := decodeLeaveIntent(b)
	if err != nil || id != 0x0102030405060708 || name != "host-1" {
		t.Fatalf("decode(encode) = %x, %q, %v", id, name, err)
	}
	for _, bad := range [][]byte{nil, b[:intentHdrLen], {2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 'x'}, {1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 'x'}} {
		if _, _, err := decodeLeaveIntent(bad); err == nil {
			t.Errorf("decodeLeaveIntent(%x) succeeded", bad)
		}
	}
}

func TestMemberlistLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	keyErrs := 0
	l := newMemberlistLogger(slog.New(slog.NewTextHandler(&buf, nil)), func() { keyErrs++ })
	for range 500 {
		l.Printf("[ERR] memberlist: Failed to decrypt packet from=192.0.2.1:7946: No installed keys could decrypt the message")
	}
	if lines := strings.Count(buf.String(), "\n"); lines != logBurst {
		t.Errorf("500 errors logged as %d lines, want %d (the burst)", lines, logBurst)
	}
	if keyErrs != 500 {
		t.Errorf("counted %d key errors, want 500", keyErrs)
	}
	w := &slogWriter{log: slog.New(slog.NewTextHandler(&buf, nil))}
	now := time.Now()
	for range logBurst + 5 {
		w.allow(now)
	}
	if ok, suppressed := w.allow(now.Add(logWindow)); !ok || suppressed != 5 {
		t.Errorf("next window: ok=%v suppressed=%d, want true, 5", ok, suppressed)
	}
}

func TestShutdownSendErrorIsDebug(t *testing.T) {
	var buf bytes.Buffer
	l := newMemberlistLogger(slog.New(slog.NewTextHandler(&buf, nil)), nil)
	l.Printf("[ERR] memberlist: Failed to send gossip to 192.0.2.2:7946: write udp [::]:7946->192.0.2.2:7946: use of closed network connection")
	if buf.Len() != 0 {
		t.Errorf("logged at info level: %s", buf.String())
	}
}

func TestLongLineCut(t *testing.T) {
	var buf bytes.Buffer
	l := newMemberlistLogger(slog.New(slog.NewTextHandler(&buf, nil)), nil)
	l.Printf("[WARN] memberlist: ignoring alive message for '%s': too long", strings.Repeat("x", 64<<10))
	if n := buf.Len(); n > maxLogLine+200 || !strings.Contains(buf.String(), "bytes)") {
		t.Errorf("a 64 KiB line logged as %d bytes: %.200s", n, buf.String())
	}
}
