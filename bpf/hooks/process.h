/* SPDX-License-Identifier: GPL-2.0 */
// The process lifecycle that attribution and the --pid filter follow:
// the executable learnt at exec and inherited at fork, a --pid process's
// children added at fork and its entry dropped once it is reaped. Here,
// not in context.h and filter.h, so that lib/ holds no programs.
#ifndef NSTRACE_HOOKS_PROCESS_H
#define NSTRACE_HOOKS_PROCESS_H

// A process is gone for good (freed, an RCU grace period after it was
// reaped, by when its pid may be another's): it is no longer followed.
// (Its procs entry stays: the next fork that gets its pid replaces it, and
// deleting it here could delete that one's.)
SEC("tp_btf/sched_process_free")
int BPF_PROG(common_sched_process_free, struct task_struct *p)
{
	__u32 tgid = p->tgid;
#ifdef NSTRACE_COMPAT
	__u32 tid = p->pid;

	bpf_map_delete_elem(&task_states, &tid);
#endif
	if (p->pid == tgid)
		unfollow(tgid, p->start_time);
	return 0;
}

/* ---- executables: learnt at exec, inherited at fork ---- */

SEC("tp_btf/sched_process_exec")
int BPF_PROG(common_sched_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct scratch *s = get_scratch(0);
	__u64 id = TAKE_ID(next_exe_id, SEQ_EXE);
	struct task_state *ts = task_state_of(current_task(), false);
	__u32 tgid = p->tgid;
	long n;

	// The exe id an actor remembers is the old program's (p is current:
	// the thread that exec'd, alone in its process now).
	if (ts)
		ts->exe_id = 0;
	if (!s)
		return 0;
	// The name exec was given (execsnoop's): resolved by the shell's PATH
	// search, "/proc/self/exe" for a self re-exec like runc init's.
	n = bpf_probe_read_kernel_str(s->exe.path, sizeof(s->exe.path), BPF_CORE_READ(bprm, filename));
	if (n < 1)
		n = 1;
	s->exe.len = n - 1;
	s->exe.truncated = n == sizeof(s->exe.path);
	s->exe.sent = 0;
	bpf_map_update_elem(&exes, &id, &s->exe, BPF_ANY);
	bpf_map_update_elem(&procs, &tgid, &id, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(common_sched_process_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = parent->tgid, ctgid = child->tgid;
	__u64 *exe;

	if (ptgid == ctgid)
		return 0; // a new thread
	exe = bpf_map_lookup_elem(&procs, &ptgid);
	if (exe)
		bpf_map_update_elem(&procs, &ctgid, exe, BPF_ANY);
	else
		bpf_map_delete_elem(&procs, &ctgid); // the pid's previous owner's
	follow_child(ptgid, ctgid, child->start_time);
	return 0;
}

#endif
