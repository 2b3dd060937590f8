/* SPDX-License-Identifier: GPL-2.0 */
// Start-up: the namespaces that already exist, from the task and
// task_file iterators. Apart from the other hooks because these run once,
// when userspace reads them, and only remember: they report nothing.
#ifndef NSTRACE_HOOKS_SNAPSHOT_H
#define NSTRACE_HOOKS_SNAPSHOT_H

#define PF_KTHREAD 0x00200000
#define NSFS_MAGIC 0x6e736673

// track_users remembers a user namespace and its ancestors (a child keeps
// its parent alive: nothing else may hold it).
// o is the owner that namespaces first found here get.
static __always_inline void track_users(struct user_namespace *u, struct owner *o)
{
	for (int i = 0; i < MAX_NS_LEVEL && u; i++) {
		track_ns(TRACK(NS_USER, true, o), ns_inum(&u->ns, VIA_PROBE), ns_kernel_id(&u->ns, VIA_PROBE), o->cgid, o->pid);
		u = BPF_CORE_READ(u, parent);
	}
}

// track_pids remembers a pid namespace and its ancestors.
static __always_inline void track_pids(struct pid_namespace *p, struct owner *o)
{
	for (int i = 0; i < MAX_NS_LEVEL && p; i++) {
		track_ns(TRACK(NS_PID, true, o), ns_inum(&p->ns, VIA_PROBE), ns_kernel_id(&p->ns, VIA_PROBE), o->cgid, o->pid);
		p = BPF_CORE_READ(p, parent);
	}
}

// Run once at start, after every hook is attached: the namespaces that
// already exist are remembered (with their ns_id) like the ones created
// later, so that their teardown is reported: every task's own and their
// ancestors, and every one held open through an nsfs file (userspace opens
// every nsfs bind mount first, so those are seen as its files) with its
// owner and ancestors.
SEC("iter/task")
int common_iter_task(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct owner o = {};
	struct actx a = {};
	struct snap s = {};
	struct pid *pid;
	struct upid up = {};
	__u32 level;

	if (!task)
		return 0;
	actor_of(task, &a, cgroups_walked ? CG_LEARN_KNOWN : CG_EMIT, VIA_PROBE);
	owner_is(&o, &a);
	snap_task(task, &s);
	if ((task->flags & PF_KTHREAD) && !init_ns_inum[NS_MNT]) {
#pragma unroll
		for (int i = 0; i < NS_TYPES; i++)
			init_ns_inum[i] = s.inum[i];
	}
	track_net(s.net, s.inum[NS_NET], true);
#pragma unroll
	for (int i = 0; i < NS_SLOTS; i++)
		track_ns(TRACK(i == NS_TIME_ACTIVE ? NS_TIME : i, true, &o), s.inum[i], s.id[i], o.cgid, o.pid);
	track_users(BPF_CORE_READ(task, real_cred, user_ns), &o);
	// The pid namespace the task is in, which pid_for_children may not be,
	// and its ancestors.
	pid = BPF_CORE_READ(task, thread_pid);
	level = BPF_CORE_READ(pid, level);
	bpf_probe_read_kernel(&up, sizeof(up), (void *)&pid->numbers[0] + (level & 31) * sizeof(up));
	track_pids(up.ns, &o);
	return 0;
}

SEC("iter/task_file")
int common_iter_task_file(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct owner o = {};
	struct actx a = {};
	struct inode *inode;
	struct ns_common *ns;
	int type;

	if (!file || !task)
		return 0;
	inode = BPF_CORE_READ(file, f_inode);
	if (BPF_CORE_READ(inode, i_sb, s_magic) != NSFS_MAGIC)
		return 0;
	ns = BPF_CORE_READ(inode, i_private);
	type = ns_slot_of_clone_flag(ns_clone_type(ns));
	if (type < 0)
		return 0;
	if (type == NS_NET)
		track_net((__u64)container_of(ns, struct net, ns), ns_inum(ns, VIA_PROBE), true);
	actor_of(task, &a, cgroups_walked ? CG_LEARN_KNOWN : CG_EMIT, VIA_PROBE);
	owner_is(&o, &a);
	if (type == NS_PID)
		track_pids(container_of(ns, struct pid_namespace, ns), &o);
	else if (type != NS_USER)
		track_ns(TRACK(type, true, &o), ns_inum(ns, VIA_PROBE), ns_kernel_id(ns, VIA_PROBE), o.cgid, o.pid);
	track_users(ns_owner(ns, type), &o);
	watch_ns((__u64)ns, type);
	return 0;
}

#endif
