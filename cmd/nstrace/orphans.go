package main

// --orphans AFTER: namespaces alive with no process in them for AFTER, and
// what holds them.

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nstrace/nstrace/events"
	"github.com/nstrace/nstrace/snapshot"
	"github.com/nstrace/nstrace/tracer"
)

// orphanPeriod is how often the walk for orphans runs: half of AFTER, so
// that one is reported at most 1.5 x AFTER after its last process left,
// and at least every 10 s and at most every 250 ms.
func orphanPeriod(after time.Duration) time.Duration {
	return min(max(after/2, 250*time.Millisecond), 10*time.Second)
}

type nsRef struct {
	typ  events.NsType
	inum uint32
	id   uint64
}

// foundOrphan is an orphan event waiting for the stream to write it, and
// whether its owner passed the filters.
type foundOrphan struct {
	ev   events.Event
	pass bool
}

// orphanWatch walks the namespaces every period (snapshot.Take, as
// --snapshot does, and nstrace's table of live ones) in a goroutine of its
// own; the stream writes what it found (take) and marks the destroys of
// those it reported (destroyed).
type orphanWatch struct {
	t      *tracer.Tracer
	after  time.Duration
	period time.Duration
	// trusted: types whose teardown this backend sees (exact or polled),
	// so that one in the live table is alive; only those are reported
	// held by something the walk cannot name.
	trusted [events.NumTypes]bool

	since map[nsRef]time.Time // the walker's: orphaned since (first walk that saw it so)

	mu       sync.Mutex
	found    []foundOrphan
	reported map[nsRef]time.Time // orphaned since, of those reported
	gone     map[nsRef]bool      // reported, and found gone by one walk
	// dead: destroyed, with how many walks had ended then. A walk that was
	// under way read the live table before the destroy (and, on a slow
	// machine, long before: arm64 under emulation reported an ip netns
	// orphaned again after its destroy): it must not report it.
	dead     map[nsRef]int
	walks    int
	walkTime time.Duration
}

func newOrphanWatch(t *tracer.Tracer, after time.Duration) *orphanWatch {
	w := &orphanWatch{t: t, after: after, period: orphanPeriod(after), since: map[nsRef]time.Time{}, reported: map[nsRef]time.Time{}, gone: map[nsRef]bool{},
		dead: map[nsRef]int{}}
	for i, how := range t.Teardowns() {
		w.trusted[i] = how == tracer.TeardownExact || how == tracer.TeardownPolled
	}
	return w
}

// run walks every period until ctx is done.
func (w *orphanWatch) run(ctx context.Context) {
	tick := time.NewTicker(w.period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			w.walk(ctx)
		}
	}
}

// holding is what the walk says holds an orphan.
type holding struct {
	heldBy     string
	mountpoint string
	pid        int
	comm       string
	fd         int
}

func (w *orphanWatch) walk(ctx context.Context) {
	start := time.Now()
	n := w.walks // only this goroutine changes it
	// The table before the walk: a namespace created during the walk is
	// not taken for one the walk missed.
	live, err := w.t.LiveNamespaces()
	if err != nil {
		slog.Warn("orphans: cannot read the live namespaces", "err", err)
		return
	}
	nss, _, err := snapshot.Take(ctx, snapshot.Options{})
	if err != nil {
		if ctx.Err() == nil {
			slog.Warn("orphans: cannot walk the namespaces", "err", err)
		}
		return
	}
	type tk struct {
		typ  events.NsType
		inum uint32
	}
	byInum := make(map[tk]*tracer.LiveNamespace, len(live))
	for i := range live {
		byInum[tk{events.NsType(live[i].Type), live[i].Inum}] = &live[i]
	}
	now := time.Now()
	cands := map[nsRef]holding{}
	seen := make(map[tk]bool, len(nss))
	for i := range nss {
		ns := &nss[i]
		typ, ok := events.ParseNsType(ns.Type)
		if !ok {
			continue
		}
		seen[tk{typ, ns.Inum}] = true
		if ns.HeldBy == snapshot.HeldByProcess {
			continue
		}
		id := ns.ID
		if l := byInum[tk{typ, ns.Inum}]; l != nil {
			id = l.ID
		}
		h := holding{heldBy: ns.HeldBy.String(), mountpoint: ns.Mountpoint, fd: -1}
		if ns.HeldBy == snapshot.HeldByFD {
			h.pid, h.comm, h.fd = ns.Pid, ns.Comm, ns.FD
		}
		cands[nsRef{typ, ns.Inum, id}] = h
	}
	for _, l := range live {
		typ := events.NsType(l.Type)
		if int(typ) < events.NumTypes && w.trusted[typ] && !seen[tk{typ, l.Inum}] {
			cands[nsRef{typ, l.Inum, l.ID}] = holding{heldBy: "other", fd: -1}
		}
	}
	for ref := range w.since {
		if _, ok := cands[ref]; !ok {
			delete(w.since, ref)
		}
	}
	w.mu.Lock()
	for ref, h := range cands {
		since, ok := w.since[ref]
		if !ok {
			w.since[ref] = now
			continue
		}
		if _, done := w.reported[ref]; done || now.Sub(since) < w.after {
			continue
		}
		if _, d := w.dead[ref]; d {
			continue
		}
		ev := events.Event{Kind: events.Orphan, Time: now, Type: ref.typ, Inum: ref.inum, NsID: ref.id,
			HeldBy: h.heldBy, Mountpoint: h.mountpoint, HolderPid: uint32(h.pid), HolderComm: h.comm, HolderFD: int32(h.fd),
			OrphanedFor: now.Sub(since), HasOrphanedFor: true}
		pass := true
		if l := byInum[tk{ref.typ, ref.inum}]; l != nil {
			ev.SetOwner(l.Owner.Pid, l.Owner.CgroupID)
			pass = l.Owner.Pass
		}
		w.found = append(w.found, foundOrphan{ev, pass})
		w.reported[ref] = since
	}
	// A reported one a process is in again is forgotten: it is reported
	// again if it is orphaned anew. One gone from both the walk and the
	// table is forgotten a walk later: its destroy, on its way to the
	// stream meanwhile, still finds it.
	for ref := range w.reported {
		if _, ok := cands[ref]; ok {
			continue
		}
		k := tk{ref.typ, ref.inum}
		switch {
		case seen[k]:
			delete(w.reported, ref)
		case byInum[k] == nil && w.gone[ref]:
			delete(w.reported, ref)
			delete(w.gone, ref)
		case byInum[k] == nil:
			w.gone[ref] = true
		}
	}
	// A walk that began after a destroy did not see it alive.
	for ref, k := range w.dead {
		if n > k {
			delete(w.dead, ref)
		}
	}
	w.walks++
	w.walkTime += time.Since(start)
	w.mu.Unlock()
	slog.Debug("orphans: walked", "namespaces", len(nss), "live", len(live), "orphaned", len(cands), "took", time.Since(start).Round(100*time.Microsecond))
}

// take returns the orphans found since the last call.
func (w *orphanWatch) take() []foundOrphan {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := w.found
	w.found = nil
	return f
}

// destroyed marks ev, a destroy, with how long it was orphaned, if it was
// reported orphaned, and keeps a walk under way from reporting it.
func (w *orphanWatch) destroyed(ev *events.Event) {
	ref := nsRef{ev.Type, ev.Inum, ev.NsID}
	w.mu.Lock()
	since, ok := w.reported[ref]
	if ok {
		delete(w.reported, ref)
		delete(w.gone, ref)
	}
	w.dead[ref] = w.walks
	w.mu.Unlock()
	if ok {
		ev.OrphanedFor, ev.HasOrphanedFor = ev.Time.Sub(since), true
	}
}

// cost is how many walks ran and their mean duration.
func (w *orphanWatch) cost() (int, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.walks == 0 {
		return 0, 0
	}
	return w.walks, w.walkTime / time.Duration(w.walks)
}
