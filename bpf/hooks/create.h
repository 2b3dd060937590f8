/* SPDX-License-Identifier: GPL-2.0 */
// Creation on the clone path: create_new_namespaces() and
// create_user_ns() in the fentry and kprobe backends, task_newtask in
// the tracepoint backend. unshare's creates reach create_new_namespaces()
// too; in the tracepoint backend syscalls.h reports them.
#ifndef NSTRACE_HOOKS_CREATE_H
#define NSTRACE_HOOKS_CREATE_H

// fentry/kprobe: create_new_namespaces() built a new nsproxy for tsk (the
// child on clone, current on unshare) that still points at the old one.
static __always_inline int on_new_nsproxy(struct task_struct *tsk, struct nsproxy *new,
					  __u64 flags, void *ctx)
{
	struct actx a = {};
	struct snap *o, *n;
	__u8 sc;

	if (IS_ERR_OR_NULL(new))
		return 0;
	o = snap_tmp(0);
	n = snap_tmp(1);
	if (!o || !n)
		return 0;
	snap_nsproxy(BPF_CORE_READ(tsk, nsproxy), o, VIA_PROBE);
	snap_nsproxy(new, n, VIA_PROBE);
	sc = cur_syscall();
	if (sc == SC_UNSHARE || sc == SC_CLONE3 || sc == SC_CLONE)
		flags = syscall_flags(sc);
	actor_of(current_task(), &a, CG_LEARN, VIA_BTF);
	a.sc = sc;
	a.flags = flags;
	a.stack = stack_of(ctx);
	emit_diff(o, n, EV_CREATE, false, &a, new, NULL, VIA_PROBE);
	flush(&a);
	return 0;
}

// fentry/kprobe: create_user_ns() succeeded; cred->user_ns is the new one.
static __always_inline int on_new_user_ns(struct cred *cred, void *ctx)
{
	struct user_namespace *ns = BPF_CORE_READ(cred, user_ns);
	struct user_namespace *parent;
	struct usage u = {};
	struct actx a = {};

	if (!ns)
		return 0;
	parent = BPF_CORE_READ(ns, parent);
	actor_of(current_task(), &a, CG_LEARN, VIA_PROBE);
	a.sc = cur_syscall();
	a.flags = syscall_flags(a.sc);
	a.stack = stack_of(ctx);
	usage_of((__u64)ns_ucounts(NULL, ns, NS_USER, VIA_PROBE), NS_USER, 0, &u);
	emit_ns(NS_WHAT(EV_CREATE, NS_USER), NS_INUMS(ns_inum(&ns->ns, VIA_PROBE), ns_inum(&parent->ns, VIA_PROBE)),
		ns_kernel_id(&ns->ns, VIA_PROBE), &u, &a);
	flush(&a);
	return 0;
}

SEC("fexit/create_new_namespaces")
int BPF_PROG(fexit_create_new_namespaces, u64 flags, struct task_struct *tsk,
	     struct user_namespace *user_ns, struct fs_struct *new_fs, struct nsproxy *ret)
{
	return on_new_nsproxy(tsk, ret, flags, ctx);
}

SEC("fexit/create_user_ns")
int BPF_PROG(fexit_create_user_ns, struct cred *new, int ret)
{
	return ret ? 0 : on_new_user_ns(new, ctx);
}

// A kretprobe sees only the return value: its kprobe hands the arguments
// over through kprobe_args.
static __always_inline void stash_args(__u64 arg0, __u64 arg1)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct kargs a = { .arg0 = arg0, .arg1 = arg1 };

	bpf_map_update_elem(&kprobe_args, &tid, &a, BPF_ANY);
}

// take_args fetches what the kprobe stashed; a missed kprobe whose call
// succeeded (succeeded) loses its events, counted.
static __always_inline bool take_args(struct kargs *out, bool succeeded)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct kargs *a = bpf_map_lookup_elem(&kprobe_args, &tid);

	if (!a) {
		if (succeeded)
			count_lost();
		return false;
	}
	*out = *a;
	bpf_map_delete_elem(&kprobe_args, &tid);
	return true;
}

SEC("kprobe/create_new_namespaces")
int BPF_KPROBE(kprobe_create_new_namespaces, u64 flags, struct task_struct *tsk)
{
	stash_args(flags, (__u64)tsk);
	return 0;
}

SEC("kretprobe/create_new_namespaces")
int BPF_KRETPROBE(kretprobe_create_new_namespaces, struct nsproxy *ret)
{
	struct kargs a;

	if (!take_args(&a, !IS_ERR_OR_NULL(ret)))
		return 0;
	return on_new_nsproxy((struct task_struct *)a.arg1, ret, a.arg0, ctx);
}

SEC("kprobe/create_user_ns")
int BPF_KPROBE(kprobe_create_user_ns, struct cred *new)
{
	stash_args((__u64)new, 0);
	return 0;
}

SEC("kretprobe/create_user_ns")
int BPF_KRETPROBE(kretprobe_create_user_ns, int ret)
{
	struct kargs a;

	if (!take_args(&a, ret == 0) || ret)
		return 0;
	return on_new_user_ns((struct cred *)a.arg0, ctx);
}

// tracepoint: task_newtask fires in the parent once the child has its
// namespaces; a fork without namespace flags costs one test.
SEC("tp_btf/task_newtask")
int BPF_PROG(tp_task_newtask, struct task_struct *task, u64 clone_flags)
{
	struct actx a = {};
	struct snap *o, *n;

	if (!(clone_flags & NS_CLONE_FLAGS))
		return 0;
	o = snap_tmp(0);
	n = snap_tmp(1);
	if (!o || !n)
		return 0;
	snap_task(current_task(), o);
	snap_task(task, n);
	actor_of(current_task(), &a, CG_LEARN, VIA_BTF);
	a.sc = cur_syscall();
	a.flags = clone_flags;
	a.stack = stack_of(ctx);
	task = task_ro(task);
	emit_diff(o, n, EV_CREATE, true, &a, RD(VIA_BTF, task, nsproxy), RD2(VIA_BTF, task, real_cred, user_ns), VIA_BTF);
	flush(&a);
	return 0;
}

#endif
