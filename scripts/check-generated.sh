#!/usr/bin/env bash
# Fails when the committed generated files differ from what `make generate`
# produces. vmlinux.h is compared only on the kernel it was generated from
# (its first line says which); elsewhere the BPF objects are rebuilt from
# the committed vmlinux.h and compared.
set -euo pipefail
cd "$(dirname "$0")/.."

recorded=$(head -1 bpf/vmlinux.h | sed -n 's/.*BTF of Linux \([^ ]*\) .*/\1/p')
if [[ "$recorded" == "$(uname -r)" ]]; then
	make --no-print-directory generate
else
	echo "check-generated: bpf/vmlinux.h is from Linux ${recorded:-unknown}, this is $(uname -r): comparing the BPF objects only"
	go generate .
fi
if ! git diff --exit-code --stat -- bpf/vmlinux.h bpf_x86_bpfel.go bpf_x86_bpfel.o; then
	echo "check-generated: generated files are stale; run 'make generate' and commit the result" >&2
	exit 1
fi
echo "check-generated: up to date"
