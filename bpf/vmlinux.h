/* SPDX-License-Identifier: GPL-2.0 */
// The kernel's types, for the architecture being built: each header is
// generated from one kernel's BTF (its first line says which; make
// vmlinux, make vmlinux-arm64). CO-RE relocates the fields used to the
// running kernel's layout, so one header serves every kernel of its
// architecture.
#if defined(__TARGET_ARCH_arm64)
#include "vmlinux/arm64.h"
#else
#include "vmlinux/x86.h"
#endif
