// Package tracer loads nstrace's BPF programs for one backend, attaches them
// and hands out the raw records they write to the ring buffer.
package tracer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace"
	"github.com/nstrace/nstrace/snapshot"
)

// Backend names a set of kernel hooks.
type Backend string

const (
	Auto       Backend = "auto"
	Fentry     Backend = "fentry"
	Kprobe     Backend = "kprobe"
	Tracepoint Backend = "tracepoint"
)

// Backends lists the valid --backend values, in the order auto tries them.
var Backends = []Backend{Auto, Fentry, Kprobe, Tracepoint}

// ParseBackend checks a --backend value.
func ParseBackend(s string) (Backend, error) {
	for _, b := range Backends {
		if string(b) == s {
			return b, nil
		}
	}
	return "", fmt.Errorf("invalid backend %q (valid: %s)", s, joinBackends())
}

func joinBackends() string {
	names := make([]string, len(Backends))
	for i, b := range Backends {
		names[i] = string(b)
	}
	return strings.Join(names, ", ")
}

// programPrefixes says which programs, by name, make up a backend.
// "common_" programs are hooks every backend shares.
var programPrefixes = map[Backend][]string{
	Fentry:     {"fentry_", "fexit_", "common_"},
	Kprobe:     {"kprobe_", "kretprobe_", "common_"},
	Tracepoint: {"tp_", "common_"},
}

// Options configure Open.
type Options struct {
	Backend Backend
	// RingBufferSize in bytes, a power of two multiple of the page size;
	// 0 means the default.
	RingBufferSize int
	// KernelStacks makes every record carry its hook's kernel stack
	// (Stack).
	KernelStacks bool
	// Filter selects the events, in the kernel.
	Filter Filter
	// Cgroups is the hierarchy events are attributed in
	// (ChooseCgroupHierarchy); nil means the default one.
	Cgroups *CgroupHierarchy
	// TableSize, if not 0, bounds every table of namespaces and processes
	// (live, watched, nets, followed pids) to this many entries: for tests
	// of what happens when one is full.
	TableSize int
}

// DefaultRingBufferSize holds about 15k unshares' records (272 bytes for
// the 3 events of one). With the reader at its default nice value, a burst
// of 100k unshare(CLONE_NEWUTS), 300k events, goes through without loss
// while nstrace writes JSON to a file on a 2-CPU machine, and so do two
// such bursts at once (BENCHMARKS.md). The reader maps it twice, which RSS
// counts twice: 8 MiB of nstrace's RSS, where 8 MiB took it over 40.
const DefaultRingBufferSize = 4 << 20

// Tracer is a loaded and attached backend.
type Tracer struct {
	backend Backend
	compat  bool // programs from the object for kernels before 5.15
	coll    *ebpf.Collection
	links   []link.Link
	reader  *ringbuf.Reader
	// lastRecord: when Read last was about to wait after records
	// (gotRecords: it returned some since; a clock read per wait, not per
	// record); asleep is reader_state[0] in readerState, the BPF map's
	// memory-mapped page.
	lastRecord  time.Time
	gotRecords  bool
	pending     bool // records were waiting after the last one Read returned
	beforeWait  func() error
	stacks      *stackNames // --kernel-stack; nil without
	tickers     []ticker    // Every
	asleep      *uint64
	watchMissed *uint64 // reader_state[1]
	readerState []byte
	// ringPeak is the most bytes ever found waiting after a record was
	// read (RingBuffer; the metrics read it from another goroutine).
	ringPeak atomic.Int64
	// missesReported is the programs' recursion misses already counted.
	missesReported uint64
	// nextID and lastID bound the ns_ids userspace assigns (NamespaceID).
	nextID, lastID uint64
	// stopPoll ends the poll of watched namespaces (tracepoint backend);
	// pollDone is closed when it has. pollWake restarts it when namespaces
	// may have come under watch.
	stopPoll, pollDone chan struct{}
	pollWake           chan struct{}
	// BlindSpots lists the teardowns this backend cannot see on this kernel.
	BlindSpots []string
	teardowns  [NsTypes]teardown
	hierarchy  CgroupHierarchy
	liveDense  uint32 // live_ns's size
	fullSeen   [len(tableMaps)]bool
	// What the start-up walks found (InitialStrings).
	initialCgroups, initialExes map[uint64]string
}

// Open checks privileges and kernel support, then loads and attaches a
// backend (with Auto, the first that works: openAuto).
func Open(opts Options) (*Tracer, error) {
	raiseMemlock()
	defer releaseLoadState()
	go parsedSpec()
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	if err := checkKernel(); err != nil {
		return nil, err
	}
	if opts.RingBufferSize == 0 {
		opts.RingBufferSize = DefaultRingBufferSize
	}
	if opts.Cgroups == nil {
		h, err := ChooseCgroupHierarchy("")
		if err != nil {
			return nil, fmt.Errorf("cgroup hierarchy: %w", err)
		}
		opts.Cgroups = &h
	}
	var t *Tracer
	var err error
	if opts.Backend == Auto {
		t, err = openAuto(opts)
	} else if t, err = open(opts.Backend, opts); err != nil {
		err = fmt.Errorf("backend %s: %w", opts.Backend, err)
	}
	if err != nil {
		// A kernel that lacks what the programs use fails every load,
		// each on whatever came first: say what it lacks instead.
		if ferr := FeaturesProblem(); ferr != nil {
			return nil, ferr
		}
		return nil, err
	}
	return t, nil
}

// openAuto tries fentry, kprobe and tracepoint in turn, and logs why each
// one it passes over could not be used.
func openAuto(opts Options) (*Tracer, error) {
	var errs []error
	var reasons []string
	for _, b := range Backends[1:] {
		t, err := open(b, opts)
		if err == nil {
			return t, nil
		}
		slog.Info("backend unavailable, trying the next", "backend", b, "reason", err)
		errs = append(errs, err)
		reasons = append(reasons, fmt.Sprintf("%s: %v", b, err))
	}
	// One line, and still matchable (errors.Is) by what each said.
	return nil, &explainedError{"no backend works here: " + strings.Join(reasons, "; "), errors.Join(errs...)}
}

func open(b Backend, opts Options) (_ *Tracer, err error) {
	ph := startPhases()
	switch b {
	case Kprobe:
		if err := haveKprobes(); err != nil {
			return nil, err
		}
	case Fentry:
		if err := haveFentry(); err != nil {
			return nil, err
		}
	}
	// The work functions' addresses: the kernel looks them up for
	// common_work_fns after the load; where it cannot (before 5.16),
	// /proc/kallsyms is read while the programs load (tens of ms of CPU).
	var syms chan map[string]uint64
	if err := haveSymbolLookup(); err != nil {
		slog.Debug("no kernel symbol lookup from BPF: reading /proc/kallsyms", "err", err)
		syms = make(chan map[string]uint64, 1)
		go func() {
			names := slices.Collect(maps.Keys(workFuncs))
			if useCompat() {
				names = append(names, ucountsTable)
			}
			m, err := kernelSymbols(names...)
			if err != nil {
				slog.Debug("kallsyms unreadable", "err", err)
			}
			syms <- m
		}()
	}
	spec, err := LoadSpec(b)
	if err != nil {
		return nil, err
	}
	spec.Maps["events"].MaxEntries = uint32(opts.RingBufferSize)
	dense := uint32(liveDense)
	if n := uint32(opts.TableSize); n > 0 {
		dense = n
		for _, m := range tableMaps {
			spec.Maps[m].MaxEntries = n
		}
		spec.Maps["live_ns"].MaxEntries = n
		if err := spec.Variables["live_dense"].Set(n); err != nil {
			return nil, fmt.Errorf("set live_dense: %w", err)
		}
	}

	hooks, err := setKnobs(spec, b)
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["want_stacks"].Set(opts.KernelStacks); err != nil {
		return nil, fmt.Errorf("set want_stacks: %w", err)
	}
	if !opts.KernelStacks {
		// The map's room for stacks is not made at all.
		spec.Maps["stacks"].MaxEntries = 1
	}
	firstID, err := setIDBase(spec)
	if err != nil {
		return nil, err
	}
	if err := setFilter(spec, opts.Filter, *opts.Cgroups); err != nil {
		return nil, err
	}
	ph.done("prepare")
	coll, err := loadParallel(spec)
	if err != nil && rdonlyCast(spec) {
		// The kernel has the kfunc but may not let these programs call it
		// (only 6.12 and 6.18 are tested): the plain loads work without
		// it, at a slower verification.
		slog.Debug("load failed with bpf_rdonly_cast: loading without it", "err", err)
		if err := spec.Variables["have_rdonly_cast"].Set(false); err != nil {
			return nil, fmt.Errorf("set have_rdonly_cast: %w", err)
		}
		coll, err = loadParallel(spec)
	}
	if err != nil {
		return nil, fmt.Errorf("load: %w", explainLoad(err))
	}
	ph.done("load")
	t := &Tracer{backend: b, compat: useCompat(), coll: coll, nextID: firstID, lastID: firstID + userIDs - 1, hierarchy: *opts.Cgroups, liveDense: dense}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	addrs, err := t.workAddresses(syms)
	if err != nil {
		return nil, err
	}
	t.setAddresses(hooks, addrs)
	if a := addrs[ucountsTable]; t.compat && a != 0 {
		if err := coll.Variables["ucounts_table"].Set(a); err != nil {
			return nil, fmt.Errorf("set ucounts_table: %w", err)
		}
	}
	if opts.KernelStacks {
		t.stacks = newStackNames(coll.Maps["stacks"])
		go t.stacks.syms() // read kallsyms while the rest starts
	}
	t.teardowns = teardowns(b, hooks)
	t.BlindSpots = blindSpots(t.teardowns)
	if err := t.addPids(opts.Filter.Pids); err != nil {
		return nil, err
	}

	if err := ensureTracefs(); err != nil {
		return nil, err
	}
	for name, p := range spec.Programs {
		if p.AttachType == ebpf.AttachTraceIter || isPoll(p) || p.Type == ebpf.Syscall {
			continue // run, not attached
		}
		l, err := attach(p, coll.Programs[name])
		if err != nil {
			return nil, fmt.Errorf("attach %s: %w", name, err)
		}
		t.links = append(t.links, l)
		for _, tp := range moreTracepoints[name] {
			l, err := attachTracepoint(tp, coll.Programs[name])
			if err != nil {
				return nil, fmt.Errorf("attach %s to %s: %w", name, tp, err)
			}
			t.links = append(t.links, l)
		}
	}
	ph.done("attach")
	// With every hook in place, learn what already exists: anything created
	// from now on is seen by the hooks, so nothing falls in between. The
	// namespaces bind-mounted anywhere are held open meanwhile, so that the
	// task_file iterator finds them among our files.
	held, err := snapshot.HoldBindMounts(context.Background(), "")
	if err != nil {
		slog.Debug("nsfs bind mounts not examined", "err", err)
	}
	defer func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	}()
	t.initialExes = t.learnExes()
	for name, p := range spec.Programs {
		if p.AttachType == ebpf.AttachTraceIter {
			if err := runIter(coll.Programs[name]); err != nil {
				return nil, fmt.Errorf("iterate %s: %w", name, err)
			}
		}
	}
	// After the iterators: every cgroup they learnt is in it.
	t.initialCgroups = walkCgroups(t.hierarchy)
	// The load's garbage (BTF, ELF, verifier logs: most of nstrace's heap)
	// goes back to the kernel before the ring buffer is mapped, so that
	// the peak RSS is the larger of the two, not their sum.
	debug.FreeOSMemory()
	ph.done("snapshot")
	t.reader, err = ringbuf.NewReader(coll.Maps["events"])
	if err != nil {
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	if t.readerState, err = unix.Mmap(coll.Maps["reader_state"].FD(), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("map the reader's state: %w", err)
	}
	t.asleep = (*uint64)(unsafe.Pointer(&t.readerState[0]))
	t.watchMissed = (*uint64)(unsafe.Pointer(&t.readerState[8]))
	for name, p := range spec.Programs {
		if isPoll(p) {
			opts := &ebpf.RunOptions{}
			if t.compat {
				opts.Context = []uint64{0, 0, 0} // no namespace (pollOnce)
			}
			if _, err := coll.Programs[name].Run(opts); err != nil {
				return nil, fmt.Errorf("run %s: %w", name, err)
			}
			t.stopPoll, t.pollDone = make(chan struct{}), make(chan struct{})
			t.pollWake = make(chan struct{}, 1)
			t.kickPoll() // the iterators may have put namespaces under watch
			go t.poll(coll.Programs[name])
		}
	}
	ph.done("ring buffer")
	return t, nil
}

// phases times the steps of a start-up, for -v: where the time to the
// ready line goes.
type phases struct{ last time.Time }

func startPhases() *phases { return &phases{last: time.Now()} }

func (p *phases) done(name string) {
	now := time.Now()
	slog.Debug("start-up", "phase", name, "took", now.Sub(p.last).Round(100*time.Microsecond))
	p.last = now
}

// isPoll tells the programs userspace runs itself (raw_tp without a
// tracepoint) from those it attaches.
func isPoll(p *ebpf.ProgramSpec) bool { return p.Type == ebpf.RawTracepoint && p.AttachTo == "" }

// PollInterval is how often the tracepoint backend checks the namespaces
// it watches (those only a bind mount, an open file or another namespace
// keeps, whose destructor no tracepoint shows): their destroy is reported
// at most this late. With more than pollBatch watched, the interval grows
// in proportion, so that polling stays cheap.
const PollInterval = 10 * time.Millisecond

const pollBatch = 256

// poll runs while namespaces are watched and sleeps, without a timer, while
// none is: the BPF side sends a REC_WATCH record when the first one comes
// under watch (Read sees it and calls kickPoll).
func (t *Tracer) poll(prog *ebpf.Program) {
	defer close(t.pollDone)
	timer := time.NewTimer(PollInterval)
	defer timer.Stop()
	for {
		select {
		case <-t.stopPoll:
			return
		case <-t.pollWake:
		}
		for {
			timer.Reset(PollInterval) // no stale tick to drain since Go 1.23
			select {
			case <-t.stopPoll:
				return
			case <-timer.C:
			}
			// n: the namespaces it looked at, those still watched and
			// those it found gone.
			n, err := t.pollOnce(prog)
			if err != nil {
				slog.Warn("polling watched namespaces failed; stopping it", "err", err)
				return
			}
			if n == 0 {
				break
			}
			if n > pollBatch {
				// Many watched: poll less often, so that polling stays cheap.
				time.Sleep(PollInterval * time.Duration(n/pollBatch))
			}
		}
	}
}

// pollOnce runs the poll of watched namespaces once and returns how many
// there were. The compat object's poll (no bpf_for_each_map_elem before
// 5.13) looks at one namespace per run: the walk over them and the order
// of the passes (bpf/hooks/poll.h) are done here.
func (t *Tracer) pollOnce(prog *ebpf.Program) (uint32, error) {
	if !t.compat {
		return prog.Run(&ebpf.RunOptions{})
	}
	const first, level, rest = 0, 1, 2 // POLL_*
	var inums []uint32
	var inum uint32
	m := t.coll.Maps["watched"]
	w := make([]byte, m.ValueSize())
	it := m.Iterate()
	for it.Next(&inum, w) {
		inums = append(inums, inum)
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("walk watched: %w", err)
	}
	run := func(inum uint32, pass, lvl uint64) (uint32, error) {
		return prog.Run(&ebpf.RunOptions{Context: []uint64{uint64(inum), pass, lvl}})
	}
	// Gone pid namespaces are reported deepest first, after every other.
	type gone struct {
		inum  uint32
		level uint64
	}
	var pids []gone
	for _, inum := range inums {
		r, err := run(inum, first, 0)
		if err != nil {
			return 0, err
		}
		if r > 0 {
			pids = append(pids, gone{inum, uint64(r - 1)})
		}
	}
	slices.SortStableFunc(pids, func(a, b gone) int { return cmp.Compare(b.level, a.level) })
	for _, p := range pids {
		if _, err := run(p.inum, level, p.level); err != nil {
			return 0, err
		}
	}
	for _, p := range pids {
		if _, err := run(p.inum, rest, 0); err != nil {
			return 0, err
		}
	}
	return uint32(len(inums)), nil
}

// kickPoll makes the poll look at the watched namespaces again.
func (t *Tracer) kickPoll() {
	if t.pollWake == nil {
		return
	}
	select {
	case t.pollWake <- struct{}{}:
	default:
	}
}

// parsedSpec is the BPF object, parsed once (10-20 ms): Open starts it
// while it checks the kernel, and each backend it tries takes a copy.
func parsedSpec() (*ebpf.CollectionSpec, error) {
	loadMu.Lock()
	parse := parseSpec
	loadMu.Unlock()
	return parse()
}

var parseSpec = newSpecParse()

func newSpecParse() func() (*ebpf.CollectionSpec, error) {
	return sync.OnceValues(func() (*ebpf.CollectionSpec, error) {
		if useCompat() {
			return nstrace.LoadBpfCompat()
		}
		return nstrace.LoadBpf()
	})
}

// releaseLoadState drops the parsed BPF object and the kernel's decoded
// BTF: about 8 MB of heap that a loaded tracer never reads again, and that
// the garbage collector's goal would otherwise double for as long as
// nstrace runs. Another Open parses and decodes them again.
func releaseLoadState() {
	loadMu.Lock()
	defer loadMu.Unlock()
	parseSpec = newSpecParse()
	btfCache = btf.NewCache()
}

// Prefetch starts, in the background, the two decodes every start-up
// waits for: the BPF object's and the kernel's BTF (10-20 ms each, and the
// kernel's is needed while the flags are still being checked). A process
// that exits first, on a usage error say, loses nothing by it.
func Prefetch() {
	go parsedSpec()
	go kernelTypes()
}

// LoadSpec returns the BPF collection with only backend b's programs in it.
func LoadSpec(b Backend) (*ebpf.CollectionSpec, error) {
	prefixes, ok := programPrefixes[b]
	if !ok {
		return nil, fmt.Errorf("unknown backend %q", b)
	}
	all, err := parsedSpec()
	if err != nil {
		return nil, fmt.Errorf("parse BPF object: %w", err)
	}
	// Copied but for the types, which the loader only reads: a deep copy
	// of them and of the other backends' programs cost milliseconds.
	spec := &ebpf.CollectionSpec{
		Maps:      make(map[string]*ebpf.MapSpec, len(all.Maps)),
		Programs:  make(map[string]*ebpf.ProgramSpec),
		Variables: make(map[string]*ebpf.VariableSpec, len(all.Variables)),
		ByteOrder: all.ByteOrder,
		Types:     all.Types,
	}
	for name, m := range all.Maps {
		spec.Maps[name] = m.Copy()
	}
	for name, v := range all.Variables {
		spec.Variables[name] = v.Copy()
	}
	for name, p := range all.Programs {
		if hasAnyPrefix(name, prefixes) {
			spec.Programs[name] = p.Copy()
		}
	}
	return spec, nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// teardownFuncs are the kernel functions teardown hooks key on.
var teardownFuncs = []string{"free_user_ns", "destroy_pid_namespace_work", "cleanup_net", "delayed_free_pidns", "proc_free_inum"}

// workFuncs are those of them whose address the BPF side compares work
// items with (workqueue_execute_start), by BPF variable.
var workFuncs = map[string]string{
	"free_user_ns":               "free_user_ns_fn",
	"destroy_pid_namespace_work": "destroy_pidns_fn",
	"cleanup_net":                "cleanup_net_fn",
}

// setKnobs fills the BPF programs' load-time constants and drops optional
// programs whose hook this kernel does not have. Which functions exist
// comes from the kernel's BTF; their addresses go in after the load
// (workAddresses, setAddresses).
func setKnobs(spec *ebpf.CollectionSpec, b Backend) (hooks map[string]bool, err error) {
	hooks = make(map[string]bool, len(teardownFuncs))
	for _, f := range teardownFuncs {
		hooks[f] = kernelHasFunc(f)
	}
	if useCompat() {
		// Nothing walks live_nets before 5.13: the network namespaces
		// are watched (tracepoint backend) instead of swept.
		hooks["cleanup_net"] = false
		if err := spec.Variables["nr_cpus"].Set(uint32(ebpf.MustPossibleCPU())); err != nil {
			return nil, fmt.Errorf("set nr_cpus: %w", err)
		}
	}
	// fentry and kprobe see every namespace's free in proc_free_inum(); the
	// tracepoint backend pieces teardown together from what tracepoints show.
	freeInum := b != Tracepoint && hooks["proc_free_inum"]
	if freeInum {
		// delayed_free_pidns stays, as a backstop (see pid_ns_rcu_freed).
		for _, f := range []string{"free_user_ns", "destroy_pid_namespace_work", "cleanup_net"} {
			hooks[f] = false
		}
	}
	hooks["proc_free_inum"] = freeInum
	pidWork := hooks["destroy_pid_namespace_work"]
	pidRCU := !pidWork && b != Tracepoint && hooks["delayed_free_pidns"]
	hooks["delayed_free_pidns"] = pidRCU
	set := map[string]any{
		"pid_ns_free_hooked":      pidWork || pidRCU,
		"destroy_at_free_inum":    freeInum,
		"net_cleanup_hooked":      hooks["cleanup_net"],
		"release_at_syscall_exit": b == Tracepoint,
		"watch_survivors":         b == Tracepoint,
		"have_rdonly_cast":        kernelHasFunc("bpf_rdonly_cast"),
	}
	for name, v := range set {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	drop := func(names ...string) {
		for _, n := range names {
			delete(spec.Programs, n)
		}
	}
	if !freeInum {
		drop("fentry_proc_free_inum", "kprobe_proc_free_inum")
	}
	if !hooks["delayed_free_pidns"] {
		drop("fentry_delayed_free_pidns", "kprobe_delayed_free_pidns")
	}
	if !hooks["free_user_ns"] && !pidWork && !hooks["cleanup_net"] {
		drop("common_workqueue_execute_start", workFnsProg)
	}
	if haveSymbolLookup() != nil {
		drop(workFnsProg) // open reads /proc/kallsyms instead
	}
	if !hooks["cleanup_net"] {
		drop("common_workqueue_execute_end")
	}
	return hooks, nil
}

// ucountsTable is the kernel's table of per-user counts, which the compat
// object looks a failed call's caller up in (before 5.14 a cred does not
// point at its own; bpf/lib/limits.h).
const ucountsTable = "ucounts_hashtable"

// workFnsProg looks the work functions' addresses up (bpf/hooks/destroy.h).
const workFnsProg = "common_work_fns"

// workAddresses returns the work functions' addresses: read from
// /proc/kallsyms on syms, or, if that is nil, looked up by the kernel for
// common_work_fns, which puts them in its variables.
func (t *Tracer) workAddresses(syms chan map[string]uint64) (map[string]uint64, error) {
	if syms != nil {
		return <-syms, nil
	}
	addrs := make(map[string]uint64, len(workFuncs))
	prog := t.coll.Programs[workFnsProg]
	if prog == nil {
		return addrs, nil // no work function hooked (setKnobs)
	}
	defer delete(t.coll.Programs, workFnsProg)
	defer prog.Close()
	if _, err := prog.Run(&ebpf.RunOptions{}); err != nil {
		return nil, fmt.Errorf("run %s: %w", workFnsProg, err)
	}
	for f, v := range workFuncs {
		var a uint64
		if err := t.coll.Variables[v].Get(&a); err != nil {
			return nil, fmt.Errorf("read %s: %w", v, err)
		}
		addrs[f] = a
	}
	return addrs, nil
}

// rdonlyCast says whether spec's programs are set to call bpf_rdonly_cast.
func rdonlyCast(spec *ebpf.CollectionSpec) bool {
	var on bool
	return spec.Variables["have_rdonly_cast"].Get(&on) == nil && on
}

// setAddresses gives the loaded programs the addresses of the work
// functions they hook, and 0 for the others; a hook whose address could
// not be found is off, and says so in the blind spots.
func (t *Tracer) setAddresses(hooks map[string]bool, addrs map[string]uint64) {
	for f, v := range workFuncs {
		a := addrs[f]
		if hooks[f] && a == 0 {
			slog.Debug("no address for a teardown hook", "func", f)
			hooks[f] = false
		}
		if !hooks[f] {
			a = 0
		}
		if err := t.coll.Variables[v].Set(a); err != nil {
			slog.Debug("set address", "var", v, "err", err)
			hooks[f] = false
		}
	}
}

// kernelHasFunc says whether the kernel's BTF has function name.
func kernelHasFunc(name string) bool {
	spec, err := kernelTypes()
	if err != nil {
		return false
	}
	var fn *btf.Func
	return spec.TypeByName(name, &fn) == nil
}

// userIDs is the block of ns_ids kept for userspace (NamespaceID).
const userIDs = 1 << 20

// setIDBase starts the ns_ids nstrace assigns (where the kernel has none) at
// the boot-clock nanosecond of the load: a run would have to assign more ids
// than nanoseconds passed before the next run started for two runs of one
// boot to share an id. The first userIDs of them are userspace's; it returns
// the first.
func setIDBase(spec *ebpf.CollectionSpec) (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("read the boot clock: %w", err)
	}
	first := uint64(ts.Nano())
	if err := spec.Variables["next_ns_id"].Set(first + userIDs); err != nil {
		return 0, fmt.Errorf("set next_ns_id: %w", err)
	}
	return first, nil
}

// nsInfo is a live_ns value (struct ns_info).
type nsInfo struct {
	ID        uint64
	OwnerCgid uint64
	Type      uint32
	OwnerPid  uint32
	OwnerPass uint8
	Watched   uint8
	Live      uint8
	Joined    uint8
	_         [4]uint8
}

// live_ns is direct-mapped by inum - procDynamicFirst for the first
// liveDense inode numbers the kernel hands out (they are dense: see
// live_ns in bpf/lib/maps.h); live_ns_sparse holds the others.
const (
	procDynamicFirst = 0xF0000000
	liveDense        = 65536
)

// liveSlot returns the map that holds inum's entry and its key there.
func (t *Tracer) liveSlot(inum uint32) (*ebpf.Map, uint32) {
	if slot := inum - procDynamicFirst; slot < t.liveDense {
		return t.coll.Maps["live_ns"], slot
	}
	return t.coll.Maps["live_ns_sparse"], inum
}

// liveInfo returns what live_ns holds for inum, if anything.
func (t *Tracer) liveInfo(inum uint32) (nsInfo, bool) {
	m, key := t.liveSlot(inum)
	var info nsInfo
	if err := m.Lookup(key, &info); err != nil || info.Live == 0 {
		return nsInfo{}, false
	}
	return info, true
}

// Owner is the process a namespace found outside the BPF programs is
// attributed to, and whether it passes the filter.
type Owner struct {
	Pid      uint32
	CgroupID uint64
	Pass     bool
}

// NamespaceID returns the ns_id of a namespace found outside the BPF
// programs (--snapshot) that has type slot typ (events.NsType) and inode
// number inum: the id nstrace already knows it by, else kernelID (from
// NS_GET_ID, 0 if the kernel has none) or a new one. It is remembered, so
// that the namespace's destroy carries the same id. 0 if it cannot be.
func (t *Tracer) NamespaceID(typ uint8, inum uint32, kernelID uint64, owner Owner) uint64 {
	if info, ok := t.liveInfo(inum); ok && info.Type == uint32(typ) {
		return info.ID
	}
	info := nsInfo{ID: kernelID, Type: uint32(typ), OwnerPid: owner.Pid, OwnerCgid: owner.CgroupID, Live: 1}
	if owner.Pass {
		info.OwnerPass = 1
	}
	if info.ID == 0 {
		if t.nextID > t.lastID {
			return 0
		}
		info.ID = t.nextID
		t.nextID++
	}
	m, key := t.liveSlot(inum)
	flags := ebpf.UpdateNoExist
	if m.Type() == ebpf.Array {
		// An array has no NoExist. The slot was free a moment ago; a
		// hook that met the namespace since then (a join) loses its
		// entry to this one: the same id on 6.18, before it the id this
		// snapshot reports, which the destroy will carry too.
		flags = ebpf.UpdateAny
	}
	if err := m.Update(key, &info, flags); err != nil {
		if info, ok := t.liveInfo(inum); ok && info.Type == uint32(typ) {
			return info.ID
		}
		return 0
	}
	return info.ID
}

// How a backend sees a namespace type's destroy (Teardowns).
const (
	// TeardownExact: when it happens, whatever held the namespace last.
	TeardownExact = "exact"
	// TeardownPolled: when it happens if an nsproxy held the last
	// reference; else (a bind mount, an open file) found gone by the poll
	// of watched namespaces, within PollInterval.
	TeardownPolled = "polled"
	// TeardownAtRelease: only if an nsproxy held the last reference.
	TeardownAtRelease = "at-release"
	// TeardownBlind: never.
	TeardownBlind = "blind"
)

// teardown is how one type's destroys are seen, and, where some are not,
// why, in words for the user (a blind spot).
type teardown struct{ how, why string }

// teardowns says, per namespace type (events.NsType order), how backend b
// sees its destroys on this kernel, given the hooks that work (setKnobs,
// setAddresses).
func teardowns(b Backend, hooks map[string]bool) [NsTypes]teardown {
	const mnt, uts, ipc, pid, net, user, cgroup, time = 0, 1, 2, 3, 4, 5, 6, 7
	var td [NsTypes]teardown
	for i := range td {
		td[i].how = TeardownExact
	}
	if hooks["proc_free_inum"] {
		return td
	}
	if !hooks["free_user_ns"] {
		td[user] = teardown{TeardownBlind, "user namespace destroy (free_user_ns is not in the kernel's BTF, or has no address in its symbols)"}
	}
	if !hooks["cleanup_net"] {
		td[net] = teardown{TeardownAtRelease, "net namespace destroy, unless its last reference goes with an nsproxy (cleanup_net is not in the kernel's BTF, or has no address in its symbols)"}
	}
	// Where no hook shows a free, the tracepoint backend polls the
	// namespaces that outlive their nsproxy: nothing is unseen.
	if b == Tracepoint {
		if !hooks["destroy_pid_namespace_work"] && !hooks["delayed_free_pidns"] {
			td[pid].how = TeardownPolled
		}
		if !hooks["cleanup_net"] {
			td[net] = teardown{how: TeardownPolled}
		}
		for _, i := range []int{mnt, uts, ipc, cgroup, time} {
			td[i].how = TeardownPolled
		}
		return td
	}
	if !hooks["destroy_pid_namespace_work"] && !hooks["delayed_free_pidns"] {
		td[pid] = teardown{TeardownAtRelease, "pid namespace destroy, unless its last reference goes with an nsproxy (the kernel's BTF has neither destroy_pid_namespace_work nor delayed_free_pidns)"}
	}
	for i, name := range map[int]string{mnt: "mnt", uts: "uts", ipc: "ipc", cgroup: "cgroup", time: "time"} {
		td[i] = teardown{TeardownAtRelease, "pinned " + name + " namespace destroy (seen only when an nsproxy held the last reference, not a bind mount, an open /proc/PID/ns file or an open cgroup file; proc_free_inum is not in the kernel's BTF)"}
	}
	return td
}

// blindSpots is the why of each type whose destroys are not all seen, in
// the order the user reads them: user, net, pid, then the pinned ones.
func blindSpots(td [NsTypes]teardown) []string {
	var blind []string
	for _, i := range []int{5, 4, 3, 0, 1, 2, 6, 7} {
		if td[i].why != "" {
			blind = append(blind, td[i].why)
		}
	}
	return blind
}

// Teardowns says, per namespace type (events.NsType order), how this
// backend sees its destroys on this kernel: TeardownExact, TeardownPolled,
// TeardownAtRelease or TeardownBlind.
func (t *Tracer) Teardowns() [NsTypes]string {
	var how [NsTypes]string
	for i, td := range t.teardowns {
		how[i] = td.how
	}
	return how
}

// moreTracepoints are the tracepoints a program serves beside the one its
// section names: one program for several syscalls' tracepoints is verified
// once at start-up (bpf/hooks/syscalls.h).
var moreTracepoints = map[string][]string{
	"tp_sys_exit": {"syscalls/sys_exit_setns", "syscalls/sys_exit_clone", "syscalls/sys_exit_clone3"},
}

func attach(spec *ebpf.ProgramSpec, prog *ebpf.Program) (link.Link, error) {
	switch spec.Type {
	case ebpf.Tracing:
		return link.AttachTracing(link.TracingOptions{Program: prog})
	case ebpf.Kprobe:
		if strings.HasPrefix(spec.SectionName, "kretprobe/") {
			return link.Kretprobe(spec.AttachTo, prog, nil)
		}
		return link.Kprobe(spec.AttachTo, prog, nil)
	case ebpf.TracePoint:
		return attachTracepoint(spec.AttachTo, prog)
	}
	return nil, fmt.Errorf("program type %s: %w", spec.Type, errors.ErrUnsupported)
}

// attachTracepoint attaches prog to tracepoint "group/name".
func attachTracepoint(tp string, prog *ebpf.Program) (link.Link, error) {
	group, name, ok := strings.Cut(tp, "/")
	if !ok {
		return nil, fmt.Errorf("bad tracepoint %q", tp)
	}
	return link.Tracepoint(group, name, prog, nil)
}

// runIter runs a BPF iterator over every task (or task file) once.
func runIter(prog *ebpf.Program) error {
	it, err := link.AttachIter(link.IterOptions{Program: prog})
	if err != nil {
		return err
	}
	defer it.Close()
	rd, err := it.Open()
	if err != nil {
		return err
	}
	defer rd.Close()
	_, err = io.Copy(io.Discard, rd)
	return err
}

// Backend reports which backend is attached.
func (t *Tracer) Backend() Backend { return t.backend }

// Read blocks until a record is available, or until Flush has been called
// and everything buffered before it has been returned (then it returns
// ringbuf.ErrFlushed), or until Close. Records that are only for the
// tracer itself are not returned.
//
// While records come, and for stayAwake after the last, Read polls the
// ring buffer every pollTick and the BPF programs ask for no wakeups; then
// it sets reader_state and waits, and the next record wakes it (see
// submit in bpf/lib/wakeup.h). So a traced task pays for a wakeup only
// when nstrace has been idle, and an idle nstrace runs no timer.
func (t *Tracer) Read(rec *ringbuf.Record) error {
	for {
		if len(t.tickers) > 0 {
			now := time.Now()
			for i := range t.tickers {
				tk := &t.tickers[i]
				if now.Before(tk.due) {
					continue
				}
				for !now.Before(tk.due) { // one call, however late
					tk.due = tk.due.Add(tk.every)
				}
				if err := tk.fn(); err != nil {
					return err
				}
			}
		}
		if !t.pending {
			// About to wait: what the caller buffered goes out first.
			if t.beforeWait != nil {
				if err := t.beforeWait(); err != nil {
					return err
				}
			}
			now := time.Now()
			if t.gotRecords {
				t.lastRecord, t.gotRecords = now, false
			}
			if now.Sub(t.lastRecord) < stayAwake {
				t.reader.SetDeadline(now.Add(pollTick))
			} else {
				t.sleep()
			}
		}
		err := t.reader.ReadInto(rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return err
		}
		t.gotRecords = true
		if backlog := t.reader.AvailableBytes(); backlog > 0 {
			t.pending = true
			notePeak(&t.ringPeak, backlog)
		} else {
			t.pending = false
		}
		raw := rec.RawSample
		if len(raw) > recKindOffset {
			switch raw[recKindOffset] {
			case recWatch:
				t.kickPoll()
				continue
			case recWake:
				continue
			}
		}
		// A REC_WATCH that found no room says so here instead.
		if atomic.LoadUint64(t.watchMissed) != 0 && atomic.SwapUint64(t.watchMissed, 0) != 0 {
			t.kickPoll()
		}
		return nil
	}
}

// sleep asks the BPF side for a wakeup at the next record, then looks at
// the ring buffer once more: a record reserved before the flag was set
// asked for none.
func (t *Tracer) sleep() {
	atomic.SwapUint64(t.asleep, 1) // a full barrier, as on the BPF side
	if t.reader.AvailableBytes() > 0 {
		t.reader.SetDeadline(time.Now()) // read it, do not wait
		return
	}
	var due time.Time // zero: no deadline
	for _, tk := range t.tickers {
		if due.IsZero() || tk.due.Before(due) {
			due = tk.due
		}
	}
	t.reader.SetDeadline(due)
}

// Every adds a function Read calls every d (the summaries of --interval,
// the orphan reports), between records and while it waits for them.
func (t *Tracer) Every(d time.Duration, f func() error) {
	t.tickers = append(t.tickers, ticker{every: d, fn: f, due: time.Now().Add(d)})
}

// ticker is a function of Every's.
type ticker struct {
	every time.Duration
	fn    func() error
	due   time.Time
}

// pollTick is how often Read looks at the ring buffer while records come:
// the most it delays a record then (epoll counts whole milliseconds,
// rounding down: 2 ms waits 1-2). stayAwake is how long it keeps looking
// after the last: events a few milliseconds apart (a container starting,
// a build forking) keep it awake, so they cost no wakeups either.
const (
	pollTick  = 2 * time.Millisecond
	stayAwake = 20 * time.Millisecond
)

// BeforeWait sets a function Read calls whenever it is about to wait for
// records (a flush of buffered output, say); an error it returns, Read
// returns.
func (t *Tracer) BeforeWait(f func() error) { t.beforeWait = f }

// Every record starts with ts_ns (u64), lost (u32) and kind (u8); a
// REC_WATCH or a REC_WAKE (enum rec_kind in bpf/lib/context.h) has nothing
// else, and a REC_WAKE is there only to wake the reader.
const (
	recKindOffset = 12
	recWatch      = 18
	recWake       = 20
)

// Detach removes every hook, so no new records arrive, and wakes Read so
// that it returns what is still buffered and then ringbuf.ErrFlushed.
func (t *Tracer) Detach() error {
	if t.stopPoll != nil {
		close(t.stopPoll)
		<-t.pollDone
		t.stopPoll = nil
	}
	var errs []error
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	t.links = nil
	if t.reader != nil {
		errs = append(errs, t.reader.Flush())
	}
	return errors.Join(errs...)
}

// Lost returns, and resets, the events dropped that no record carried yet:
// ring-buffer and state-map overflows counted by the programs.
func (t *Tracer) Lost() (uint64, error) {
	return t.droppedByPrograms()
}

// Skipped returns the runs of nstrace's hooks the kernel skipped since the
// last call because another BPF program was running on that CPU (a hook in
// an interrupt that came during one, say). They are not in Lost: a skipped
// run may have been about a task the filters drop, or one that makes no
// event (the free of a task), and the kernel does not say which; each may
// also have been an event.
func (t *Tracer) Skipped() (uint64, error) {
	var misses uint64
	for name, p := range t.coll.Programs {
		st, err := p.Stats()
		if err != nil {
			return 0, fmt.Errorf("read stats of %s: %w", name, err)
		}
		misses += st.RecursionMisses
		if st.RecursionMisses > 0 {
			slog.Debug("runs skipped by the kernel", "program", name, "recursion_misses", st.RecursionMisses)
		}
	}
	skipped := misses - t.missesReported
	t.missesReported = misses
	return skipped, nil
}

func (t *Tracer) droppedByPrograms() (uint64, error) {
	m := t.coll.Maps["lost"]
	var perCPU []uint64
	if err := m.Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("read lost counters: %w", err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	zero := make([]uint64, len(perCPU))
	if err := m.Put(uint32(0), zero); err != nil {
		return 0, fmt.Errorf("reset lost counters: %w", err)
	}
	return n, nil
}

// tableMaps are the bounded tables, indexed like enum table in
// bpf/lib/ring.h (table_full counts how often each was full).
var tableMaps = [...]string{"live_ns_sparse", "watched", "live_nets", "filter_pids"}

// tableWords say what a full table costs, for FullTables.
var tableWords = [len(tableMaps)]string{
	"the table of live namespaces is full: namespaces created now are reported, marked partial, and their destroys too (no ns_id continuity, owner or lifetime)",
	"the table of namespaces watched for their end is full: destroys of namespaces held by a mount or a file are counted as lost (or reported as reused)",
	"the table of net namespaces is full: their destroys are counted as lost",
	"the table of followed processes (--pid --children) is full: children are no longer followed; each counted as a lost event",
}

// FullTables returns, once per table, what it means that one was found
// full since the last call. Entries are used again as soon as they free.
func (t *Tracer) FullTables() ([]string, error) {
	var msgs []string
	for i := range tableMaps {
		if t.fullSeen[i] {
			continue
		}
		var n uint64
		if err := t.coll.Maps["table_full"].Lookup(uint32(i), &n); err != nil {
			return nil, fmt.Errorf("read table_full: %w", err)
		}
		if n > 0 {
			t.fullSeen[i] = true
			size := t.coll.Maps[tableMaps[i]].MaxEntries()
			msgs = append(msgs, fmt.Sprintf("%s (%d entries)", tableWords[i], size))
		}
	}
	return msgs, nil
}

// CheckRuntime does, once, what the tracer does with the kernel while it
// runs, short of changing anything: a read of a map (lost counters; the
// container filter and the ns_ids write maps the same way), a program's
// stats (the kernel checks the poll's test runs as it does the reads).
// privs.Drop runs it to find which capabilities these still need
// on this kernel.
func (t *Tracer) CheckRuntime() error {
	var perCPU []uint64
	if err := t.coll.Maps["lost"].Lookup(uint32(0), &perCPU); err != nil {
		return fmt.Errorf("read a map: %w", err)
	}
	for name, p := range t.coll.Programs {
		if _, err := p.Stats(); err != nil {
			return fmt.Errorf("read stats of %s: %w", name, err)
		}
		break
	}
	return nil
}

// Close detaches and frees everything.
func (t *Tracer) Close() error {
	errs := []error{t.Detach()}
	if t.reader != nil {
		errs = append(errs, t.reader.Close())
	}
	if t.readerState != nil {
		errs = append(errs, unix.Munmap(t.readerState))
		t.readerState, t.asleep, t.watchMissed = nil, nil, nil
	}
	if t.coll != nil {
		t.coll.Close()
	}
	return errors.Join(errs...)
}
