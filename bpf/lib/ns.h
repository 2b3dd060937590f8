/* SPDX-License-Identifier: GPL-2.0 */
// Reading namespaces out of kernel structures, whatever the kernel
// version: the CO-RE flavours of the types that changed, and one reader
// per field. Kept apart so that a kernel's renaming is dealt with once,
// here, and not in every hook that looks at a namespace.
#ifndef NSTRACE_NS_H
#define NSTRACE_NS_H

// ns_common's refcount was renamed in 6.18, which also moved the type
// (a CLONE_NEW* flag) from the proc_ns_operations into ns_common.
struct ns_common___new {
	refcount_t __ns_ref;
	u32 ns_type;
	u64 ns_id;
	struct list_head ns_list_node;
} __attribute__((preserve_access_index));
struct proc_ns_operations___old {
	int type;
} __attribute__((preserve_access_index));
struct ns_common___old {
	refcount_t count;
} __attribute__((preserve_access_index));

// Since 6.14 a pid namespace is freed from a work item in it (an RCU
// callback before).
struct pid_namespace___work {
	struct work_struct work;
} __attribute__((preserve_access_index));

// Two ways to read kernel memory. Through a pointer whose type the verifier
// knows from BTF (the current task, fentry and tp_btf arguments, an
// iterator's task, pointers loaded through those) a read is a plain load
// that yields 0 if it faults; through a raw address (kprobe arguments,
// pointers kept in maps or made by container_of) it takes a probe-read
// helper call, an order of magnitude slower. The readers below take `btf`,
// always a literal: each inlined copy keeps one of the two.
#ifdef NSTRACE_COMPAT
#define VIA_BTF false // no BTF-typed current task before 5.11 (compat.h)
#else
#define VIA_BTF true
#endif
#define VIA_PROBE false
#define RD(btf, p, f) ((btf) ? (p)->f : BPF_CORE_READ(p, f))
#define RD2(btf, p, f, g) ((btf) ? (p)->f->g : BPF_CORE_READ(p, f, g))

#ifndef NSTRACE_COMPAT
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;
#endif

// task_ro is t for plain loads, as a pointer the verifier does not trust.
// Since 6.2, each load of a pointer field through a trusted or RCU pointer
// (the current task, a tp_btf argument) makes the verifier look for
// "<struct>__safe_trusted" and three more such names, each a linear search
// of vmlinux's BTF: about 1 ms per load and path on the 6.18 build
// machines, most of the start-up. Through an untrusted pointer the loads
// are the same fault-guarded loads and none of that is looked up. Helpers
// that take a task (task storage, pt_regs) still need t itself. 6.1 has no
// bpf_rdonly_cast, and does no such lookups.
static __always_inline struct task_struct *task_ro(struct task_struct *t)
{
#ifndef NSTRACE_COMPAT
	if (have_rdonly_cast)
		return bpf_rdonly_cast(t, bpf_core_type_id_kernel(struct task_struct));
#endif
	return t;
}

// Reads here are deliberately branch-free: a NULL namespace pointer makes
// the read fail, which yields 0. Every branch multiplies the paths the
// verifier walks, and older verifiers (6.1) give up on the unrolled loops.
static __always_inline __u32 ns_inum(struct ns_common *ns, bool btf)
{
	return RD(btf, ns, inum);
}

// The kernel's own 64-bit namespace id (6.18+), 0 where it has none.
static __always_inline __u64 ns_kernel_id(struct ns_common *ns, bool btf)
{
	if (bpf_core_field_exists(struct ns_common___new, ns_id))
		return RD(btf, (struct ns_common___new *)ns, ns_id);
	return 0;
}

#ifdef NSTRACE_COMPAT
// Before 5.11 each namespace type counted its references in its own struct
// (ns_common had no count): the count of ns, of slot type (NS_*).
struct mnt_namespace___own { atomic_t count; struct ns_common ns; } __attribute__((preserve_access_index));
struct uts_namespace___own { struct kref kref; struct ns_common ns; } __attribute__((preserve_access_index));
struct ipc_namespace___own { refcount_t count; struct ns_common ns; } __attribute__((preserve_access_index));
struct pid_namespace___own { struct kref kref; struct ns_common ns; } __attribute__((preserve_access_index));
struct net___own { refcount_t count; struct ns_common ns; } __attribute__((preserve_access_index));
struct user_namespace___own { atomic_t count; struct ns_common ns; } __attribute__((preserve_access_index));
struct cgroup_namespace___own { refcount_t count; struct ns_common ns; } __attribute__((preserve_access_index));
struct time_namespace___own { struct kref kref; struct ns_common ns; } __attribute__((preserve_access_index));

#define OWN_REFS(T, ns, count)                                                      \
	({                                                                          \
		struct T *_o = (void *)(ns) - bpf_core_field_offset(struct T, ns); \
		(__u32)BPF_CORE_READ(_o, count);                                    \
	})

static __always_inline __u32 ns_own_refs(struct ns_common *ns, __u32 slot)
{
	switch (slot) {
	case NS_MNT:
		return OWN_REFS(mnt_namespace___own, ns, count.counter);
	case NS_UTS:
		return OWN_REFS(uts_namespace___own, ns, kref.refcount.refs.counter);
	case NS_IPC:
		return OWN_REFS(ipc_namespace___own, ns, count.refs.counter);
	case NS_PID:
		return OWN_REFS(pid_namespace___own, ns, kref.refcount.refs.counter);
	case NS_NET:
		return OWN_REFS(net___own, ns, count.refs.counter);
	case NS_USER:
		return OWN_REFS(user_namespace___own, ns, count.counter);
	case NS_CGROUP:
		return OWN_REFS(cgroup_namespace___own, ns, count.refs.counter);
	case NS_TIME:
	case NS_TIME_ACTIVE:
		return OWN_REFS(time_namespace___own, ns, kref.refcount.refs.counter);
	}
	return 0;
}
#endif

// ns_refs is the reference count of namespace ns, of slot type slot.
static __always_inline __u32 ns_refs(struct ns_common *ns, __u32 slot, bool btf)
{
	if (bpf_core_field_exists(struct ns_common___new, __ns_ref))
		return RD(btf, (struct ns_common___new *)ns, __ns_ref.refs.counter);
#ifdef NSTRACE_COMPAT
	if (!bpf_core_field_exists(struct ns_common___old, count))
		return ns ? ns_own_refs(ns, slot) : 0;
#endif
	return RD(btf, (struct ns_common___old *)ns, count.refs.counter);
}

// nsproxy.count is atomic_t up to 6.5 and refcount_t after; both are one
// 32-bit counter at the same field, so read the raw word.
static __always_inline __u32 nsproxy_count(struct nsproxy *p, bool btf)
{
	__u32 v = 0;

	if (btf)
		return *(__u32 *)&p->count;
	bpf_core_read(&v, sizeof(v), &p->count);
	return v;
}

static __always_inline struct ns_common *nsproxy_slot(struct nsproxy *p, int slot, bool btf)
{
	switch (slot) {
	case NS_MNT:
		return &RD(btf, p, mnt_ns)->ns;
	case NS_UTS:
		return &RD(btf, p, uts_ns)->ns;
	case NS_IPC:
		return &RD(btf, p, ipc_ns)->ns;
	case NS_PID:
		return &RD(btf, p, pid_ns_for_children)->ns;
	case NS_NET:
		return &RD(btf, p, net_ns)->ns;
	case NS_CGROUP:
		return &RD(btf, p, cgroup_ns)->ns;
	case NS_TIME:
		return &RD(btf, p, time_ns_for_children)->ns;
	case NS_TIME_ACTIVE:
		return &RD(btf, p, time_ns)->ns;
	}
	return NULL;
}

static __always_inline __u32 ns_clone_type(struct ns_common *ns)
{
	struct proc_ns_operations___old *ops;

	if (bpf_core_field_exists(struct ns_common___new, ns_type))
		return BPF_CORE_READ((struct ns_common___new *)ns, ns_type);
	ops = (void *)BPF_CORE_READ(ns, ops);
	return BPF_CORE_READ(ops, type);
}

// The CLONE_NEW* flag of each namespace type: the one mapping between the
// two, which types_of and ns_slot_of_clone_flag both go through.
static __always_inline __u32 clone_flag_of(int slot)
{
	switch (slot) {
	case NS_MNT:
		return CLONE_NEWNS;
	case NS_UTS:
		return CLONE_NEWUTS;
	case NS_IPC:
		return CLONE_NEWIPC;
	case NS_PID:
		return CLONE_NEWPID;
	case NS_NET:
		return CLONE_NEWNET;
	case NS_USER:
		return CLONE_NEWUSER;
	case NS_CGROUP:
		return CLONE_NEWCGROUP;
	case NS_TIME:
		return CLONE_NEWTIME;
	}
	return 0;
}

static __always_inline int ns_slot_of_clone_flag(__u32 flag)
{
#pragma unroll
	for (int slot = 0; slot < NS_TYPES; slot++)
		if (flag == clone_flag_of(slot))
			return slot;
	return -1;
}

// ns_owner is the user namespace that owns ns (of type slot type).
static __always_inline struct user_namespace *ns_owner(struct ns_common *ns, int type)
{
	switch (type) {
	case NS_MNT:
		return BPF_CORE_READ(container_of(ns, struct mnt_namespace, ns), user_ns);
	case NS_UTS:
		return BPF_CORE_READ(container_of(ns, struct uts_namespace, ns), user_ns);
	case NS_IPC:
		return BPF_CORE_READ(container_of(ns, struct ipc_namespace, ns), user_ns);
	case NS_PID:
		return BPF_CORE_READ(container_of(ns, struct pid_namespace, ns), user_ns);
	case NS_NET:
		return BPF_CORE_READ(container_of(ns, struct net, ns), user_ns);
	case NS_CGROUP:
		return BPF_CORE_READ(container_of(ns, struct cgroup_namespace, ns), user_ns);
	case NS_TIME:
		return BPF_CORE_READ(container_of(ns, struct time_namespace, ns), user_ns);
	case NS_USER:
		return container_of(ns, struct user_namespace, ns);
	}
	return NULL;
}

#endif
