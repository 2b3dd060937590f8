/* SPDX-License-Identifier: GPL-2.0 */
// The syscall boundary: unshare and setns, the namespaces read at entry
// and compared at exit, and the failures of those and of clone and clone3.
// Apart from create.h because a join or a failure creates nothing, and the
// tracepoint backend sees unshare's creates only here.
#ifndef NSTRACE_HOOKS_SYSCALLS_H
#define NSTRACE_HOOKS_SYSCALLS_H

// flags: what the call passed (syscall_flags), kept for its exit.
static __always_inline int on_sys_enter(__u64 flags)
{
	struct task_struct *cur = current_task();
	struct task_state *ts = task_state_of(cur, true);
	struct snap *s;

	if (!ts) {
		count_lost();
		return 0;
	}
	s = &ts->snap;
	__builtin_memset(s, 0, sizeof(*s));
	snap_task(cur, s);
	s->flags = flags;
	s->in_flight = 1;
	return 0;
}

// A clone, clone3, unshare or setns returned err: reported if it asked
// for a namespace (a setns always does). a is the caller's, so that a
// hook that also diffs keeps one actor on its stack (6.1 allows 512 bytes
// for a whole call chain).
static __always_inline int fail_with(struct actx *a, long err, __u8 sc, void *ctx)
{
	__u64 flags;

	if (sc != SC_UNSHARE && sc != SC_CLONE && sc != SC_CLONE3 && sc != SC_SETNS)
		return 0;
	flags = syscall_flags(sc);
	if (sc != SC_SETNS && !(flags & NS_CLONE_FLAGS))
		return 0;
	actor_of(current_task(), a, CG_LEARN, VIA_BTF);
	a->sc = sc;
	a->flags = flags;
	a->stack = stack_of(ctx);
	emit_fail(-err, a);
	flush(a);
	return 0;
}

static __always_inline int on_sys_fail(long err, __u8 sc, void *ctx)
{
	struct actx a = {};

	return fail_with(&a, err, sc, ctx);
}

static __always_inline int sys_exit_diff(long ret, __u8 kind, __u8 sc, void *ctx)
{
	struct task_struct *cur = current_task();
	struct task_state *ts = task_state_of(cur, false);
	struct snap *o = NULL, *n;
	struct actx a = {};

	// A failure needs no snapshot (nor one from before nstrace started).
	if (ts && ts->snap.in_flight) {
		o = &ts->snap;
		o->in_flight = 0;
	}
	if (ret < 0)
		return fail_with(&a, ret, sc, ctx);
	if (ret != 0 || !o)
		return 0;
	n = snap_tmp_over(0);
	if (!n)
		return 0;
	a.flags = o->flags;
	// Only what the call named can have changed: the rest is the entry's,
	// not read again (8 namespaces, 3 loads each, were a sixth of this).
	snap_task_of(cur, n, changed_slots(sc, a.flags), o);
	actor_memo_of(cur, &a, CG_LEARN, VIA_BTF, ts);
	a.sc = sc;
	a.stack = stack_of(ctx);
	cur = task_ro(cur);
	emit_diff(o, n, kind, true, &a, RD(VIA_BTF, cur, nsproxy), RD2(VIA_BTF, cur, real_cred, user_ns), VIA_BTF);
	if (release_at_syscall_exit && o->nsproxy != n->nsproxy && o->nsproxy_count == 1)
		emit_release(o, n, &a, 0);
	flush(&a);
	actor_memo_keep(ts, &a);
	return 0;
}

static __always_inline int on_sys_exit(long ret, __u8 kind, __u8 sc, void *ctx)
{
	int r = sys_exit_diff(ret, kind, sc, ctx);

	task_state_done();
	return r;
}

// setns joins happen in commit_nsset(), static and inlined, with the user
// namespace part in commit_creds(): the syscall boundary is the one place
// every kernel and backend can diff. fentry and kprobe hook the syscall
// function itself: enabling a syscall tracepoint would send every syscall
// of every task through the kernel's tracing slow path.
SEC("fentry/" SYS_PREFIX "sys_setns")
int BPF_PROG(fentry_sys_setns)
{
	return on_sys_enter(syscall_flags(SC_SETNS));
}

SEC("fexit/" SYS_PREFIX "sys_setns")
int BPF_PROG(fexit_sys_setns, struct pt_regs *regs, long ret)
{
	return on_sys_exit(ret, EV_JOIN, SC_SETNS, ctx);
}

SEC("kprobe/" SYS_PREFIX "sys_setns")
int BPF_KPROBE(kprobe_sys_setns)
{
	return on_sys_enter(syscall_flags(SC_SETNS));
}

SEC("kretprobe/" SYS_PREFIX "sys_setns")
int BPF_KRETPROBE(kretprobe_sys_setns, long ret)
{
	return on_sys_exit(ret, EV_JOIN, SC_SETNS, ctx);
}

// unshare, clone and clone3 failures: their creates are seen where the
// namespaces are made (create.h), a failure only where the call returns.
// A hook on the syscall function costs only its own calls. clone and
// clone3 are hooked in kernel_clone(), which both call (as do fork, vfork
// and kernel threads, which ask for no namespace): some kernels' BTF has
// two __x64_sys_clone3, which an fexit cannot tell apart.
SEC("fexit/" SYS_PREFIX "sys_unshare")
int BPF_PROG(fexit_sys_unshare, struct pt_regs *regs, long ret)
{
	return ret < 0 ? on_sys_fail(ret, SC_UNSHARE, ctx) : 0;
}

SEC("fexit/kernel_clone")
int BPF_PROG(fexit_kernel_clone, struct kernel_clone_args *args, pid_t ret)
{
	return ret < 0 ? on_sys_fail(ret, cur_syscall(), ctx) : 0;
}

SEC("kretprobe/" SYS_PREFIX "sys_unshare")
int BPF_KRETPROBE(kretprobe_sys_unshare, long ret)
{
	return ret < 0 ? on_sys_fail(ret, SC_UNSHARE, ctx) : 0;
}

SEC("kretprobe/kernel_clone")
int BPF_KRETPROBE(kretprobe_kernel_clone, int ret)
{
	return ret < 0 ? on_sys_fail(ret, cur_syscall(), ctx) : 0;
}

// The tracepoint backend has one exit program for these syscalls,
// attached to each one's tracepoint (tracer.go, moreTracepoints): every
// program costs its verification at start-up, and it is among the
// largest. It tells them apart by the syscall
// number the tracepoint carries, which all share with raw_syscalls'
// sys_exit: an int at the offset of its id. clone and clone3 have only an
// exit: only their failures are seen there (task_newtask sees the rest).
// The entries read the flags from the tracepoint's copy of the arguments
// (bpf_task_pt_regs would cost a helper call at exit): one for each
// syscall, as the kernel refuses to attach a program that reads past its
// tracepoint's record (unshare's holds one argument).
SEC("tracepoint/syscalls/sys_enter_unshare")
int tp_sys_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_sys_enter(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_setns")
int tp_sys_enter_setns(struct trace_event_raw_sys_enter *ctx)
{
	return on_sys_enter(ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_unshare")
int tp_sys_exit(struct trace_event_raw_sys_exit *ctx)
{
	int nr = (int)ctx->id;
	long ret = ctx->ret;
	bool join = nr == NR_SETNS;

	if (nr == NR_CLONE || nr == NR_CLONE3)
		return ret < 0 ? on_sys_fail(ret, nr == NR_CLONE ? SC_CLONE : SC_CLONE3, ctx) : 0;
	return on_sys_exit(ret, join ? EV_JOIN : EV_CREATE, join ? SC_SETNS : SC_UNSHARE, ctx);
}

#endif
