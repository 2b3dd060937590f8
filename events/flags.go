package events

import (
	"fmt"
	"strings"
)

// cloneFlags in bit order; names as in <linux/sched.h>.
var cloneFlags = []struct {
	bit  uint64
	name string
}{
	{0x00000080, "CLONE_NEWTIME"},
	{0x00000100, "CLONE_VM"},
	{0x00000200, "CLONE_FS"},
	{0x00000400, "CLONE_FILES"},
	{0x00000800, "CLONE_SIGHAND"},
	{0x00001000, "CLONE_PIDFD"},
	{0x00002000, "CLONE_PTRACE"},
	{0x00004000, "CLONE_VFORK"},
	{0x00008000, "CLONE_PARENT"},
	{0x00010000, "CLONE_THREAD"},
	{0x00020000, "CLONE_NEWNS"},
	{0x00040000, "CLONE_SYSVSEM"},
	{0x00080000, "CLONE_SETTLS"},
	{0x00100000, "CLONE_PARENT_SETTID"},
	{0x00200000, "CLONE_CHILD_CLEARTID"},
	{0x00400000, "CLONE_DETACHED"},
	{0x00800000, "CLONE_UNTRACED"},
	{0x01000000, "CLONE_CHILD_SETTID"},
	{0x02000000, "CLONE_NEWCGROUP"},
	{0x04000000, "CLONE_NEWUTS"},
	{0x08000000, "CLONE_NEWIPC"},
	{0x10000000, "CLONE_NEWUSER"},
	{0x20000000, "CLONE_NEWPID"},
	{0x40000000, "CLONE_NEWNET"},
	{0x80000000, "CLONE_IO"},
	{0x100000000, "CLONE_CLEAR_SIGHAND"},
	{0x200000000, "CLONE_INTO_CGROUP"},
}

// CloneFlagNames decodes clone/unshare/setns flags into their names, in bit
// order. Bits without a name come last as one hex number, so nothing the
// kernel was given is hidden.
func CloneFlagNames(flags uint64) []string {
	names := []string{}
	for _, f := range cloneFlags {
		if flags&f.bit != 0 {
			names = append(names, f.name)
			flags &^= f.bit
		}
	}
	if flags != 0 {
		names = append(names, fmt.Sprintf("%#x", flags))
	}
	return names
}

// FormatCloneFlags is CloneFlagNames joined with "|", or "0".
func FormatCloneFlags(flags uint64) string {
	if flags == 0 {
		return "0"
	}
	return strings.Join(CloneFlagNames(flags), "|")
}
