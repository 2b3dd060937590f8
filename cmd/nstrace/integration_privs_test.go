package main

// Least privilege: once attached, nstrace keeps only the capabilities its
// reading still needs on this kernel, on every thread, and cannot gain any
// through execve; events keep coming.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

const capBPF = 39

// wantRuntimeCaps is what the kernel asks of a process that only uses BPF
// maps and programs it already has file descriptors of, found by asking
// it: a map made here, read on a thread with no effective capabilities.
// Kernels that gate every bpf() command behind kernel.unprivileged_bpf_disabled
// refuse it (and then CAP_BPF is what a reader needs); later ones gate
// only the commands that make maps and programs.
func wantRuntimeCaps(t *testing.T) uint64 {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatalf("make a BPF map: %v", err)
	}
	defer m.Close()
	done := make(chan error)
	go func() {
		// Never unlocked: the thread ends with the goroutine.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		data[0].Effective, data[1].Effective = 0, 0
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		var v uint32
		done <- m.Lookup(uint32(0), &v)
	}()
	switch err := <-done; {
	case err == nil:
		return 0
	case errors.Is(err, unix.EPERM):
		return 1 << capBPF
	default:
		t.Fatalf("read a BPF map without capabilities: %v", err)
	}
	return 0
}

// threadStatus reads the capability sets and no_new_privs of every thread
// of pid, by thread id.
func threadStatus(t *testing.T, pid int) map[string]map[string]uint64 {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	all := map[string]map[string]uint64{}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread exited meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		st := map[string]uint64{}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch {
			case !ok:
			case strings.HasPrefix(k, "Cap"):
				st[k], err = strconv.ParseUint(v, 16, 64)
			case k == "NoNewPrivs":
				st[k], err = strconv.ParseUint(v, 10, 64)
			}
			if err != nil {
				t.Fatalf("%s: %q: %v", f, line, err)
			}
		}
		all[filepath.Base(filepath.Dir(f))] = st
	}
	if len(all) == 0 {
		t.Fatalf("no thread of %d could be read", pid)
	}
	return all
}

func TestLeastPrivilege(t *testing.T) {
	needTools(t, "unshare", "readlink")
	want := wantRuntimeCaps(t)
	// The bounding set can only shrink: nstrace's is what it keeps of the
	// one it started with, this process's.
	var bound uint64
	for _, st := range threadStatus(t, os.Getpid()) {
		bound = st["CapBnd"]
	}
	tr := startTracer(t, "json", "-v")
	for _, l := range strings.Split(tr.stderrText(), "\n") {
		if strings.Contains(l, "capabilit") {
			t.Log(l)
		}
	}
	threads := threadStatus(t, tr.cmd.Process.Pid)
	for tid, st := range threads {
		for k, w := range map[string]uint64{"CapEff": want, "CapPrm": want, "CapInh": 0, "CapAmb": 0, "CapBnd": want & bound, "NoNewPrivs": 1} {
			if st[k] != w {
				t.Errorf("thread %s of nstrace: %s %016x, want %016x", tid, k, st[k], w)
			}
		}
	}
	t.Logf("%d threads, each with CapEff %016x, CapBnd %016x (the test's %016x) and NoNewPrivs 1", len(threads), want, want&bound, bound)

	// Still tracing: a namespace made now is reported, with the inode the
	// kernel gives it.
	pid, inum := tr.unshareUTS()
	tr.await(eventTimeout(), func(e *jsonEvent) bool { return e.PID == pid },
		wantEvent{desc: fmt.Sprintf("create of uts %d by unshare", inum), match: isEv("create", "uts", inum)})
	tr.stop(os.Interrupt)
}
