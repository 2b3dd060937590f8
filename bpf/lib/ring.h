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

#endif
