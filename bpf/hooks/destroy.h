/* SPDX-License-Identifier: GPL-2.0 */
// Namespaces freed by their own destructors, whatever held them last:
// proc_free_inum() in fentry/kprobe, the work items that free user, pid
// and net namespaces, and the pid namespace RCU callback before 6.14.
#ifndef NSTRACE_HOOKS_DESTROY_H
#define NSTRACE_HOOKS_DESTROY_H

// User namespaces (always) and pid namespaces (6.14+) are freed from a work
// item; the work function frees the namespace, then each ancestor whose
// last reference was the child's.
static __always_inline void user_ns_freed(struct work_struct *work, __u32 stack)
{
	struct user_namespace *ns;

	ns = container_of(work, struct user_namespace, work);
	emit_destroy_self(NS_USER, ns_inum(&ns->ns, VIA_PROBE), HOW_FREED, ns_kernel_id(&ns->ns, VIA_PROBE), stack);
	for (int i = 0; i < MAX_NS_LEVEL; i++) {
		ns = BPF_CORE_READ(ns, parent);
		if (!ns || ns_refs(&ns->ns, NS_USER, VIA_PROBE) != 1)
			break;
		emit_destroy_self(NS_USER, ns_inum(&ns->ns, VIA_PROBE), HOW_LAST_REF, ns_kernel_id(&ns->ns, VIA_PROBE), stack);
	}
}

static __always_inline void pid_ns_freed(struct work_struct *work, __u32 stack)
{
	struct pid_namespace *ns;

	if (!bpf_core_field_exists(struct pid_namespace___work, work))
		return;
	ns = (void *)work - bpf_core_field_offset(struct pid_namespace___work, work);
	emit_destroy_self(NS_PID, ns_inum(&ns->ns, VIA_PROBE), HOW_FREED, ns_kernel_id(&ns->ns, VIA_PROBE), stack);
	for (int i = 0; i < MAX_NS_LEVEL; i++) {
		ns = BPF_CORE_READ(ns, parent);
		if (!ns || ns_refs(&ns->ns, NS_PID, VIA_PROBE) != 1)
			break;
		emit_destroy_self(NS_PID, ns_inum(&ns->ns, VIA_PROBE), HOW_LAST_REF, ns_kernel_id(&ns->ns, VIA_PROBE), stack);
	}
}

// Every namespace type's destructor gives its inode number back here,
// whatever held the namespace last: an nsproxy, a bind mount, an open file,
// a child namespace. /proc entries use it too: live_ns tells them apart.
static __always_inline int on_free_inum(__u32 inum, __u32 stack)
{
	struct ns_info *info = live_get(inum);

	if (info)
		emit_destroy_self(info->type, inum, HOW_FREED, 0, stack);
	return 0;
}

SEC("fentry/proc_free_inum")
int BPF_PROG(fentry_proc_free_inum, unsigned int inum)
{
	return on_free_inum(inum, stack_of(ctx));
}

SEC("kprobe/proc_free_inum")
int BPF_KPROBE(kprobe_proc_free_inum, unsigned int inum)
{
	return on_free_inum(inum, stack_of(ctx));
}

// cleanup_net() tears down, in one batch, every network namespace whose
// count had dropped to zero when it took the list. A tracked one at zero
// when the work starts is in the batch; one that reached zero between that
// and the taking of the list is caught when the work ends (its memory is
// freed then, but slab memory stays readable and keeps the zero unless
// reused at once).
#ifndef NSTRACE_COMPAT
static long sweep_net(struct bpf_map *map, __u64 *key, __u32 *inum, __u32 *stack)
{
	struct net *net = (struct net *)*key;

	if (ns_refs(&net->ns, NS_NET, VIA_PROBE) == 0) {
		emit_destroy_self(NS_NET, *inum, HOW_FREED, 0, *stack);
		bpf_map_delete_elem(map, key);
	}
	return 0;
}
#endif

// sweep_nets reports the tracked network namespaces cleanup_net freed.
// Before 5.13 (compat.h) nothing can walk live_nets: userspace leaves
// cleanup_net unhooked, and the network namespaces are watched instead.
static __always_inline void sweep_nets(__u32 stack)
{
#ifndef NSTRACE_COMPAT
	bpf_for_each_map_elem(&live_nets, sweep_net, &stack, 0);
#endif
}

// Before 6.14 a pid namespace is freed from this RCU callback, one call per
// namespace (ancestors freed with it get their own). With proc_free_inum
// hooked it is a backstop: proc_free_inum runs for pid namespaces from the
// RCU callback that frees their last struct pid, in softirq, where a kprobe
// program can be skipped (one of ours was interrupted on that CPU); the
// destroy is then reported here, if live_ns still has it.
static __always_inline int pid_ns_rcu_freed(struct callback_head *rcu, __u32 stack)
{
	struct pid_namespace *ns = container_of(rcu, struct pid_namespace, rcu);
	__u32 inum = ns_inum(&ns->ns, VIA_PROBE);

	// Where proc_free_inum is hooked it reported this one already, in
	// destroy_pid_namespace() before the grace period: by now the inum
	// may be a new namespace's.
	if (destroy_at_free_inum)
		return 0;
	emit_destroy_self(NS_PID, inum, HOW_FREED, 0, stack);
	return 0;
}

SEC("fentry/delayed_free_pidns")
int BPF_PROG(fentry_delayed_free_pidns, struct callback_head *rcu)
{
	return pid_ns_rcu_freed(rcu, stack_of(ctx));
}

SEC("kprobe/delayed_free_pidns")
int BPF_KPROBE(kprobe_delayed_free_pidns, struct callback_head *rcu)
{
	return pid_ns_rcu_freed(rcu, stack_of(ctx));
}

// The work functions' addresses, from the kernel's own symbol lookup
// (5.16+), run once by userspace after the load (tracer.go,
// workAddresses). Reading /proc/kallsyms for three names formats every
// symbol the kernel has (120k lines: about 50 ms of CPU on the 2-CPU build
// machines, taken from the verifier during the load).
static const char free_user_ns_name[] = "free_user_ns";
static const char destroy_pidns_name[] = "destroy_pid_namespace_work";
static const char cleanup_net_name[] = "cleanup_net";

SEC("syscall")
int common_work_fns(void *ctx)
{
	bpf_kallsyms_lookup_name(free_user_ns_name, sizeof(free_user_ns_name), 0, &free_user_ns_fn);
	bpf_kallsyms_lookup_name(destroy_pidns_name, sizeof(destroy_pidns_name), 0, &destroy_pidns_fn);
	bpf_kallsyms_lookup_name(cleanup_net_name, sizeof(cleanup_net_name), 0, &cleanup_net_fn);
	return 0;
}

SEC("tp_btf/workqueue_execute_start")
int BPF_PROG(common_workqueue_execute_start, struct work_struct *work)
{
	// Runs for every work item: one load and three compares.
	__u64 fn = (__u64)work->func;
	__u32 stack;

	if (fn != free_user_ns_fn && fn != destroy_pidns_fn && fn != cleanup_net_fn)
		return 0;
	stack = stack_of(ctx);
	if (fn == free_user_ns_fn)
		user_ns_freed(work, stack);
	else if (fn == destroy_pidns_fn)
		pid_ns_freed(work, stack);
	else
		sweep_nets(stack);
	return 0;
}

SEC("tp_btf/workqueue_execute_end")
int BPF_PROG(common_workqueue_execute_end, struct work_struct *work)
{
	// Runs for every work item: one load and one compare. The work item of
	// cleanup_net is static, so it is still there to read.
	__u32 stack;

	if ((__u64)work->func != cleanup_net_fn)
		return 0;
	stack = stack_of(ctx);
	sweep_nets(stack);
	return 0;
}

#endif
