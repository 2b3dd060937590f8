package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// logHandler writes diagnostics as "nstrace: message key=value ..." lines,
// the way command-line tools talk on stderr.
type logHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	level slog.Level
	attrs []slog.Attr
}

func newLogHandler(w io.Writer, level slog.Level) *logHandler {
	return &logHandler{mu: new(sync.Mutex), w: w, level: level}
}

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("nstrace: ")
	if r.Level >= slog.LevelWarn {
		b.WriteString(strings.ToLower(r.Level.String()) + ": ")
	}
	b.WriteString(r.Message)
	write := func(a slog.Attr) bool {
		// Values can carry what others chose (a container's labels, a
		// path): anything a terminal would act on is quoted, escaped.
		v := a.Value.String()
		if !utf8.ValidString(v) || strings.IndexFunc(v, func(r rune) bool { return !strconv.IsPrint(r) }) >= 0 {
			v = strconv.Quote(v)
		}
		fmt.Fprintf(&b, " %s=%s", a.Key, v)
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), attrs...)
	return &c
}

func (h *logHandler) WithGroup(string) slog.Handler { return h }

// debugState logs, with -v, the goroutines running and the heap live after
// a collection: a leak shows in the second whatever the collector's timing
// and whatever pages the kernel has mapped in (the soak test compares the
// start's with the end's).
func debugState(when string) {
	if !slog.Default().Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	runtime.GC()
	live := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(live)
	slog.Debug(when, "goroutines", runtime.NumGoroutine(), "heap_live", live[0].Value.Uint64())
}
