package membership

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// slogWriter adapts memberlist's *log.Logger output to slog. memberlist
// writes one line per Printf, prefixed with a level tag such as "[DEBUG] ";
// the tag selects the slog level and is stripped, as is the "memberlist: "
// prefix most messages carry. Lines without a tag are logged at info.
type slogWriter struct {
	log *slog.Logger
}

// newMemberlistLogger returns a *log.Logger for memberlist.Config.Logger
// that forwards to l.
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{log: l}, "", 0)
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

func (w slogWriter) Write(p []byte) (int, error) {
	level, msg := parseMemberlistLine(string(p))
	ctx := context.Background()
	if w.log.Enabled(ctx, level) {
		w.log.Log(ctx, level, msg)
	}
	return len(p), nil
}
