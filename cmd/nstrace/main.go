// Command nstrace shows Linux namespaces being created, joined and torn
// down, live.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/pflag"

	"github.com/nstrace/nstrace/docker"
	"github.com/nstrace/nstrace/events"
	"github.com/nstrace/nstrace/metrics"
	"github.com/nstrace/nstrace/tracer"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // could not trace: privileges, kernel, backend
	exitUsage = 2 // bad command line
)

type options struct {
	output   string
	backend  tracer.Backend
	duration time.Duration
	count    uint64
	snapshot bool
	verbose  bool
	ringSize int // bytes
	tables   int // --table-size (tests); 0: the defaults
	nice     int
	stacks   bool
	summary  bool
	interval time.Duration
	warnPct  uint32
	orphans  time.Duration // --orphans; 0: none

	filters      filterArgs
	hierarchy    string
	dockerSocket string
	dockerGiven  bool
	metricsAddr  string // --metrics-addr, as metrics.ParseAddr makes it; "": none
	sel          *selection
	cgroups      *tracer.CgroupHierarchy // nil: tracer.Open chooses
}

const usageText = `Usage: nstrace [flags]

Trace Linux namespaces live: every namespace created (clone, clone3,
unshare), joined (setns) and torn down, with the flags that caused it.

Examples:
  sudo nstrace                      # human-readable, one line per event
  sudo nstrace -o json | jq .       # JSON lines for log pipelines
  sudo nstrace --count 10           # stop after 10 events
  sudo nstrace --snapshot           # first the namespaces that exist now
  sudo nstrace --duration 30s       # stop after 30 seconds
  sudo nstrace --backend tracepoint # force a backend
  sudo nstrace --container web      # only what container "web" does
  sudo nstrace -t net -e create,destroy   # network namespaces born and gone
  sudo nstrace -p 1234 --children   # a process and what it forks from now on
  sudo nstrace --metrics-addr 9464  # Prometheus metrics on 127.0.0.1:9464/metrics
  sudo nstrace check                # can it trace here, and with what

Commands: check, completion bash|zsh|fish, man (nstrace COMMAND --help).

Flags:
`

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			tracer.Prefetch()
			return runCheck(args[1:], stdout, stderr)
		case "completion":
			return runCompletion(args[1:], stdout, stderr)
		case "man":
			return runMan(args[1:], stdout, stderr)
		}
	}
	tracer.Prefetch()
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return exitOK
	}
	if errors.Is(err, errVersion) {
		printVersion(stdout)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "nstrace: %v (see nstrace --help)\n", err)
		return exitUsage
	}
	level := slog.LevelInfo
	if opts.verbose {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(newLogHandler(stderr, level)))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "nstrace: %v\n", oneLineError{err})
		return exitError
	}
	return exitOK
}

// parseFlags parses the command line. Its errors are one line: what they
// quote of the arguments has its control characters escaped.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	opts, err := parseArgs(args, stderr)
	if err != nil && !errors.Is(err, pflag.ErrHelp) && !errors.Is(err, errVersion) {
		err = oneLineError{err}
	}
	return opts, err
}

// oneLineError is err with what would end its line or act on a terminal
// escaped.
type oneLineError struct{ err error }

func (e oneLineError) Error() string {
	msg := e.err.Error()
	var b strings.Builder
	for i, r := range msg {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(msg[i:], "\uFFFD"):
			fmt.Fprintf(&b, `\x%02x`, msg[i])
		case strconv.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

func (e oneLineError) Unwrap() error { return e.err }

// errVersion is parseFlags' answer to --version.
var errVersion = errors.New("--version")

// rawFlags are the flags checked after parsing, as given.
type rawFlags struct {
	backend, ringSize, btfPath, metricsAddr string
	help, version                           bool
}

// newFlagSet defines nstrace's flags into opts and raw: the command line's
// parser, and the source of the man page and the shell completions.
func newFlagSet(opts *options, raw *rawFlags, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("nstrace", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by realMain, in one line
	fs.StringVarP(&opts.output, "output", "o", "text", "output format: "+strings.Join(events.Formats, ", "))
	fs.StringVar(&raw.backend, "backend", string(tracer.Auto), "kernel hooks to use: auto, fentry, kprobe, tracepoint (auto tries them in that order)")
	fs.DurationVar(&opts.duration, "duration", 0, "stop after this long (e.g. 30s, 5m); 0 runs until Ctrl-C")
	fs.Uint64Var(&opts.count, "count", 0, "stop after this many events; 0 means no limit")
	fs.BoolVar(&opts.snapshot, "snapshot", false, "first print every namespace alive now as an exist event (not counted by --count)")
	fs.BoolVarP(&opts.verbose, "verbose", "v", false, "log diagnostics (backend probing, blind spots) on stderr")
	fs.StringVar(&raw.btfPath, "btf", "", "read the kernel's types from this BTF file instead of /sys/kernel/btf/vmlinux (e.g. a copy of it, where a container does not mount it)")
	fs.StringVar(&raw.ringSize, "ring-size", fmt.Sprintf("%dM", tracer.DefaultRingBufferSize>>20), "kernel ring buffer for events: a power-of-two number of pages (e.g. 16M, 64M); bigger absorbs longer bursts without loss")
	// For the tests of full tables (RELIABILITY.md); not for users.
	fs.IntVar(&opts.tables, "table-size", 0, "bound every table of namespaces and processes to this many entries")
	fs.MarkHidden("table-size")
	fs.BoolVar(&opts.stacks, "kernel-stack", false, "add the kernel stack of the hook that saw each create, join, release, destroy and fail (kernel_stack)")
	fs.BoolVar(&opts.summary, "summary", false, "at exit, print per namespace type what was created, destroyed, joined and failed, how many are alive, and a histogram of lifetimes")
	fs.DurationVar(&opts.interval, "interval", 0, "with --summary: also print one every interval (e.g. 10s), each counting from the one before")
	fs.Uint32Var(&opts.warnPct, "warn-limit", 80, "print a limit event when a user's count of a namespace type reaches this percentage of its max_<type>_namespaces (again after it fell below); 0 never")
	fs.IntVar(&opts.nice, "nice", defaultNice, "nice value nstrace runs at (-20 to 19): above the traced tasks' priority, it keeps up with bursts that keep every CPU busy")
	f := &opts.filters
	fs.StringSliceVarP(&f.types, "type", "t", nil, "only these namespace types (comma-separated): mnt, uts, ipc, pid, net, user, cgroup, time")
	fs.StringSliceVarP(&f.events, "event", "e", nil, "only these events (comma-separated): create, join, nsproxy_free, destroy, exist, fail, limit, orphan")
	fs.StringSliceVarP(&f.pids, "pid", "p", nil, "only what these processes do (comma-separated pids)")
	fs.BoolVar(&f.children, "children", false, "with --pid: also the processes they fork from now on")
	fs.StringSliceVarP(&f.comms, "comm", "c", nil, "only what tasks of these names do (comma-separated, as in /proc/PID/comm)")
	fs.StringSliceVar(&f.uids, "uid", nil, "only what processes of these real user ids or names do (comma-separated)")
	fs.StringSliceVar(&f.containers, "container", nil, "only what these containers do: id prefixes or names (comma-separated; names through the Docker daemon)")
	fs.StringSliceVar(&f.cgroups, "cgroup", nil, "only what tasks in these cgroups or below do (comma-separated paths)")
	fs.StringVar(&opts.hierarchy, "cgroup-hierarchy", "", "cgroup hierarchy events are attributed in: unified, or a cgroup v1 controller (default: unified on cgroup v2, else memory, pids, cpuset)")
	fs.StringVar(&opts.dockerSocket, "docker-socket", docker.DefaultSocket, "Docker Engine API socket for container names (\"\" to not ask)")
	fs.DurationVar(&opts.orphans, "orphans", 0, "report once, as an orphan event, each namespace that has had no process in it for this long (e.g. 30s) and what holds it: a bind mount, an open file, another namespace; its destroy then says how long it was orphaned")
	fs.StringVar(&raw.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (HOST:PORT; a port alone listens on 127.0.0.1 only) at /metrics")
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.SetOutput(stderr)
		fs.PrintDefaults()
	}
	fs.BoolVarP(&raw.help, "help", "h", false, "show this help")
	fs.BoolVar(&raw.version, "version", false, "print the version, the commit and the BPF object's build, and exit")
	return fs
}

func parseArgs(args []string, stderr io.Writer) (options, error) {
	var opts options
	var raw rawFlags
	fs := newFlagSet(&opts, &raw, stderr)
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	backend, ringSize, btfPath := raw.backend, raw.ringSize, raw.btfPath
	if raw.help {
		fs.Usage()
		return opts, pflag.ErrHelp
	}
	if raw.version {
		return opts, errVersion
	}
	if raw.metricsAddr != "" {
		addr, err := metrics.ParseAddr(raw.metricsAddr)
		if err != nil {
			return opts, fmt.Errorf("invalid --metrics-addr %q: %v", raw.metricsAddr, err)
		}
		opts.metricsAddr = addr
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if _, err := events.NewWriter(opts.output, io.Discard); err != nil {
		return opts, err
	}
	b, err := tracer.ParseBackend(backend)
	if err != nil {
		return opts, err
	}
	opts.backend = b
	if opts.ringSize, err = parseRingSize(ringSize); err != nil {
		return opts, err
	}
	if opts.tables < 0 || opts.tables > 1<<20 {
		return opts, fmt.Errorf("invalid --table-size %d: 0 (the defaults) to %d", opts.tables, 1<<20)
	}
	if err := checkNice(opts.nice); err != nil {
		return opts, err
	}
	if opts.duration < 0 {
		return opts, fmt.Errorf("invalid duration %s: must not be negative", opts.duration)
	}
	if opts.interval < 0 || fs.Changed("interval") && opts.interval < 100*time.Millisecond {
		return opts, fmt.Errorf("invalid --interval %s: at least 100ms", opts.interval)
	}
	if opts.interval > 0 && !opts.summary {
		return opts, errors.New("--interval needs --summary")
	}
	if opts.warnPct > 100 {
		return opts, fmt.Errorf("invalid --warn-limit %d: a percentage, 0 (off) to 100", opts.warnPct)
	}
	// Before anything reads the kernel's types (the cgroup hierarchy).
	if btfPath != "" {
		if err := tracer.UseKernelBTF(btfPath); err != nil {
			return opts, fmt.Errorf("invalid --btf: %w", err)
		}
	}
	opts.dockerGiven = fs.Changed("docker-socket")
	h, err := tracer.ChooseCgroupHierarchy(opts.hierarchy)
	switch {
	case err == nil:
		opts.cgroups = &h
	case opts.hierarchy != "":
		return opts, fmt.Errorf("invalid --cgroup-hierarchy %q: %v (valid: unified, or a cgroup v1 controller mounted here)", opts.hierarchy, err)
	default:
		// tracer.Open says why (no BTF, say), as it checks the kernel.
		slog.Debug("no cgroup hierarchy chosen yet", "err", err)
	}
	if opts.orphans < 0 || fs.Changed("orphans") && opts.orphans < time.Second {
		return opts, fmt.Errorf("invalid --orphans %s: at least 1s", opts.orphans)
	}
	opts.sel, err = parseSelection(opts.filters, opts.snapshot, opts.orphans > 0, h)
	if err == nil && opts.warnPct == 0 && opts.sel.kinds[events.Limit] {
		return opts, errors.New("--event limit needs --warn-limit above 0")
	}
	return opts, err
}

func run(ctx context.Context, opts options, stdout, stderr io.Writer) error {
	out, err := events.NewWriter(opts.output, stdout)
	if err != nil {
		return err
	}
	dec, err := events.NewDecoder()
	if err != nil {
		return fmt.Errorf("read clocks: %w", err)
	}
	t, err := tracer.Open(tracer.Options{Backend: opts.backend, Filter: opts.sel.kernel, Cgroups: opts.cgroups, RingBufferSize: opts.ringSize,
		KernelStacks: opts.stacks, TableSize: opts.tables})
	if err != nil {
		return err
	}
	defer t.Close()
	// Once tracing is possible (a user who may not trace hears only that).
	setNice(opts.nice)
	slog.Debug("cgroup hierarchy", "name", t.Hierarchy().Name, "mount", t.Hierarchy().Mount)
	namesCtx, stopNames := context.WithCancel(context.Background())
	defer stopNames()
	names, err := startNames(namesCtx, opts.dockerSocket, opts.dockerGiven, opts.sel, t)
	if err != nil {
		return err
	}
	var m *metrics.Metrics
	if opts.metricsAddr != "" {
		m = metrics.New(t, string(t.Backend()), buildInfo())
		// Bound now, while nstrace may still bind any port.
		srv, err := m.Listen(opts.metricsAddr)
		if err != nil {
			return err
		}
		defer srv.Close() // before the tracer closes: a scrape reads it
		go srv.Serve()
		slog.Info("serving metrics", "url", "http://"+srv.Addr()+"/metrics")
	}
	cgroups, exes := t.InitialStrings()
	for _, s := range t.BlindSpots {
		slog.Info("blind spot: " + s)
	}
	if opts.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.duration)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	s := &stream{t: t, dec: dec, out: out, life: events.NewLifetimes(), limit: opts.count,
		attr: events.NewAttributor(cgroups, exes, names), sel: opts.sel, metrics: m}
	if opts.warnPct > 0 {
		s.limits = events.NewLimitWatch(opts.warnPct)
	}
	if opts.summary {
		s.stats = events.NewStats(time.Now())
		if opts.interval > 0 {
			t.Every(opts.interval, s.writeSummary)
		}
	}
	// With the hooks attached, what exists now: whatever comes into being
	// from here on is in the ring buffer, printed after the snapshot.
	if opts.snapshot {
		if err := s.snapshot(ctx); err != nil {
			return err
		}
	}
	if opts.orphans > 0 {
		s.orphans = newOrphanWatch(t, opts.orphans)
		// Found by a goroutine of their own; written by the stream.
		t.Every(min(s.orphans.period, 250*time.Millisecond), s.writeOrphans)
		go s.orphans.run(ctx)
	}
	// Attached, the snapshot taken, the sockets open: what is left is
	// reading, which needs little or no privilege.
	socket := ""
	if names != nil {
		socket = opts.dockerSocket
	}
	dropPrivileges(t, socket, m != nil, opts.orphans > 0)
	// Once the snapshot is out: a script that waits for this line has it all.
	fmt.Fprintf(stderr, "nstrace: tracing namespaces (backend: %s); Ctrl-C to stop\n", t.Backend())
	// What the start-up needed (the parsed BPF object, the kernel's types,
	// the loader's copies: most of the heap's peak) is garbage now: given
	// back to the kernel at once rather than kept as RSS while nstrace runs.
	go debug.FreeOSMemory()
	// For the soak test: what runs, at the start and at the end.
	debugState("running")

	// Stopping: detach first so nothing new arrives, then the reader drains
	// what is buffered and sees ringbuf.ErrFlushed.
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		s.requestStop()
		if err := t.Detach(); err != nil {
			slog.Warn("detach", "err", err)
		}
	}()
	err = s.loop(cancel)
	debugState("stopping")
	cancel()
	<-stopped
	if ferr := s.finish(); err == nil {
		err = ferr
	}
	if s.stats != nil && err == nil {
		err = s.writeSummary()
	}
	if s.orphans != nil {
		n, mean := s.orphans.cost()
		slog.Debug("orphans: walks", "count", n, "mean", mean.Round(100*time.Microsecond), "period", s.orphans.period)
	}
	if n := t.Stackless(); n > 0 {
		fmt.Fprintf(stderr, "nstrace: %d records went without their kernel stack (another stack held the bucket of its hash in the stack map)\n", n)
	}
	if s.skipped > 0 {
		fmt.Fprintf(stderr, "nstrace: the kernel skipped %d runs of nstrace's hooks (another BPF program was running on that CPU): whatever events they would have made are missing, and not in the lost count (-v names the hooks)\n", s.skipped)
	}
	if opts.snapshot {
		fmt.Fprintf(stderr, "nstrace: %d namespaces in the snapshot, %d events, %d lost\n", s.existing, s.printed, s.lost)
	} else {
		fmt.Fprintf(stderr, "nstrace: %d events, %d lost\n", s.printed, s.lost)
	}
	return err
}
