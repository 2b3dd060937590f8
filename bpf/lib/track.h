/* SPDX-License-Identifier: GPL-2.0 */
// What nstrace remembers of a namespace between its events: its id, its
// owner, whether it is watched, a network namespace's struct net. The
// creates, joins, destroys and start-up iterators all update it the same
// way, so they share these instead of each touching live_ns itself.
#ifndef NSTRACE_TRACK_H
#define NSTRACE_TRACK_H

// The owner of a namespace as live_ns keeps it (see struct ns_info).
struct owner {
	__u64 cgid;
	__u32 pid;
	__u8 pass;
	__u8 known;
};

static __always_inline void owner_is(struct owner *o, struct actx *a)
{
	o->cgid = a->cgid;
	o->pid = a->pid;
	o->pass = a->pass;
	o->known = 1;
}

// track_ns remembers a namespace and returns its ns_id: kid (the kernel's)
// if there is one, else the id already known or a new one. keep says whether
// an entry already there stays (join, iterator) or is replaced (create: the
// namespace that had the inum before died unseen). A new entry gets the
// owner (cgroup cgid, process pid, whether it passed: what & TRACK_PASS).
// A failure to remember a namespace is flagged in the result
// (TRACK_FAILED), never its being known. A global function: the iterators call it in loops over ancestors.
#define TRACK_KEEP 0x100
#define TRACK_PASS 0x200
#define TRACK_JOIN 0x400 // with TRACK_KEEP: learnt from a join
// In track_ns's result: live_ns had no room for it.
#define TRACK_FAILED (1ULL << 63)
#define TRACK(type, keep, o) ((type) | ((keep) ? TRACK_KEEP : 0) | ((o)->pass ? TRACK_PASS : 0))

__noinline __u64 track_ns(__u32 what, __u32 inum, __u64 kid, __u64 cgid, __u32 pid)
{
	struct ns_info info = { .id = kid, .type = what & 0xff, .live = 1 };
	struct ns_info *old;

	if (!inum)
		return kid;
	if (what & TRACK_KEEP) {
		old = live_get(inum);
		if (old && old->type == info.type)
			return old->id;
	}
	if (!info.id)
		info.id = TAKE_ID(next_ns_id, SEQ_NS);
	info.owner_cgid = cgid;
	info.owner_pid = pid;
	info.owner_pass = !!(what & TRACK_PASS);
	info.joined = !!(what & TRACK_JOIN);
	// A namespace live_ns has no room for is reported, but its later
	// events are not exact (no ns_id continuity, owner or lifetime): the
	// caller marks them partial.
	if (live_put(inum, &info))
		return info.id | TRACK_FAILED;
	return info.id;
}

// owner_from fills o with the owner of live_ns entry info.
static __always_inline void owner_from(struct ns_info *info, struct owner *o)
{
	o->cgid = info->owner_cgid;
	o->pid = info->owner_pid;
	o->pass = info->owner_pass;
	o->known = info->owner_pid != 0;
}

// owner_of fills o with the owner live_ns has for namespace inum of type
// type, if it has one.
static __always_inline void owner_of(__u32 type, __u32 inum, struct owner *o)
{
	struct ns_info *info = live_get(inum);

	if (info && info->type == type)
		owner_from(info, o);
}

// track_net remembers a network namespace (struct net *) for the cleanup
// sweeps of the tracepoint backend; keep as for track_ns.
static __always_inline void track_net(__u64 net, __u32 inum, bool keep)
{
	if (!net_cleanup_hooked || !inum)
		return;
	if (keep && bpf_map_lookup_elem(&live_nets, &net))
		return;
	// Without it cleanup_net cannot name the namespace: its destroy is lost.
	if (bpf_map_update_elem(&live_nets, &net, &inum, BPF_ANY)) {
		count_full(TABLE_NETS);
		count_lost();
	}
}

// Entries in watched. Userspace polls only while there are some: the first
// one wakes it with a REC_WATCH record (header only, so it carries no lost
// count that userspace would have to report). If the ring buffer has no
// room for it, reader_state[1] says so instead: no event was lost.
__s64 watched_count = 0;

static __always_inline void watch_added(void)
{
	__u32 one = 1;
	__u64 *missed;

#ifndef NSTRACE_COMPAT
	if (__sync_fetch_and_add(&watched_count, 1) != 0)
		return;
#else
	// No fetch (compat.h): every new watch wakes the reader, which
	// only ever needs one.
	__sync_fetch_and_add(&watched_count, 1);
#endif
	if (send_bare(REC_WATCH))
		return;
	missed = bpf_map_lookup_elem(&reader_state, &one);
	if (missed)
		test_and_set(missed);
}

// unwatch ends the watch of inum and says whether there was one.
static __always_inline bool unwatch(__u32 inum)
{
	if (bpf_map_delete_elem(&watched, &inum))
		return false;
	__sync_fetch_and_add(&watched_count, -1);
	return true;
}

// watch_ns puts a namespace of type slot type that survived its nsproxy
// (or was found pinned at start) under watch, where no destructor hook
// reports it.
// Global functions (checked once by the verifier) taking plain numbers.
__noinline int watch_ns(__u64 nsp, __u32 type)
{
	struct ns_common *ns = (void *)nsp;
	struct watch w = { .ns = nsp, .type = type };
	struct ns_info *info;
	__u32 inum;

	if (!watch_survivors || (type == NS_NET && net_cleanup_hooked) || type == NS_USER || (type == NS_PID && pid_ns_free_hooked))
		return 0;
	inum = ns_inum(ns, VIA_PROBE);
	barrier_var(type); // keep the mask: the verifier checks the register it indexes with
	if (!inum || inum == init_ns_inum[type & (NS_TYPES - 1)])
		return 0;
	w.id = ns_kernel_id(ns, VIA_PROBE);
	// Who it is, for the poll: by the time it reports the destroy, a
	// create on another CPU may have given the inum's entry to another.
	info = live_get(inum);
	if (info && info->type == type) {
		w.nid = info->id;
		w.owner_pass = info->owner_pass;
	}
	if (bpf_map_update_elem(&watched, &inum, &w, BPF_NOEXIST) == 0) {
		watch_added();
	} else if (bpf_map_update_elem(&watched, &inum, &w, BPF_EXIST)) {
		// Not watched, its destroy will not be seen (or seen as reused).
		count_full(TABLE_WATCHED);
		count_lost();
		return 0;
	}
	// So that a destroy knows whether there is a watch to end.
	if (info && info->type == type)
		info->watched = 1;
	return 0;
}

// watch_slot watches namespace slot of the exiting task's nsproxy.
__noinline int watch_slot(__u32 slot)
{
	// Probe reads: a global function takes numbers, not typed pointers.
	struct nsproxy *p = BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), nsproxy);

	return watch_ns((__u64)nsproxy_slot(p, slot, VIA_PROBE), slot == NS_TIME_ACTIVE ? NS_TIME : slot);
}

#endif
