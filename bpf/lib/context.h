/* SPDX-License-Identifier: GPL-2.0 */
// Whose event it is: the acting task's cgroup (path, id, the container id
// in it) and executable, captured at event time because the task is often
// gone before userspace could look (runc's stage-1 child lives a few ms).
//
// Long strings travel once: the first event that refers to a cgroup or an
// executable is preceded by a string record (struct str_rec) with its path,
// keyed by the cgroup id or an exe id; events carry only the keys. Userspace
// keeps the strings by key.
#ifndef NSTRACE_CONTEXT_H
#define NSTRACE_CONTEXT_H

#define STR_LEN 1024
#define EXE_LEN 256
// Deeper cgroups keep their innermost components: the container is there.
#define CG_MAX_DEPTH 16
#define CONTAINER_ID_LEN 64

enum rec_kind {
	REC_CGROUP = 16, // str is a cgroup path, key its cgroup id
	REC_EXE,         // str is an executable's path, key its exe id
	REC_WATCH,       // no string: a namespace is watched (struct bare_rec)
	REC_NS,          // namespace events (struct ns_rec and its items)
	REC_WAKE,        // nothing: wakes the reader (struct bare_rec)
};

struct str_rec {
	__u64 ts_ns;
	__u32 lost;
	__u8 kind;
	__u8 truncated;
	__u16 len;
	__u64 key;
	char str[STR_LEN];
};

// Puts struct str_rec in BTF, so bpf2go generates its Go type.
const struct str_rec *unused_str_rec __attribute__((unused));

// What nstrace learnt of a cgroup, the first time a task in it did
// something: the container id its path carries (has_id), whether it is
// under a --cgroup path (cg_match), whether userspace has its path (sent).
// Key: the cgroup id (kernfs node id, the inode number of its directory).
struct cg_info {
	char id[CONTAINER_ID_LEN];
	__u8 has_id;
	__u8 cg_match;
	__u8 sent;
	__u8 _pad[5];
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct cg_info);
} cgroups SEC(".maps");

// Executables by exe id, learnt at exec (and, for processes older than
// nstrace, filled in by userspace at start).
struct exe_info {
	__u8 sent;
	__u8 truncated;
	__u16 len;
	__u32 _pad;
	char path[EXE_LEN];
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct exe_info);
} exes SEC(".maps");

// The exe id of each process, by tgid: set at exec, inherited at fork.
// Read at exit too, when the task's mm (and so its exe_file) is gone.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, __u64);
} procs SEC(".maps");

// Per-CPU room to build a path in: too big for the BPF stack. Two slots:
// a hook in an interrupt (a pid namespace freed from an RCU callback) can
// learn a cgroup while the task it interrupted is learning one.
struct scratch {
	char buf[STR_LEN];
	__u64 names[CG_MAX_DEPTH]; // const char *
	__u16 off[CG_MAX_DEPTH];
	__u16 len[CG_MAX_DEPTH];
	__u32 depth; // cg_path's, forgotten by the verifier (see there)
	__u64 id_words[CONTAINER_ID_LEN / 8]; // component_id's candidate
	struct exe_info exe;
	struct cg_info cg;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_buf SEC(".maps");

// How many cg_learn calls are running on this CPU: the slot the next takes.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} scratch_depth SEC(".maps");

// Exe ids below this are userspace's (processes found at start).
__u64 next_exe_id = 1ULL << 32;

// The cgroup hierarchy events are attributed in: a cgroup v1 controller's
// subsystem id, or -1 for the unified (v2) hierarchy. Set by userspace.
volatile const int cgroup_subsys = -1;
// Userspace reads the paths of the cgroups that exist at start itself.
volatile const bool cgroups_walked = false;

// Since 6.15 kernfs_node.parent is named __parent.
struct kernfs_node___old {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));
struct kernfs_node___new {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(struct kernfs_node___new, __parent))
		return BPF_CORE_READ((struct kernfs_node___new *)kn, __parent);
	return BPF_CORE_READ((struct kernfs_node___old *)kn, parent);
}

// btf: as for RD.
static __always_inline struct kernfs_node *task_cgroup_kn(struct task_struct *t, bool btf)
{
	struct css_set *cs = RD(btf, t, cgroups);
	struct cgroup_subsys_state *css = NULL;
	int ss = cgroup_subsys;

	if (ss < 0)
		return RD2(btf, cs, dfl_cgrp, kn);
	if (ss >= CGROUP_SUBSYS_COUNT)
		return NULL;
	if (btf)
		return cs->subsys[ss]->cgroup->kn;
	bpf_core_read(&css, sizeof(css), &cs->subsys[ss]);
	return BPF_CORE_READ(css, cgroup, kn);
}


static __always_inline struct scratch *get_scratch(__u32 slot)
{
	return bpf_map_lookup_elem(&scratch_buf, &slot);
}

// all_hex tells whether the 8 characters in w are all lowercase hex digits,
// all at once: a byte below 0x80 is >= lo when (b | 0x80) - lo keeps the high
// bit, and <= hi when (hi | 0x80) - b does (neither borrows from the next
// byte). Eight of these check an id in a hundred instructions, where a
// test per character took the verifier 1,300 in every program.
#define BYTES(b) (0x0101010101010101ULL * (b))
#define HIGH BYTES(0x80)
#define AT_LEAST(w, lo) (((w) | HIGH) - BYTES(lo))
#define AT_MOST(w, hi) (BYTES((hi) | 0x80) - (w))
static __always_inline bool all_hex(__u64 w)
{
	__u64 digit = AT_LEAST(w, '0') & AT_MOST(w, '9');
	__u64 af = AT_LEAST(w, 'a') & AT_MOST(w, 'f');

	return !(w & HIGH) && ((digit | af) & HIGH) == HIGH;
}

// starts_with: s begins with the first l bytes of p (at most max).
#define starts_with(s, p, l, max)                                            \
	({                                                                   \
		bool __same = true;                                          \
		for (int __j = 0; __j < (max) && __j < (l); __j++) {         \
			if ((s)[__j] != (p)[__j]) {                          \
				__same = false;                              \
				break;                                       \
			}                                                    \
		}                                                            \
		__same;                                                      \
	})

// The container id a cgroup path component carries: it ends (before one
// ".scope") with 64 lowercase hex digits, preceded by its start, '-' or ':',
// and is no runtime monitor (crio-conmon-, libpod-conmon-). Package
// container applies the same rule in userspace. Returns the offset of the
// id in the scratch buffer, or -1. A global function: the verifier checks
// its loop once, not once per component of every caller.
__noinline int component_id(__u32 slot, __u32 off, __u32 len)
{
	struct scratch *s = get_scratch(slot);
	__u32 end, start;
	char c;

	if (!s)
		return -1;
	off &= STR_LEN / 2 - 1;
	len &= STR_LEN / 2 - 1;
	end = off + len;

	if (len >= 6 && s->buf[(end - 6) & (STR_LEN - 1)] == '.' &&
	    s->buf[(end - 5) & (STR_LEN - 1)] == 's' && s->buf[(end - 4) & (STR_LEN - 1)] == 'c' &&
	    s->buf[(end - 3) & (STR_LEN - 1)] == 'o' && s->buf[(end - 2) & (STR_LEN - 1)] == 'p' &&
	    s->buf[(end - 1) & (STR_LEN - 1)] == 'e')
		end -= 6;
	if (end < off + CONTAINER_ID_LEN)
		return -1;
	start = end - CONTAINER_ID_LEN;
	if (start > off) {
		c = s->buf[(start - 1) & (STR_LEN - 1)];
		if (c != '-' && c != ':')
			return -1;
	}
	// Copied to where whole words can be loaded (start is any offset).
	if (bpf_probe_read_kernel(s->id_words, sizeof(s->id_words), &s->buf[start & (STR_LEN - 1)]))
		return -1;
	for (int j = 0; j < CONTAINER_ID_LEN / 8; j++)
		if (!all_hex(s->id_words[j]))
			return -1;
	if ((len >= 12 && starts_with(&s->buf[off], "crio-conmon-", 12, 12)) ||
	    (len >= 14 && starts_with(&s->buf[off], "libpod-conmon-", 14, 14)))
		return -1;
	return start;
}

// Who acts, worked out once per hook and handed to the emitters (global
// functions: it holds no pointers the verifier would have to follow).
// What announce sent (or found sent) for an actor.
#define ANN_ALL 1 // its cgroup and executable: nothing more to do
#define ANN_EXE 2 // its executable

struct actx {
	__u64 ts; // of its events, once one is reserved
	__u64 cgid;
	__u64 kn; // the cgroup's kernfs node while its path has yet to go out
	__u64 exe_id;
	__u32 pid, tid, ppid, uid;
	char comm[16];
	char parent_comm[16];
	// What it is doing, for its creates, joins and failures: the syscall
	// (enum syscall_id) and the flags it passed.
	__u64 flags;
	__u32 stack; // the hook's kernel stack (stack_of)
	__u8 sc;
	bool pass;
	__u8 announced; // ANN_*: what went out before an earlier event
	__u8 batch;     // its record's staging slot + 1, once it has an event
};

#include "filter.h"

// cgroup_match runs cgroup_filter_match on the path in the scratch buffer,
// in a global function of its own for the same reason as component_id.
__noinline int cgroup_match(__u32 slot, __u32 len)
{
	struct scratch *s = get_scratch(slot);

	if (!s)
		return 0;
	return cgroup_filter_match(s->buf, len);
}

enum cg_mode {
	CG_LEARN,       // verdicts only; the path goes out with a later event
	CG_EMIT,        // and send the path to userspace
	CG_LEARN_KNOWN, // verdicts only; userspace found the path itself (start-up)
	CG_CACHED,      // only what is known already (a destroy: the owner's counts)
};

// cg_component writes "/" and component i (its name in s->names[i]) at
// off in slot's buffer; returns the offset after it, or -1 when full. A
// global function: otherwise the verifier follows every length a read can
// return into the next component, and older ones (6.1) give up.
__noinline int cg_component(__u32 slot, __u32 i, __u32 off)
{
	struct scratch *s = get_scratch(slot);
	__u32 at;
	long n;

	if (!s || off > STR_LEN / 2 - 2)
		return -1;
	i &= CG_MAX_DEPTH - 1;
	// Keep clang from dropping the masks as redundant: the verifier must
	// see the bound on the pointers it gets.
	barrier_var(off);
	off &= STR_LEN / 2 - 1;
	s->buf[off] = '/';
	off++;
	barrier_var(off);
	at = off & (STR_LEN / 2 - 1);
	n = bpf_probe_read_kernel_str(&s->buf[at], STR_LEN / 2, (const char *)s->names[i]);
	if (n < 1)
		n = 1;
	s->off[i] = at;
	s->len[i] = n - 1;
	return at + n - 1;
}

// Fills the path of cgroup kn into s->buf, root first, with the offset and
// length of each component (innermost first), and returns how many
// components it has. A path too long or too deep is cut (*truncated): too
// deep loses the outermost components, too long the innermost (len 0).
static __always_inline int cg_path(struct scratch *s, __u32 slot, struct kernfs_node *kn, __u32 *plen,
				   __u8 *truncated)
{
	int depth = 0, i, next;
	__u32 off = 0;

	for (i = 0; i < CG_MAX_DEPTH; i++) {
		struct kernfs_node *p = kn_parent(kn);

		s->len[i] = 0;
		if (!p)
			break;
		s->names[i] = (__u64)BPF_CORE_READ(kn, name);
		depth++;
		kn = p;
	}
	*truncated = i == CG_MAX_DEPTH && kn_parent(kn);
	// The depth goes through memory so that the verifier takes it for one
	// unknown number: knowing it, it followed what comes next once for
	// each depth the walk can stop at, 40% of the work of every program
	// that learns a cgroup.
	s->depth = depth;
	depth = *(volatile __u32 *)&s->depth;
	if (depth > CG_MAX_DEPTH)
		depth = CG_MAX_DEPTH;
	for (i = CG_MAX_DEPTH - 1; i >= 0; i--) {
		if (i >= depth)
			continue;
		next = cg_component(slot, i, off);
		if (next < 0) {
			*truncated = 1;
			break;
		}
		off = next & (STR_LEN - 1);
	}
	if (!off)
		s->buf[off++] = '/';
	s->buf[off & (STR_LEN - 1)] = 0;
	*plen = off;
	return depth;
}

static __always_inline bool emit_str(__u8 kind, __u64 key, const char *src, __u32 len, __u8 truncated)
{
	struct str_rec *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

	// No room: not an event lost; the string goes with the next event
	// that refers to it (the one that follows lacks it).
	if (!r)
		return false;
	r->ts_ns = bpf_ktime_get_boot_ns();
	r->lost = take_lost();
	r->kind = kind;
	r->truncated = truncated;
	r->len = len;
	r->key = key;
	bpf_probe_read_kernel(r->str, sizeof(r->str), src);
	submit(r);
	return true;
}

// learn_into does cg_learn's work in scratch slot s.
static __always_inline void learn_into(struct scratch *s, __u32 slot, __u64 cgid, __u64 knp, __u32 mode)
{
	struct cg_info *info = &s->cg;
	__u8 truncated = 0;
	__u32 len = 0;
	int depth;

	__builtin_memset(info, 0, sizeof(*info));
	depth = cg_path(s, slot, (struct kernfs_node *)knp, &len, &truncated);
	for (int i = 0; i < CG_MAX_DEPTH && i < depth; i++) {
		int start = component_id(slot, s->off[i], s->len[i]);

		if (start >= 0) {
			bpf_probe_read_kernel(info->id, sizeof(info->id), &s->buf[start & (STR_LEN - 1)]);
			info->has_id = 1;
			break;
		}
	}
	info->cg_match = cgroup_match(slot, len);
	if (mode == CG_EMIT)
		info->sent = emit_str(REC_CGROUP, cgid, s->buf, len, truncated);
	else
		info->sent = mode == CG_LEARN_KNOWN;
	bpf_map_update_elem(&cgroups, &cgid, info, BPF_ANY);
}

// cg_learn reads cgroup kn's path once, decides what the filters say of it
// and remembers that under its id; with CG_EMIT it sends the path too.
// A global function: the verifier checks its loops once.
__noinline int cg_learn(__u64 cgid, __u64 knp, __u32 mode)
{
	__u32 zero = 0, slot, *nest = bpf_map_lookup_elem(&scratch_depth, &zero);
	struct scratch *s;

	if (!nest || !knp || *nest > 1)
		return 0; // nested deeper still: a later event learns it
	slot = (*nest)++;
	s = get_scratch(slot);
	if (s)
		learn_into(s, slot, cgid, knp, mode);
	(*nest)--;
	return 0;
}

// Who acts: the task's cgroup and what nstrace knows of it, its exe id,
// and whether it passes the filters.

// actor_memo_of works out who task t (the current task, or an iterator's)
// is. btf (see RD): plain loads, for the hooks that run per operation, or
// probe reads, for the rest: cheaper to verify, which keeps start-up short.
// m, if not NULL, is t's own task_state: what the hash lookups found the
// last time, for as long as it still holds (the same cgroup; no exec since).
static __always_inline void actor_memo_of(struct task_struct *t, struct actx *a, __u32 mode, bool btf,
					  struct task_state *m)
{
	struct kernfs_node *kn;
	struct cg_info *cg;
	__u32 tgid;
	__u64 *exe;

	if (btf)
		t = task_ro(t);
	kn = task_cgroup_kn(t, btf);
	tgid = RD(btf, t, tgid);

	a->cgid = RD(btf, kn, id);
	// Cgroup ids are never reused: a path userspace has stays had.
	if (!m || !a->cgid || m->cg_sent != a->cgid) {
		cg = bpf_map_lookup_elem(&cgroups, &a->cgid);
		// With CG_CACHED a->kn stays 0: nor does announce learn it later.
		if (mode != CG_CACHED && kn && (!cg || !cg->sent)) {
			// A number for the global functions that learn it (they
			// take numbers, not typed pointers).
			a->kn = btf ? (__u64)task_cgroup_kn(t, VIA_PROBE) : (__u64)kn;
			if (!cg) {
				cg_learn(a->cgid, a->kn, mode);
				cg = bpf_map_lookup_elem(&cgroups, &a->cgid);
			}
			if (!cg || cg->sent)
				a->kn = 0; // could not learn it, or userspace has it
		}
		if (m && cg && cg->sent)
			m->cg_sent = a->cgid;
	}
	if (m && m->exe_id) {
		a->exe_id = m->exe_id;
		a->announced = ANN_EXE;
	} else {
		exe = bpf_map_lookup_elem(&procs, &tgid);
		a->exe_id = exe ? *exe : 0;
	}
	a->pid = tgid;
	a->tid = RD(btf, t, pid);
	a->ppid = RD2(btf, t, real_parent, tgid);
	a->uid = RD2(btf, t, real_cred, uid.val);
	if (btf) {
		// Plain loads (the kernel keeps comm NUL-terminated; what
		// follows the NUL userspace ignores).
		__builtin_memcpy(a->comm, t->comm, sizeof(a->comm));
		__builtin_memcpy(a->parent_comm, t->real_parent->comm, sizeof(a->parent_comm));
	} else {
#ifdef NSTRACE_COMPAT
		// Where exec copies the name with strlcpy (5.10 does), the
		// bytes after comm's NUL are an older name's, and the --comm
		// filter compares all 16.
		__builtin_memset(a->comm, 0, sizeof(a->comm));
		bpf_probe_read_kernel_str(a->comm, sizeof(a->comm), t->comm);
#else
		bpf_probe_read_kernel(a->comm, sizeof(a->comm), t->comm);
#endif
		bpf_probe_read_kernel_str(a->parent_comm, sizeof(a->parent_comm), RD(btf, t, real_parent)->comm);
	}
	a->pass = actor_passes(a, RD2(btf, t, group_leader, start_time));
}

static __always_inline void actor_of(struct task_struct *t, struct actx *a, __u32 mode, bool btf)
{
	actor_memo_of(t, a, mode, btf, NULL);
}

// actor_memo_keep remembers in m what a's hook learnt that actor_memo_of
// can use the next time: its executable, once its path went out.
static __always_inline void actor_memo_keep(struct task_state *m, struct actx *a)
{
	if (m && (a->announced & ANN_EXE))
		m->exe_id = a->exe_id;
}

// announce sends, before an event about to go out, the strings it refers
// to that userspace does not have yet.
static __always_inline void announce(struct actx *a, bool with_cgroup)
{
	// Keys on the stack: older verifiers take no other memory as a key
	// (a is often a global function's argument).
	__u64 cgid = a->cgid, exe_id = a->exe_id;
	struct exe_info *x;
	struct cg_info *cg;

	if (a->announced & ANN_ALL)
		return;
	if (with_cgroup) {
		a->announced |= ANN_ALL;
		if (a->kn) {
			cg = bpf_map_lookup_elem(&cgroups, &cgid);
			if (cg && !cg->sent)
				cg_learn(cgid, a->kn, CG_EMIT);
			a->kn = 0;
		}
	}
	if (!exe_id || (a->announced & ANN_EXE))
		return;
	x = bpf_map_lookup_elem(&exes, &exe_id);
	if (!x) {
		a->exe_id = 0;
		return;
	}
	if (!x->sent)
		x->sent = emit_str(REC_EXE, exe_id, x->path, x->len, x->truncated);
	if (x->sent)
		a->announced |= ANN_EXE;
}

#endif
