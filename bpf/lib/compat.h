/* SPDX-License-Identifier: GPL-2.0 */
// Kernels before 5.15 (5.10 LTS is the oldest nstrace supports) get a second
// object built from the same source with NSTRACE_COMPAT (bpfcompat_*.o,
// chosen at load time by tracer.useCompat). What it does without, and why
// each stand-in is the one chosen:
//   - global functions with pointer arguments (5.12): the four that take
//     an actx or a usage get them through a per-CPU frame (emit.h,
//     limits.h); static subprograms instead blew the verifier's budget;
//   - bpf_get_current_task_btf (5.11): the current task is a raw address,
//     so every read through it is a probe read (VIA_BTF means VIA_PROBE);
//   - task local storage (5.11): a hash keyed by thread id, its entry
//     deleted at the exit of the syscall that made it (lib/maps.h);
//   - atomic fetch operations (5.12): ids come from per-CPU sequences, and
//     flags are tested and cleared in two steps (a spare wakeup at worst);
//   - bpf_task_pt_regs (5.15): the user registers are found where the
//     kernel keeps them, at the top of the task's kernel stack;
//   - bpf_for_each_map_elem (5.13): userspace walks the watched namespaces
//     and runs the poll once per namespace (hooks/poll.h).
// Everything else nstrace uses is 5.10's: ring buffer (5.8), fentry and
// tp_btf (5.5), BTF-typed tracing arguments, test runs of raw_tp (5.10).
// The newer object is used wherever it loads: the stand-ins cost more per
// event and more verification.
#ifndef NSTRACE_COMPAT_H
#define NSTRACE_COMPAT_H

#ifdef NSTRACE_COMPAT

#define current_task() ((struct task_struct *)bpf_get_current_task())
// Saved user registers: read through a raw address.
#define REGS_RD(r, f) BPF_CORE_READ(r, f)

// The kernel stack's size on the kernels this object is for (x86-64 and
// arm64 without KASAN: 16 KiB); struct pt_regs sits at its top
// (task_pt_regs(); x86-64 pads nothing above it before FRED, 6.9).
#define KERNEL_STACK_SIZE 16384

// Possible CPUs: the stride of the per-CPU id sequences. Set by userspace.
volatile const __u32 nr_cpus = 1;

// Per-CPU sequences of the ids nstrace assigns: a CPU's n-th id is
// base + n * nr_cpus + cpu, so no two CPUs take the same one.
enum { SEQ_NS, SEQ_EXE, SEQ_N };
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SEQ_N);
	__type(key, __u32);
	__type(value, __u64);
} id_seq SEC(".maps");

static __always_inline __u64 take_id(__u64 base, __u32 seq)
{
	__u64 *n = bpf_map_lookup_elem(&id_seq, &seq);
	__u64 id;

	if (!n)
		return 0;
	id = base + *n * nr_cpus + bpf_get_smp_processor_id();
	*n += 1;
	return id;
}
#define TAKE_ID(base, seq) take_id(base, seq)

// Test-and-set and test-and-clear without the atomic exchange. Where they
// are used, a race costs little: two CPUs that both see the reader asleep
// both wake it (a spare wakeup); a staging slot is per-CPU, where only an
// interrupting program could take it between the test and the set.
static __always_inline __u64 test_and_set(__u64 *flag)
{
	__u64 old = *(volatile __u64 *)flag;

	*(volatile __u64 *)flag = 1;
	return old;
}

static __always_inline __u64 test_and_clear(__u64 *flag)
{
	__u64 old = *(volatile __u64 *)flag;

	if (old)
		*(volatile __u64 *)flag = 0;
	return old;
}

#else

#define current_task() bpf_get_current_task_btf()
#define REGS_RD(r, f) ((r)->f)
#define TAKE_ID(base, seq) __sync_fetch_and_add(&(base), 1)
#define test_and_set(flag) __sync_lock_test_and_set(flag, 1)
#define test_and_clear(flag) __sync_fetch_and_and(flag, 0)

#endif

#endif
