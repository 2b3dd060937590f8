#!/usr/bin/env bash
# Fails when the committed generated files differ from what `make generate`
# produces. bpf/vmlinux/x86.h is compared only on the kernel it was
# generated from (its first line says which); arm64.h is made again from
# the Debian package its first line names, while Debian's archive still
# has that version; the BPF objects are always rebuilt from the committed
# headers and compared.
set -euo pipefail
cd "$(dirname "$0")/.."

recorded=$(head -1 bpf/vmlinux/x86.h | sed -n 's/.*BTF of Linux \([^ ]*\) .*/\1/p')
if [[ "$recorded" == "$(uname -r)" ]]; then
	make --no-print-directory vmlinux
else
	echo "check-generated: bpf/vmlinux/x86.h is from Linux ${recorded:-unknown}, this is $(uname -r): not compared"
fi
rc=0
scripts/vmlinux-arm64.sh || rc=$?
case $rc in
0) ;;
3) echo "check-generated: the kernel package bpf/vmlinux/arm64.h names is no longer in Debian's archive: not compared (make vmlinux-arm64 ARM64_KERNEL=... ARM64_SUITE=... moves it on)" ;;
*) exit "$rc" ;;
esac
go generate .
if ! git diff --exit-code --stat -- bpf/vmlinux bpf_x86_bpfel.go bpf_x86_bpfel.o bpf_arm64_bpfel.go bpf_arm64_bpfel.o \
	bpfcompat_x86_bpfel.go bpfcompat_x86_bpfel.o bpfcompat_arm64_bpfel.go bpfcompat_arm64_bpfel.o; then
	echo "check-generated: generated files are stale; run 'make generate' and commit the result" >&2
	exit 1
fi
echo "check-generated: up to date"
