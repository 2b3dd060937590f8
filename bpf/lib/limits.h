/* SPDX-License-Identifier: GPL-2.0 */
// Per-user namespace limits: how many namespaces of a type a user holds
// in a user namespace (the kernel's ucounts) against that namespace's
// /proc/sys/user/max_<type>_namespaces, for a create's user_count and
// user_limit and for the reason of a failure. Apart from ns.h because it
// reads the kernel's accounting, whose layout changes on its own schedule.
#ifndef NSTRACE_LIMITS_H
#define NSTRACE_LIMITS_H

#define ENOSPC 28
#define EUSERS 87
// The deepest a new namespace may be (the initial ones are at 0).
#define MAX_USER_DEPTH 33
#define MAX_PID_DEPTH  32
// How far up the user namespaces a failure's full count is looked for:
// the caller's own and three ancestors (a rootless container on a host is
// two).
#define LIMIT_LEVELS 4

// The kernel's ucount slot of a namespace type. By name: the enum's
// numbering is the kernel's to change.
static __always_inline int ucount_index(int type)
{
	switch (type) {
	case NS_MNT:
		return bpf_core_enum_value(enum ucount_type, UCOUNT_MNT_NAMESPACES);
	case NS_UTS:
		return bpf_core_enum_value(enum ucount_type, UCOUNT_UTS_NAMESPACES);
	case NS_IPC:
		return bpf_core_enum_value(enum ucount_type, UCOUNT_IPC_NAMESPACES);
	case NS_PID:
		return bpf_core_enum_value(enum ucount_type, UCOUNT_PID_NAMESPACES);
	case NS_NET:
		return bpf_core_enum_value(enum ucount_type, UCOUNT_NET_NAMESPACES);
	case NS_USER:
		return bpf_core_enum_value(enum ucount_type, UCOUNT_USER_NAMESPACES);
	case NS_CGROUP:
		return bpf_core_enum_value(enum ucount_type, UCOUNT_CGROUP_NAMESPACES);
	case NS_TIME:
		return bpf_core_enum_value(enum ucount_type, UCOUNT_TIME_NAMESPACES);
	}
	return -1;
}

// Element idx of an array of counters whose element type differs between
// kernels (ucounts.ucount was atomic_t before 5.14, atomic_long_t since;
// user_namespace.ucount_max int, then long): the element size is the
// array's size over UCOUNT_COUNTS, both as this kernel has them.
static __always_inline __u64 read_counter(void *array, __u32 array_size, int idx)
{
	__u32 n = bpf_core_enum_value(enum ucount_type, UCOUNT_COUNTS);
	__u32 elem = n ? array_size / n : 0;
	__s64 v64 = 0;
	__s32 v32 = 0;

	if (idx < 0 || idx >= 16)
		return 0;
	if (elem == 8) {
		bpf_probe_read_kernel(&v64, 8, array + idx * 8);
		return v64 < 0 ? 0 : v64;
	}
	bpf_probe_read_kernel(&v32, 4, array + idx * 4);
	return v32 < 0 ? 0 : v32;
}

// What user_count and friends say: the count in uc (one user in one user
// namespace) of namespaces of type, and that user namespace's limit.
struct usage {
	__u32 count, limit, user_ns, uid;
};

// A global function, so that the verifier checks it once: inlined into the
// per-type loops of the emitters, its branches multiplied their paths past
// the verifier's limit. uc is a struct ucounts *; u->user_ns stays 0 if
// nothing could be read. It returns whether type is one of types and its
// count is at the limit: the callers' loops then branch only on a plain
// return value (a test of a bit of types, or of a count left on the stack,
// in each iteration would double the verifier's paths). Nested no deeper
// than emit_fail: 6.1 allows 512 bytes of stack for a whole call chain.
static __always_inline int usage_of_body(__u64 uc, __u32 type, __u32 types, struct usage *u)
{
	struct ucounts *c = (struct ucounts *)uc;
	int idx = ucount_index(type);
	struct user_namespace *ns;
	__u64 limit;

	if (!u)
		return 0;
	u->user_ns = 0;
	if (!c || idx < 0)
		return 0;
	ns = BPF_CORE_READ(c, ns);
	if (!ns)
		return 0;
	u->count = read_counter(&c->ucount, bpf_core_field_size(c->ucount), idx);
	limit = read_counter(&ns->ucount_max, bpf_core_field_size(ns->ucount_max), idx);
	u->limit = limit > 0xffffffffULL ? 0xffffffff : limit;
	u->uid = BPF_CORE_READ(c, uid.val);
	u->user_ns = BPF_CORE_READ(ns, ns.inum);
	return type < NS_TYPES && (types & (1 << type)) && u->count >= u->limit;
}

#ifndef NSTRACE_COMPAT
__noinline int usage_of(__u64 uc, __u32 type, __u32 types, struct usage *u)
{
	return usage_of_body(uc, type, types, u);
}
#else
// Global functions take numbers only before 5.12 (compat.h): u travels in
// a per-CPU slot, copied in and out around the call.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct usage);
} usage_frame SEC(".maps");

__noinline int usage_of_g(__u64 uc, __u32 type, __u32 types)
{
	__u32 zero = 0;

	return usage_of_body(uc, type, types, bpf_map_lookup_elem(&usage_frame, &zero));
}

static __always_inline int usage_of(__u64 uc, __u32 type, __u32 types, struct usage *u)
{
	__u32 zero = 0;
	struct usage *f = bpf_map_lookup_elem(&usage_frame, &zero);
	int r;

	if (!f || !u)
		return 0;
	*f = *u;
	r = usage_of_g(uc, type, types);
	*u = *f;
	return r;
}
#endif

// The ucounts a namespace in nsproxy slot (or user namespace u) is charged
// to: its creator's euid in its owning user namespace (for a user
// namespace, the parent).
static __always_inline struct ucounts *ns_ucounts(struct nsproxy *p, struct user_namespace *u,
						  int slot, bool btf)
{
	switch (slot) {
	case NS_MNT:
		return RD2(btf, p, mnt_ns, ucounts);
	case NS_UTS:
		return RD2(btf, p, uts_ns, ucounts);
	case NS_IPC:
		return RD2(btf, p, ipc_ns, ucounts);
	case NS_PID:
		return RD2(btf, p, pid_ns_for_children, ucounts);
	case NS_NET:
		return RD2(btf, p, net_ns, ucounts);
	case NS_USER:
		return RD(btf, u, ucounts);
	case NS_CGROUP:
		return RD2(btf, p, cgroup_ns, ucounts);
	case NS_TIME:
		return RD2(btf, p, time_ns_for_children, ucounts);
	}
	return NULL;
}

// usage_in reads, like usage_of, the usage of the namespace in nsproxy slot
// (or user namespace u) of type slot: through BTF (btf, a literal) with
// plain loads where it can, an order of magnitude cheaper than probe reads
// and without branches (a NULL pointer on the way reads as 0, which leaves
// u->user_ns 0: nothing read); on kernels whose limits are not 64-bit
// (before 5.14), and without BTF, through usage_of.
static __always_inline void usage_in(struct nsproxy *p, struct user_namespace *un, int slot, bool btf,
				     struct usage *u)
{
	struct ucounts *uc;
	int idx = ucount_index(slot);

	if (btf && bpf_core_field_size(struct user_namespace, ucount_max) == 8 * bpf_core_enum_value(enum ucount_type, UCOUNT_COUNTS) &&
	    idx >= 0 && idx < 16) {
		uc = ns_ucounts(p, un, slot, VIA_BTF);
		// 6.1's verifier does not follow a load into an array of
		// atomic_long_t (a typedef): a probe read there, which costs
		// as much as the rest of this (a tenth of sys_exit's run time).
		if (have_rdonly_cast) {
			long v = uc->ucount[idx].counter;

			u->count = v < 0 ? 0 : v;
		} else {
			u->count = read_counter(&uc->ucount, bpf_core_field_size(struct ucounts, ucount), idx);
		}
		u->limit = uc->ns->ucount_max[idx];
		u->user_ns = uc->ns->ns.inum;
		u->uid = uc->uid.val;
		return;
	}
	usage_of((__u64)ns_ucounts(p, un, slot, VIA_PROBE), slot, 0, u);
}

// The namespace types a clone or unshare asked for, as 1 << enum ns_slot;
// a setns's nstype is one flag, or 0 for whatever the fd is.
static __always_inline __u32 types_of(__u64 flags)
{
	__u32 t = 0;

#pragma unroll
	for (int slot = 0; slot < NS_TYPES; slot++)
		if (flags & clone_flag_of(slot))
			t |= 1 << slot;
	return t;
}

#ifdef NSTRACE_COMPAT
// Before 5.14 a cred has no ucounts: the caller's are where inc_ucount()
// finds them, in the kernel's hash table of them (kernel/ucount.c:
// ucounts_hashtable, 1 << 10 buckets, hash_ptr(ns + uid)). Its address
// comes from /proc/kallsyms (userspace, after the load); 0: unknown.
__u64 ucounts_table = 0;

static __always_inline __u64 find_ucounts(struct user_namespace *ns, __u32 uid)
{
	__u64 bucket = (((__u64)ns + uid) * 0x61C8864680B583EBULL) >> (64 - 10);
	struct hlist_node *n = NULL;

	if (!ucounts_table)
		return 0;
	bpf_probe_read_kernel(&n, sizeof(n), (void *)(ucounts_table + bucket * sizeof(struct hlist_head)));
	for (int i = 0; i < 8 && n; i++) {
		struct ucounts *c = container_of(n, struct ucounts, node);

		if (BPF_CORE_READ(c, ns) == ns && BPF_CORE_READ(c, uid.val) == uid)
			return (__u64)c;
		n = BPF_CORE_READ(n, next);
	}
	return 0;
}
#endif

// full_count finds, for a failure with ENOSPC, the count that was at its
// limit: inc_ucount() charges the caller (its euid in its user namespace)
// and then each ancestor user namespace (as the owner of the child one),
// and fails at the first full one. The caller's level is cred->ucounts
// (5.14+; it is for the real uid, which for a set-user-ID caller is not
// the one charged); above it, each user namespace's own ucounts is its
// owner's charge in the parent. A failed call changed no credentials, so
// they are read after it; its own increments were undone. Returns the
// type, its usage in u.
static __always_inline int full_count(struct task_struct *t, __u32 types, struct usage *u)
{
	struct user_namespace *ns = BPF_CORE_READ(t, cred, user_ns);
	__u64 uc = 0;

	if (bpf_core_field_exists(t->cred->ucounts))
		uc = (__u64)BPF_CORE_READ(t, cred, ucounts);
#ifdef NSTRACE_COMPAT
	else
		uc = find_ucounts(ns, BPF_CORE_READ(t, cred, euid.val));
#endif
	for (int level = 0; level < LIMIT_LEVELS; level++) {
		if (level > 0) {
			uc = (__u64)BPF_CORE_READ(ns, ucounts);
			ns = BPF_CORE_READ(ns, parent);
		}
		for (int type = 0; type < NS_TYPES; type++)
			if (usage_of(uc, type, types, u))
				return type;
	}
	return -1;
}

#endif
