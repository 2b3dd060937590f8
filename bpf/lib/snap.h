/* SPDX-License-Identifier: GPL-2.0 */
// A process's namespaces at one instant (struct snap): reading them from
// an nsproxy or a task, and the per-CPU room to read them into. Only the
// hooks take snapshots; the emitters compare them.
#ifndef NSTRACE_SNAP_H
#define NSTRACE_SNAP_H

// Every slot: a snapshot that takes nothing from another.
#define ALL_SLOTS 0xffffffffU

// snap_nsproxy_of reads into s the namespaces of p in the slots of mask,
// and takes the others' from keep (with a literal ALL_SLOTS, none: keep
// may be NULL).
static __always_inline void snap_nsproxy_of(struct nsproxy *p, struct snap *s, bool btf, __u32 mask,
					    struct snap *keep)
{
	s->nsproxy = (__u64)p;
	if (!p) {
		__builtin_memset(s, 0, sizeof(*s));
		return;
	}
	// Copied whole, before: copies slot by slot beside the reads, the
	// compiler merges into loads the verifier refuses (two pointer types).
	if (mask != ALL_SLOTS) {
		__builtin_memcpy(s->inum, keep->inum, sizeof(s->inum));
		__builtin_memcpy(s->ref, keep->ref, sizeof(s->ref));
		__builtin_memcpy(s->id, keep->id, sizeof(s->id));
	}
	s->nsproxy_count = nsproxy_count(p, btf);
	s->net = (__u64)RD(btf, p, net_ns);
#pragma unroll
	for (int i = 0; i < NS_SLOTS; i++) {
		struct ns_common *ns;

		if (i == NS_USER || (mask != ALL_SLOTS && !(mask & (1U << i))))
			continue;
		ns = nsproxy_slot(p, i, btf);
		s->inum[i] = ns_inum(ns, btf);
		s->ref[i] = ns_refs(ns, i, btf);
		s->id[i] = ns_kernel_id(ns, btf);
	}
}

static __always_inline void snap_nsproxy(struct nsproxy *p, struct snap *s, bool btf)
{
	snap_nsproxy_of(p, s, btf, ALL_SLOTS, NULL);
}

// snap_task_of reads a task the verifier knows the type of: as
// snap_nsproxy_of, and its user namespace.
static __always_inline void snap_task_of(struct task_struct *t, struct snap *s, __u32 mask, struct snap *keep)
{
	struct user_namespace *u;

	t = task_ro(t);
	snap_nsproxy_of(RD(VIA_BTF, t, nsproxy), s, VIA_BTF, mask, keep);
	u = RD2(VIA_BTF, t, real_cred, user_ns);
	s->inum[NS_USER] = ns_inum(&u->ns, VIA_BTF);
	s->ref[NS_USER] = ns_refs(&u->ns, NS_USER, VIA_BTF);
	s->id[NS_USER] = ns_kernel_id(&u->ns, VIA_BTF);
}

static __always_inline void snap_task(struct task_struct *t, struct snap *s)
{
	snap_task_of(t, s, ALL_SLOTS, NULL);
}

// The nsproxy slots an unshare or setns with flags can change: those of
// the types it names (time: the active one too, which setns switches), or
// any, for a setns of nstype 0.
static __always_inline __u32 changed_slots(__u8 sc, __u64 flags)
{
	__u32 t = types_of(flags);

	if (sc == SC_SETNS && !t)
		return ALL_SLOTS;
	if (t & (1U << NS_TIME))
		t |= 1U << NS_TIME_ACTIVE;
	return t;
}

// Room for the snapshots of task-context hooks, too big for the BPF stack
// next to what the emitters need: they run in task context and do not nest.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct snap);
} snap_buf SEC(".maps");

static __always_inline struct snap *snap_tmp(__u32 i)
{
	struct snap *s = bpf_map_lookup_elem(&snap_buf, &i);

	if (s)
		__builtin_memset(s, 0, sizeof(*s));
	return s;
}

// snap_tmp_over is snap_tmp for a snapshot snap_task_of overwrites whole
// (but flags and in_flight): not cleared first.
static __always_inline struct snap *snap_tmp_over(__u32 i)
{
	return bpf_map_lookup_elem(&snap_buf, &i);
}

#endif
