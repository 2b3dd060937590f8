package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/nstrace/nstrace/events"
	"github.com/nstrace/nstrace/snapshot"
	"github.com/nstrace/nstrace/tracer"
)

// snapshot prints every namespace alive now as an exist event. Stopping
// (Ctrl-C, --duration) during the walk prints none and is no error.
func (s *stream) snapshot(ctx context.Context) error {
	nss, st, err := snapshot.Take(ctx, snapshot.Options{})
	if ctx.Err() != nil {
		slog.Debug("snapshot interrupted", "after", st.Duration)
		return nil
	}
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	slog.Debug("snapshot", "namespaces", len(nss), "processes", st.Processes, "vanished", st.Vanished,
		"unreadable", st.Unreadable, "mount_namespaces", st.MountNamespaces, "took", st.Duration)
	if st.FDLimited > 0 {
		slog.Info(fmt.Sprintf("snapshot: open files of %d processes only partly examined (more than %d each); namespaces only those hold may be missing",
			st.FDLimited, snapshot.DefaultMaxFDs))
	}
	procs := map[int]procContext{}
	for _, ns := range nss {
		ev, err := existEvent(ns)
		if err != nil {
			return err
		}
		owner := tracer.Owner{Pid: ev.Pid}
		if ev.Pid != 0 {
			pc, ok := procs[ns.Pid]
			if !ok {
				pc = s.readProc(ns.Pid, ns.Ppid)
				procs[ns.Pid] = pc
			}
			ev.Ctx, ev.Exe, ev.ParentComm = pc.ctx, pc.exe, pc.parentComm
			owner.CgroupID = pc.ctx.CgroupID
			owner.Pass = s.sel.actorPasses(ev.Pid, ev.Comm, ev.Uid, &ev.Ctx)
		}
		ev.NsID = s.t.NamespaceID(uint8(ev.Type), ev.Inum, ns.ID, owner)
		if !s.sel.kindAndTypePass(events.Exist, ev.Type) || (s.sel.kernel.Filtered() && !owner.Pass) {
			continue
		}
		if err := s.out.Write(&ev); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if s.metrics != nil {
			s.metrics.Observe(&ev)
		}
		s.existing++
	}
	if err := s.out.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// procContext is what an exist event says of the process it names.
type procContext struct {
	ctx        events.Context
	exe        string
	parentComm string
}

// readProc reads pid's cgroup (in the hierarchy the kernel side uses),
// executable and the name of its parent ppid; what cannot be read stays
// empty.
func (s *stream) readProc(pid, ppid int) procContext {
	var pc procContext
	if p, id, ok := s.t.Hierarchy().Of(pid); ok {
		pc.ctx = s.attr.ContextOf(id, p)
	}
	pc.exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if c, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ppid)); err == nil && ppid != 0 {
		pc.parentComm = strings.TrimSuffix(string(c), "\n")
	}
	return pc
}

func existEvent(ns snapshot.Namespace) (events.Event, error) {
	typ, ok := events.ParseNsType(ns.Type)
	if !ok {
		return events.Event{}, errors.New("snapshot: unknown namespace type " + ns.Type)
	}
	return events.Event{
		Time:       ns.Seen,
		Kind:       events.Exist,
		Type:       typ,
		Inum:       ns.Inum,
		Pid:        uint32(ns.Pid),
		Ppid:       uint32(ns.Ppid),
		Uid:        uint32(ns.Uid),
		Comm:       ns.Comm,
		HeldBy:     ns.HeldBy.String(),
		Nprocs:     uint32(ns.Nprocs),
		ParentInum: ns.Parent,
		OwnerInum:  ns.Owner,
		Mountpoint: ns.Mountpoint,
	}, nil
}
