/* SPDX-License-Identifier: GPL-2.0 */
// unshare and setns at the syscall boundary: the namespaces read at
// entry, compared at exit. Apart from create.h because a join creates
// nothing, and the tracepoint backend sees unshare's creates only here.
#ifndef NSTRACE_HOOKS_SYSCALLS_H
#define NSTRACE_HOOKS_SYSCALLS_H

static __always_inline int on_sys_enter(void)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	struct snap *s = bpf_task_storage_get(&syscall_snaps, cur, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!s) {
		count_lost();
		return 0;
	}
	__builtin_memset(s, 0, sizeof(*s));
	snap_task(cur, s);
	s->in_flight = 1;
	return 0;
}

static __always_inline int on_sys_exit(long ret, __u8 kind, __u8 sc)
{
	struct snap *o, *n = snap_tmp(0);

	o = bpf_task_storage_get(&syscall_snaps, bpf_get_current_task_btf(), 0, 0);
	if (!o || !o->in_flight || !n)
		return 0;
	o->in_flight = 0;
	if (ret == 0) {
		struct task_struct *cur = bpf_get_current_task_btf();
		struct actx a = {};

		snap_task(cur, n);
		actor_of(cur, &a, CG_LEARN, VIA_BTF);
		emit_diff(o, n, kind, syscall_flags(sc), sc, true, &a);
		if (release_at_syscall_exit && o->nsproxy != n->nsproxy && o->nsproxy_count == 1)
			emit_release(o, n, &a);
		flush(&a);
	}
	return 0;
}

// setns joins happen in commit_nsset(), static and inlined, with the user
// namespace part in commit_creds(): the syscall boundary is the one place
// every kernel and backend can diff. fentry and kprobe hook the syscall
// function itself: enabling a syscall tracepoint would send every syscall
// of every task through the kernel's tracing slow path.
SEC("fentry/__x64_sys_setns")
int BPF_PROG(fentry_sys_setns)
{
	return on_sys_enter();
}

SEC("fexit/__x64_sys_setns")
int BPF_PROG(fexit_sys_setns, struct pt_regs *regs, long ret)
{
	return on_sys_exit(ret, EV_JOIN, SC_SETNS);
}

SEC("kprobe/__x64_sys_setns")
int BPF_KPROBE(kprobe_sys_setns)
{
	return on_sys_enter();
}

SEC("kretprobe/__x64_sys_setns")
int BPF_KRETPROBE(kretprobe_sys_setns, long ret)
{
	return on_sys_exit(ret, EV_JOIN, SC_SETNS);
}

// The tracepoint backend has one entry and one exit program for both
// syscalls, attached to each one's tracepoints (tracer.go, moreTracepoints):
// every program costs its verification at start-up, and these are among the
// largest. The exit tells them apart by the syscall number the tracepoint
// carries, which both share with raw_syscalls' sys_exit: an int at the
// offset of its id.
SEC("tracepoint/syscalls/sys_enter_unshare")
int tp_sys_enter(void *ctx)
{
	return on_sys_enter();
}

SEC("tracepoint/syscalls/sys_exit_unshare")
int tp_sys_exit(struct trace_event_raw_sys_exit *ctx)
{
	bool join = (int)ctx->id == NR_SETNS;

	return on_sys_exit(ctx->ret, join ? EV_JOIN : EV_CREATE, join ? SC_SETNS : SC_UNSHARE);
}

#endif
