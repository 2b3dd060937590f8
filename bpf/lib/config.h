/* SPDX-License-Identifier: GPL-2.0 */
// What userspace sets for the BPF side: where the ids nstrace assigns
// start, which teardown hooks it attached and so where a destroy is
// found (read-only, fixed at load), and the addresses of the kernel work
// functions it matches. Apart from maps.h because userspace writes
// these, before the hooks run.
#ifndef NSTRACE_CONFIG_H
#define NSTRACE_CONFIG_H

// Next id nstrace assigns where the kernel has no ns_id. Userspace starts it
// at the boot-clock nanosecond of the load plus a block it keeps for itself,
// so ids stay unique across runs during the boot.
__u64 next_ns_id = 1;

// Addresses of the work functions that free user, pid and net namespaces,
// looked up after the load and before the attach (common_work_fns, or
// userspace from /proc/kallsyms on kernels before 5.16); userspace zeroes
// those it does not hook, and 0 disables that teardown hook.
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
// The kernel has the bpf_rdonly_cast kfunc (6.2+): see task_ro.
volatile const bool have_rdonly_cast = false;
// --kernel-stack: every record carries its hook's kernel stack.
volatile const bool want_stacks = false;

#endif
