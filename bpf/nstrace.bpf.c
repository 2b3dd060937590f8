// SPDX-License-Identifier: GPL-2.0
//
// nstrace BPF side. Program names say which backend they belong to:
//   fentry_* / fexit_*        fentry backend
//   kprobe_* / kretprobe_*    kprobe backend
//   tp_*                      tracepoint backend
//   common_*                  every backend (hooks that only exist as tracepoints)
// The handlers below them are shared, so an event means the same thing
// whichever backend produced it.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define CLONE_NEWTIME   0x00000080
#define CLONE_NEWNS     0x00020000
#define CLONE_NEWCGROUP 0x02000000
#define CLONE_NEWUTS    0x04000000
#define CLONE_NEWIPC    0x08000000
#define CLONE_NEWUSER   0x10000000
#define CLONE_NEWPID    0x20000000
#define CLONE_NEWNET    0x40000000
#define NS_CLONE_FLAGS                                                       \
	(CLONE_NEWTIME | CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS |          \
	 CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET)
#define CSIGNAL 0xff

// container_of is libbpf's: its offsetof on these preserve_access_index
// types is a CO-RE relocation, so it holds on every kernel.

#define MAX_ERRNO 4095
#define IS_ERR_OR_NULL(p) (!(p) || (unsigned long)(p) >= (unsigned long)-MAX_ERRNO)

// User and pid namespaces nest at most 32 deep (MAX_USER_NS_LEVEL, MAX_PID_NS_LEVEL).
#define MAX_NS_LEVEL 33

// Namespace types. pid and time are the *_for_children pointers of an
// nsproxy: that is where a new one appears; the active time_ns gets its
// own slot so a released nsproxy reports everything it held.
enum ns_slot {
	NS_MNT,
	NS_UTS,
	NS_IPC,
	NS_PID,
	NS_NET,
	NS_USER,
	NS_CGROUP,
	NS_TIME,
	NS_TYPES,
	NS_TIME_ACTIVE = NS_TYPES,
	NS_SLOTS,
};

enum event_kind {
	EV_CREATE = 1,
	EV_JOIN,
	EV_NSPROXY_FREE,
	EV_DESTROY,
};

enum destroy_how {
	HOW_LAST_REF = 1, // the last reference went away with an nsproxy or a parent
	HOW_FREED,        // the kernel's own free function ran
	HOW_POLLED,       // tp_poll_watched found it gone
};

enum syscall_id {
	SC_UNKNOWN,
	SC_CLONE,
	SC_CLONE3,
	SC_FORK,
	SC_VFORK,
	SC_UNSHARE,
	SC_SETNS,
	SC_EXECVE,
	SC_EXECVEAT,
};

// Every record starts with ts_ns, lost and kind, in this layout: struct
// ns_rec for namespace events, struct str_rec (context.h) for strings.
//
// One record per operation: the events one hook sees (an unshare's create,
// the nsproxy it freed and the namespaces that died with it) share the
// acting task, so they travel as one header and an item per event. Three
// reservations of one event each cost the traced task more than twice what
// one record does, and the reader three reads.
struct ns_rec {
	__u64 ts_ns; // CLOCK_BOOTTIME
	__u32 lost;  // events this CPU dropped since its previous record
	__u8 kind;   // REC_NS
	__u8 n;      // items that follow: struct ns_item or struct release_item
	__u8 syscall;
	__u8 _pad;
	__u64 flags;     // create, join: clone/unshare flags, or setns nstype
	__u64 cgroup_id; // the acting task's cgroup; 0 if none (polled)
	__u64 exe_id;    // the acting process's executable; 0 if unknown
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	char comm[16];
	char parent_comm[16];
};

// A create, join or destroy.
struct ns_item {
	__u8 kind; // enum event_kind
	__u8 ns_type;
	__u8 how;
	__u8 for_children;
	__u8 owner_known;
	__u8 _pad[3];
	__u32 inum;
	__u32 old_inum;
	__u64 ns_id;           // the kernel's namespace id (6.18+), else one nstrace assigned
	__u64 owner_cgroup_id; // join, destroy: the namespace owner's cgroup
	__u32 owner_pid;       // join, destroy: the namespace owner
	__u32 _pad2;
};

// An nsproxy freed: what it held, by slot. The same size as ns_item.
struct release_item {
	__u8 kind; // EV_NSPROXY_FREE
	__u8 _pad[3];
	__u32 inums[NS_SLOTS];
};

// The most items one hook makes: an unshare of every type (8 creates) that
// freed the old nsproxy (1) and the 8 namespaces only it held.
#define MAX_ITEMS 17

// A process's namespaces at one instant. ref[] is read only to tell, when an
// nsproxy goes, which namespaces it held the last reference to.
struct snap {
	__u32 inum[NS_SLOTS];
	__u32 ref[NS_SLOTS];
	__u64 id[NS_SLOTS]; // the kernel's namespace ids, 0 before 6.18
	__u64 nsproxy;
	__u64 net; // struct net *, to follow it to its cleanup
	__u64 flags;
	__u32 nsproxy_count;
	__u32 in_flight; // syscall_snaps: set at syscall entry, cleared at exit
};


// Put the record types in BTF, so bpf2go generates their Go types.
const struct ns_rec *unused_ns_rec __attribute__((unused));
const struct ns_item *unused_ns_item __attribute__((unused));
const struct release_item *unused_release_item __attribute__((unused));

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

// unshare/setns in flight: namespaces at syscall entry, in the calling
// task's local storage (a few pointer loads away from the task, where a
// hash keyed by tid would cost a locked update and a delete per call; freed
// with the task).
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct snap);
} syscall_snaps SEC(".maps");

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
	__u8 _pad[5];
};
#define PROC_DYNAMIC_FIRST 0xF0000000U
#define LIVE_DENSE 65536
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

	if (slot >= LIVE_DENSE)
		return bpf_map_lookup_elem(&live_ns_sparse, &inum);
	info = bpf_map_lookup_elem(&live_ns, &slot);
	return info && info->live ? info : NULL;
}

// live_put remembers info (whose live byte is set) under inum.
static __always_inline int live_put(__u32 inum, struct ns_info *info)
{
	__u32 slot = inum - PROC_DYNAMIC_FIRST;
	struct ns_info *at;

	if (slot >= LIVE_DENSE)
		return bpf_map_update_elem(&live_ns_sparse, &inum, info, BPF_ANY);
	at = bpf_map_lookup_elem(&live_ns, &slot);
	if (!at)
		return -1;
	*at = *info;
	return 0;
}

// live_del forgets inum, whose entry live_get returned as info.
static __always_inline void live_del(__u32 inum, struct ns_info *info)
{
	if (inum - PROC_DYNAMIC_FIRST >= LIVE_DENSE)
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
	__u32 type;
	__u32 _pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); // a poll walks every bucket: keep it small
	__type(key, __u32);
	__type(value, struct watch);
} watched SEC(".maps");

// Next id nstrace assigns where the kernel has no ns_id. Userspace starts it
// at the boot-clock nanosecond of the load plus a block it keeps for itself,
// so ids stay unique across runs during the boot.
__u64 next_ns_id = 1;

// Addresses of the work functions that free user, pid and net namespaces
// (from /proc/kallsyms), set by userspace after the load and before the
// attach (kallsyms is read meanwhile); 0 disables that teardown hook.
__u64 free_user_ns_fn = 0;
__u64 destroy_pidns_fn = 0;
__u64 cleanup_net_fn = 0;

// Set by userspace before load.
// Whether net namespaces are followed to cleanup_net() (cleanup_net_fn).
volatile const bool net_cleanup_hooked = false;
// Whether a hook reports pid namespaces freed: the work item (6.14+) or,
// before, fentry/kprobe on the RCU callback delayed_free_pidns().
volatile const bool pid_ns_free_hooked = false;
// fentry/kprobe with proc_free_inum() hooked: destroys come from there only.
volatile const bool destroy_at_free_inum = false;
// Tracepoint backend only: nothing hooks free_nsproxy, so an nsproxy that
// unshare/setns replaced is known to be freed from its refcount at entry.
volatile const bool release_at_syscall_exit = false;
// Tracepoint backend only: remember namespaces in watched.
volatile const bool watch_survivors = false;
// The initial namespaces, by type, those of kernel threads (init_nsproxy),
// found by the start-up iterator: they outlive every process, so they are
// never watched (or the poll would run for as long as nstrace does).
__u32 init_ns_inum[NS_TYPES] = {};

#define PF_KTHREAD 0x00200000

// ns_common's refcount was renamed in 6.18, which also moved the type
// (a CLONE_NEW* flag) from the proc_ns_operations into ns_common.
struct ns_common___new {
	refcount_t __ns_ref;
	u32 ns_type;
	u64 ns_id;
	struct list_head ns_list_node;
} __attribute__((preserve_access_index));
struct proc_ns_operations___old {
	int type;
} __attribute__((preserve_access_index));
struct ns_common___old {
	refcount_t count;
} __attribute__((preserve_access_index));

// Two ways to read kernel memory. Through a pointer whose type the verifier
// knows from BTF (the current task, fentry and tp_btf arguments, an
// iterator's task, pointers loaded through those) a read is a plain load
// that yields 0 if it faults; through a raw address (kprobe arguments,
// pointers kept in maps or made by container_of) it takes a probe-read
// helper call, an order of magnitude slower. The readers below take `btf`,
// always a literal: each inlined copy keeps one of the two.
#define VIA_BTF true
#define VIA_PROBE false
#define RD(btf, p, f) ((btf) ? (p)->f : BPF_CORE_READ(p, f))
#define RD2(btf, p, f, g) ((btf) ? (p)->f->g : BPF_CORE_READ(p, f, g))

// Reads here are deliberately branch-free: a NULL namespace pointer makes
// the read fail, which yields 0. Every branch multiplies the paths the
// verifier walks, and older verifiers (6.1) give up on the unrolled loops.
static __always_inline __u32 ns_inum(struct ns_common *ns, bool btf)
{
	return RD(btf, ns, inum);
}

// The kernel's own 64-bit namespace id (6.18+), 0 where it has none.
static __always_inline __u64 ns_kernel_id(struct ns_common *ns, bool btf)
{
	if (bpf_core_field_exists(struct ns_common___new, ns_id))
		return RD(btf, (struct ns_common___new *)ns, ns_id);
	return 0;
}

static __always_inline __u32 ns_refs(struct ns_common *ns, bool btf)
{
	if (bpf_core_field_exists(struct ns_common___new, __ns_ref))
		return RD(btf, (struct ns_common___new *)ns, __ns_ref.refs.counter);
	return RD(btf, (struct ns_common___old *)ns, count.refs.counter);
}

// nsproxy.count is atomic_t up to 6.5 and refcount_t after; both are one
// 32-bit counter at the same field, so read the raw word.
static __always_inline __u32 nsproxy_count(struct nsproxy *p, bool btf)
{
	__u32 v = 0;

	if (btf)
		return *(__u32 *)&p->count;
	bpf_core_read(&v, sizeof(v), &p->count);
	return v;
}

static __always_inline struct ns_common *nsproxy_slot(struct nsproxy *p, int slot, bool btf)
{
	switch (slot) {
	case NS_MNT:
		return &RD(btf, p, mnt_ns)->ns;
	case NS_UTS:
		return &RD(btf, p, uts_ns)->ns;
	case NS_IPC:
		return &RD(btf, p, ipc_ns)->ns;
	case NS_PID:
		return &RD(btf, p, pid_ns_for_children)->ns;
	case NS_NET:
		return &RD(btf, p, net_ns)->ns;
	case NS_CGROUP:
		return &RD(btf, p, cgroup_ns)->ns;
	case NS_TIME:
		return &RD(btf, p, time_ns_for_children)->ns;
	case NS_TIME_ACTIVE:
		return &RD(btf, p, time_ns)->ns;
	}
	return NULL;
}

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

	snap_nsproxy(t->nsproxy, s, VIA_BTF);
	u = t->real_cred->user_ns;
	s->inum[NS_USER] = ns_inum(&u->ns, VIA_BTF);
	s->ref[NS_USER] = ns_refs(&u->ns, VIA_BTF);
	s->id[NS_USER] = ns_kernel_id(&u->ns, VIA_BTF);
}

// Wakeups. The kernel wakes a ring buffer's reader (an interrupt, then a
// cross-CPU wakeup, on the traced task's time: several microseconds in a
// VM) at the first record after the reader has caught up, which a fast
// reader always has: a wakeup per operation. Instead, nstrace's reader
// polls while records come, and only before it waits sets reader_state[0]
// (memory-mapped, with an atomic swap); the first record after that wakes
// it and clears it, the others ask for no wakeup. Both sides' atomics are
// full barriers: the record's reservation (the producer position) is
// visible before the swap here, and the reader looks at the position again
// after its own, so a record is never left unseen. That needs the flag
// looked at after the reservation (submit; flush sends a REC_WAKE).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
} reader_state SEC(".maps");

// reader_asleep says whether the reader waits for a wakeup, and clears it.
static __always_inline bool reader_asleep(void)
{
	__u32 zero = 0;
	__u64 *asleep = bpf_map_lookup_elem(&reader_state, &zero);

	return asleep && __sync_fetch_and_and(asleep, 0);
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

#include "context.h"

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

// A hook's record is built in a staging slot, an item per event, and goes
// out in one bpf_ringbuf_output at the end (flush): a reservation needs
// its size up front, and how many events a hook makes is known only once
// the filters have had their say. Two slots per CPU, each claimed with an
// atomic exchange: a hook in an interrupt (a pid namespace freed from an
// RCU callback) or, on a preemptible kernel, another task's hook can run
// while one is being built.
struct batch {
	__u64 busy;
	struct ns_rec hdr;
	struct ns_item items[MAX_ITEMS];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct batch);
} batch_buf SEC(".maps");

// claim takes staging slot slot for a, if it is free.
static __always_inline struct batch *claim(struct actx *a, __u32 slot)
{
	struct batch *b = bpf_map_lookup_elem(&batch_buf, &slot);

	if (!b || __sync_lock_test_and_set(&b->busy, 1))
		return NULL;
	a->batch = slot + 1;
	// One clock read for all the events of a hook: they are one operation
	// (and a clock read costs as much as the rest of an event in a VM).
	if (!a->ts)
		a->ts = bpf_ktime_get_boot_ns();
	b->hdr.ts_ns = a->ts;
	b->hdr.lost = 0;
	b->hdr.kind = REC_NS;
	b->hdr.n = 0;
	b->hdr.syscall = 0;
	b->hdr._pad = 0;
	b->hdr.flags = 0;
	b->hdr.cgroup_id = a->cgid;
	b->hdr.exe_id = a->exe_id;
	b->hdr.pid = a->pid;
	b->hdr.tid = a->tid;
	b->hdr.ppid = a->ppid;
	b->hdr.uid = a->uid;
	__builtin_memcpy(b->hdr.comm, a->comm, sizeof(b->hdr.comm));
	__builtin_memcpy(b->hdr.parent_comm, a->parent_comm, sizeof(b->hdr.parent_comm));
	return b;
}

// batch_of is the staging slot of a's record, claimed at its first event.
static __always_inline struct batch *batch_of(struct actx *a)
{
	struct batch *b;
	__u32 slot;

	if (a->batch) {
		slot = a->batch - 1;
		return bpf_map_lookup_elem(&batch_buf, &slot);
	}
	b = claim(a, 0);
	return b ? b : claim(a, 1);
}

// item_new adds an event done by the task a (all zero: none, a poll) to
// its record; the strings the record refers to go out first. A create or a
// join says by which syscall and flags (the same for all of one hook's).
static __always_inline struct ns_item *item_new(__u8 kind, __u8 ns_type, struct actx *a,
						__u8 sc, __u64 flags)
{
	struct ns_item *it;
	struct batch *b;
	__u32 n;

	// A destroy's context is its owner's: the actor's cgroup path need not
	// go out for it (and cg_learn stays out of the programs that only
	// destroy: quicker to verify, and within 6.1's stack limit).
	announce(a, kind != EV_DESTROY);
	b = batch_of(a);
	if (!b) {
		count_lost();
		return NULL;
	}
	n = b->hdr.n;
	if (n >= MAX_ITEMS) {
		count_lost();
		return NULL;
	}
	b->hdr.n = n + 1;
	if (kind == EV_CREATE || kind == EV_JOIN) {
		b->hdr.syscall = sc;
		b->hdr.flags = flags;
	}
	it = &b->items[n];
	__builtin_memset(it, 0, sizeof(*it));
	it->kind = kind;
	it->ns_type = ns_type;
	return it;
}

// flush sends a's record, if it has one, and frees its slot.
static __always_inline void flush(struct actx *a)
{
	struct batch *b;
	__u32 slot, n;
	__u64 size;

	if (!a->batch)
		return;
	slot = a->batch - 1;
	a->batch = 0;
	b = bpf_map_lookup_elem(&batch_buf, &slot);
	if (!b)
		return;
	n = b->hdr.n;
	size = sizeof(b->hdr) + n * sizeof(struct ns_item);
	// One test on the very register passed: a range test the compiler
	// folds (n - 1 < MAX_ITEMS) on a copy leaves the verifier unsure.
	barrier_var(size);
	if (n > 0 && size <= sizeof(struct batch) - offsetof(struct batch, hdr)) {
		b->hdr.lost = take_lost();
		// bpf_ringbuf_output reserves inside: the reader's flag can
		// only be looked at after it (see submit), and a record to wake
		// it follows if it went to sleep meanwhile.
		if (bpf_ringbuf_output(&events, &b->hdr, size, BPF_RB_NO_WAKEUP))
			count_lost_n(n + b->hdr.lost);
		else if (reader_asleep())
			send_bare(REC_WAKE);
	}
	b->busy = 0;
}

// The syscall the current task is in, from its saved user registers: this
// is the same in every backend, whatever kernel function we are hooked on.
static __always_inline struct pt_regs *user_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

static __always_inline __u8 cur_syscall(void)
{
	long nr = user_regs()->orig_ax;

	switch (nr) {
	case 56:
		return SC_CLONE;
	case 57:
		return SC_FORK;
	case 58:
		return SC_VFORK;
	case 59:
		return SC_EXECVE;
	case 272:
		return SC_UNSHARE;
	case 308:
		return SC_SETNS;
	case 322:
		return SC_EXECVEAT;
	case 435:
		return SC_CLONE3;
	}
	return SC_UNKNOWN;
}

// The flags the caller passed, as the kernel interprets them, so every
// backend reports the same value for the same call.
static __always_inline __u64 syscall_flags(__u8 sc)
{
	struct pt_regs *r = user_regs();
	__u64 flags = 0;

	switch (sc) {
	case SC_CLONE:
		return (__u32)r->di & ~CSIGNAL;
	case SC_CLONE3:
		// struct clone_args starts with the u64 flags
		bpf_probe_read_user(&flags, sizeof(flags), (void *)r->di);
		return flags;
	case SC_UNSHARE:
		return r->di;
	case SC_SETNS:
		return r->si;
	}
	return 0;
}

static __always_inline bool for_children(__u32 type, __u32 sc)
{
	// unshare/setns of pid and time only affect children; after a clone
	// the child itself is in the new namespace.
	return (type == NS_PID || type == NS_TIME) && (sc == SC_UNSHARE || sc == SC_SETNS);
}

// track_ns remembers a namespace and returns its ns_id: kid (the kernel's)
// if there is one, else the id already known or a new one. keep says whether
// an entry already there stays (join, iterator) or is replaced (create: the
// namespace that had the inum before died unseen). A new entry gets the
// owner (cgroup cgid, process pid, whether it passed: what & TRACK_PASS).
// Only a failure to remember a namespace counts as lost, never its being
// known. A global function: the iterators call it in loops over ancestors.
#define TRACK_KEEP 0x100
#define TRACK_PASS 0x200
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
		info.id = __sync_fetch_and_add(&next_ns_id, 1);
	info.owner_cgid = cgid;
	info.owner_pid = pid;
	info.owner_pass = !!(what & TRACK_PASS);
	if (live_put(inum, &info))
		count_lost();
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
	if (bpf_map_update_elem(&live_nets, &net, &inum, BPF_ANY))
		count_lost();
}

// Entries in watched. Userspace polls only while there are some: the first
// one wakes it with a REC_WATCH record (header only, so it carries no lost
// count that userspace would have to report; a lost one shows as a drop,
// on which userspace polls too).
__s64 watched_count = 0;


static __always_inline void watch_added(void)
{
	if (__sync_fetch_and_add(&watched_count, 1) != 0)
		return;
	if (!send_bare(REC_WATCH))
		count_lost();
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

	if (!watch_survivors || type == NS_NET || type == NS_USER || (type == NS_PID && pid_ns_free_hooked))
		return 0;
	inum = ns_inum(ns, VIA_PROBE);
	barrier_var(type); // keep the mask: the verifier checks the register it indexes with
	if (!inum || inum == init_ns_inum[type & (NS_TYPES - 1)])
		return 0;
	w.id = ns_kernel_id(ns, VIA_PROBE);
	if (bpf_map_update_elem(&watched, &inum, &w, BPF_NOEXIST) == 0) {
		watch_added();
	} else if (bpf_map_update_elem(&watched, &inum, &w, BPF_EXIST)) {
		count_lost();
		return 0;
	}
	// So that a destroy knows whether there is a watch to end.
	info = live_get(inum);
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

// emit_ns and emit_destroy are global functions: the verifier checks each
// once, instead of once per path through every caller. BPF functions take
// at most five arguments: kind, type and syscall travel packed in one, the
// new and old inode numbers in another. The caller works out who acts (a,
// actor_of) once for all the events of one hook.
#define NS_WHAT(kind, type, sc) ((kind) | (type) << 8 | (sc) << 16)
#define NS_INUMS(inum, old) ((__u64)(old) << 32 | (inum))

__noinline int emit_ns(__u32 what, __u64 inums, __u64 flags, __u64 kid, struct actx *a)
{
	__u32 kind = what & 0xff, type = (what >> 8) & 0xff, sc = what >> 16;
	__u32 inum = (__u32)inums, old_inum = inums >> 32;
	struct owner o = {};
	struct ns_item *e;
	__u64 id;

	if (!a)
		return 0;
	owner_is(&o, a);
	// A create replaces whatever had the inum before (its free was missed);
	// a join only fills in a namespace nstrace did not know.
	id = track_ns(TRACK(type, kind != EV_CREATE, &o), inum, kid, o.cgid, o.pid);
	if (kind != EV_CREATE)
		owner_of(type, inum, &o); // a join: whoever it was first seen with
	if (!event_wanted(kind, type) || !(a->pass || o.pass))
		return 0;
	e = item_new(kind, type, a, sc, flags);
	if (!e)
		return 0;
	e->owner_cgroup_id = o.cgid;
	e->owner_pid = o.pid;
	e->owner_known = o.known;
	e->ns_id = id;
	e->inum = inum;
	e->old_inum = old_inum;
	e->for_children = for_children(type, sc);
	return 0;
}

// One event per namespace type whose inum differs between two snapshots.
static __always_inline void emit_diff(struct snap *old, struct snap *new, __u8 kind,
				      __u64 flags, __u8 sc, bool with_user, struct actx *a)
{
#pragma unroll
	for (int i = 0; i < NS_TYPES; i++) {
		if (i == NS_USER && !with_user)
			continue;
		if (!new->inum[i] || new->inum[i] == old->inum[i])
			continue;
		emit_ns(NS_WHAT(kind, i, sc), NS_INUMS(new->inum[i], old->inum[i]), flags, new->id[i], a);
		if (i == NS_NET && kind == EV_CREATE)
			track_net(new->net, new->inum[i], false);
	}
}

// The destroy takes the namespace's entry out of live_ns, and its id with
// it; kid is the kernel's id, for a namespace nstrace did not know. a is
// who released the last reference (emit_destroy_self works it out). With
// UNLESS_WATCHED in how, a namespace under watch is left to the poll.
#define UNLESS_WATCHED 0x100

__noinline int emit_destroy(__u32 type, __u32 inum, __u32 how, __u64 kid, struct actx *a)
{
	struct ns_info *info = live_get(inum);
	struct owner o = {};
	bool watched_too = true;
	struct ns_item *e;

	if (!a)
		return 0;
	if (info && info->type == type && info->watched && (how & UNLESS_WATCHED))
		return 0;
	how &= 0xff;
	if (info && info->type == type) {
		kid = info->id;
		watched_too = info->watched;
		owner_from(info, &o);
		live_del(inum, info);
	}
	if (watch_survivors && watched_too)
		unwatch(inum);
	if (!event_wanted(EV_DESTROY, type) || !(o.pass || a->pass))
		return 0;
	e = item_new(EV_DESTROY, type, a, 0, 0);
	if (!e)
		return 0;
	e->owner_cgroup_id = o.cgid;
	e->owner_pid = o.pid;
	e->owner_known = o.known;
	e->ns_id = kid;
	e->inum = inum;
	e->how = how;
	return 0;
}

// emit_destroy_self reports a destroy in whatever context the free runs
// (often a kworker's): its cgroup is not learnt, the destroy's context is
// the owner's anyway. No task did a polled one: the poll runs in nstrace's
// own context. A separate global function, so that its actor is not on
// the stack of the releases that call emit_destroy (6.1's 512 bytes).
__noinline int emit_destroy_self(__u32 type, __u32 inum, __u32 how, __u64 kid)
{
	struct actx a = {};

	if (how != HOW_POLLED && event_wanted(EV_DESTROY, type))
		actor_of(bpf_get_current_task_btf(), &a, CG_CACHED, VIA_PROBE);
	emit_destroy(type, inum, how, kid, &a);
	flush(&a);
	return 0;
}

// An nsproxy is going away; s was read before it dropped its references.
// A namespace dies with it when the nsproxy held every reference to it.
// after, if set, is what replaced it (unshare/setns): namespaces carried
// over got a reference from the new nsproxy.
// An nsproxy_free passes the filters when the releasing task does, or when
// one of the namespaces it held belongs to an owner that did.
static __always_inline bool release_wanted(struct snap *s, struct actx *a)
{
	if (a->pass)
		return true;
#pragma unroll
	for (int i = 0; i < NS_SLOTS; i++) {
		struct ns_info *info;

		if (i == NS_USER || !s->inum[i])
			continue;
		info = live_get(s->inum[i]);
		if (info && info->owner_pass)
			return true;
	}
	return false;
}

// The namespaces that die with an nsproxy (see emit_release).
static __always_inline void release_destroys(struct snap *s, struct snap *after, struct actx *a)
{
#pragma unroll
	for (int i = 0; i < NS_SLOTS; i++) {
		__u32 holds = 1;

		if (i == NS_USER || !s->inum[i])
			continue;
		if (i == NS_PID && pid_ns_free_hooked)
			continue;
		if (i == NS_NET && net_cleanup_hooked)
			continue;
		if (i == NS_TIME_ACTIVE && s->inum[i] == s->inum[NS_TIME])
			continue;
		if (i == NS_TIME && s->inum[i] == s->inum[NS_TIME_ACTIVE])
			holds = 2;
		if (after && after->inum[i] == s->inum[i])
			continue;
		if (s->ref[i] != holds) {
			// Someone else holds it too. Only at exit (no after) is
			// the nsproxy still there to read its pointer from: it is
			// the exiting task's.
			if (!after && watch_survivors)
				watch_slot(i);
			continue;
		}
		// unshare/setns: the put happened before sys_exit, so a watched
		// namespace may have been polled gone already; the poll reports it.
		emit_destroy(i == NS_TIME_ACTIVE ? NS_TIME : i, s->inum[i],
			     HOW_LAST_REF | (after ? UNLESS_WATCHED : 0), s->id[i], a);
	}
}

// a is the releasing task, if the caller worked it out already (and then
// sends the record); else the release is a record of its own.
static __always_inline void emit_release(struct snap *s, struct snap *after, struct actx *a)
{
	struct actx own = {};
	struct release_item *e = NULL;
	bool mine = !a;

	// The exit path: nothing to learn about the task if the event is
	// filtered out anyway.
	if (mine) {
		actor_of(bpf_get_current_task_btf(), &own,
			 event_wanted(EV_NSPROXY_FREE, -1) ? CG_LEARN : CG_CACHED, VIA_BTF);
		a = &own;
	}
	if (event_wanted(EV_NSPROXY_FREE, -1) && release_wanted(s, a))
		e = (struct release_item *)item_new(EV_NSPROXY_FREE, 0, a, 0, 0);
	if (e) {
#pragma unroll
		for (int i = 0; i < NS_SLOTS; i++)
			e->inums[i] = s->inum[i];
		e->inums[NS_USER] = 0;
	}
	if (!destroy_at_free_inum)
		release_destroys(s, after, a);
	if (mine)
		flush(a);
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

/* ---- creation: clone path ---- */

// fentry/kprobe: create_new_namespaces() built a new nsproxy for tsk (the
// child on clone, current on unshare) that still points at the old one.
static __always_inline int on_new_nsproxy(struct task_struct *tsk, struct nsproxy *new,
					  __u64 flags)
{
	struct actx a = {};
	struct snap *o, *n;
	__u8 sc;

	if (IS_ERR_OR_NULL(new))
		return 0;
	o = snap_tmp(0);
	n = snap_tmp(1);
	if (!o || !n)
		return 0;
	snap_nsproxy(BPF_CORE_READ(tsk, nsproxy), o, VIA_PROBE);
	snap_nsproxy(new, n, VIA_PROBE);
	sc = cur_syscall();
	if (sc == SC_UNSHARE || sc == SC_CLONE3 || sc == SC_CLONE)
		flags = syscall_flags(sc);
	actor_of(bpf_get_current_task_btf(), &a, CG_LEARN, VIA_BTF);
	emit_diff(o, n, EV_CREATE, flags, sc, false, &a);
	flush(&a);
	return 0;
}

// fentry/kprobe: create_user_ns() succeeded; cred->user_ns is the new one.
static __always_inline int on_new_user_ns(struct cred *cred)
{
	struct user_namespace *ns = BPF_CORE_READ(cred, user_ns);
	struct user_namespace *parent;
	struct actx a = {};
	__u8 sc;

	if (!ns)
		return 0;
	parent = BPF_CORE_READ(ns, parent);
	sc = cur_syscall();
	actor_of(bpf_get_current_task_btf(), &a, CG_LEARN, VIA_PROBE);
	emit_ns(NS_WHAT(EV_CREATE, NS_USER, sc), NS_INUMS(ns_inum(&ns->ns, VIA_PROBE), ns_inum(&parent->ns, VIA_PROBE)),
		syscall_flags(sc), ns_kernel_id(&ns->ns, VIA_PROBE), &a);
	flush(&a);
	return 0;
}

SEC("fexit/create_new_namespaces")
int BPF_PROG(fexit_create_new_namespaces, u64 flags, struct task_struct *tsk,
	     struct user_namespace *user_ns, struct fs_struct *new_fs, struct nsproxy *ret)
{
	return on_new_nsproxy(tsk, ret, flags);
}

SEC("fexit/create_user_ns")
int BPF_PROG(fexit_create_user_ns, struct cred *new, int ret)
{
	return ret ? 0 : on_new_user_ns(new);
}

// A kretprobe sees only the return value: its kprobe hands the arguments
// over through kprobe_args.
static __always_inline void stash_args(__u64 arg0, __u64 arg1)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct kargs a = { .arg0 = arg0, .arg1 = arg1 };

	bpf_map_update_elem(&kprobe_args, &tid, &a, BPF_ANY);
}

// take_args fetches what the kprobe stashed; a missed kprobe whose call
// succeeded (succeeded) loses its events, counted.
static __always_inline bool take_args(struct kargs *out, bool succeeded)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct kargs *a = bpf_map_lookup_elem(&kprobe_args, &tid);

	if (!a) {
		if (succeeded)
			count_lost();
		return false;
	}
	*out = *a;
	bpf_map_delete_elem(&kprobe_args, &tid);
	return true;
}

SEC("kprobe/create_new_namespaces")
int BPF_KPROBE(kprobe_create_new_namespaces, u64 flags, struct task_struct *tsk)
{
	stash_args(flags, (__u64)tsk);
	return 0;
}

SEC("kretprobe/create_new_namespaces")
int BPF_KRETPROBE(kretprobe_create_new_namespaces, struct nsproxy *ret)
{
	struct kargs a;

	if (!take_args(&a, !IS_ERR_OR_NULL(ret)))
		return 0;
	return on_new_nsproxy((struct task_struct *)a.arg1, ret, a.arg0);
}

SEC("kprobe/create_user_ns")
int BPF_KPROBE(kprobe_create_user_ns, struct cred *new)
{
	stash_args((__u64)new, 0);
	return 0;
}

SEC("kretprobe/create_user_ns")
int BPF_KRETPROBE(kretprobe_create_user_ns, int ret)
{
	struct kargs a;

	if (!take_args(&a, ret == 0) || ret)
		return 0;
	return on_new_user_ns((struct cred *)a.arg0);
}

// tracepoint: task_newtask fires in the parent once the child has its
// namespaces; a fork without namespace flags costs one test.
SEC("tp_btf/task_newtask")
int BPF_PROG(tp_task_newtask, struct task_struct *task, u64 clone_flags)
{
	struct actx a = {};
	struct snap *o, *n;

	if (!(clone_flags & NS_CLONE_FLAGS))
		return 0;
	o = snap_tmp(0);
	n = snap_tmp(1);
	if (!o || !n)
		return 0;
	snap_task(bpf_get_current_task_btf(), o);
	snap_task(task, n);
	actor_of(bpf_get_current_task_btf(), &a, CG_LEARN, VIA_BTF);
	emit_diff(o, n, EV_CREATE, clone_flags, cur_syscall(), true, &a);
	flush(&a);
	return 0;
}

/* ---- unshare and setns, at the syscall boundary ---- */

static __always_inline int on_sys_enter(void)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	struct snap *s = bpf_task_storage_get(&syscall_snaps, cur, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!s) {
		count_lost();
		return 0;
	}
	__builtin_memset(s, 0, sizeof(*s));
	snap_task(cur, s);
	s->in_flight = 1;
	return 0;
}

static __always_inline int on_sys_exit(long ret, __u8 kind, __u8 sc)
{
	struct snap *o, *n = snap_tmp(0);

	o = bpf_task_storage_get(&syscall_snaps, bpf_get_current_task_btf(), 0, 0);
	if (!o || !o->in_flight || !n)
		return 0;
	o->in_flight = 0;
	if (ret == 0) {
		struct task_struct *cur = bpf_get_current_task_btf();
		struct actx a = {};

		snap_task(cur, n);
		actor_of(cur, &a, CG_LEARN, VIA_BTF);
		emit_diff(o, n, kind, syscall_flags(sc), sc, true, &a);
		if (release_at_syscall_exit && o->nsproxy != n->nsproxy && o->nsproxy_count == 1)
			emit_release(o, n, &a);
		flush(&a);
	}
	return 0;
}

// setns joins happen in commit_nsset(), static and inlined, with the user
// namespace part in commit_creds(): the syscall boundary is the one place
// every kernel and backend can diff. fentry and kprobe hook the syscall
// function itself: enabling a syscall tracepoint would send every syscall
// of every task through the kernel's tracing slow path.
SEC("fentry/__x64_sys_setns")
int BPF_PROG(fentry_sys_setns)
{
	return on_sys_enter();
}

SEC("fexit/__x64_sys_setns")
int BPF_PROG(fexit_sys_setns, struct pt_regs *regs, long ret)
{
	return on_sys_exit(ret, EV_JOIN, SC_SETNS);
}

SEC("kprobe/__x64_sys_setns")
int BPF_KPROBE(kprobe_sys_setns)
{
	return on_sys_enter();
}

SEC("kretprobe/__x64_sys_setns")
int BPF_KRETPROBE(kretprobe_sys_setns, long ret)
{
	return on_sys_exit(ret, EV_JOIN, SC_SETNS);
}

SEC("tracepoint/syscalls/sys_enter_setns")
int tp_sys_enter_setns(void *ctx)
{
	return on_sys_enter();
}

SEC("tracepoint/syscalls/sys_exit_setns")
int tp_sys_exit_setns(struct trace_event_raw_sys_exit *ctx)
{
	return on_sys_exit(ctx->ret, EV_JOIN, SC_SETNS);
}

SEC("tracepoint/syscalls/sys_enter_unshare")
int tp_sys_enter_unshare(void *ctx)
{
	return on_sys_enter();
}

SEC("tracepoint/syscalls/sys_exit_unshare")
int tp_sys_exit_unshare(struct trace_event_raw_sys_exit *ctx)
{
	return on_sys_exit(ctx->ret, EV_CREATE, SC_UNSHARE);
}

/* ---- teardown ---- */

static __always_inline int on_nsproxy_free(struct nsproxy *p, bool btf)
{
	struct snap *s = snap_tmp(0);

	if (!s)
		return 0;
	snap_nsproxy(p, s, btf);
	emit_release(s, NULL, NULL);
	return 0;
}

SEC("fentry/free_nsproxy")
int BPF_PROG(fentry_free_nsproxy, struct nsproxy *p)
{
	return on_nsproxy_free(p, VIA_BTF);
}

SEC("kprobe/free_nsproxy")
int BPF_KPROBE(kprobe_free_nsproxy, struct nsproxy *p)
{
	return on_nsproxy_free(p, VIA_PROBE);
}

// Tracepoint backend: releases reported at process exit, so that the
// threads of one dying process report their shared nsproxy once. Key: the
// nsproxy and the tgid; value: when. LRU: entries need no cleanup.
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

// A process has at most this many threads for its exit to be checked.
#define MAX_EXIT_THREADS 64

// holders_in_group counts the threads of t's process that still hold p
// (a thread past exit_task_namespaces() has no nsproxy).
static __always_inline __u32 holders_in_group(struct task_struct *t, struct nsproxy *p)
{
	struct signal_struct *sig = BPF_CORE_READ(t, signal);
	struct list_head *head = &sig->thread_head;
	struct list_head *pos = BPF_CORE_READ(head, next);
	__u32 n = 0;

	for (int i = 0; i < MAX_EXIT_THREADS && pos != head; i++) {
		struct task_struct *th = container_of(pos, struct task_struct, thread_node);

		if (BPF_CORE_READ(th, nsproxy) == p)
			n++;
		pos = BPF_CORE_READ(pos, next);
	}
	return pos == head ? n : 0;
}

// tracepoint: a task exiting with the only reference to its nsproxy frees
// it in exit_task_namespaces(), right after this tracepoint. When the
// threads of a process exit at once, each can see the others still holding
// it: once the whole process is dying (no live thread), if its own threads
// hold every reference, the nsproxy goes with them.
// first_release says whether the nsproxy's release by process tgid is not
// reported yet (within the last second). A global function: its stack is
// not on top of the release's, which 6.1's 512-byte limit needs.
__noinline int first_release(__u64 nsproxy, __u32 tgid)
{
	struct exit_key k = { .nsproxy = nsproxy, .tgid = tgid };
	__u64 now = bpf_ktime_get_boot_ns(), *seen;

	seen = bpf_map_lookup_elem(&exit_releases, &k);
	if (seen && now - *seen < 1000000000ULL)
		return 0;
	bpf_map_update_elem(&exit_releases, &k, &now, BPF_ANY);
	return 1;
}

SEC("tp_btf/sched_process_exit")
int tp_sched_process_exit(void *ctx)
{
	// Runs on every exit: a direct BTF load and one read of the count,
	// until we know this exit frees an nsproxy.
	struct task_struct *t = bpf_get_current_task_btf();
	struct nsproxy *p = t->nsproxy;
	__u32 count;

	if (!p)
		return 0;
	count = nsproxy_count(p, VIA_BTF);
	if (count != 1) {
		if (count > MAX_EXIT_THREADS || BPF_CORE_READ(t, signal, live.counter) != 0 ||
		    holders_in_group(t, p) != count)
			return 0;
	}
	// A probe read, for a number: global functions take no typed pointers.
	if (!first_release((__u64)BPF_CORE_READ(t, nsproxy), t->tgid))
		return 0;
	return on_nsproxy_free(p, VIA_BTF);
}

// User namespaces (always) and pid namespaces (6.14+) are freed from a work
// item; the work function frees the namespace, then each ancestor whose
// last reference was the child's.
static __always_inline void user_ns_freed(struct work_struct *work)
{
	struct user_namespace *ns;

	ns = container_of(work, struct user_namespace, work);
	emit_destroy_self(NS_USER, ns_inum(&ns->ns, VIA_PROBE), HOW_FREED, ns_kernel_id(&ns->ns, VIA_PROBE));
	for (int i = 0; i < MAX_NS_LEVEL; i++) {
		ns = BPF_CORE_READ(ns, parent);
		if (!ns || ns_refs(&ns->ns, VIA_PROBE) != 1)
			break;
		emit_destroy_self(NS_USER, ns_inum(&ns->ns, VIA_PROBE), HOW_LAST_REF, ns_kernel_id(&ns->ns, VIA_PROBE));
	}
}

static __always_inline void pid_ns_freed(struct work_struct *work)
{
	struct pid_namespace *ns;

	if (!bpf_core_field_exists(struct pid_namespace, work))
		return;
	ns = container_of(work, struct pid_namespace, work);
	emit_destroy_self(NS_PID, ns_inum(&ns->ns, VIA_PROBE), HOW_FREED, ns_kernel_id(&ns->ns, VIA_PROBE));
	for (int i = 0; i < MAX_NS_LEVEL; i++) {
		ns = BPF_CORE_READ(ns, parent);
		if (!ns || ns_refs(&ns->ns, VIA_PROBE) != 1)
			break;
		emit_destroy_self(NS_PID, ns_inum(&ns->ns, VIA_PROBE), HOW_LAST_REF, ns_kernel_id(&ns->ns, VIA_PROBE));
	}
}

/* ---- what exists at start ---- */

#define NSFS_MAGIC 0x6e736673

static __always_inline __u32 ns_clone_type(struct ns_common *ns)
{
	struct proc_ns_operations___old *ops;

	if (bpf_core_field_exists(struct ns_common___new, ns_type))
		return BPF_CORE_READ((struct ns_common___new *)ns, ns_type);
	ops = (void *)BPF_CORE_READ(ns, ops);
	return BPF_CORE_READ(ops, type);
}

static __always_inline int ns_slot_of_clone_flag(__u32 flag)
{
	switch (flag) {
	case CLONE_NEWNS:
		return NS_MNT;
	case CLONE_NEWUTS:
		return NS_UTS;
	case CLONE_NEWIPC:
		return NS_IPC;
	case CLONE_NEWPID:
		return NS_PID;
	case CLONE_NEWNET:
		return NS_NET;
	case CLONE_NEWUSER:
		return NS_USER;
	case CLONE_NEWCGROUP:
		return NS_CGROUP;
	case CLONE_NEWTIME:
		return NS_TIME;
	}
	return -1;
}


// track_users remembers a user namespace and its ancestors (a child keeps
// its parent alive: nothing else may hold it).
// o is the owner that namespaces first found here get.
static __always_inline void track_users(struct user_namespace *u, struct owner *o)
{
	for (int i = 0; i < MAX_NS_LEVEL && u; i++) {
		track_ns(TRACK(NS_USER, true, o), ns_inum(&u->ns, VIA_PROBE), ns_kernel_id(&u->ns, VIA_PROBE), o->cgid, o->pid);
		u = BPF_CORE_READ(u, parent);
	}
}

// track_pids remembers a pid namespace and its ancestors.
static __always_inline void track_pids(struct pid_namespace *p, struct owner *o)
{
	for (int i = 0; i < MAX_NS_LEVEL && p; i++) {
		track_ns(TRACK(NS_PID, true, o), ns_inum(&p->ns, VIA_PROBE), ns_kernel_id(&p->ns, VIA_PROBE), o->cgid, o->pid);
		p = BPF_CORE_READ(p, parent);
	}
}

// ns_owner is the user namespace that owns ns (of type slot type).
static __always_inline struct user_namespace *ns_owner(struct ns_common *ns, int type)
{
	switch (type) {
	case NS_MNT:
		return BPF_CORE_READ(container_of(ns, struct mnt_namespace, ns), user_ns);
	case NS_UTS:
		return BPF_CORE_READ(container_of(ns, struct uts_namespace, ns), user_ns);
	case NS_IPC:
		return BPF_CORE_READ(container_of(ns, struct ipc_namespace, ns), user_ns);
	case NS_PID:
		return BPF_CORE_READ(container_of(ns, struct pid_namespace, ns), user_ns);
	case NS_NET:
		return BPF_CORE_READ(container_of(ns, struct net, ns), user_ns);
	case NS_CGROUP:
		return BPF_CORE_READ(container_of(ns, struct cgroup_namespace, ns), user_ns);
	case NS_TIME:
		return BPF_CORE_READ(container_of(ns, struct time_namespace, ns), user_ns);
	case NS_USER:
		return container_of(ns, struct user_namespace, ns);
	}
	return NULL;
}

// Run once at start, after every hook is attached: the namespaces that
// already exist are remembered (with their ns_id) like the ones created
// later, so that their teardown is reported: every task's own and their
// ancestors, and every one held open through an nsfs file (userspace opens
// every nsfs bind mount first, so those are seen as its files) with its
// owner and ancestors.
SEC("iter/task")
int common_iter_task(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct owner o = {};
	struct actx a = {};
	struct snap s = {};
	struct pid *pid;
	struct upid up = {};
	__u32 level;

	if (!task)
		return 0;
	actor_of(task, &a, cgroups_walked ? CG_LEARN_KNOWN : CG_EMIT, VIA_PROBE);
	owner_is(&o, &a);
	snap_task(task, &s);
	if ((task->flags & PF_KTHREAD) && !init_ns_inum[NS_MNT]) {
#pragma unroll
		for (int i = 0; i < NS_TYPES; i++)
			init_ns_inum[i] = s.inum[i];
	}
	track_net(s.net, s.inum[NS_NET], true);
#pragma unroll
	for (int i = 0; i < NS_SLOTS; i++)
		track_ns(TRACK(i == NS_TIME_ACTIVE ? NS_TIME : i, true, &o), s.inum[i], s.id[i], o.cgid, o.pid);
	track_users(BPF_CORE_READ(task, real_cred, user_ns), &o);
	// The pid namespace the task is in, which pid_for_children may not be,
	// and its ancestors.
	pid = BPF_CORE_READ(task, thread_pid);
	level = BPF_CORE_READ(pid, level);
	bpf_probe_read_kernel(&up, sizeof(up), (void *)&pid->numbers[0] + (level & 31) * sizeof(up));
	track_pids(up.ns, &o);
	return 0;
}

SEC("iter/task_file")
int common_iter_task_file(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct owner o = {};
	struct actx a = {};
	struct inode *inode;
	struct ns_common *ns;
	int type;

	if (!file || !task)
		return 0;
	inode = BPF_CORE_READ(file, f_inode);
	if (BPF_CORE_READ(inode, i_sb, s_magic) != NSFS_MAGIC)
		return 0;
	ns = BPF_CORE_READ(inode, i_private);
	type = ns_slot_of_clone_flag(ns_clone_type(ns));
	if (type < 0)
		return 0;
	if (type == NS_NET)
		track_net((__u64)container_of(ns, struct net, ns), ns_inum(ns, VIA_PROBE), true);
	actor_of(task, &a, cgroups_walked ? CG_LEARN_KNOWN : CG_EMIT, VIA_PROBE);
	owner_is(&o, &a);
	if (type == NS_PID)
		track_pids(container_of(ns, struct pid_namespace, ns), &o);
	else if (type != NS_USER)
		track_ns(TRACK(type, true, &o), ns_inum(ns, VIA_PROBE), ns_kernel_id(ns, VIA_PROBE), o.cgid, o.pid);
	track_users(ns_owner(ns, type), &o);
	watch_ns((__u64)ns, type);
	return 0;
}

// Every namespace type's destructor gives its inode number back here,
// whatever held the namespace last: an nsproxy, a bind mount, an open file,
// a child namespace. /proc entries use it too: live_ns tells them apart.
static __always_inline int on_free_inum(__u32 inum)
{
	struct ns_info *info = live_get(inum);

	if (info)
		emit_destroy_self(info->type, inum, HOW_FREED, 0);
	return 0;
}

SEC("fentry/proc_free_inum")
int BPF_PROG(fentry_proc_free_inum, unsigned int inum)
{
	return on_free_inum(inum);
}

SEC("kprobe/proc_free_inum")
int BPF_KPROBE(kprobe_proc_free_inum, unsigned int inum)
{
	return on_free_inum(inum);
}

// cleanup_net() tears down, in one batch, every network namespace whose
// count had dropped to zero when it took the list. A tracked one at zero
// when the work starts is in the batch; one that reached zero between that
// and the taking of the list is caught when the work ends (its memory is
// freed then, but slab memory stays readable and keeps the zero unless
// reused at once).
static long sweep_net(struct bpf_map *map, __u64 *key, __u32 *inum, void *ctx)
{
	struct net *net = (struct net *)*key;

	if (ns_refs(&net->ns, VIA_PROBE) == 0) {
		emit_destroy_self(NS_NET, *inum, HOW_FREED, 0);
		bpf_map_delete_elem(map, key);
	}
	return 0;
}

// Before 6.14 a pid namespace is freed from this RCU callback, one call per
// namespace (ancestors freed with it get their own). With proc_free_inum
// hooked it is a backstop: proc_free_inum runs for pid namespaces from the
// RCU callback that frees their last struct pid, in softirq, where a kprobe
// program can be skipped (one of ours was interrupted on that CPU); the
// destroy is then reported here, if live_ns still has it.
static __always_inline int pid_ns_rcu_freed(struct callback_head *rcu)
{
	struct pid_namespace *ns = container_of(rcu, struct pid_namespace, rcu);
	__u32 inum = ns_inum(&ns->ns, VIA_PROBE);

	if (destroy_at_free_inum && !live_get(inum))
		return 0;
	emit_destroy_self(NS_PID, inum, HOW_FREED, 0);
	return 0;
}

SEC("fentry/delayed_free_pidns")
int BPF_PROG(fentry_delayed_free_pidns, struct callback_head *rcu)
{
	return pid_ns_rcu_freed(rcu);
}

SEC("kprobe/delayed_free_pidns")
int BPF_KPROBE(kprobe_delayed_free_pidns, struct callback_head *rcu)
{
	return pid_ns_rcu_freed(rcu);
}

SEC("tp_btf/workqueue_execute_start")
int BPF_PROG(common_workqueue_execute_start, struct work_struct *work)
{
	// Runs for every work item: one load and three compares.
	__u64 fn = (__u64)work->func;

	if (fn == free_user_ns_fn)
		user_ns_freed(work);
	else if (fn == destroy_pidns_fn)
		pid_ns_freed(work);
	else if (fn == cleanup_net_fn)
		bpf_for_each_map_elem(&live_nets, sweep_net, NULL, 0);
	return 0;
}

SEC("tp_btf/workqueue_execute_end")
int BPF_PROG(common_workqueue_execute_end, struct work_struct *work)
{
	// Runs for every work item: one load and one compare. The work item of
	// cleanup_net is static, so it is still there to read.
	if ((__u64)work->func == cleanup_net_fn)
		bpf_for_each_map_elem(&live_nets, sweep_net, NULL, 0);
	return 0;
}

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

static __always_inline bool watched_gone(struct ns_common *ns, __u32 inum, __u64 id)
{
	bool gone = ns_inum(ns, VIA_PROBE) != inum || ns_refs(ns, VIA_PROBE) == 0;

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
	__u32 level;

	if (!watched_gone(ns, *inum, w->id))
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
	// CPU may be reporting it as last_ref right now).
	if (unwatch(*inum))
		emit_destroy_self(w->type, *inum, HOW_POLLED, w->id);
	return 0;
}

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
