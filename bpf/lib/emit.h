/* SPDX-License-Identifier: GPL-2.0 */
// Turning what a hook saw into events: the staging of one record per
// hook, and the emitters that decide, with the filters, which events it
// holds. Hooks only say what happened; whether and how it is reported is
// decided here, the same for every backend.
#ifndef NSTRACE_EMIT_H
#define NSTRACE_EMIT_H

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

	if (!b || test_and_set(&b->busy))
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
	b->hdr.stack = a->stack;
	b->hdr._pad2 = 0;
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
// its record; the strings the record refers to go out first. A create, a
// join or a fail says by which syscall and flags (a->sc, a->flags: the
// same for all of one hook's).
static __always_inline struct ns_item *item_new(__u8 kind, __u8 ns_type, struct actx *a)
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
	if (kind == EV_CREATE || kind == EV_JOIN || kind == EV_FAIL) {
		b->hdr.syscall = a->sc;
		b->hdr.flags = a->flags;
	}
	it = &b->items[n];
	__builtin_memset(it, 0, sizeof(*it));
	it->kind = kind;
	it->ns_type = ns_type;
	return it;
}

// item_of is item_new for an event about namespace inum (id) of owner o.
static __always_inline struct ns_item *item_of(__u8 kind, __u8 ns_type, struct actx *a, struct owner *o,
					       __u64 id, __u32 inum)
{
	struct ns_item *e = item_new(kind, ns_type, a);

	if (!e)
		return NULL;
	e->owner_cgroup_id = o->cgid;
	e->owner_pid = o->pid;
	e->owner_known = o->known;
	e->ns_id = id;
	e->inum = inum;
	return e;
}

// item_usage puts a per-user count and its limit into e.
static __always_inline void item_usage(struct ns_item *e, struct usage *u)
{
	e->user_count = u->count;
	e->user_limit = u->limit;
	e->user_ns = u->user_ns;
	e->user_uid = u->uid;
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
		else if (reader_asleep_committed())
			send_bare(REC_WAKE);
	}
	b->busy = 0;
}

// emit_ns and emit_destroy are global functions: the verifier checks each
// once, instead of once per path through every caller. BPF functions take
// at most five arguments: kind and type travel packed in one, the new and
// old inode numbers in another. The caller works out who acts (a,
// actor_of, with the syscall and flags) once for all the events of one
// hook; a create's usage is its creator's count and limit.
#ifndef NSTRACE_COMPAT
__noinline int emit_destroy(__u32 type, __u32 inum, __u32 how, __u64 kid, struct actx *a);
#else
// Global functions take numbers only before 5.12 (compat.h): the caller's
// actx (and a create's usage) travel in a per-CPU frame, one per function,
// copied in before the call and back after it (the callee adds to a). None
// of them calls itself; emit_ns calls emit_destroy, on the next frame.
struct frame {
	struct actx a;
	struct usage u;
};
enum { FRAME_NS, FRAME_DESTROY, FRAME_FAIL, FRAMES };
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FRAMES);
	__type(key, __u32);
	__type(value, struct frame);
} frames SEC(".maps");

static __always_inline struct frame *frame_of(__u32 i)
{
	return bpf_map_lookup_elem(&frames, &i);
}

// The caller's side of a call through a frame: a is copied in and back,
// u only in.
#define FRAME_CALL(fr, call, act, use)                    \
	({                                                \
		struct frame *_f = frame_of(fr);          \
		int _r = 0;                               \
		if (_f && (act)) {                        \
			_f->a = *(act);                   \
			if (use)                          \
				_f->u = *(use);           \
			_r = call;                        \
			*(act) = _f->a;                   \
		}                                         \
		_r;                                       \
	})

__noinline int emit_destroy_g(__u32 type, __u32 inum, __u32 how, __u64 kid);
#define emit_destroy(type, inum, how, kid, a) \
	FRAME_CALL(FRAME_DESTROY, emit_destroy_g(type, inum, how, kid), a, (struct usage *)0)
#endif

#define NS_WHAT(kind, type) ((kind) | (type) << 8)
#define NS_INUMS(inum, old) ((__u64)(old) << 32 | (inum))

static __always_inline int emit_ns_body(__u32 what, __u64 inums, __u64 kid, struct usage *u, struct actx *a)
{
	__u32 kind = what & 0xff, type = (what >> 8) & 0xff;
	__u32 inum = (__u32)inums, old_inum = inums >> 32;
	struct owner o = {};
	struct ns_item *e;
	__u64 id;

	if (!a)
		return 0;
	// The kernel gives a live namespace's inum to no other: whatever had
	// it before is gone, its end unseen (a watched one between two polls,
	// or a teardown no hook shows). Its destroy first, as its own. Unless
	// it is this one: the same kernel id, or (without those) learnt from
	// a join that came before its create was reported.
	if (kind == EV_CREATE) {
		struct ns_info *old = live_get(inum);

		if (old && (kid ? old->id != kid : !old->joined)) {
			// A watch on the inum is the dead one's, whatever its
			// entry says: the poll must not find it gone later and
			// take it for this one. Whoever ends a watch reports the
			// destroy: the poll on another CPU may have found it
			// gone first (and reports it under the id it watched).
			bool ended = watch_survivors && unwatch(inum);

			if (ended || !old->watched)
				emit_destroy(old->type, inum, HOW_REUSED, 0, a);
		}
	}
	owner_is(&o, a);
	// A create replaces whatever had the inum before (see above); a join
	// only fills in a namespace nstrace did not know.
	id = track_ns(TRACK(type, kind != EV_CREATE, &o) | (kind == EV_JOIN ? TRACK_JOIN : 0), inum, kid, o.cgid, o.pid);
	if (kind != EV_CREATE)
		owner_of(type, inum, &o); // a join: whoever it was first seen with
	if (!event_wanted(kind, type) || !(a->pass || o.pass))
		return 0;
	e = item_of(kind, type, a, &o, id & ~TRACK_FAILED, inum);
	if (!e)
		return 0;
	e->partial = !!(id & TRACK_FAILED);
	e->old_inum = old_inum;
	e->for_children = for_children(type, a->sc);
	if (u && u->user_ns)
		item_usage(e, u);
	return 0;
}

#ifndef NSTRACE_COMPAT
__noinline int emit_ns(__u32 what, __u64 inums, __u64 kid, struct usage *u, struct actx *a)
{
	return emit_ns_body(what, inums, kid, u, a);
}
#else
__noinline int emit_ns_g(__u32 what, __u64 inums, __u64 kid, __u32 has_u)
{
	struct frame *f = frame_of(FRAME_NS);

	if (!f)
		return 0;
	// Without a usage the frame's is an earlier call's: a usage with no
	// user namespace is none. (A pointer chosen by has_u, the compiler
	// tests through has_u and loads through a copy the verifier saw NULL.)
	if (!has_u)
		f->u.user_ns = 0;
	return emit_ns_body(what, inums, kid, &f->u, &f->a);
}
#define emit_ns(what, inums, kid, u, a) FRAME_CALL(FRAME_NS, emit_ns_g(what, inums, kid, (u) != NULL), a, u)
#endif

// One event per namespace type whose inum differs between two snapshots.
// new's namespaces are np's and un (the user namespace, with_user), read
// through BTF or not (btf, a literal) for the creates' usage.
static __always_inline void emit_diff(struct snap *old, struct snap *new, __u8 kind, bool with_user,
				      struct actx *a, struct nsproxy *np, struct user_namespace *un, bool btf)
{
#pragma unroll
	for (int i = 0; i < NS_TYPES; i++) {
		struct usage u;

		if (i == NS_USER && !with_user)
			continue;
		if (!new->inum[i] || new->inum[i] == old->inum[i])
			continue;
		// Zeroed only where it is used: 8 unrolled zeroings were a
		// thirtieth of sys_exit.
		if (kind == EV_CREATE) {
			__builtin_memset(&u, 0, sizeof(u));
			usage_in(np, un, i, btf, &u);
		}
		emit_ns(NS_WHAT(kind, i), NS_INUMS(new->inum[i], old->inum[i]), new->id[i],
			kind == EV_CREATE ? &u : NULL, a);
		if (i == NS_NET && kind == EV_CREATE)
			track_net(new->net, new->inum[i], false);
	}
}

// A namespace operation that failed with errno err (a->sc and a->flags say
// which). For ENOSPC the kernel's state says why, read from the caller's
// credentials and namespaces, which a failed call left as they were:
// nesting as deep as it goes, or a per-user count at its limit. (Kernels
// before 4.9 said EUSERS for the user namespaces' depth.) It passes the
// type filter if it asked for one of the types.
static __always_inline int emit_fail_body(__u32 err, struct actx *a)
{
	struct task_struct *t = current_task();
	struct usage u = {};
	struct ns_item *e;
	__u32 types, level;
	int type = -1;
	__u8 reason = 0;

	if (!a || !a->pass || !event_wanted(EV_FAIL, -1))
		return 0;
	types = types_of(a->flags);
	if (filter_types && types && !(filter_types & types))
		return 0;
	if (err == ENOSPC || err == EUSERS) {
		struct user_namespace *uns = BPF_CORE_READ(t, cred, user_ns);
		struct pid_namespace *pns = BPF_CORE_READ(t, nsproxy, pid_ns_for_children);

		// The new namespace's depth against the deepest allowed:
		// create_user_ns() refuses a parent deeper than 32,
		// create_pid_namespace() a child deeper than 32.
		level = BPF_CORE_READ(uns, level) + 1;
		if ((types & (1 << NS_USER)) && level > MAX_USER_DEPTH) {
			reason = FAIL_DEPTH;
			type = NS_USER;
			u.limit = MAX_USER_DEPTH;
		} else {
			level = BPF_CORE_READ(pns, level) + 1;
			if ((types & (1 << NS_PID)) && level > MAX_PID_DEPTH) {
				reason = FAIL_DEPTH;
				type = NS_PID;
				u.limit = MAX_PID_DEPTH;
			}
		}
		if (reason) {
			u.count = level;
			u.user_ns = BPF_CORE_READ(uns, ns.inum);
		} else {
			type = full_count(t, types, &u);
			if (type >= 0)
				reason = FAIL_LIMIT;
		}
	}
	e = item_new(EV_FAIL, type < 0 ? NS_NONE : type, a);
	if (!e)
		return 0;
	e->error = err;
	e->reason = reason;
	if (reason)
		item_usage(e, &u);
	return 0;
}

#ifndef NSTRACE_COMPAT
__noinline int emit_fail(__u32 err, struct actx *a)
{
	return emit_fail_body(err, a);
}
#else
__noinline int emit_fail_g(__u32 err)
{
	struct frame *f = frame_of(FRAME_FAIL);

	return f ? emit_fail_body(err, &f->a) : 0;
}
#define emit_fail(err, a) FRAME_CALL(FRAME_FAIL, emit_fail_g(err), a, (struct usage *)0)
#endif

// The destroy takes the namespace's entry out of live_ns, and its id with
// it; kid is the kernel's id, for a namespace nstrace did not know. a is
// who released the last reference (emit_destroy_self works it out). With
// UNLESS_WATCHED in how, a namespace under watch is left to the poll. With
// EXPECT_ID, kid is the ns_id of the namespace meant: an entry with another
// is a newer namespace's (a create took the inum meanwhile), left as it is;
// OWNER_PASSED then says whether the owner passed the filters.
#define UNLESS_WATCHED 0x100
#define EXPECT_ID 0x200
#define OWNER_PASSED 0x400

static __always_inline int emit_destroy_body(__u32 type, __u32 inum, __u32 how, __u64 kid, struct actx *a)
{
	struct ns_info *info = live_get(inum);
	struct owner o = {};
	bool watched_too = true, ours;
	struct ns_item *e;

	if (!a)
		return 0;
	ours = info && info->type == type && !((how & EXPECT_ID) && info->id != kid);
	if (ours && info->watched && (how & UNLESS_WATCHED))
		return 0;
	// A reuse reports the dead one's entry: gone by now, another CPU
	// reported it between the caller's look and this one.
	if ((how & 0xff) == HOW_REUSED && !ours)
		return 0;
	if (ours) {
		kid = info->id;
		watched_too = info->watched;
		owner_from(info, &o);
		live_del(inum, info);
	} else if (how & EXPECT_ID) {
		// The poll ended its own watch; one on the inum now is the
		// newer namespace's. With no entry at all, whoever deleted it
		// reported it (o.pass stays 0).
		watched_too = false;
		o.pass = info && (how & OWNER_PASSED);
	}
	how &= 0xff;
	if (watch_survivors && watched_too)
		unwatch(inum);
	if (!event_wanted(EV_DESTROY, type) || !(o.pass || a->pass))
		return 0;
	e = item_of(EV_DESTROY, type, a, &o, kid, inum);
	if (!e)
		return 0;
	e->how = how;
	e->partial = !o.known && tracking_partial();
	return 0;
}

#ifndef NSTRACE_COMPAT
__noinline int emit_destroy(__u32 type, __u32 inum, __u32 how, __u64 kid, struct actx *a)
{
	return emit_destroy_body(type, inum, how, kid, a);
}
#else
__noinline int emit_destroy_g(__u32 type, __u32 inum, __u32 how, __u64 kid)
{
	struct frame *f = frame_of(FRAME_DESTROY);

	return f ? emit_destroy_body(type, inum, how, kid, &f->a) : 0;
}
#endif

// emit_destroy_self reports a destroy in whatever context the free runs
// (often a kworker's): its cgroup is not learnt, the destroy's context is
// the owner's anyway. No task did a polled one: the poll runs in nstrace's
// own context. A separate global function, so that its actor is not on
// the stack of the releases that call emit_destroy (6.1's 512 bytes).
__noinline int emit_destroy_self(__u32 type, __u32 inum, __u32 how, __u64 kid, __u32 stack)
{
	struct actx a = { .stack = stack };

	if ((how & 0xff) != HOW_POLLED && event_wanted(EV_DESTROY, type))
		actor_of(current_task(), &a, CG_CACHED, VIA_PROBE);
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
		// Where proc_free_inum reports destroys, this reports only those
		// of namespaces live_ns had no room for, whose type it cannot
		// tell by their inum (partial).
		if (destroy_at_free_inum && live_get(s->inum[i]))
			continue;
		if (i == NS_PID && pid_ns_free_hooked && !destroy_at_free_inum)
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
			if (!after && watch_survivors) {
				watch_slot(i);
			} else if (i == NS_NET && watch_survivors) {
				// A network namespace's pointer is in the
				// snapshot: where no cleanup_net sweep follows
				// it (compat.h), the poll does. Memory with
				// another number by now was freed meanwhile.
				struct ns_common *ns = &((struct net *)s->net)->ns;

				if (ns_inum(ns, VIA_PROBE) == s->inum[i])
					watch_ns((__u64)ns, NS_NET);
				else
					emit_destroy(NS_NET, s->inum[i], HOW_POLLED, s->id[i], a);
			}
			continue;
		}
		// unshare/setns: the put happened before sys_exit, so a watched
		// namespace may have been polled gone already; the poll reports it.
		emit_destroy(i == NS_TIME_ACTIVE ? NS_TIME : i, s->inum[i],
			     HOW_LAST_REF | (after ? UNLESS_WATCHED : 0), s->id[i], a);
	}
}

// a is the releasing task, if the caller worked it out already (and then
// sends the record); else the release is a record of its own, with the
// kernel stack stack.
static __always_inline void emit_release(struct snap *s, struct snap *after, struct actx *a, __u32 stack)
{
	struct actx own = { .stack = stack };
	struct release_item *e = NULL;
	bool mine = !a;

	// The exit path: nothing to learn about the task if the event is
	// filtered out anyway.
	if (mine) {
		actor_of(current_task(), &own,
			 event_wanted(EV_NSPROXY_FREE, -1) ? CG_LEARN : CG_CACHED, VIA_BTF);
		a = &own;
	}
	if (event_wanted(EV_NSPROXY_FREE, -1) && release_wanted(s, a))
		e = (struct release_item *)item_new(EV_NSPROXY_FREE, 0, a);
	if (e) {
#pragma unroll
		for (int i = 0; i < NS_SLOTS; i++)
			e->inums[i] = s->inum[i];
		e->inums[NS_USER] = 0;
	}
	if (!destroy_at_free_inum || tracking_partial())
		release_destroys(s, after, a);
	if (mine)
		flush(a);
}

#endif
