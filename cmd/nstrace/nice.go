package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// defaultNice is the nice value nstrace gives itself. Under a burst that
// keeps every CPU busy, a reader at the traced tasks' priority gets its fair
// share and falls behind (two unshare loops on a 2-CPU machine: up to 10%
// of the events lost with a 16 MiB ring, 20-40% with 8 or 4 MiB); at -10 it
// is scheduled first and keeps up. While nothing happens it sleeps and costs nothing.
const defaultNice = -10

// checkNice validates a --nice value.
func checkNice(n int) error {
	if n < -20 || n > 19 {
		return fmt.Errorf("invalid --nice %d: must be from -20 to 19", n)
	}
	return nil
}

// setNice gives every thread of nstrace nice value n: on Linux a nice value
// is a thread's, and a new thread inherits its creator's, so the Go
// runtime's threads made later have it too.
func setNice(n int) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		slog.Debug("nice not set", "err", err)
		return
	}
	for _, e := range tasks {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, n); err != nil {
			// Raising the priority needs CAP_SYS_NICE (or RLIMIT_NICE).
			slog.Info("could not set nstrace's nice value: under a burst that keeps every CPU busy, events may be lost", "nice", n, "err", err)
			return
		}
	}
}
