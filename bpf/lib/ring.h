/* SPDX-License-Identifier: GPL-2.0 */
// The ring buffer and the per-CPU count of what could not go into it.
// Every path that drops an event, or cannot keep the state one needs,
// counts it here, and the next record carries the count: one place, so
// that no loss goes unreported.
#ifndef NSTRACE_RING_H
#define NSTRACE_RING_H

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); // resized from userspace
} events SEC(".maps");

// Per-CPU count of events that could not be reserved (ring buffer full) or
// whose state could not be kept; carried in-band on the next event.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

static __always_inline void count_lost_n(__u64 n)
{
	__u32 zero = 0;
	__u64 *l = bpf_map_lookup_elem(&lost, &zero);

	if (l)
		*l += n;
}

static __always_inline void count_lost(void)
{
	count_lost_n(1);
}

// take_lost returns, and resets, this CPU's count of dropped records.
static __always_inline __u32 take_lost(void)
{
	__u32 zero = 0, n = 0;
	__u64 *l = bpf_map_lookup_elem(&lost, &zero);

	if (l) {
		n = *l;
		*l = 0;
	}
	return n;
}

// Kernel stacks (--kernel-stack), by id: a record carries the id of its
// hook's stack, and userspace reads and symbolises each id once. A stack
// stays in the map: without BPF_F_REUSE_STACKID an id never changes what
// it stands for, and a new stack whose hash bucket is taken gets no id
// (its record says none) instead of another stack's frames.
#define STACK_DEPTH 32
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__uint(value_size, STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

// Records that went without their stack because the bucket of their
// stack's hash was taken by another; userspace reports the count.
#define EEXIST 17
__u64 stackless = 0;

static __always_inline void count_stackless(void)
{
	__sync_fetch_and_add(&stackless, 1);
}

// stack_of is the kernel stack of the hook whose context ctx is, as its id
// + 1; 0 if none is wanted or it could not be kept.
static __always_inline __u32 stack_of(void *ctx)
{
	long id;

	if (!want_stacks)
		return 0;
	id = bpf_get_stackid(ctx, &stacks, 0);
	if (id < 0) {
		// EFAULT: there is no kernel stack to take (a syscall
		// tracepoint before 6.x hands the program the user registers).
		if (id == -EEXIST)
			count_stackless();
		return 0;
	}
	return id + 1;
}

// The bounded tables, by what userspace calls them: how often each was
// found full. Userspace says so once, when it first sees one; inserts work
// again as soon as entries go.
enum table {
	TABLE_LIVE,    // live_ns_sparse: namespaces alive
	TABLE_WATCHED, // watched: namespaces polled for (tracepoint backend)
	TABLE_NETS,    // live_nets: net namespaces by struct net
	TABLE_PIDS,    // filter_pids: --pid processes and their children
	TABLES,
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TABLES);
	__type(key, __u32);
	__type(value, __u64);
} table_full SEC(".maps");

static __always_inline void count_full(__u32 table)
{
	__u64 *n = bpf_map_lookup_elem(&table_full, &table);

	if (n)
		__sync_fetch_and_add(n, 1);
}

// tracking_partial says whether live_ns was ever full: a namespace it does
// not know may then be one it could not keep.
static __always_inline bool tracking_partial(void)
{
	__u32 table = TABLE_LIVE;
	__u64 *n = bpf_map_lookup_elem(&table_full, &table);

	return n && *n;
}

#endif
