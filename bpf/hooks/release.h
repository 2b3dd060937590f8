/* SPDX-License-Identifier: GPL-2.0 */
// An nsproxy going away, and with it the namespaces it held the last
// reference to: free_nsproxy() in fentry/kprobe, a task's exit in the
// tracepoint backend. Apart from destroy.h: these hooks see the nsproxy,
// those see a namespace's own destructor.
#ifndef NSTRACE_HOOKS_RELEASE_H
#define NSTRACE_HOOKS_RELEASE_H

static __always_inline int on_nsproxy_free(struct nsproxy *p, bool btf, void *ctx)
{
	struct snap *s = snap_tmp(0);

	if (!s)
		return 0;
	snap_nsproxy(p, s, btf);
	emit_release(s, NULL, NULL, stack_of(ctx));
	return 0;
}

SEC("fentry/free_nsproxy")
int BPF_PROG(fentry_free_nsproxy, struct nsproxy *p)
{
	return on_nsproxy_free(p, VIA_BTF, ctx);
}

SEC("kprobe/free_nsproxy")
int BPF_KPROBE(kprobe_free_nsproxy, struct nsproxy *p)
{
	return on_nsproxy_free(p, VIA_PROBE, ctx);
}

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
	return on_nsproxy_free(p, VIA_BTF, ctx);
}

#endif
