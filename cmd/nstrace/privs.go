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
// maps (and, for the metrics, walking its table of live namespaces), and
// talking to the Docker daemon at socket if it names containers.
func dropPrivileges(t *tracer.Tracer, socket string, metrics, orphans bool) {
	checks := []privs.Check{{What: "reading BPF maps", Run: t.CheckRuntime, Fallbacks: []cap.Value{cap.BPF, cap.SYS_ADMIN}}}
	if orphans {
		// The walk reads every process's /proc/PID/ns and fd, which the
		// kernel allows only to a tracer of it (ptrace access): a process
		// with fewer capabilities than the target's needs CAP_SYS_PTRACE.
		checks = append(checks, privs.Check{What: "walking /proc for orphaned namespaces", Run: readProcOf, Fallbacks: []cap.Value{cap.SYS_PTRACE}})
	}
	if metrics {
		checks = append(checks, privs.Check{What: "counting live namespaces for the metrics", Run: func() error {
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

// readProcOf reads what the orphan walk reads of init and of kthreadd,
// whose capabilities are all there are.
func readProcOf() error {
	for _, pid := range []string{"1", "2"} {
		if _, err := os.Readlink("/proc/" + pid + "/ns/mnt"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		d, err := os.Open("/proc/" + pid + "/fd")
		if err == nil {
			_, err = d.Readdirnames(1)
			d.Close()
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, io.EOF) {
			return err
		}
	}
	return nil
}
