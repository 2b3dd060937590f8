package main

import (
	"errors"
	"log/slog"
	"net"

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

// procCheck returns the orphan walk's check. The walk reads every
// process's /proc/PID/ns and fd, which the kernel lets a process with fewer
// capabilities than the one it reads do only with CAP_SYS_PTRACE. No read
// of a chosen process tells that reliably (on 5.10 one without it could
// read kthreadd's and init's, and not the processes the walk had to find),
// so the check asks for the capability itself, wherever nstrace has it to
// keep.
func procCheck() func() error {
	if on, _ := cap.GetProc().GetFlag(cap.Permitted, cap.SYS_PTRACE); !on {
		return func() error { return nil }
	}
	return func() error {
		if on, _ := cap.GetProc().GetFlag(cap.Effective, cap.SYS_PTRACE); !on {
			return errors.New("it reads other processes' /proc/PID/ns and fd (ptrace access)")
		}
		return nil
	}
}
