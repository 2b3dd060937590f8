// SPDX-License-Identifier: GPL-2.0
//
// nstrace BPF side. Program names say which backend they belong to:
//   fentry_* / fexit_*        fentry backend
//   kprobe_* / kretprobe_*    kprobe backend
//   tp_*                      tracepoint backend
//   common_*                  every backend (hooks that only exist as tracepoints)
// The handlers below them are shared, so an event means the same thing
// whichever backend produced it.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

// lib/ holds what the programs share, hooks/ the programs by hook family.
// Each file uses only what the files above it define. The order also sets
// where maps and global variables land in the object (their definition
// order), so a reordering here changes the object even where no code does.
#include "lib/common.h"
#include "lib/arch.h"
#include "lib/compat.h"
#include "lib/config.h"
#include "lib/ring.h"
#include "lib/maps.h"
#include "lib/ns.h"
#include "lib/wakeup.h"
#include "lib/context.h" // and lib/filter.h, which needs its struct actx
#include "lib/syscall.h"
#include "lib/track.h"
#include "lib/limits.h"
#include "lib/emit.h"
#include "lib/snap.h"

#include "hooks/process.h"
#include "hooks/create.h"
#include "hooks/syscalls.h"
#include "hooks/release.h"
#include "hooks/snapshot.h"
#include "hooks/destroy.h"
#include "hooks/poll.h"
