/* SPDX-License-Identifier: GPL-2.0 */
// The tracepoint backend's poll of watched namespaces: the destroys no
// tracepoint shows. Apart from destroy.h because userspace runs it, on
// its own clock, where those run on a kernel event.
#ifndef NSTRACE_HOOKS_POLL_H
#define NSTRACE_HOOKS_POLL_H

// Tracepoint backend: userspace runs this (BPF_PROG_TEST_RUN) every few
// milliseconds. A watched namespace is gone once its count is 0, its inode
// number or id changed (its memory was reused), or (6.18+) the kernel took
// it out of its namespace tree (list_del_rcu poisons the prev pointer; the
// memory stays readable for an RCU grace period and keeps the poison until
// reused). The destroy's time is when the poll noticed: within one period.
#define LIST_POISON2 0xdead000000000122ULL

// A poll reports what it finds gone in the order the kernel freed it as far
// as it can tell: a pid namespace keeps its parent alive, so nested ones are
// reported deepest first (one pass per level), after every other type.
struct poll_ctx {
	__u32 pass; // POLL_*
	__u32 level;
	__u32 min_level;
	__u32 max_level;
};
enum { POLL_FIRST, POLL_LEVEL, POLL_REST };

static __always_inline bool watched_gone(struct ns_common *ns, __u32 type, __u32 inum, __u64 id)
{
	bool gone = ns_inum(ns, VIA_PROBE) != inum || ns_refs(ns, type, VIA_PROBE) == 0;

	if (bpf_core_field_exists(struct ns_common___new, ns_list_node)) {
		struct ns_common___new *n = (void *)ns;

		gone = gone || ns_kernel_id(ns, VIA_PROBE) != id ||
		       (__u64)BPF_CORE_READ(n, ns_list_node.prev) == LIST_POISON2;
	}
	return gone;
}

static long check_watched(struct bpf_map *map, __u32 *inum, struct watch *w, struct poll_ctx *pc)
{
	struct ns_common *ns = (void *)w->ns;
	struct watch c;
	__u32 level, how = HOW_POLLED;

	if (!watched_gone(ns, w->type, *inum, w->id))
		return 0;
	if (w->type == NS_PID) {
		level = BPF_CORE_READ(container_of(ns, struct pid_namespace, ns), level);
		if (pc->pass == POLL_FIRST) {
			pc->min_level = level < pc->min_level ? level : pc->min_level;
			pc->max_level = level > pc->max_level ? level : pc->max_level;
			return 0;
		}
		if (pc->pass == POLL_LEVEL && level != pc->level)
			return 0;
	} else if (pc->pass != POLL_FIRST) {
		return 0;
	}
	// Whoever deletes the entry reports the destroy (a release on another
	// CPU may be reporting it as last_ref right now, or a create reusing
	// the inum as reused). Copied first: a deleted element's memory goes
	// back to the map, for another CPU's next watch.
	c = *w;
	if (!unwatch(*inum))
		return 0;
	if (c.nid)
		how |= EXPECT_ID | (c.owner_pass ? OWNER_PASSED : 0);
	emit_destroy_self(c.type, *inum, how, c.nid ?: c.id, 0);
	return 0;
}

#ifndef NSTRACE_COMPAT
SEC("raw_tp")
int tp_poll_watched(void *ctx)
{
	struct poll_ctx pc = { .pass = POLL_FIRST, .min_level = ~0U };
	long n = bpf_for_each_map_elem(&watched, check_watched, &pc, 0);

	if (pc.min_level == ~0U)
		return n;
	pc.pass = POLL_LEVEL;
	for (int i = 0; i < MAX_NS_LEVEL; i++) {
		pc.level = pc.max_level - i;
		if (pc.level < pc.min_level || pc.level > pc.max_level)
			break;
		bpf_for_each_map_elem(&watched, check_watched, &pc, 0);
	}
	pc.pass = POLL_REST; // levels read from memory that changed meanwhile
	bpf_for_each_map_elem(&watched, check_watched, &pc, 0);
	return n;
}
#else
// Before 5.13 (compat.h) userspace walks the keys of watched and runs this
// once per namespace and pass, in the order above (tracer.pollOnce):
// ctx holds the inode number, the pass and, for POLL_LEVEL, the level. On
// POLL_FIRST it returns 1 + the level of a pid namespace found gone (to be
// reported in a later pass), else 0.
SEC("raw_tp")
int tp_poll_watched(__u64 *ctx)
{
	__u32 inum = ctx[0];
	struct poll_ctx pc = { .pass = ctx[1], .level = ctx[2], .min_level = ~0U };
	struct watch *w = bpf_map_lookup_elem(&watched, &inum);

	if (!w)
		return 0;
	check_watched((struct bpf_map *)&watched, &inum, w, &pc);
	return pc.min_level == ~0U ? 0 : pc.min_level + 1;
}
#endif

#endif
