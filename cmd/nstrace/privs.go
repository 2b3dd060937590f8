package main

import (
	"log/slog"
	"net"

	"github.com/nstrace/nstrace/privs"
	"github.com/nstrace/nstrace/tracer"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

// dropPrivileges keeps only the capabilities that what nstrace still does
// once attached needs on this kernel (README, Privileges): reading its BPF
// maps, and talking to the Docker daemon at socket if it names containers.
func dropPrivileges(t *tracer.Tracer, socket string) {
	checks := []privs.Check{{What: "reading BPF maps", Run: t.CheckRuntime, Fallbacks: []cap.Value{cap.BPF, cap.SYS_ADMIN}}}
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
