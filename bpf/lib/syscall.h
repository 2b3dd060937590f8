/* SPDX-License-Identifier: GPL-2.0 */
// The syscall behind a hook and the flags its caller passed. Apart from
// the hooks because create and syscall hooks of every backend read them,
// and must agree on them for one call.
#ifndef NSTRACE_SYSCALL_H
#define NSTRACE_SYSCALL_H

// The syscall the current task is in, from its saved user registers: this
// is the same in every backend, whatever kernel function we are hooked on.
static __always_inline struct pt_regs *user_regs(void)
{
#ifndef NSTRACE_COMPAT
	return (struct pt_regs *)bpf_task_pt_regs(current_task());
#else
	// task_pt_regs(), as the kernel computes it (compat.h).
	void *stack = BPF_CORE_READ(current_task(), stack);

	return (struct pt_regs *)(stack + KERNEL_STACK_SIZE) - 1;
#endif
}

static __always_inline __u8 cur_syscall(void)
{
	long nr = REGS_NR(user_regs());

	switch (nr) {
	case NR_CLONE:
		return SC_CLONE;
#ifdef NR_FORK
	case NR_FORK:
		return SC_FORK;
	case NR_VFORK:
		return SC_VFORK;
#endif
	case NR_EXECVE:
		return SC_EXECVE;
	case NR_UNSHARE:
		return SC_UNSHARE;
	case NR_SETNS:
		return SC_SETNS;
	case NR_EXECVEAT:
		return SC_EXECVEAT;
	case NR_CLONE3:
		return SC_CLONE3;
	}
	return SC_UNKNOWN;
}

// The flags the caller passed, as the kernel interprets them, so every
// backend reports the same value for the same call.
static __always_inline __u64 syscall_flags(__u8 sc)
{
	struct pt_regs *r = user_regs();
	__u64 flags = 0;

	switch (sc) {
	case SC_CLONE:
		return (__u32)REGS_ARG0(r) & ~CSIGNAL;
	case SC_CLONE3:
		// struct clone_args starts with the u64 flags
		bpf_probe_read_user(&flags, sizeof(flags), (void *)REGS_ARG0(r));
		return flags;
	case SC_UNSHARE:
		return REGS_ARG0(r);
	case SC_SETNS:
		return REGS_ARG1(r);
	}
	return 0;
}

static __always_inline bool for_children(__u32 type, __u32 sc)
{
	// unshare/setns of pid and time only affect children; after a clone
	// the child itself is in the new namespace.
	return (type == NS_PID || type == NS_TIME) && (sc == SC_UNSHARE || sc == SC_SETNS);
}

#endif
