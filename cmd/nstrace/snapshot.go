package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

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
				pc = s.readProc(ns.Pid)
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
// executable and parent's name; what cannot be read stays empty.
func (s *stream) readProc(pid int) procContext {
	var pc procContext
	h := s.t.Hierarchy()
	if p, ok := procCgroup(pid, h.Name); ok {
		var id uint64
		if h.Mount != "" {
			var st unix.Stat_t
			if unix.Stat(filepath.Join(h.Mount, p), &st) == nil {
				id = st.Ino
			}
		}
		pc.ctx = s.attr.ContextOf(id, p)
	}
	pc.exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		if i := bytes.LastIndexByte(st, ')'); i > 0 {
			if f := strings.Fields(string(st[i+1:])); len(f) > 1 {
				if c, err := os.ReadFile("/proc/" + f[1] + "/comm"); err == nil {
					pc.parentComm = strings.TrimSuffix(string(c), "\n")
				}
			}
		}
	}
	return pc
}

// procCgroup is pid's cgroup path in hierarchy name ("unified" or a v1
// controller), from /proc/PID/cgroup.
func procCgroup(pid int, name string) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-id:controller-list:path
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if name == "unified" && f[0] == "0" && f[1] == "" {
			return f[2], true
		}
		if name != "unified" && slices.Contains(strings.Split(f[1], ","), name) {
			return f[2], true
		}
	}
	return "", false
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
