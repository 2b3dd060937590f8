/* SPDX-License-Identifier: GPL-2.0 */
// Filters, applied before an event takes ring-buffer space. The event and
// type filters look at the event; the others (pid, comm, uid, cgroup,
// container) at the acting task, and through the namespace's owner also at
// the task that created it: a namespace created by a task that passed keeps
// passing, so its joins, releases and its destroy (often by a kworker) are
// printed too. Values within one filter OR, filters AND. Set by userspace
// before load, but for container ids learnt from a runtime while running.
#ifndef NSTRACE_FILTER_H
#define NSTRACE_FILTER_H

#define MAX_FILTER_VALUES 8
#define MAX_FILTER_CGROUPS 4
#define FILTER_PATH_LEN 256

volatile const __u32 filter_events = 0; // 1 << enum event_kind; 0: every kind
volatile const __u32 filter_types = 0;  // 1 << enum ns_slot; 0: every type
volatile const bool filter_actor = false; // some filter below is set
volatile const bool filter_by_pid = false;
volatile const bool filter_children = false;
volatile const __u32 n_filter_comms = 0;
volatile const __u64 filter_comms[MAX_FILTER_VALUES][2] = {};
volatile const __u32 n_filter_uids = 0;
volatile const __u32 filter_uids[MAX_FILTER_VALUES] = {};
volatile const __u32 n_filter_cgroups = 0;
volatile const __u32 filter_cgroup_len[MAX_FILTER_CGROUPS] = {};
volatile const char filter_cgroup_path[MAX_FILTER_CGROUPS][FILTER_PATH_LEN] = {};
volatile const bool filter_by_container = false;
volatile const __u32 n_filter_prefixes = 0;
volatile const __u32 filter_prefix_len[MAX_FILTER_VALUES] = {};
volatile const char filter_prefix[MAX_FILTER_VALUES][CONTAINER_ID_LEN] = {};

// --pid processes, and with --children what they fork from then on, by
// tgid; the value is the process's start time (its leader's start_time),
// 0 for those userspace named. The start time tells a followed process
// from a later one that got its pid: pids are reused at once (a pid is
// free when its task is reaped, its entry goes when the task is freed, an
// RCU grace period later). Entries leave when the process is freed, or
// when a later process with its pid is seen.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} filter_pids SEC(".maps");

// unfollow ends the following of process tgid, started at start, if its
// entry is that process's (or userspace's, 0), not a later one's.
static __always_inline void unfollow(__u32 tgid, __u64 start)
{
	__u64 *v = bpf_map_lookup_elem(&filter_pids, &tgid);

	if (v && (!*v || *v == start))
		bpf_map_delete_elem(&filter_pids, &tgid);
}

// Full ids of containers --container names, as the runtime tells them to
// userspace (a container created later is added when the runtime announces
// it, before it starts).
struct container_key {
	char id[CONTAINER_ID_LEN];
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct container_key);
	__type(value, __u8);
} container_ids SEC(".maps");

static __always_inline bool event_wanted(__u32 kind, int type)
{
	if (filter_events && !(filter_events & (1U << kind)))
		return false;
	if (type >= 0 && filter_types && !(filter_types & (1U << type)))
		return false;
	return true;
}

// Whether cgroup path (len bytes in buf) is one of the --cgroup paths or
// below one.
static __always_inline __u8 cgroup_filter_match(const char *buf, __u32 len)
{
	if (!n_filter_cgroups)
		return 0;
	for (int f = 0; f < MAX_FILTER_CGROUPS; f++) {
		__u32 l;

		if (f >= n_filter_cgroups)
			break;
		l = filter_cgroup_len[f];
		if (l > len || l >= FILTER_PATH_LEN)
			continue;
		if (starts_with(buf, filter_cgroup_path[f], l, FILTER_PATH_LEN) && (l == 1 || buf[l & (FILTER_PATH_LEN - 1)] == '/' || buf[l & (FILTER_PATH_LEN - 1)] == 0))
			return 1;
	}
	return 0;
}

// container_passes: cgroup cgid holds a --container container. A global
// function, like actor_passes: the verifier checks its loops once.
__noinline int container_passes(__u64 cgid)
{
	struct cg_info *cg = bpf_map_lookup_elem(&cgroups, &cgid);

	if (!cg || !cg->has_id)
		return false;
	if (bpf_map_lookup_elem(&container_ids, cg->id))
		return true;
	for (int f = 0; f < MAX_FILTER_VALUES; f++) {
		if (f >= n_filter_prefixes)
			break;
		if (starts_with(cg->id, filter_prefix[f], filter_prefix_len[f], CONTAINER_ID_LEN))
			return true;
	}
	return false;
}

// actor_check: a task of process tgid (in the low word of who; its real
// uid in the high one), started at start, with comm (as two words), in
// cgroup cgid, passes every pid, comm, uid, cgroup and container filter.
// BPF functions take five arguments.
__noinline int actor_check(__u64 who, __u64 start, __u64 comm0, __u64 comm1, __u64 cgid)
{
	__u32 tgid = (__u32)who, uid = who >> 32;
	struct cg_info *cg;
	bool any = false;
	__u64 *v;

	if (filter_by_pid) {
		v = bpf_map_lookup_elem(&filter_pids, &tgid);
		if (!v)
			return false;
		if (*v && *v != start) {
			// Another process's, freed unseen: its pid is this one's now.
			bpf_map_delete_elem(&filter_pids, &tgid);
			return false;
		}
	}
	if (n_filter_comms) {
		for (int f = 0; f < MAX_FILTER_VALUES; f++) {
			if (f >= n_filter_comms)
				break;
			if (comm0 == filter_comms[f][0] && comm1 == filter_comms[f][1]) {
				any = true;
				break;
			}
		}
		if (!any)
			return false;
	}
	if (n_filter_uids) {
		any = false;
		for (int f = 0; f < MAX_FILTER_VALUES; f++) {
			if (f >= n_filter_uids)
				break;
			if (uid == filter_uids[f]) {
				any = true;
				break;
			}
		}
		if (!any)
			return false;
	}
	if (n_filter_cgroups) {
		cg = bpf_map_lookup_elem(&cgroups, &cgid);
		if (!cg || !cg->cg_match)
			return false;
	}
	if (filter_by_container && !container_passes(cgid))
		return false;
	return true;
}

// actor_passes says whether a passes the filters; start is when its
// process started (its leader's start_time).
static __always_inline bool actor_passes(struct actx *a, __u64 start)
{
	__u64 comm[2];

	if (!filter_actor)
		return true;
	__builtin_memcpy(comm, a->comm, sizeof(comm));
	return actor_check((__u64)a->uid << 32 | a->pid, start, comm[0], comm[1], a->cgid);
}

// follow_child adds a process forked by a --pid process (--children), which
// started at start.
static __always_inline void follow_child(__u32 ptgid, __u32 ctgid, __u64 start)
{
	if (!filter_children || !bpf_map_lookup_elem(&filter_pids, &ptgid))
		return;
	// A full map drops the child's events unseen: counted as one lost,
	// and userspace says the table is full.
	if (bpf_map_update_elem(&filter_pids, &ctgid, &start, BPF_ANY)) {
		count_full(TABLE_PIDS);
		count_lost();
	}
}

#endif
