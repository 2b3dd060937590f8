package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// ErrPrivileges means the process may not load tracing BPF programs.
var ErrPrivileges = errors.New("permission denied: tracing needs root, or the capabilities CAP_BPF + CAP_PERFMON (and CAP_SYS_ADMIN to mount tracefs if it is not mounted); run it with sudo")

const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

func checkPrivileges() error {
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
		return nil
	}
	return ErrPrivileges
}

// btfCache holds the kernel's BTF, decoded once (each btf.LoadKernelSpec
// decodes it anew, 10-20 ms): the feature checks, the CO-RE relocations and
// the attach-target lookups of every load share it. Its types are decoded
// lazily under a lock, so concurrent loads may read it. Open drops it when
// done (releaseLoadState); loadMu guards the variable.
var (
	loadMu   sync.Mutex
	btfCache = btf.NewCache()
)

func kernelCache() *btf.Cache {
	loadMu.Lock()
	defer loadMu.Unlock()
	return btfCache
}

// givenBTF is the kernel's types as --btf gave them (UseKernelBTF).
var givenBTF *btf.Spec

// kernelTypes is the kernel's BTF: given, or this kernel's own.
func kernelTypes() (*btf.Spec, error) {
	if givenBTF != nil {
		return givenBTF, nil
	}
	return kernelCache().Kernel()
}

// UseKernelBTF makes nstrace take the kernel's types from path (raw BTF,
// as /sys/kernel/btf/vmlinux, or an ELF file with a .BTF section) instead
// of /sys/kernel/btf/vmlinux: for a container that does not mount it, with
// a copy of this kernel's. It serves the CO-RE relocations and nstrace's
// own checks; programs attached through BTF (tp_btf, iterators, fentry)
// still look their targets up where the kernel exposes them.
func UseKernelBTF(path string) error {
	spec, err := btf.LoadSpec(path)
	if err != nil {
		return fmt.Errorf("read BTF from %s: %w", path, err)
	}
	var ts *btf.Struct
	if err := spec.TypeByName("task_struct", &ts); err != nil {
		return fmt.Errorf("%s has no struct task_struct: not a kernel's BTF", path)
	}
	givenBTF = spec
	return nil
}

// raiseMemlock lifts RLIMIT_MEMLOCK, to which kernels before 5.11 charge
// BPF memory (later ones charge the memory cgroup, where this does
// nothing), before anything makes a BPF object: the feature probes too,
// which would otherwise fail with EPERM once a few earlier runs' objects,
// freed lazily, count against the limit.
var raiseMemlock = sync.OnceFunc(func() {
	if err := rlimit.RemoveMemlock(); err != nil {
		slog.Debug("could not raise RLIMIT_MEMLOCK", "err", err)
	}
})

// checkKernel explains, in words a user can act on, a kernel nstrace cannot
// run on at all, whatever the backend.
var checkKernel = sync.OnceValue(kernelProblem)

// haveRingBuf is the kernel's answer on BPF ring buffers (a variable so
// that a test can be a kernel without them).
var haveRingBuf = func() error { return features.HaveMapType(ebpf.RingBuf) }

func kernelProblem() error {
	if err := BTFProblem(); err != nil {
		return err
	}
	return RingBufferProblem()
}

// MinKernel is the oldest kernel nstrace runs on (the oldest the suite
// proves).
const MinKernel = "5.10"

// kernelFeatures are what the programs of the BPF object for current
// kernels use that 5.10 lacks, with the release that brought each: a
// kernel without one of them gets the object built for older kernels
// (bpf/lib/compat.h). A variable, so that a test can be a kernel without
// them.
var kernelFeatures = []struct {
	what, since string
	have        func() error
}{
	{"BPF task storage", "5.11", func() error { return features.HaveMapType(ebpf.TaskStorage) }},
	{"the bpf_get_current_task_btf helper", "5.11", func() error {
		return features.HaveProgramHelper(ebpf.TracePoint, asm.FnGetCurrentTaskBtf)
	}},
	{"the bpf_for_each_map_elem helper", "5.13", func() error {
		return features.HaveProgramHelper(ebpf.TracePoint, asm.FnForEachMapElem)
	}},
	{"the bpf_task_pt_regs helper", "5.15", func() error {
		return features.HaveProgramHelper(ebpf.TracePoint, asm.FnTaskPtRegs)
	}},
}

// missingFeatures names those of kernelFeatures this kernel lacks.
func missingFeatures() []string {
	var missing []string
	for _, f := range kernelFeatures {
		if err := f.have(); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				slog.Debug("feature probe failed", "feature", f.what, "err", err)
				continue // the load will say what it is
			}
			missing = append(missing, fmt.Sprintf("%s (Linux %s)", f.what, f.since))
		}
	}
	return missing
}

// objectEnv forces one BPF object: "compat" (the one for kernels before
// 5.15) or "current"; for tests of the compat object on a newer kernel.
const objectEnv = "NSTRACE_BPF_OBJECT"

// needCompat says whether the programs must come from the object for
// kernels before 5.15: the kernel lacks something the current one uses.
func needCompat() bool {
	raiseMemlock()
	switch os.Getenv(objectEnv) {
	case "compat":
		return true
	case "current":
		return false
	}
	if missing := missingFeatures(); len(missing) > 0 {
		slog.Debug("using the BPF object for kernels before 5.15", "lacking", strings.Join(missing, ", "))
		return true
	}
	return false
}

// useCompat is needCompat, probed once.
var useCompat = sync.OnceValue(needCompat)

// Object says which BPF object Open loads here: "current", or "compat"
// (the one built for kernels before 5.15) with what this kernel lacks of
// what the current one uses (nothing when NSTRACE_BPF_OBJECT forced it).
func Object() (name string, lacking []string) {
	if !useCompat() {
		return "current", nil
	}
	return "compat", missingFeatures()
}

// kernelRelease is uname's release (a variable, so that a test can be an
// older kernel).
var kernelRelease = func() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// FeaturesProblem says, after a load failed, whether that is because the
// kernel is older than MinKernel, and what it lacks.
func FeaturesProblem() error {
	release := kernelRelease()
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil || major > 5 || (major == 5 && minor >= 10) {
		return nil
	}
	msg := fmt.Sprintf("Linux %s is older than Linux %s, the oldest nstrace runs on", release, MinKernel)
	if missing := missingFeatures(); len(missing) > 0 {
		msg += " (it lacks, among others, " + strings.Join(missing, ", ") + ")"
	}
	return errors.New(msg)
}

// BTFProblem says why the kernel's types cannot be read, if they cannot.
func BTFProblem() error {
	if _, err := kernelTypes(); err != nil {
		return fmt.Errorf("kernel BTF not found (%v): nstrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y, which exposes /sys/kernel/btf/vmlinux (in a container, mount /sys/kernel/btf, or give a copy with --btf PATH)", err)
	}
	return nil
}

// RingBufferProblem says why BPF ring buffers cannot be made, if they cannot.
func RingBufferProblem() error {
	raiseMemlock()
	if err := haveRingBuf(); err != nil {
		return fmt.Errorf("BPF ring buffer not supported (%v): nstrace needs Linux 5.8 or newer", err)
	}
	return nil
}

// haveKprobes reports whether kprobes can be attached at all: through the
// kprobe PMU, or tracefs's kprobe_events on older kernels.
var haveKprobes = sync.OnceValue(func() error {
	for _, p := range []string{
		"/sys/bus/event_source/devices/kprobe",
		"/sys/kernel/tracing/kprobe_events",
		"/sys/kernel/debug/tracing/kprobe_events",
	} {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
	}
	return errors.New("this kernel has no kprobe support (no kprobe PMU, no kprobe_events: CONFIG_KPROBES is off)")
})

// haveSymbolLookup says whether BPF can look kernel symbols up
// (bpf_kallsyms_lookup_name in a syscall program: 5.16+).
var haveSymbolLookup = sync.OnceValue(func() error {
	return features.HaveProgramHelper(ebpf.Syscall, asm.FnKallsymsLookupName)
})

// haveFentry reports whether the kernel accepts fentry programs, by loading
// an empty one on free_nsproxy: cheaper than finding out by loading the
// whole backend (some kernels refuse every fentry program with EPERM).
var haveFentry = sync.OnceValue(func() error {
	// Loaded as a collection so that the target lookup uses btfCache.
	coll, err := ebpf.NewCollectionWithOptions(&ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{"free_nsproxy": {
		Type:       ebpf.Tracing,
		AttachType: ebpf.AttachTraceFEntry,
		AttachTo:   "free_nsproxy",
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	}}}, ebpf.CollectionOptions{Cache: kernelCache()})
	if err != nil {
		return fmt.Errorf("fentry programs cannot be loaded: %w", explainLoad(err))
	}
	coll.Close()
	return nil
})

// cilium/ebpf's hint for EPERM; on the kernels where BPF memory is charged to
// the memory cgroup it points the wrong way, so it is replaced.
const memlockHint = " (MEMLOCK may be too low, consider rlimit.RemoveMemlock)"

// explainedError rewords an error but keeps it matchable with errors.Is.
type explainedError struct {
	msg string
	err error
}

func (e *explainedError) Error() string { return e.msg }
func (e *explainedError) Unwrap() error { return e.err }

// explainLoad adds the likely cause to well-known load failures.
func explainLoad(err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.Is(err, unix.EPERM):
		msg := strings.Replace(err.Error(), memlockHint, "", 1)
		return &explainedError{msg + " (the kernel refused it: lockdown, a security module, or missing privileges)", err}
	case errors.As(err, &ve):
		return fmt.Errorf("verifier rejected a program: %w", err)
	case errors.Is(err, unix.ENOMEM):
		return &explainedError{err.Error() + " (not enough memory for nstrace's BPF maps: since Linux 5.11 they count against the memory cgroup's limit, memory.max or memory.limit_in_bytes, before that against RLIMIT_MEMLOCK; raise it, or ask for a smaller --ring-size)", err}
	}
	return err
}

// kernelSymbols returns the addresses of the named symbols in
// /proc/kallsyms; missing ones are absent from the map, and all are absent
// when kallsyms hides addresses (kptr_restrict).
func kernelSymbols(names ...string) (map[string]uint64, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return map[string]uint64{}, err
	}
	defer f.Close()
	found := make(map[string]uint64, len(names))
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(found) < len(names) {
		// "ffffffff81464fe0 t free_user_ns" (module symbols have a 4th field)
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || !want[fields[2]] || len(fields) > 3 {
			continue
		}
		addr, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil || addr == 0 {
			continue
		}
		found[fields[2]] = addr
	}
	return found, sc.Err()
}

// ensureTracefs mounts tracefs where it normally lives if no tracefs is
// mounted: classic tracepoints are looked up there.
func ensureTracefs() error {
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(dir + "/events"); err == nil {
			return nil
		}
	}
	if err := unix.Mount("nodev", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("tracefs is not mounted and mounting it on /sys/kernel/tracing failed: %w (mount it: mount -t tracefs nodev /sys/kernel/tracing)", err)
	}
	slog.Info("tracefs was not mounted: mounted it on /sys/kernel/tracing")
	return nil
}
