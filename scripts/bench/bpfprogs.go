package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// progStat is one BPF program's cumulative run statistics.
type progStat struct {
	id      ebpf.ProgramID
	name    string
	typ     ebpf.ProgramType
	runs    uint64
	runtime time.Duration
	misses  uint64 // runs skipped because a BPF program was already running on that CPU
}

// programsOf lists the BPF programs a process holds: through program and link
// descriptors (their fdinfo names the program) and perf events with a program
// attached (bpftrace's tracepoints, kprobes attached the old way). Reading
// them from the process itself, rather than diffing the system's programs
// before and after it started, keeps other tracers out.
func programsOf(pid int) []ebpf.ProgramID {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var ids []ebpf.ProgramID
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var id uint32
		switch target {
		case "anon_inode:bpf-prog", "anon_inode:bpf_link":
			id = fdinfoProgID(pid, e.Name())
		case "anon_inode:[perf_event]":
			if fd, err := strconv.Atoi(e.Name()); err == nil {
				id, _ = perfProgram(pid, fd)
			}
		}
		if id != 0 && !slices.Contains(ids, ebpf.ProgramID(id)) {
			ids = append(ids, ebpf.ProgramID(id))
		}
	}
	slices.Sort(ids)
	return ids
}

func fdinfoProgID(pid int, fd string) uint32 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
			id, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			return uint32(id)
		}
	}
	return 0
}

// perfProgram asks the kernel (BPF_TASK_FD_QUERY, what `bpftool perf` does)
// which BPF program the perf event fd of pid runs, and on what kind of hook.
func perfProgram(pid, fd int) (progID, fdType uint32) {
	attr := struct {
		pid, fd, flags, bufLen uint32
		buf                    uint64
		progID, fdType         uint32
		probeOffset, probeAddr uint64
	}{pid: uint32(pid), fd: uint32(fd)}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_TASK_FD_QUERY, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return 0, 0
	}
	return attr.progID, attr.fdType
}

// attachedTracepoints counts pid's perf events that run a BPF program on a
// tracepoint.
func attachedTracepoints(pid int) int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if target, _ := os.Readlink(filepath.Join(dir, e.Name())); target != "anon_inode:[perf_event]" {
			continue
		}
		fd, _ := strconv.Atoi(e.Name())
		if id, typ := perfProgram(pid, fd); id != 0 && typ == unix.BPF_FD_TYPE_TRACEPOINT {
			n++
		}
	}
	return n
}

// programStats reads the statistics of the programs ids; programs gone since
// are left out.
func programStats(ids []ebpf.ProgramID) map[ebpf.ProgramID]progStat {
	stats := map[ebpf.ProgramID]progStat{}
	for _, id := range ids {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		s := progStat{id: id}
		if info, err := p.Info(); err == nil {
			s.name, s.typ = info.Name, info.Type
		}
		if st, err := p.Stats(); err == nil {
			s.runs, s.runtime, s.misses = st.RunCount, st.Runtime, st.RecursionMisses
		}
		p.Close()
		stats[id] = s
	}
	return stats
}

// statsDelta is after minus before, per program, for the programs that ran,
// by name.
func statsDelta(before, after map[ebpf.ProgramID]progStat) []progStat {
	var d []progStat
	for id, a := range after {
		b := before[id]
		a.runs -= b.runs
		a.runtime -= b.runtime
		a.misses -= b.misses
		if a.runs > 0 || a.misses > 0 {
			d = append(d, a)
		}
	}
	slices.SortFunc(d, func(x, y progStat) int { return strings.Compare(x.name, y.name) })
	return d
}

const statsSysctl = "/proc/sys/kernel/bpf_stats_enabled"

// enableStats turns on the kernel's accounting of BPF run time (two clock
// reads around every program run) until the returned Closer is closed.
// BPF_ENABLE_STATS (5.8+) holds it on through a descriptor, so that a bench
// that dies does not leave it on; before that, the sysctl is set, and put
// back on Close.
func enableStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err == nil {
		return c, nil
	}
	prev, rerr := os.ReadFile(statsSysctl)
	if rerr != nil {
		return nil, errors.Join(err, rerr)
	}
	if werr := os.WriteFile(statsSysctl, []byte("1"), 0); werr != nil {
		return nil, errors.Join(err, werr)
	}
	return restoreSysctl(prev), nil
}

type restoreSysctl []byte

func (prev restoreSysctl) Close() error { return os.WriteFile(statsSysctl, prev, 0) }

// statsAlreadyOn says whether BPF run-time accounting is on before the bench
// turns it on: then every traced row pays for it.
func statsAlreadyOn() bool {
	b, err := os.ReadFile(statsSysctl)
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// pin binds every thread of process pid (0: this one) to cpu, and returns
// what undoes it (for this process: threads started meanwhile inherited
// the binding). The BPF section pins the tracer and the workload to CPUs
// of their own: unpinned, a run where the reader shared the workload's
// CPU, and its caches, cost the programs up to twice what the next did.
func pin(pid, cpu int) (undo func(), err error) {
	var set, was unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedGetaffinity(pid, &was); err != nil {
		return nil, err
	}
	if err := setAffinity(pid, &set); err != nil {
		return nil, err
	}
	return func() { setAffinity(pid, &was) }, nil
}

// setAffinity binds every thread of process pid (0: this one) to set.
func setAffinity(pid int, set *unix.CPUSet) error {
	dir := "/proc/self/task"
	if pid != 0 {
		dir = fmt.Sprintf("/proc/%d/task", pid)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			unix.SchedSetaffinity(tid, set) // a thread just gone is no error
		}
	}
	return nil
}
