package main

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/nstrace/nstrace/privs"
	"github.com/nstrace/nstrace/tracer"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

// dropPrivileges keeps only the capabilities that what nstrace still does
// once attached needs on this kernel (README, Privileges): reading its BPF
// maps (and, for the metrics and the orphans, walking its table of live
// namespaces; for the orphans, other processes' /proc), and
// talking to the Docker daemon at socket if it names containers.
func dropPrivileges(t *tracer.Tracer, socket string, metrics, orphans bool) {
	checks := []privs.Check{{What: "reading BPF maps", Run: t.CheckRuntime, Fallbacks: []cap.Value{cap.BPF, cap.SYS_ADMIN}}}
	if orphans {
		// The walk reads every process's /proc/PID/ns and fd, which the
		// kernel allows only to a tracer of it (ptrace access): a process
		// with fewer capabilities than the target's needs CAP_SYS_PTRACE.
		checks = append(checks, privs.Check{What: "walking /proc for orphaned namespaces", Run: procCheck(), Fallbacks: []cap.Value{cap.SYS_PTRACE}})
	}
	if metrics || orphans {
		checks = append(checks, privs.Check{What: "walking the table of live namespaces (metrics, orphans)", Run: func() error {
			_, err := t.LiveCounts()
			return err
		}, Fallbacks: []cap.Value{cap.BPF, cap.SYS_ADMIN}})
	}
	if socket != "" {
		checks = append(checks, privs.Check{What: "connecting to the Docker daemon at " + socket, Run: func() error {
			c, err := net.Dial("unix", socket)
			if err == nil {
				c.Close()
			}
			return err
		}, Fallbacks: []cap.Value{cap.DAC_OVERRIDE}})
	}
	d, err := privs.Drop(checks...)
	if err != nil {
		slog.Warn("running with every capability: could not tell which it needs", "err", err)
		return
	}
	slog.Debug("capabilities dropped", "kept", privs.Names(d.Kept), "bounding_set_too", d.Bounding, "because", d.Why)
}

// procCheck returns the orphan walk's check: a read of what the walk reads
// (its ns links, its open files) of a process whose capabilities are all
// there are, kthreadd or else init, whichever nstrace can read now: one it
// cannot read even now (a supervisor that forbids it) says nothing of what
// the walk needs.
func procCheck() func() error {
	for _, pid := range []string{"2", "1"} {
		base := "/proc/" + pid
		if _, err := os.Readlink(base + "/ns/mnt"); err != nil {
			continue
		}
		return func() error {
			if _, err := os.Readlink(base + "/ns/mnt"); err != nil {
				return err
			}
			d, err := os.Open(base + "/fd")
			if err != nil {
				return err
			}
			defer d.Close()
			if _, err := d.Readdirnames(1); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			return nil
		}
	}
	return func() error { return nil }
}
