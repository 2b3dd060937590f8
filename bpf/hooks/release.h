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
// hold every reference, the nsproxy goes with them. The first of them to
// see that reports it and notes it in exit_releases; the last, which sees
// itself alone, is the one that frees it: it takes the note away and
// reports nothing. A thread that leaves a live process alone with its own
// nsproxy is never noted: a thread that unshared and exits frees an
// nsproxy whose memory the next one's often reuses.
// exit_frees says whether task's exit frees nsproxy, of which it sees
// count references, and whether that is still to be reported. A global
// function, on numbers (probe reads): the verifier checks it once, and the
// release after it on one path.
__noinline int exit_frees(__u64 task, __u64 nsproxy, __u32 count)
{
	struct task_struct *t = (struct task_struct *)task;
	struct exit_key k = { .nsproxy = nsproxy };
	__u64 now, *seen;
	bool noted;

	if (!t || count == 0 || count > MAX_EXIT_THREADS)
		return 0;
	if (BPF_CORE_READ(t, signal, live.counter) != 0)
		return count == 1; // alone with it in a live process
	if (count != 1 && holders_in_group(t, (struct nsproxy *)nsproxy) != count)
		return 0;
	k.tgid = BPF_CORE_READ(t, tgid);
	now = bpf_ktime_get_boot_ns();
	seen = bpf_map_lookup_elem(&exit_releases, &k);
	// A note older than a second is another nsproxy's, at the same
	// address, of a process whose threads never saw themselves alone.
	noted = seen && now - *seen < 1000000000ULL;
	if (count == 1) {
		if (seen)
			bpf_map_delete_elem(&exit_releases, &k);
		return !noted;
	}
	if (noted)
		return 0;
	bpf_map_update_elem(&exit_releases, &k, &now, BPF_ANY);
	return 1;
}

SEC("tp_btf/sched_process_exit")
int tp_sched_process_exit(void *ctx)
{
	// Runs on every exit: a direct BTF load and one read of the count,
	// until we know this exit may free an nsproxy.
	struct task_struct *t = task_ro(current_task());
	struct nsproxy *p = RD(VIA_BTF, t, nsproxy);
	__u32 count;

	if (!p)
		return 0;
	count = nsproxy_count(p, VIA_BTF);
	if (count > MAX_EXIT_THREADS)
		return 0;
	// Numbers for a global function: typed pointers it does not take.
	if (!exit_frees(bpf_get_current_task(), (__u64)BPF_CORE_READ(t, nsproxy), count))
		return 0;
	return on_nsproxy_free(p, VIA_BTF, ctx);
}

#endif
