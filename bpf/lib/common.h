/* SPDX-License-Identifier: GPL-2.0 */
// What every other file needs, needing nothing but vmlinux.h: kernel
// constants, nstrace's enums, the records userspace decodes and the
// snapshot the maps and emitters share. The records are bpf2go's input
// (-type) too: apart from the code that fills them, a change to one reads
// as what it is, a change to the format userspace decodes.
#ifndef NSTRACE_COMMON_H
#define NSTRACE_COMMON_H

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

// 5 and 6 are userspace's own (lost, exist).
enum event_kind {
	EV_CREATE = 1,
	EV_JOIN,
	EV_NSPROXY_FREE,
	EV_DESTROY,
	EV_FAIL = 7,
};

// Why a namespace operation failed, where the kernel's state says.
enum fail_reason {
	FAIL_LIMIT = 1, // a per-user count at max_<type>_namespaces
	FAIL_DEPTH,     // user or pid namespaces nested as deep as they go
};

// A fail's type when the kernel's state names none.
#define NS_NONE 0xff

enum destroy_how {
	HOW_LAST_REF = 1, // the last reference went away with an nsproxy or a parent
	HOW_FREED,        // the kernel's own free function ran
	HOW_POLLED,       // tp_poll_watched found it gone
	HOW_REUSED,       // its inum went to a new namespace before its end was seen
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
	__u32 stack; // --kernel-stack: the hook's kernel stack in map stacks, + 1; 0: none
	__u32 _pad2;
};

// A create, join, destroy or fail.
struct ns_item {
	__u8 kind; // enum event_kind
	__u8 ns_type;
	__u8 how;
	__u8 for_children;
	__u8 owner_known;
	__u8 reason;  // fail: enum fail_reason, 0 if none is known
	__u16 error;  // fail: the errno
	__u32 inum;
	__u32 old_inum;
	__u64 ns_id;           // the kernel's namespace id (6.18+), else one nstrace assigned
	__u64 owner_cgroup_id; // join, destroy: the namespace owner's cgroup
	__u32 owner_pid;       // join, destroy: the namespace owner
	// create, and a fail for a limit: how many namespaces of the type the
	// user (uid, as the kernel charges it) holds in user namespace user_ns
	// (its inum), and the limit there. A fail for depth: the depth and its
	// limit.
	__u32 user_count;
	__u32 user_limit;
	__u32 user_ns;
	__u32 user_uid;
	// Not exact: live_ns had no room to keep the namespace (a create), or
	// a destroy of one it may not have had room for (no ns_id continuity,
	// owner or lifetime).
	__u8 partial;
	__u8 _pad2[3];
};

// An nsproxy freed: what it held, by slot. The same size as ns_item.
struct release_item {
	__u8 kind; // EV_NSPROXY_FREE
	__u8 _pad[3];
	__u32 inums[NS_SLOTS];
	__u32 _pad2[4];
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
	__u64 flags; // task_states: what the call passed (syscall_flags)
	__u32 nsproxy_count;
	__u32 in_flight; // task_states: set at syscall entry, cleared at exit
};

// Put the record types in BTF, so bpf2go generates their Go types.
const struct ns_rec *unused_ns_rec __attribute__((unused));
const struct ns_item *unused_ns_item __attribute__((unused));
const struct release_item *unused_release_item __attribute__((unused));

#endif
