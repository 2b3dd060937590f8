/* SPDX-License-Identifier: GPL-2.0 */
// The state nstrace keeps between hooks: namespaces alive, watched ones,
// syscalls and kprobes in flight, exits seen. One place for it because
// most of it is written by one hook family and read by another; a reader
// of a hook finds what it shares with the others here.
#ifndef NSTRACE_MAPS_H
#define NSTRACE_MAPS_H

// What a task's own hooks keep between its syscalls, in its local storage
// (a few pointer loads away from the task, where a hash keyed by tid would
// cost a locked update and a delete per call; freed with the task): the
// namespaces at unshare/setns entry, and what its actor took hash lookups
// to learn the last time (see actor_memo_of), which a task that unshares
// or joins in a loop would otherwise look up again at every call.
struct task_state {
	struct snap snap;
	__u64 cg_sent; // a cgroup id whose path userspace has (0: none)
	__u64 exe_id;  // the process's exe id, its path sent (0: none; cleared at exec)
};
#ifndef NSTRACE_COMPAT
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_state);
} task_states SEC(".maps");

// task_state_of is the current task cur's state, made if create and none.
static __always_inline struct task_state *task_state_of(struct task_struct *cur, bool create)
{
	return bpf_task_storage_get(&task_states, cur, 0, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

// task_state_done: the syscall that used the current task's state is over.
static __always_inline void task_state_done(void)
{
}
#else
// Before 5.11 (compat.h): keyed by thread id, and deleted at the exit of
// the syscall that made it (so its actor memo is never kept), or when the
// task is freed (common_sched_process_free), should it die in the call.
// That one runs in RCU callbacks, where a delete can fail (the bucket
// locked on this CPU by the program it interrupted): not the main way.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct task_state);
} task_states SEC(".maps");

static __always_inline struct task_state *task_state_of(struct task_struct *cur, bool create)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct task_state *ts = bpf_map_lookup_elem(&task_states, &tid);
	struct task_state fresh = {};

	if (ts || !create)
		return ts;
	bpf_map_update_elem(&task_states, &tid, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&task_states, &tid);
}

static __always_inline void task_state_done(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&task_states, &tid);
}
#endif

// kprobe -> kretprobe argument hand-off, keyed by tid. LRU so a missed
// kretprobe (maxactive exhausted) cannot leak entries.
struct kargs {
	__u64 arg0;
	__u64 arg1;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct kargs);
} kprobe_args SEC(".maps");

// Network namespaces die asynchronously, often long after the last process
// left (sockets closing at exit hold them): they are remembered from
// creation to cleanup_net(). Key: struct net *; value: inum.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} live_nets SEC(".maps");

// Every live namespace nstrace knows of, by inum: its type and its ns_id,
// so that a destroy carries the id its create had even where the kernel has
// none (before 6.18), and so that, in fentry/kprobe, proc_free_inum()
// (called by every namespace type's destructor, whatever held the namespace
// last) says which one died. Entries come from creates, joins and the
// start-up iterators, and leave at the destroy; a create replaces the entry
// of an inum whose destroy went unseen. The bound is on namespaces alive at
// once; overflow counts as lost.
//
// The kernel hands out namespace inode numbers (proc_alloc_inum) from one
// IDA above PROC_DYNAMIC_FIRST, lowest free first, shared with /proc's own
// entries: they are dense, a few thousand on a busy host. So live_ns is
// direct-mapped by inum - PROC_DYNAMIC_FIRST, and a create or a destroy is a
// store into its slot: a hash update and delete (a bucket lock and the
// element free list each) were a third of an unshare's BPF time. The rest
// (the initial namespaces' fixed inums below it, any beyond the array) go to
// live_ns_sparse.
// The owner is the task that created the namespace or, for one older than
// nstrace, the first process the start-up iterators found in it (the
// lowest pid); owner_pass says whether it passed the filters then.
struct ns_info {
	__u64 id;
	__u64 owner_cgid;
	__u32 type;
	__u32 owner_pid;
	__u8 owner_pass;
	__u8 watched; // also in watched (tracepoint backend)
	__u8 live;    // live_ns: the slot holds a namespace
	// Known from a join only: its create may yet come (the tracepoint
	// backend reports an unshare's at the syscall's exit, which another
	// task's setns into it can precede).
	__u8 joined;
	__u8 _pad[4];
};
#define PROC_DYNAMIC_FIRST 0xF0000000U
#define LIVE_DENSE 65536
// live_ns's size as loaded (smaller for tests of a full table).
volatile const __u32 live_dense = LIVE_DENSE;
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LIVE_DENSE);
	__type(key, __u32);
	__type(value, struct ns_info);
} live_ns SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct ns_info);
} live_ns_sparse SEC(".maps");

// live_get returns what live_ns holds for inum, or NULL.
static __always_inline struct ns_info *live_get(__u32 inum)
{
	__u32 slot = inum - PROC_DYNAMIC_FIRST;
	struct ns_info *info;

	if (slot >= live_dense)
		return bpf_map_lookup_elem(&live_ns_sparse, &inum);
	info = bpf_map_lookup_elem(&live_ns, &slot);
	return info && info->live ? info : NULL;
}

// live_put remembers info (whose live byte is set) under inum.
static __always_inline int live_put(__u32 inum, struct ns_info *info)
{
	__u32 slot = inum - PROC_DYNAMIC_FIRST;
	struct ns_info *at;

	if (slot >= live_dense) {
		if (!bpf_map_update_elem(&live_ns_sparse, &inum, info, BPF_ANY))
			return 0;
		count_full(TABLE_LIVE);
		return -1;
	}
	at = bpf_map_lookup_elem(&live_ns, &slot);
	if (!at)
		return -1;
	*at = *info;
	return 0;
}

// live_del forgets inum, whose entry live_get returned as info.
static __always_inline void live_del(__u32 inum, struct ns_info *info)
{
	if (inum - PROC_DYNAMIC_FIRST >= live_dense)
		bpf_map_delete_elem(&live_ns_sparse, &inum);
	else
		info->live = 0;
}

// Tracepoint backend: namespaces that outlived the nsproxy that held them
// (a bind mount, an open nsfs or cgroup file, another process keeps them)
// and whose destructor no tracepoint shows (mnt, uts, ipc, cgroup, time;
// pid before 6.14). Userspace runs tp_poll_watched every few milliseconds,
// which reports those that are gone. Key: inum; the bound is on such
// namespaces alive at once; overflow counts as lost.
struct watch {
	__u64 ns;  // struct ns_common *
	__u64 id;  // the kernel's ns_id, 0 before 6.18
	__u64 nid; // its ns_id in live_ns when watched, 0 if unknown
	__u32 type;
	__u8 owner_pass; // its owner passed the filters (live_ns)
	__u8 _pad[3];
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); // a poll walks every bucket: keep it small
	__type(key, __u32);
	__type(value, struct watch);
} watched SEC(".maps");

// The initial namespaces, by type, those of kernel threads (init_nsproxy),
// found by the start-up iterator: they outlive every process, so they are
// never watched (or the poll would run for as long as nstrace does).
__u32 init_ns_inum[NS_TYPES] = {};

// Tracepoint backend: releases reported at process exit, so that the
// threads of one dying process report their shared nsproxy once. Key: the
// nsproxy and the tgid; value: when. The thread that frees it takes its
// entry away; LRU for those whose threads all exited at once.
struct exit_key {
	__u64 nsproxy;
	__u32 tgid;
	__u32 _pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct exit_key);
	__type(value, __u64);
} exit_releases SEC(".maps");

#endif
