package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// rssSection prints nstrace's peak RSS and CPU in the churn runs of the
// ratio table, or in one churn run per nstrace mode if there was no table.
func rssSection(cfg *config, churn workload, modes []mode, table *ratioTable) error {
	if table != nil {
		modes = table.ms
	}
	fmt.Printf("\nRSS and CPU of nstrace in the %s runs (%s ops; peak RSS = VmHWM at exit, wait4's ru_maxrss,\n", churn.name, count(float64(churn.n)))
	fmt.Println("the start-up's included; end RSS = VmRSS at the end of the churn; CPU = user + system from ready to exit;")
	fmt.Println("medians, RSS the highest)")
	fmt.Printf("  %-12s %10s %10s %10s %10s\n", "MODE", "PEAK RSS", "END RSS", "CPU/RUN", "CPU/EVENT")
	for mi, m := range modes {
		if m.kind != nstraceKind {
			continue
		}
		var runs []sample
		if table != nil {
			runs = table.runs[0][mi]
		} else {
			progress("rss: %s, %s", churn.name, m.name)
			s, err := measure(cfg, m, churn)
			if err != nil {
				return err
			}
			runs = []sample{s}
		}
		var rss, end int64
		var cpu, perEvent []float64
		for _, r := range runs {
			rss = max(rss, r.maxRSS)
			end = max(end, r.endRSS)
			cpu = append(cpu, float64(r.cpu))
			if r.events > 0 {
				perEvent = append(perEvent, float64(r.cpu)/float64(r.events))
			}
		}
		fmt.Printf("  %-12s %10s %10s %10s %10s\n", m.name, fmt.Sprintf("%.1f MiB", float64(rss)/1024), fmt.Sprintf("%.1f MiB", float64(end)/1024), nanos(median(cpu)), nanos(median(perEvent)))
	}
	return nil
}

// lossSection drives unshare at rising rates under nstrace -o json to a file
// (default settings) and reports where events start to be lost.
func lossSection(cfg *config, m mode) error {
	// Steps of √2, then flat out.
	rates := []float64{25e3, 35e3, 50e3, 71e3, 100e3, 141e3, 200e3, 283e3, 400e3, 566e3, 800e3, math.Inf(1)}
	step := 500 * time.Millisecond
	if cfg.quick {
		rates, step = []float64{25e3, 100e3, 400e3, math.Inf(1)}, 200*time.Millisecond
	}
	fmt.Printf("\nLOSS: %s, unshare(NEWUTS) paced at rising rates, %s each\n", m.desc, step)
	fmt.Println("  (the ring buffer absorbs a burst of some tens of thousands of events: shorter steps would flatter it)")
	fmt.Printf("  %12s %12s %12s %10s %10s\n", "TARGET OPS/S", "DONE OPS/S", "EVENTS/S", "PRINTED", "LOST")
	var clean, lossy float64 // events/s
	for _, rate := range rates {
		time.Sleep(cfg.settle)
		t, err := startTracer(m)
		if err != nil {
			return err
		}
		ops, took, werr := pacedUnshare(rate, step)
		o, err := t.stop()
		if werr != nil {
			return werr
		}
		if err != nil {
			return err
		}
		done := float64(ops) / took.Seconds()
		evs := float64(o.events+o.lost) / took.Seconds()
		target := "flat out"
		if !math.IsInf(rate, 1) {
			target = count(rate)
		}
		fmt.Printf("  %12s %12s %12s %10s %10s\n", target, count(done), count(evs), count(float64(o.events)), count(float64(o.lost)))
		if o.lost > 0 {
			lossy = evs
			break
		}
		clean = evs
		if done < 0.9*rate {
			break // flat out already: a higher target changes nothing
		}
	}
	switch {
	case lossy > 0 && clean > 0:
		fmt.Printf("  loss begins between %s and %s events/s (last rate with 0 lost, first with loss)\n", count(clean), count(lossy))
	case lossy > 0:
		fmt.Printf("  events lost already at the lowest rate, %s events/s\n", count(lossy))
	default:
		fmt.Printf("  no loss up to %s events/s, as fast as this machine did the operations\n", count(clean))
	}
	return nil
}

// idleSection runs nstrace with nothing to trace and reports its CPU, its
// wake-ups and its BPF programs' run time (the tracepoint backend polls on a
// timer).
func idleSection(cfg *config, m mode) error {
	progress("idle: %s for %s", m.name, cfg.idle)
	stats, err := enableStats()
	if err != nil {
		return fmt.Errorf("enable BPF stats: %w", err)
	}
	defer stats.Close()
	t, err := startTracer(m)
	if err != nil {
		return err
	}
	pid := t.cmd.Process.Pid
	ids := programsOf(pid)
	progs0, cpu0, sw0, t0 := programStats(ids), procCPU(pid), contextSwitches(pid), time.Now()
	time.Sleep(cfg.idle)
	progs1, cpu1, sw1, el := programStats(ids), procCPU(pid), contextSwitches(pid), time.Since(t0)
	o, err := t.stop()
	if err != nil {
		return err
	}
	fmt.Printf("\nIDLE: %s, %s with nothing happening (as far as the bench goes)\n", m.desc, el.Round(100*time.Millisecond))
	fmt.Printf("  process CPU (utime+stime): %.3f%% of one core; %.0f context switches/s; %d events printed meanwhile\n",
		100*(cpu1-cpu0).Seconds()/el.Seconds(), float64(sw1-sw0)/el.Seconds(), o.events)
	ran := statsDelta(progs0, progs1)
	if len(ran) == 0 {
		fmt.Println("  BPF: none of its programs ran")
	} else {
		fmt.Println("  (its BPF programs also run for whatever else forks, execs or exits on the machine)")
	}
	var total time.Duration
	for _, p := range ran {
		total += p.runtime
		fmt.Printf("  BPF %-32s %8.2f runs/s %9s/run  %.4f%% of one core\n", p.name, float64(p.runs)/el.Seconds(),
			nanos(float64(p.runtime)/float64(p.runs)), 100*p.runtime.Seconds()/el.Seconds())
	}
	if len(ran) > 1 {
		fmt.Printf("  BPF all: %.4f%% of one core\n", 100*total.Seconds()/el.Seconds())
	}
	return nil
}

// procCPU is the user + system time of a process, all its threads, from
// /proc/PID/stat (in clock ticks of 10 ms: USER_HZ is 100 on x86).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may
	// hold anything: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// contextSwitches adds up the voluntary and involuntary context switches of
// every thread of pid: how often it wakes up.
func contextSwitches(pid int) uint64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var n uint64
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				x, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				n += x
			}
		}
	}
	return n
}

// readySection times nstrace from exec to its "tracing namespaces" line, and
// bpftrace from exec to "Attaching N probes" and to every probe attached.
func readySection(cfg *config, nst, old, bt mode) error {
	fmt.Printf("\nREADY: exec to ready, median of %d starts (min-max)\n", cfg.readyRuns)
	ms := []mode{nst}
	if old.kind == nstraceKind {
		ms = append(ms, old) // alternating, start by start: the machine drifts
	}
	times := make([][]time.Duration, len(ms))
	for range cfg.readyRuns {
		for i, m := range ms {
			time.Sleep(cfg.settle)
			t, err := startTracer(m)
			if err != nil {
				return err
			}
			times[i] = append(times[i], t.ready)
			if _, err := t.stop(); err != nil {
				return err
			}
		}
	}
	for i, m := range ms {
		fmt.Printf("  %s (%s): %s\n", m.name, m.desc, summary(times[i]))
	}
	if bt.kind != bpftraceKind {
		return nil
	}
	ready, attaching, err := startTimes(cfg, bt)
	if err != nil {
		loud(fmt.Sprintf("bpftrace in the ready section: %v", err))
		return nil
	}
	fmt.Printf("  bpftrace nstrace.bt, for reference: \"Attaching N probes\" %s; all %d tracepoints attached %s\n",
		summary(attaching), bt.probes, summary(ready))
	return nil
}

func startTimes(cfg *config, m mode) (ready, attaching []time.Duration, err error) {
	for range cfg.readyRuns {
		time.Sleep(cfg.settle)
		t, err := startTracer(m)
		if err != nil {
			return nil, nil, err
		}
		ready, attaching = append(ready, t.ready), append(attaching, t.attaching)
		if _, err := t.stop(); err != nil {
			return nil, nil, err
		}
	}
	return ready, attaching, nil
}

func summary(ds []time.Duration) string {
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	lo, hi := ds[0], ds[0]
	for _, d := range ds {
		lo, hi = min(lo, d), max(hi, d)
	}
	return fmt.Sprintf("%s (%s-%s)", r(median(ds)), r(lo), r(hi))
}

// bpfSection runs each workload once more under each of the tracers (nstrace
// and bpftrace's script), with the kernel's BPF run-time accounting on, and
// prints what each BPF program cost per operation.
func bpfSection(cfg *config, ws []workload, tracers []mode) error {
	stats, err := enableStats()
	if err != nil {
		return fmt.Errorf("enable BPF stats: %w", err)
	}
	defer stats.Close()
	fmt.Println("\nBPF: run time per program and operation (kernel BPF stats on: each run also pays for being timed)")
	if runtime.NumCPU() >= 2 {
		fmt.Println("  (the tracer on CPU 0, this bench and its workloads on CPU 1)")
	}
	for _, m := range tracers {
		if m.kind == untraced {
			continue // no bpftrace
		}
		fmt.Printf(" %s: %s\n", m.name, m.desc)
		for _, w := range ws {
			if w.filter != nil {
				continue
			}
			if err := bpfRun(cfg, m, w); err != nil {
				if m.kind == bpftraceKind {
					loud(fmt.Sprintf("bpftrace in the BPF section: %v", err))
					break
				}
				return err
			}
		}
	}
	return nil
}

func bpfRun(cfg *config, m mode, w workload) error {
	pinned := runtime.NumCPU() >= 2
	if pinned {
		undo, err := pin(0, 1)
		if err != nil {
			return fmt.Errorf("pin the bench to CPU 1: %w", err)
		}
		defer undo()
	}
	base, err := measure(cfg, untracedMode, w)
	if err != nil {
		return err
	}
	time.Sleep(cfg.settle)
	t, err := startTracer(m)
	if err != nil {
		return err
	}
	if pinned {
		if _, err := pin(t.cmd.Process.Pid, 0); err != nil {
			t.stop()
			return fmt.Errorf("pin %s to CPU 0: %w", m.name, err)
		}
	}
	ids := programsOf(t.cmd.Process.Pid)
	before := programStats(ids)
	d, werr := w.run(w.n)
	after := programStats(ids)
	_, err = t.stop()
	if werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	ran := statsDelta(before, after)
	fmt.Printf("  %s, %s ops: untraced %s/op, traced %s/op\n", strings.TrimSpace(w.name), count(float64(w.n)), perOp(base.d, w.n), perOp(d, w.n))
	if len(ran) == 0 {
		fmt.Println("    no BPF program ran")
		return nil
	}
	fmt.Printf("    %-32s %-14s %9s %9s %9s\n", "PROGRAM", "TYPE", "RUNS/OP", "NS/RUN", "NS/OP")
	var total time.Duration
	var runs uint64
	for _, p := range ran {
		total += p.runtime
		runs += p.runs
		misses := ""
		if p.misses > 0 {
			misses = fmt.Sprintf("  (%d runs missed: recursion)", p.misses)
		}
		fmt.Printf("    %-32s %-14s %9.3f %9.0f %9.1f%s\n", p.name, p.typ, float64(p.runs)/float64(w.n),
			float64(p.runtime)/float64(p.runs), float64(p.runtime)/float64(w.n), misses)
	}
	fmt.Printf("    %-32s %-14s %9.3f %9s %9.1f  (%.1f%% of the untraced op)\n", "all", "", float64(runs)/float64(w.n), "",
		float64(total)/float64(w.n), 100*float64(total)/float64(base.d))
	return nil
}
