// Command bench measures what tracing with nstrace costs the traced machine,
// next to what bpftrace costs doing the obvious part of the job.
//
//	go build -o /tmp/nstrace ./cmd/nstrace
//	sudo go run ./scripts/bench -nstrace /tmp/nstrace
//
// Every workload runs untraced and under each tracer, in alternating rounds
// of one invocation (these machines are noisy: only a ratio to an untraced
// baseline measured in the same rounds means anything), and the table gives
// median traced time per operation over median untraced time per operation.
// Tracers: nstrace -o json to a file, -o json and text to /dev/null;
// bpftrace running scripts/bench/nstrace.bt (syscall tracepoints, a line per
// namespace syscall) to a file; and bpftrace with one empty syscall
// tracepoint program, the kernel's own price for any enabled syscall
// tracepoint, which every system call on the machine pays: the floor for the
// unrelated-load rows.
//
// Then: the event rate at which nstrace starts losing events, its CPU and
// its BPF programs' run time while nothing happens, the time it takes to be
// ready, its peak RSS, and each BPF program's run time per operation.
//
// With -compare OLD (another nstrace build, an earlier commit's, say) the
// rows without filters also run traced by OLD (-o json to /dev/null), in the
// same rounds: a regression shows in its column. The ready section starts
// the two builds in turn, and the BPF section runs OLD after this one.
//
// -only picks sections (ratios, loss, idle, ready, rss, bpf), -modes the
// columns, -scale the size of the workloads; -quick is the smoke run of make
// check (one round, small workloads, about half a minute). make vmbench runs
// it in the VMs of scripts/vmtest.sh, where there is no bpftrace.
//
// It measures and prints; it asserts nothing. It fails only if it cannot
// run.
package main

import (
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// btScript is scripts/bench/nstrace.bt, written to a temporary file for
// bpftrace.
//
//go:embed nstrace.bt
var btScript []byte

// Files the tracers write to; truncated by every run, removed at the end.
const (
	jsonFile   = "/tmp/nstrace-bench.json"
	btFile     = "/tmp/nstrace-bench-bpftrace.txt"
	btScriptAt = "/tmp/nstrace-bench.bt"
)

// oneProbe is one enabled syscall tracepoint whose program does nothing;
// twoProbes are the two the tracepoint backend needs per syscall, the
// entry and the exit, each doing nothing: the floor of that design.
const (
	oneProbe  = "tracepoint:syscalls:sys_enter_unshare {}"
	twoProbes = "tracepoint:syscalls:sys_enter_unshare {} tracepoint:syscalls:sys_exit_unshare {}"
)

var allSections = []string{"ratios", "loss", "idle", "ready", "rss", "bpf"}

type config struct {
	nstrace, backend, bpftrace, compare string
	rounds                              int
	scale                               float64
	idle                                time.Duration
	readyRuns                           int
	quick                               bool
	verbose                             bool     // every run on stderr
	columns                             []string // -modes
	sections                            map[string]bool
	// settle is a pause before every run: the namespaces the last run left
	// to work queues and RCU callbacks are freed, and the last tracer's BPF
	// programs, before the next run is timed.
	settle time.Duration
}

func main() {
	cfg, err := parseFlags()
	if err == nil {
		err = run(cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags() (*config, error) {
	cfg := &config{}
	flag.StringVar(&cfg.nstrace, "nstrace", "./nstrace", "nstrace binary")
	flag.StringVar(&cfg.backend, "backend", "auto", "nstrace backend to trace with")
	flag.StringVar(&cfg.bpftrace, "bpftrace", "bpftrace", "bpftrace binary (its columns are skipped if it is not there)")
	flag.StringVar(&cfg.compare, "compare", "", "another nstrace binary to run the same workloads with (json to /dev/null; its ratio is printed too)")
	flag.IntVar(&cfg.rounds, "rounds", 5, "rounds: every workload runs once per mode in each")
	flag.Float64Var(&cfg.scale, "scale", 1, "multiplies the number of operations of every workload")
	flag.DurationVar(&cfg.idle, "idle", 30*time.Second, "how long the idle measurement lasts")
	flag.IntVar(&cfg.readyRuns, "ready", 11, "starts timed for the ready time (median)")
	modes := flag.String("modes", "", "columns of the ratio table, comma-separated (default all: json-file,json-null,text-null,bpftrace,bt-1probe,bt-2probe,old-null)")
	only := flag.String("only", "", "sections to run, comma-separated: "+strings.Join(allSections, ",")+" (default all)")
	flag.BoolVar(&cfg.verbose, "v", false, "print every run's numbers on stderr")
	flag.BoolVar(&cfg.quick, "quick", false, "smoke run: 1 round, small workloads, short idle and loss steps (flags given win)")
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", flag.Arg(0))
	}
	given := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	cfg.settle = 100 * time.Millisecond
	if cfg.quick {
		quickDefault(given, "rounds", &cfg.rounds, 1)
		quickDefault(given, "scale", &cfg.scale, 0.05)
		quickDefault(given, "idle", &cfg.idle, 2*time.Second)
		quickDefault(given, "ready", &cfg.readyRuns, 3)
		cfg.settle = 20 * time.Millisecond
	}
	if cfg.rounds < 1 || cfg.scale <= 0 || cfg.readyRuns < 1 || cfg.idle <= 0 {
		return nil, errors.New("-rounds, -scale, -ready and -idle must be positive")
	}
	cfg.columns = list(*modes)
	cfg.sections = map[string]bool{}
	for _, s := range list(*only) {
		if !slices.Contains(allSections, s) {
			return nil, fmt.Errorf("-only: unknown section %q (valid: %s)", s, strings.Join(allSections, ","))
		}
		cfg.sections[s] = true
	}
	if len(cfg.sections) == 0 {
		for _, s := range allSections {
			cfg.sections[s] = true
		}
	}
	return cfg, nil
}

func list(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}

func quickDefault[T any](given map[string]bool, name string, p *T, v T) {
	if !given[name] {
		*p = v
	}
}

func run(cfg *config) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (it loads BPF programs)")
	}
	start := time.Now()
	if err := findTracers(cfg); err != nil {
		return err
	}
	defer os.Remove(jsonFile)
	defer os.Remove(btFile)
	defer os.Remove(btScriptAt)
	modes := buildModes(cfg)
	columns, err := selectColumns(modes, cfg.columns)
	if err != nil {
		return err
	}
	ws := workloads(cfg.scale)
	if err := header(cfg, modes, columns); err != nil {
		return err
	}
	var table *ratioTable
	if cfg.sections["ratios"] {
		if table, err = runRatios(cfg, ws, columns); err != nil {
			return err
		}
		table.print()
	}
	steps := []struct {
		name string
		f    func() error
	}{
		{"rss", func() error { return rssSection(cfg, ws[0], columns, table) }},
		{"loss", func() error { return lossSection(cfg, modeNamed(modes, jsonToFile)) }},
		{"idle", func() error { return idleSection(cfg, modeNamed(modes, jsonToFile)) }},
		// -compare's build beside this one, in the same rounds.
		{"ready", func() error {
			return readySection(cfg, modeNamed(modes, jsonToNull), modeNamed(modes, oldNull), modeNamed(modes, btScriptMode))
		}},
		{"bpf", func() error {
			return bpfSection(cfg, ws, []mode{modeNamed(modes, jsonToNull), modeNamed(modes, oldNull), modeNamed(modes, btScriptMode)})
		}},
	}
	for _, s := range steps {
		if !cfg.sections[s.name] {
			continue
		}
		if err := s.f(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	fmt.Printf("\nbench: done in %s\n", time.Since(start).Round(time.Second))
	return nil
}

// findTracers checks the nstrace binaries and looks bpftrace up; without it
// its columns are skipped, loudly.
func findTracers(cfg *config) error {
	for _, p := range []*string{&cfg.nstrace, &cfg.compare} {
		if *p == "" {
			continue
		}
		abs, err := exec.LookPath(*p)
		if err != nil {
			return fmt.Errorf("nstrace binary: %w", err)
		}
		*p = abs
	}
	if cfg.bpftrace == "" {
		return nil
	}
	p, err := exec.LookPath(cfg.bpftrace)
	if err != nil {
		cfg.bpftrace = ""
		return nil
	}
	cfg.bpftrace = p
	return os.WriteFile(btScriptAt, btScript, 0o644)
}

// Modes the sections other than the ratios use.
const (
	jsonToFile   = "json-file" // the loss threshold's and idle's: what a user would log
	jsonToNull   = "json-null" // the filter rows', ready's and BPF's: nstrace's own cost
	oldNull      = "old-null"  // -compare's build, as json-null
	btScriptMode = "bpftrace"
)

// buildModes gives every mode, untraced first: the columns of the ratio
// table, unless -modes picks fewer.
func buildModes(cfg *config) []mode {
	nst := func(name, format, out string) mode {
		return mode{name: name, kind: nstraceKind, bin: cfg.nstrace, out: out,
			desc: fmt.Sprintf("nstrace -o %s > %s", format, out),
			args: []string{"-o", format, "--backend", cfg.backend, "--docker-socket", ""}}
	}
	modes := []mode{
		untracedMode,
		nst(jsonToFile, "json", jsonFile),
		nst(jsonToNull, "json", os.DevNull),
		nst("text-null", "text", os.DevNull),
	}
	modes[2].filterRows = true
	if cfg.bpftrace != "" {
		modes = append(modes,
			mode{name: btScriptMode, kind: bpftraceKind, bin: cfg.bpftrace, args: []string{btScriptAt}, out: btFile, probes: 8,
				desc: "bpftrace scripts/bench/nstrace.bt > " + btFile},
			mode{name: "bt-1probe", kind: bpftraceKind, bin: cfg.bpftrace, args: []string{"-e", oneProbe}, out: btFile, probes: 1,
				desc: fmt.Sprintf("bpftrace -e '%s': one syscall tracepoint enabled, nothing done", oneProbe)},
			mode{name: "bt-2probe", kind: bpftraceKind, bin: cfg.bpftrace, args: []string{"-e", twoProbes}, out: btFile, probes: 2,
				desc: fmt.Sprintf("bpftrace -e '%s': the entry and exit tracepoints, nothing done", twoProbes)})
	}
	if cfg.compare != "" {
		// Only flags every build knows.
		modes = append(modes, mode{name: oldNull, kind: nstraceKind, bin: cfg.compare, out: os.DevNull,
			desc: "-compare " + cfg.compare + " -o json > /dev/null", args: []string{"-o", "json", "--backend", cfg.backend}})
	}
	return modes
}

// selectColumns keeps the untraced mode and the ones named (all if none).
func selectColumns(modes []mode, names []string) ([]mode, error) {
	if len(names) == 0 {
		return modes, nil
	}
	cols := modes[:1:1]
	for _, n := range names {
		i := slices.IndexFunc(modes, func(m mode) bool { return m.name == n })
		if i < 1 {
			return nil, fmt.Errorf("-modes: no mode %q here (valid: %s)", n, strings.Join(modeNames(modes[1:]), ","))
		}
		cols = append(cols, modes[i])
	}
	return cols, nil
}

func modeNames(ms []mode) []string {
	var names []string
	for _, m := range ms {
		names = append(names, m.name)
	}
	return names
}

// modeNamed is the mode of that name; its kind is untraced if there is none
// (no bpftrace).
func modeNamed(modes []mode, name string) mode {
	for _, m := range modes {
		if m.name == name {
			return m
		}
	}
	return mode{name: name, kind: untraced}
}

// header prints the machine and the tracers; a first nstrace start tells
// which backend auto picks, and fails early if nstrace cannot run.
func header(cfg *config, modes, columns []mode) error {
	t, err := startTracer(modeNamed(modes, jsonToNull))
	if err != nil {
		return err
	}
	if _, err := t.stop(); err != nil {
		return err
	}
	var u unix.Utsname
	unix.Uname(&u)
	fmt.Printf("nstrace bench, %s\n", time.Now().Format("2006-01-02 15:04"))
	fmt.Printf("machine:  Linux %s, %d CPUs, %s\n", unix.ByteSliceToString(u.Release[:]), runtime.NumCPU(), cpuModel())
	fmt.Printf("nstrace:  %s, backend %s (asked: %s)\n", cfg.nstrace, t.backend, cfg.backend)
	if cfg.bpftrace != "" {
		fmt.Printf("bpftrace: %s (%s)\n", cfg.bpftrace, bpftraceVersion(cfg.bpftrace))
	} else {
		msg := "*** bpftrace not found: the bpftrace, bt-1probe and bt-2probe columns are SKIPPED (scripts/deps.sh installs it) ***"
		fmt.Println(msg)
		fmt.Fprintln(os.Stderr, "bench:", msg)
	}
	fmt.Printf("rounds:   %d, scale %g%s\n", cfg.rounds, cfg.scale, map[bool]string{true: " (quick)"}[cfg.quick])
	fmt.Println("columns:")
	for _, m := range columns[1:] {
		fmt.Printf("  %-10s %s\n", m.name, m.desc)
	}
	if statsAlreadyOn() {
		fmt.Println("note:     kernel.bpf_stats_enabled was already 1: every BPF program run in the traced rows also pays for its timing")
	}
	return nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func bpftraceVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "version unknown"
	}
	return strings.TrimSpace(string(out))
}

// progress goes to stderr: the tables on stdout stay clean.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
