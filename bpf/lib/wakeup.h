/* SPDX-License-Identifier: GPL-2.0 */
// When the reader is woken: the flag it sets before it sleeps and the
// commits that look at it. Apart from ring.h because the order of a
// reservation and that look is what keeps a record from going unseen:
// every commit looks at the flag through here.
#ifndef NSTRACE_WAKEUP_H
#define NSTRACE_WAKEUP_H

// Wakeups. The kernel wakes a ring buffer's reader (an interrupt, then a
// cross-CPU wakeup, on the traced task's time: several microseconds in a
// VM) at the first record after the reader has caught up, which a fast
// reader always has: a wakeup per operation. Instead, nstrace's reader
// polls while records come, and only before it waits sets reader_state[0]
// (memory-mapped, with an atomic swap); the first record after that wakes
// it and clears it, the others ask for no wakeup. Both sides look after a
// full barrier: here the swap below, or the commit's own swap of the
// record's length (reader_asleep_committed), makes the record's
// reservation (the producer position) visible before the flag is read, and
// the reader looks at the position again after its own swap, so a record is
// never left unseen. That needs the flag looked at after the reservation
// (submit; flush sends a REC_WAKE).
// reader_state[1] is set when a REC_WATCH found the ring buffer full:
// userspace looks at it as it reads, and starts the poll.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
} reader_state SEC(".maps");

// reader_asleep says whether the reader waits for a wakeup, and clears it.
static __always_inline bool reader_asleep(void)
{
	__u32 zero = 0;
	__u64 *asleep = bpf_map_lookup_elem(&reader_state, &zero);

	return asleep && test_and_clear(asleep);
}

// reader_asleep_committed is reader_asleep after a record's commit
// (bpf_ringbuf_output's), whose atomic swap of the record's length is the
// full barrier: the flag is read plainly first, and swapped only when set.
// The swap on every record, on a line the reader's CPU writes, was 7% of
// tp_sys_exit's samples (perf, an unshare loop on the build machine).
static __always_inline bool reader_asleep_committed(void)
{
	__u32 zero = 0;
	__u64 *asleep = bpf_map_lookup_elem(&reader_state, &zero);

	return asleep && *(volatile __u64 *)asleep && test_and_clear(asleep);
}

// submit commits a reserved record: the reservation came first, as above.
static __always_inline void submit(void *rec)
{
	bpf_ringbuf_submit(rec, reader_asleep() ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

// A record with nothing but the common header: REC_WATCH, REC_WAKE.
struct bare_rec {
	__u64 ts_ns;
	__u32 lost; // always 0: userspace need not report it
	__u8 kind;
	__u8 _pad[3];
};

// send_bare sends a header-only record that wakes the reader.
static __always_inline bool send_bare(__u8 kind)
{
	struct bare_rec *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

	if (!r)
		return false;
	r->ts_ns = bpf_ktime_get_boot_ns();
	r->lost = 0;
	r->kind = kind;
	r->_pad[0] = r->_pad[1] = r->_pad[2] = 0;
	bpf_ringbuf_submit(r, BPF_RB_FORCE_WAKEUP);
	return true;
}

#endif
