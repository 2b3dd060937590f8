/* SPDX-License-Identifier: GPL-2.0 */
// A process's namespaces at one instant (struct snap): reading them from
// an nsproxy or a task, and the per-CPU room to read them into. Only the
// hooks take snapshots; the emitters compare them.
#ifndef NSTRACE_SNAP_H
#define NSTRACE_SNAP_H

static __always_inline void snap_nsproxy(struct nsproxy *p, struct snap *s, bool btf)
{
	s->nsproxy = (__u64)p;
	if (!p)
		return;
	s->nsproxy_count = nsproxy_count(p, btf);
	s->net = (__u64)RD(btf, p, net_ns);
#pragma unroll
	for (int i = 0; i < NS_SLOTS; i++) {
		struct ns_common *ns;

		if (i == NS_USER)
			continue;
		ns = nsproxy_slot(p, i, btf);
		s->inum[i] = ns_inum(ns, btf);
		s->ref[i] = ns_refs(ns, btf);
		s->id[i] = ns_kernel_id(ns, btf);
	}
}

// snap_task reads a task the verifier knows the type of.
static __always_inline void snap_task(struct task_struct *t, struct snap *s)
{
	struct user_namespace *u;

	t = task_ro(t);
	snap_nsproxy(t->nsproxy, s, VIA_BTF);
	u = t->real_cred->user_ns;
	s->inum[NS_USER] = ns_inum(&u->ns, VIA_BTF);
	s->ref[NS_USER] = ns_refs(&u->ns, VIA_BTF);
	s->id[NS_USER] = ns_kernel_id(&u->ns, VIA_BTF);
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

#endif
