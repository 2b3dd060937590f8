package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A workload is a loop of one operation, timed as a whole.
type workload struct {
	name string
	n    int // operations per run
	// run does n operations and returns the time they took (only theirs:
	// not the setup of a thread, say).
	run func(n int) (time.Duration, error)
	// filter is nstrace arguments for rows that exist to show a filter's
	// cost: they run untraced and under nstrace json-null only.
	filter []string
	// unrelated is load that has nothing to do with namespaces: what every
	// process on a traced machine pays.
	unrelated bool
}

// cloneFlags are three namespace types that are cheap to create (NEWNS copies
// the mount table, NEWNET is several times dearer) and that go away three
// different ways: uts at once, ipc from a work queue, pid after an RCU grace
// period.
const cloneFlags = unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWPID

// workloads are the rows of the ratio table; scale multiplies every n.
func workloads(scale float64) []workload {
	n := func(base int) int { return max(1, int(float64(base)*scale)) }
	return []workload{
		{name: "unshare(NEWUTS) churn", n: n(100000), run: unshareLoop},
		// The same churn, all of it dropped in the kernel by a filter: what
		// is left is the hooks' and the filter's own cost.
		{name: "  same, filtered out (--comm)", n: n(100000), run: unshareLoop, filter: []string{"--comm", "nst-no-such-task"}},
		{name: "  same, filtered out (--container)", n: n(100000), run: unshareLoop, filter: []string{"--container", "0123456789ab"}},
		{name: "clone(NEWUTS|NEWIPC|NEWPID)+exit", n: n(1000), run: spawnLoop(cloneFlags)},
		{name: "getpid", n: n(5000000), run: onThread(getpid), unrelated: true},
		{name: "open+close /dev/null", n: n(500000), run: onThread(openClose), unrelated: true},
		{name: "fork+exit /bin/true", n: n(1000), run: spawnLoop(0), unrelated: true},
	}
}

// onThread times n calls of op on a locked OS thread: no goroutine switches
// in the loop.
func onThread(op func() error) func(int) (time.Duration, error) {
	return func(n int) (time.Duration, error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		start := time.Now()
		for range n {
			if err := op(); err != nil {
				return 0, err
			}
		}
		return time.Since(start), nil
	}
}

func getpid() error {
	unix.Getpid() // a raw system call: no libc, no caching
	return nil
}

func openClose() error {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// unshareLoop creates a uts namespace n times on one thread, which drops the
// previous one each time: the cheapest full namespace lifecycle, three events
// (create, nsproxy_free, destroy) per operation. The thread is thrown away at
// the end, with its namespaces.
func unshareLoop(n int) (time.Duration, error) {
	return onDiscardedThread(func() (time.Duration, error) {
		start := time.Now()
		for range n {
			if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
				return 0, fmt.Errorf("unshare: %w", err)
			}
		}
		return time.Since(start), nil
	})
}

// pacedUnshare does unshare(NEWUTS) at about rate operations per second for
// d, in small batches between short sleeps: the offered load of the loss
// threshold. A rate the machine cannot reach, or +Inf, turns into a loop flat
// out.
func pacedUnshare(rate float64, d time.Duration) (ops int, took time.Duration, err error) {
	flatOut := math.IsInf(rate, 1)
	took, err = onDiscardedThread(func() (time.Duration, error) {
		start := time.Now()
		for {
			elapsed := time.Since(start)
			if elapsed >= d {
				return elapsed, nil
			}
			// Catch up with the schedule: a late wake-up makes a bigger batch.
			want := int(rate * elapsed.Seconds())
			if flatOut {
				want = ops + 1000
			}
			for ; ops < want; ops++ {
				if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
					return 0, fmt.Errorf("unshare: %w", err)
				}
			}
			if !flatOut {
				time.Sleep(200 * time.Microsecond)
			}
		}
	})
	return ops, took, err
}

// onDiscardedThread runs f on a new locked thread that is never unlocked, so
// that the Go runtime ends the thread afterwards: no other goroutine ever
// runs in the namespaces f leaves it in.
func onDiscardedThread(f func() (time.Duration, error)) (time.Duration, error) {
	type result struct {
		d   time.Duration
		err error
	}
	c := make(chan result)
	go func() {
		runtime.LockOSThread()
		d, err := f()
		c <- result{d, err}
	}()
	r := <-c
	return r.d, r.err
}

// spawnLoop forks and execs /bin/true n times, with flags added to the clone
// (Go's fork is clone(CLONE_VM|CLONE_VFORK|flags)), and waits for each.
func spawnLoop(flags uintptr) func(int) (time.Duration, error) {
	attr := &syscall.ProcAttr{Sys: &syscall.SysProcAttr{Cloneflags: flags}}
	argv := []string{"true"}
	return func(n int) (time.Duration, error) {
		start := time.Now()
		for range n {
			pid, err := syscall.ForkExec("/bin/true", argv, attr)
			if err != nil {
				return 0, fmt.Errorf("fork /bin/true: %w", err)
			}
			ws, err := wait(pid)
			if err != nil {
				return 0, err
			}
			if !ws.Exited() || ws.ExitStatus() != 0 {
				return 0, fmt.Errorf("/bin/true: %v", ws)
			}
		}
		return time.Since(start), nil
	}
}

// wait reaps pid; the Go runtime's own signals can interrupt wait4.
func wait(pid int) (syscall.WaitStatus, error) {
	for {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			return ws, err
		}
	}
}
