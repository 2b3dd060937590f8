package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nstrace/nstrace/events"
	"github.com/nstrace/nstrace/snapshot"
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
	for _, ns := range nss {
		ev, err := existEvent(ns)
		if err != nil {
			return err
		}
		ev.NsID = s.t.NamespaceID(uint8(ev.Type), ev.Inum, ns.ID)
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
