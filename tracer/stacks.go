package tracer

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
)

// stackDepth is STACK_DEPTH in bpf/lib/ring.h: the frames a stack keeps.
const stackDepth = 32

// ksyms is the kernel's text symbols by address, from /proc/kallsyms, to
// name the frames of kernel stacks (--kernel-stack).
type ksyms []ksym

type ksym struct {
	addr uint64
	name string
}

// loadKsyms reads /proc/kallsyms, opened as f: some 200,000 lines, read
// once, while the programs load.
func loadKsyms(f *os.File, err error) (ksyms, error) {
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var k ksyms
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "ffffffff81464fe0 t free_user_ns" (module symbols have a 4th field)
		addrText, rest, ok := strings.Cut(sc.Text(), " ")
		if !ok || len(rest) < 3 || rest[1] != ' ' || !strings.ContainsRune("tTwW", rune(rest[0])) {
			continue
		}
		addr, err := strconv.ParseUint(addrText, 16, 64)
		if err != nil || addr == 0 {
			continue
		}
		name, mod, _ := strings.Cut(rest[2:], "\t")
		if mod != "" {
			name += " " + mod
		}
		k = append(k, ksym{addr, name})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(k) == 0 {
		return nil, errors.New("no addresses in /proc/kallsyms (kptr_restrict hides them from this user)")
	}
	slices.SortFunc(k, func(a, b ksym) int { return cmp.Compare(a.addr, b.addr) })
	return k, nil
}

// name is addr as function+0xoffset, or the bare address if no symbol
// precedes it.
func (k ksyms) name(addr uint64) string {
	i, found := slices.BinarySearchFunc(k, addr, func(s ksym, a uint64) int { return cmp.Compare(s.addr, a) })
	if !found {
		i--
	}
	if i < 0 {
		return "0x" + strconv.FormatUint(addr, 16)
	}
	return k[i].name + "+0x" + strconv.FormatUint(addr-k[i].addr, 16)
}

// stackNames reads and names the kernel stacks records refer to.
type stackNames struct {
	m     *ebpf.Map
	syms  func() (ksyms, error)
	cache map[uint32][]string
}

// newStackNames opens /proc/kallsyms at once: whether it shows addresses
// is decided at open, by the opener's capabilities (CAP_SYSLOG), which
// privs may drop before the file is read.
func newStackNames(m *ebpf.Map) *stackNames {
	f, err := os.Open("/proc/kallsyms")
	return &stackNames{m: m, syms: sync.OnceValues(func() (ksyms, error) { return loadKsyms(f, err) }), cache: map[uint32][]string{}}
}

// Stack returns the kernel stack a record carries (its id + 1, as BPF puts
// it), innermost frame first; nil for 0. An id always stands for the same
// stack, so each is read and named once.
func (t *Tracer) Stack(id uint32) ([]string, error) {
	if id == 0 || t.stacks == nil {
		return nil, nil
	}
	s := t.stacks
	if frames, ok := s.cache[id]; ok {
		return frames, nil
	}
	k, err := s.syms()
	if err != nil {
		return nil, fmt.Errorf("kernel symbols: %w", err)
	}
	var pcs [stackDepth]uint64
	if err := s.m.Lookup(id-1, &pcs); err != nil {
		return nil, fmt.Errorf("read stack %d: %w", id-1, err)
	}
	var frames []string
	caller := "" // after a trampoline: the traced function it was called from
	for _, pc := range pcs {
		if pc == 0 {
			break
		}
		name := k.name(pc)
		fn, _, _ := strings.Cut(name, "+")
		// The program itself and the kernel's code that ran it say
		// nothing of what the kernel was doing. An fentry or fexit
		// hook on a function of this stack shows as a trampoline
		// frame, called from that function's entry: both go.
		if len(frames) == 0 && isBPFMachinery(name) {
			continue
		}
		if strings.HasPrefix(name, "bpf_trampoline_") && len(frames) > 0 {
			caller, _, _ = strings.Cut(frames[len(frames)-1], "+")
			continue
		}
		if caller != "" && fn == caller {
			caller = ""
			continue
		}
		caller = ""
		frames = append(frames, name)
	}
	s.cache[id] = frames
	return frames, nil
}

// isBPFMachinery tells the frames a stack taken in a BPF program starts
// with (tp_btf and fentry programs get their own frame and their
// dispatcher's): the program, its trampoline, the tracepoint's iterator.
func isBPFMachinery(frame string) bool {
	for _, p := range []string{"bpf_prog_", "bpf_trampoline_", "bpf_trace_run", "__traceiter_", "__bpf_trace_", "__bpf_prog_enter", "__bpf_prog_exit"} {
		if strings.HasPrefix(frame, p) {
			return true
		}
	}
	return false
}

// Stackless is how many records went without their kernel stack because
// another stack held the bucket of its hash in the stack map (not those
// whose hook has no kernel stack to take).
func (t *Tracer) Stackless() uint64 {
	if t.stacks == nil {
		return 0
	}
	var n uint64
	if v := t.coll.Variables["stackless"]; v != nil {
		if err := v.Get(&n); err != nil {
			return 0
		}
	}
	return n
}
