package main

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
)

// switchHandler is a slog.Handler whose format and level can change at run
// time (on reload); loggers derived with With keep working.
type switchHandler struct {
	w     io.Writer
	level *slog.LevelVar
	base  *atomic.Pointer[slog.Handler]
	attrs []slog.Attr
	group string
}

func newSwitchHandler(w io.Writer, format string, level slog.Level) *switchHandler {
	h := &switchHandler{w: w, level: new(slog.LevelVar), base: new(atomic.Pointer[slog.Handler])}
	h.set(format, level)
	return h
}

func (h *switchHandler) set(format string, level slog.Level) {
	h.level.Set(level)
	opts := &slog.HandlerOptions{Level: h.level}
	var base slog.Handler = slog.NewTextHandler(h.w, opts)
	if format == "json" {
		base = slog.NewJSONHandler(h.w, opts)
	}
	h.base.Store(&base)
}

func (h *switchHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	base := *h.base.Load()
	if h.group != "" {
		base = base.WithGroup(h.group)
	}
	if len(h.attrs) > 0 {
		base = base.WithAttrs(h.attrs)
	}
	return base.Handle(ctx, r)
}

func (h *switchHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(slices.Clip(h.attrs), attrs...)
	return &c
}

func (h *switchHandler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}
