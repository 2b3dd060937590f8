#!/usr/bin/env bash
# Installs what building, generating and testing nstrace needs on Debian.
# Quick when everything is already there.
set -euo pipefail

pkgs=(
	clang-16 llvm-16 libbpf-dev bpftool            # make generate
	util-linux iproute2 bubblewrap busybox-static runc docker.io  # programs the tests drive
	qemu-system-x86 cpio bpftrace                  # make vmtest; bpftrace: make bench
	groff-base zsh fish                            # the man page and completions, tested
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
go mod download
