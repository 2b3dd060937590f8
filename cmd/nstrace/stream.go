package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/nstrace/nstrace/events"
	"github.com/nstrace/nstrace/metrics"
	"github.com/nstrace/nstrace/tracer"
)

// stream moves events from the ring buffer to the output.
type stream struct {
	t        *tracer.Tracer
	dec      *events.Decoder
	out      events.Writer
	life     *events.Lifetimes
	attr     *events.Attributor
	sel      *selection
	limits   *events.LimitWatch // nil: no limit events
	stats    *events.Stats      // nil: no summary
	metrics  *metrics.Metrics   // nil: no --metrics-addr
	orphans  *orphanWatch       // nil: no --orphans
	stop     context.CancelFunc // loop's
	stackErr bool               // a kernel stack could not be read (said once)
	limit    uint64             // stop after this many events; 0: no limit
	printed  uint64             // events, but for exist ones
	existing uint64             // exist events (--snapshot)
	lost     uint64
	skipped  uint64       // hook runs the kernel skipped (Tracer.Skipped)
	stopAt   atomic.Int64 // wall-clock ns of the stop request, 0 before
	// tablesChecked is when the BPF tables were last looked at for one
	// that was full (at most once a second, when the ring buffer is empty).
	tablesChecked time.Time
}

// checkTables says, once per table, that one was full.
func (s *stream) checkTables() {
	msgs, err := s.t.FullTables()
	if err != nil {
		slog.Warn("could not read the tables' counters", "err", err)
		return
	}
	for _, m := range msgs {
		slog.Warn(m)
	}
}

// loop reads until the tracer is flushed (after Detach) or the count limit
// is reached, in which case it calls stop and keeps draining.
func (s *stream) loop(stop context.CancelFunc) error {
	s.stop = stop
	// Output goes out whenever the ring buffer has nothing more for now
	// (not per event: under load, large writes).
	s.t.BeforeWait(func() error {
		if err := s.out.Flush(); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if now := time.Now(); now.Sub(s.tablesChecked) >= time.Second {
			s.tablesChecked = now
			s.checkTables()
		}
		return nil
	})
	var rec ringbuf.Record
	// One set of Events for all records: Write(&ev) moves them to the
	// heap, and new ones for each record would be allocations per event.
	var evs [events.MaxPerRecord]events.Event
	for {
		err := s.t.Read(&rec)
		if errors.Is(err, ringbuf.ErrFlushed) || errors.Is(err, ringbuf.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read ring buffer: %w", err)
		}
		if str, lost, ok, err := events.DecodeString(rec.RawSample); ok {
			if err := s.learn(str, lost, err); err != nil {
				return err
			}
			continue
		}
		// A record is one operation: its events share the task and the time.
		n, lost, err := s.dec.DecodeInto(evs[:], rec.RawSample)
		at := &evs[0]
		if n == 0 {
			at = &events.Event{Time: time.Now()}
		}
		if s.stopped(at) {
			// Detaching takes a while and not all hooks go at once: what
			// they report after the stop request is a partial picture.
			s.lostQuietly(uint64(lost))
			continue
		}
		if lost > 0 {
			if err := s.reportLost(uint64(lost), *at); err != nil {
				return err
			}
		}
		if err != nil {
			slog.Warn("skipping record", "err", err)
			continue
		}
		for i := range evs[:n] {
			if err := s.write(&evs[i], stop); err != nil {
				return err
			}
		}
	}
}

// write puts out one event, unless the count limit was reached.
func (s *stream) write(ev *events.Event, stop context.CancelFunc) error {
	if s.limit > 0 && s.printed >= s.limit {
		return nil
	}
	s.life.Annotate(ev)
	s.attr.Annotate(ev)
	if s.orphans != nil && ev.Kind == events.Destroy {
		s.orphans.destroyed(ev)
	}
	if ev.StackID != 0 {
		frames, err := s.t.Stack(ev.StackID)
		if err != nil && !s.stackErr {
			slog.Warn("kernel stacks cannot be read", "err", err)
			s.stackErr = true
		}
		ev.KernelStack = frames
	}
	// A create only a limit event was asked for counts for the limits,
	// and is not printed.
	if s.sel.kindPasses(ev.Kind) {
		if err := s.put(ev, stop); err != nil {
			return err
		}
		if s.stats != nil {
			s.stats.Add(ev)
		}
	}
	if s.limits == nil {
		return nil
	}
	if lim := s.limits.Check(ev); lim != nil && s.sel.kindPasses(events.Limit) {
		return s.put(lim, stop)
	}
	return nil
}

// put prints one event, counts it, and stops at the count limit.
func (s *stream) put(ev *events.Event, stop context.CancelFunc) error {
	if s.limit > 0 && s.printed >= s.limit {
		return nil
	}
	if err := s.out.Write(ev); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if s.metrics != nil {
		s.metrics.Observe(ev)
	}
	s.printed++
	if s.limit > 0 && s.printed == s.limit {
		stop()
	}
	return nil
}

// writeOrphans prints the orphans the walk found since the last call.
func (s *stream) writeOrphans() error {
	for _, o := range s.orphans.take() {
		ev := o.ev
		if !s.sel.kindAndTypePass(events.Orphan, ev.Type) || (s.sel.kernel.Filtered() && !o.pass) {
			continue
		}
		s.attr.Annotate(&ev)
		if err := s.put(&ev, s.stop); err != nil {
			return err
		}
	}
	return nil
}

// writeSummary prints the counts so far and starts the next interval.
func (s *stream) writeSummary() error {
	now := time.Now()
	ev := events.Event{Kind: events.Summary, Time: now, Stats: s.stats}
	if err := s.out.Write(&ev); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := s.out.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	s.stats.Next(now)
	return nil
}

// learn keeps a string record; the events dropped before it are reported
// like those before an event.
func (s *stream) learn(str events.StringRecord, lost uint32, err error) error {
	if lost > 0 {
		if s.stopped(&events.Event{}) {
			s.lostQuietly(uint64(lost))
		} else if err := s.reportLost(uint64(lost), events.Event{Time: time.Now()}); err != nil {
			return err
		}
	}
	if err != nil {
		slog.Warn("skipping record", "err", err)
		return nil
	}
	s.attr.Learn(str)
	return nil
}

// requestStop marks the moment nstrace was asked to stop.
func (s *stream) requestStop() {
	s.stopAt.CompareAndSwap(0, time.Now().UnixNano())
}

// stopped reports whether ev comes after the stop request or the count limit.
func (s *stream) stopped(ev *events.Event) bool {
	if s.limit > 0 && s.printed >= s.limit {
		return true
	}
	at := s.stopAt.Load()
	return at != 0 && !ev.Time.IsZero() && ev.Time.UnixNano() > at
}

func (s *stream) reportLost(n uint64, at events.Event) error {
	s.lost += n
	ev := events.Event{Kind: events.Lost, Time: at.Time, Count: n}
	if s.metrics != nil {
		s.metrics.Observe(&ev)
	}
	return s.out.Write(&ev)
}

// lostQuietly counts n events lost that no lost event reports.
func (s *stream) lostQuietly(n uint64) {
	s.lost += n
	if s.metrics != nil {
		s.metrics.Lost(n)
	}
}

// finish reports drops no record carried, then flushes.
func (s *stream) finish() error {
	s.checkTables()
	n, err := s.t.Lost()
	if err != nil {
		slog.Warn("could not read drop counters", "err", err)
	}
	if s.skipped, err = s.t.Skipped(); err != nil {
		slog.Warn("could not read the programs' counters", "err", err)
	}
	switch {
	case n > 0 && s.limit > 0 && s.printed >= s.limit:
		s.lostQuietly(n) // --count output is complete; the summary on stderr has it
	case n > 0:
		if err := s.reportLost(n, events.Event{Time: time.Now()}); err != nil {
			return err
		}
	}
	if err := s.out.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}
