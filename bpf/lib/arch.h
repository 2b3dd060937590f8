/* SPDX-License-Identifier: GPL-2.0 */
// What differs between the architectures nstrace is built for: the
// numbers of the syscalls it tells apart, the prefix of the syscall
// functions' symbols (fentry and kprobe hook those), and where the saved
// user registers keep the syscall number and its first two arguments. The
// hooks name none of these themselves.
#ifndef NSTRACE_ARCH_H
#define NSTRACE_ARCH_H

#if defined(__TARGET_ARCH_x86)

#define SYS_PREFIX "__x64_"
#define NR_CLONE    56
#define NR_FORK     57
#define NR_VFORK    58
#define NR_EXECVE   59
#define NR_UNSHARE  272
#define NR_SETNS    308
#define NR_EXECVEAT 322
#define NR_CLONE3   435
#define REGS_NR(r)   REGS_RD(r, orig_ax)
#define REGS_ARG0(r) REGS_RD(r, di)
#define REGS_ARG1(r) REGS_RD(r, si)

#elif defined(__TARGET_ARCH_arm64)

// The generic syscall table: no fork or vfork (the C library makes them
// clones, which nstrace then reports as such).
#define SYS_PREFIX "__arm64_"
#define NR_CLONE    220
#define NR_EXECVE   221
#define NR_UNSHARE  97
#define NR_SETNS    268
#define NR_EXECVEAT 281
#define NR_CLONE3   435
// x0 carries the return value on the way out: orig_x0 keeps the first
// argument.
#define REGS_NR(r)   REGS_RD(r, syscallno)
#define REGS_ARG0(r) REGS_RD(r, orig_x0)
#define REGS_ARG1(r) REGS_RD(r, regs[1])

#else
#error "nstrace is built for x86-64 and arm64 only"
#endif

#endif
