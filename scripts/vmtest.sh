#!/usr/bin/env bash
# vmtest.sh: run nstrace's kernel tests inside qemu, on the kernels listed in
# scripts/kernels.txt, once per tracing backend.
#
# For each kernel: fetch the Debian kernel package (cached in .cache/vmtest/),
# build an initramfs with the statically linked test binaries, nstrace, busybox
# and the host's real unshare/nsenter/bwrap/ip (+ runc if present), boot it
# (one boot per kernel runs every backend), then read the console log and print
# a kernel x backend x package table. Exit status is non-zero if any test
# binary failed, the kernel panicked, the VM timed out or printed no verdict.
#
# Usage: scripts/vmtest.sh [options]
#   -k, --kernels LIST     kernels to boot (default: scripts/kernels.txt)  [KERNELS]
#   -b, --backends LIST    backends to test  (default: fentry kprobe tracepoint auto)  [BACKENDS]
#   -p, --pkgs LIST        Go packages to test (default: ./tracer ./cmd/nstrace)  [PKGS]
#   -r, --run REGEXP       passed as -test.run  [VMTEST_RUN]
#       --bench ARGS       run scripts/bench ARGS (with -nstrace and -backend)
#                          instead of the test binaries, once per backend; its
#                          output is printed before the summary  [VMTEST_BENCH]
#   -t, --timeout DUR      -test.timeout of each test binary (default 10m)  [VMTEST_TIMEOUT]
#       --vm-timeout SECS  hard limit for one boot (default: from the above)  [VMTEST_VM_TIMEOUT]
#       --accel auto|kvm|tcg  qemu accelerator (default auto: KVM if it works)  [VMTEST_ACCEL]
#   -q, --quiet            do not stream the console, print only the summary  [VMTEST_QUIET=1]
#       --shell            open a shell on the VM console after the tests  [VMTEST_SHELL=1]
#   -h, --help
# LIST values are separated by spaces or commas. More environment variables:
#   VMTEST_ARGS      extra arguments for every test binary (e.g. "-test.failfast")
#   VMTEST_ENV       extra KEY=VALUE words for the environment of every test binary
#   VMTEST_MODULES   kernel modules to load in the VM, from the kernel package (default: veth)
#   VMTEST_APPEND    extra kernel command line
#   VMTEST_MEM, VMTEST_SMP   VM size (default 2048 MiB, 2 CPUs)
#   VMTEST_TCG_THREAD  single (default) or multi: qemu's software emulation runs
#                    all vCPUs in one host thread, or one thread per vCPU. multi
#                    was seen to oops the guest (int3 in kernel text being
#                    patched while a kprobe/ftrace site was armed): cross-CPU code
#                    patching is not coherent under multi-threaded TCG.
#   VMTEST_CI        1: CI's subset: a kernel whose line in kernels.txt says
#                    ci=BACKEND,... runs only those of BACKENDS, and one that
#                    says ci-pkgs=PKG,... only those of PKGS (make vmtest;
#                    make vmtest-all runs every kernel under every backend)
#   VMTEST_JOBS      VMs that run at once (default: under software emulation,
#                    one per host CPU, as one VM keeps one CPU busy; under KVM
#                    1). With more than one, consoles go to the logs only.
#   VMTEST_CACHE     cache folder (default: <repo>/.cache/vmtest)
#   VMTEST_KERNELS_FILE  the kernels' list (default: scripts/kernels.txt)
#   VMTEST_SRC       module directory whose packages are built (default: the repo)
#   NSTRACE_PKG      package of the nstrace command (default: ./cmd/nstrace)
#
# Example, one test on one backend:  VMTEST_RUN=TestUnshare BACKENDS=kprobe scripts/vmtest.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

KERNELS=${KERNELS:-}
BACKENDS=${BACKENDS:-fentry kprobe tracepoint auto}
PKGS=${PKGS:-./tracer ./cmd/nstrace}
VMTEST_RUN=${VMTEST_RUN:-}
VMTEST_BENCH=${VMTEST_BENCH:-}
VMTEST_TIMEOUT=${VMTEST_TIMEOUT:-10m}
VMTEST_VM_TIMEOUT=${VMTEST_VM_TIMEOUT:-}
VMTEST_ACCEL=${VMTEST_ACCEL:-auto}
VMTEST_QUIET=${VMTEST_QUIET:-0}
VMTEST_SHELL=${VMTEST_SHELL:-0}
VMTEST_CI=${VMTEST_CI:-0}
VMTEST_ARGS=${VMTEST_ARGS:-}
VMTEST_ENV=${VMTEST_ENV:-}
VMTEST_MODULES=${VMTEST_MODULES-veth}
VMTEST_APPEND=${VMTEST_APPEND:-}
VMTEST_MEM=${VMTEST_MEM:-2048}
VMTEST_SMP=${VMTEST_SMP:-2}
VMTEST_TCG_THREAD=${VMTEST_TCG_THREAD:-single}
VMTEST_CACHE=${VMTEST_CACHE:-$ROOT/.cache/vmtest}
VMTEST_SRC=${VMTEST_SRC:-$ROOT}
NSTRACE_PKG=${NSTRACE_PKG:-./cmd/nstrace}
KERNELS_FILE=${VMTEST_KERNELS_FILE:-$ROOT/scripts/kernels.txt}

# Programs from the host copied into the VM with their shared libraries.
REQUIRED_TOOLS="unshare nsenter lsns bwrap ip"
OPTIONAL_TOOLS="runc crun"
# Kernel options the VM cannot do without, and ones some backend needs.
REQUIRED_CONFIG="BLK_DEV_INITRD RD_GZIP DEVTMPFS TMPFS BINFMT_ELF BINFMT_SCRIPT PROC_FS SYSFS
 BPF_SYSCALL DEBUG_INFO_BTF TRACEPOINTS BPF_EVENTS FTRACE
 NAMESPACES UTS_NS IPC_NS PID_NS NET_NS USER_NS CGROUPS"
WANTED_CONFIG="KPROBES KPROBE_EVENTS FUNCTION_TRACER DYNAMIC_FTRACE DYNAMIC_FTRACE_WITH_DIRECT_CALLS BPF_JIT TIME_NS
 CGROUP_BPF DEBUG_FS SECURITYFS MAGIC_SYSRQ"
TAIL_LINES=80
# Per architecture: the qemu that boots it, its machine, the serial console.
HOST_ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
declare -A ARCH_QEMU=([amd64]=qemu-system-x86_64 [arm64]=qemu-system-aarch64)
declare -A ARCH_QEMU_PKG=([amd64]=qemu-system-x86 [arm64]=qemu-system-arm)
declare -A ARCH_MACHINE=([amd64]="-vga none" [arm64]="-M virt -cpu max")
declare -A ARCH_CONSOLE=([amd64]=ttyS0 [arm64]=ttyAMA0)
declare -A ARCH_CONSOLE_CONFIG=([amd64]=SERIAL_8250_CONSOLE [arm64]=SERIAL_AMBA_PL011_CONSOLE)
# The foreign architecture's tools come from these packages of this
# machine's release (with what they depend on), unpacked into a sysroot.
FOREIGN_PKGS="util-linux bubblewrap iproute2 runc busybox-static"

say() { printf 'vmtest: %s\n' "$*" >&2; }
die() { printf 'vmtest: ERROR: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
	case $1 in
	-k | --kernels) KERNELS=${2:?$1 needs a value}; shift 2 ;;
	-b | --backends) BACKENDS=${2:?$1 needs a value}; shift 2 ;;
	-p | --pkgs) PKGS=${2:?$1 needs a value}; shift 2 ;;
	-r | --run) VMTEST_RUN=${2:?$1 needs a value}; shift 2 ;;
	--bench) VMTEST_BENCH=${2:?$1 needs a value}; shift 2 ;;
	-t | --timeout) VMTEST_TIMEOUT=${2:?$1 needs a value}; shift 2 ;;
	--vm-timeout) VMTEST_VM_TIMEOUT=${2:?$1 needs a value}; shift 2 ;;
	--accel) VMTEST_ACCEL=${2:?$1 needs a value}; shift 2 ;;
	-q | --quiet) VMTEST_QUIET=1; shift ;;
	--shell) VMTEST_SHELL=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done

words() { printf '%s\n' "$*" | tr ',' ' ' | xargs -n1 2>/dev/null || true; }

# Go duration (1h2m3s, 90s, 5m, 1.5m) to whole seconds.
dur_secs() {
	local d=$1 total=0 num unit
	[[ $d =~ ^([0-9.]+(h|m|s))+$ ]] || die "bad duration '$d' (want a Go duration like 5m or 90s)"
	while [[ $d =~ ^([0-9.]+)(h|m|s)(.*)$ ]]; do
		num=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]} d=${BASH_REMATCH[3]}
		case $unit in
		h) total=$(awk -v t="$total" -v n="$num" 'BEGIN{printf "%d", t+n*3600}') ;;
		m) total=$(awk -v t="$total" -v n="$num" 'BEGIN{printf "%d", t+n*60}') ;;
		s) total=$(awk -v t="$total" -v n="$num" 'BEGIN{printf "%d", t+n}') ;;
		esac
	done
	echo "$total"
}

case $VMTEST_ACCEL in auto | kvm | tcg) ;; *) die "VMTEST_ACCEL must be auto, kvm or tcg, not '$VMTEST_ACCEL'" ;; esac
for b in $(words "$BACKENDS"); do
	case $b in fentry | kprobe | tracepoint | auto) ;; *) die "unknown backend '$b' (valid: fentry kprobe tracepoint auto)" ;; esac
done
[ -n "$(words "$BACKENDS")" ] || die "BACKENDS is empty"
[ -n "$(words "$PKGS")" ] || die "PKGS is empty"
TIMEOUT_SECS=$(dur_secs "$VMTEST_TIMEOUT")
if [ "$VMTEST_SHELL" = 1 ]; then
	[ -t 0 ] || die "--shell / VMTEST_SHELL=1 needs a terminal on standard input"
	VMTEST_QUIET=0
fi

# ---------------------------------------------------------------- host tools

SUDO=()
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || die "not root and no sudo: cannot install packages or read /dev/kvm"
	SUDO=(sudo)
fi
APT_UPDATED=0
apt_update_once() {
	[ "$APT_UPDATED" = 0 ] || return 0
	say "apt-get update"
	"${SUDO[@]}" apt-get update -qq >&2 || die "apt-get update failed"
	APT_UPDATED=1
}
apt_install() {
	say "installing: $*"
	local cmd=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@")
	if ! "${cmd[@]}" >&2; then
		apt_update_once
		"${cmd[@]}" >&2 || die "apt-get install $* failed"
	fi
}

is_static() { ! ldd "$1" >/dev/null 2>&1; }

ensure_host_tools() {
	command -v go >/dev/null || die "the Go toolchain (go) is not in PATH"
	command -v apt-get >/dev/null || die "apt-get not found: this script needs a Debian-based host"
	local need=() pair cmd pkg
	for pair in qemu-system-x86_64:qemu-system-x86 cpio:cpio gzip:gzip timeout:coreutils flock:util-linux \
		unshare:util-linux nsenter:util-linux lsns:util-linux bwrap:bubblewrap ip:iproute2 ldd:libc-bin \
		dpkg-deb:dpkg apt-cache:apt awk:mawk sed:sed; do
		cmd=${pair%%:*} pkg=${pair#*:}
		command -v "$cmd" >/dev/null || need+=("$pkg")
	done
	# The VM needs the static busybox (the plain busybox package is dynamic).
	if ! [ -x /bin/busybox ] || ! is_static /bin/busybox; then need+=(busybox-static); fi
	# Without ipxe/vgabios nothing is lost: the VM has no NIC and no VGA.
	if [ ${#need[@]} -gt 0 ]; then
		mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
		apt_install "${need[@]}"
		for pair in qemu-system-x86_64 cpio gzip timeout flock unshare nsenter lsns bwrap ip ldd dpkg-deb; do
			command -v "$pair" >/dev/null || die "$pair is still not in PATH after installing ${need[*]}"
		done
		is_static /bin/busybox || die "/bin/busybox is not the static busybox (package busybox-static)"
	fi
}

# ------------------------------------------------------------------- kernels

# Debian's archive per suite and architecture (apt_for, resolve_glob).
DEBIAN_APT_DIR=$VMTEST_CACHE/apt
# shellcheck source=scripts/debian-apt.sh
. "$ROOT/scripts/debian-apt.sh"

# One line per kernel: the entry, then its options (ci=BACKEND,...).
kernel_entries() {
	if [ -n "$KERNELS" ]; then
		words "$KERNELS"
	else
		[ -f "$KERNELS_FILE" ] || die "$KERNELS_FILE not found"
		sed 's/#.*//' "$KERNELS_FILE" | awk 'NF { $1 = $1; print }'
	fi
}

# kernel_opts parses kernel options $1 (ci=, ci-pkgs=, suite=, arch=):
# sets KSUITE, KARCH and KBACKENDS, which of BACKENDS the kernel runs: all
# of them, or with VMTEST_CI=1 and a ci= option, those it names (none for
# ci=none); and KCIPKGS, with VMTEST_CI=1 the packages ci-pkgs= names (empty:
# all of PKGS).
kernel_opts() {
	local opt ci='' b out=()
	KSUITE=$HOST_SUITE KARCH=amd64 KCIPKGS=''
	for opt in $1; do
		case $opt in
		ci=*) ci=${opt#ci=} ;;
		ci-pkgs=*) [ "$VMTEST_CI" != 1 ] || KCIPKGS=$(words "${opt#ci-pkgs=}" | xargs) ;;
		suite=*) KSUITE=${opt#suite=} ;;
		arch=*) KARCH=${opt#arch=} ;;
		*) die "kernels.txt: unknown option '$opt' (valid: suite=NAME, arch=amd64|arm64, ci=BACKEND,..., ci-pkgs=PKG,...)" ;;
		esac
	done
	[ -n "$KSUITE" ] || die "kernels.txt: no suite= for a kernel, and this machine's Debian release is unknown"
	[ -n "${ARCH_QEMU[$KARCH]:-}" ] || die "kernels.txt: arch=$KARCH: this harness boots amd64 and arm64 kernels only"
	KBACKENDS=''
	# ci=none: not in CI's subset at all (make vmtest-all runs it).
	[ "$VMTEST_CI" = 1 ] && [ "$ci" = none ] && return 0
	for b in $(words "$BACKENDS"); do
		if [ "$VMTEST_CI" != 1 ] || [ -z "$ci" ] || [[ ,$ci, == *,$b,* ]]; then out+=("$b"); fi
	done
	[ ${#out[@]} -gt 0 ] || die "kernels.txt: ci=$ci leaves no backend of '$BACKENDS'"
	KBACKENDS="${out[*]}"
}
HOST_SUITE=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")

# Sets KLABEL, KIMAGE, KCONFIG, KMODDIR for entry $1 of suite KSUITE and
# architecture KARCH.
fetch_kernel() {
	local entry=$1 pkg dir tmp deb img
	KCONFIG='' KMODDIR=''
	if [[ $entry == */* ]]; then
		[ -f "$entry" ] || die "kernel image $entry not found"
		KLABEL=$(basename "$entry") KIMAGE=$(realpath "$entry")
		return 0
	fi
	pkg=$entry
	apt_for "$KSUITE" "$KARCH"
	if [[ $entry == *[*?[]* ]]; then
		if ! pkg=$(resolve_glob "$entry"); then
			apt_refresh "$KSUITE" "$KARCH"
			pkg=$(resolve_glob "$entry") || die "no package of $KSUITE ($KARCH) matches '$entry' (apt-cache pkgnames)"
		fi
		say "kernel '$entry' ($KSUITE, $KARCH) -> $pkg"
	fi
	KLABEL=$pkg
	dir=$VMTEST_CACHE/kernels/$pkg
	if ! [ -f "$dir/.ok" ]; then
		rm -rf "$dir"
		tmp=$(mktemp -d "$VMTEST_CACHE/dl.XXXXXX")
		say "downloading $pkg"
		if ! (cd "$tmp" && apt-get -qq "${APT_OPTS[@]}" download "$pkg" >&2); then
			# The lists were stale: the archive has a newer build.
			apt_refresh "$KSUITE" "$KARCH"
			[[ $entry != *[*?[]* ]] || pkg=$(resolve_glob "$entry") || die "no package of $KSUITE ($KARCH) matches '$entry'"
			(cd "$tmp" && apt-get -qq "${APT_OPTS[@]}" download "$pkg" >&2) || die "apt-get download $pkg ($KSUITE, $KARCH) failed"
			KLABEL=$pkg dir=$VMTEST_CACHE/kernels/$pkg
		fi
		deb=$(find "$tmp" -maxdepth 1 -name '*.deb' | head -n1)
		[ -n "$deb" ] || die "apt-get download $pkg produced no .deb"
		mkdir -p "$dir"
		dpkg-deb -x "$deb" "$dir/tree"
		img=$(find "$dir/tree/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
		[ -n "$img" ] || die "$pkg has no boot/vmlinuz-*"
		mv "$img" "$dir/vmlinuz"
		find "$dir/tree/boot" -maxdepth 1 -name 'config-*' -exec mv {} "$dir/config" \;
		basename "$deb" >"$dir/deb"
		rm -rf "$tmp" "$dir/tree/boot" "$dir/tree/usr"
		touch "$dir/.ok"
	fi
	KIMAGE=$dir/vmlinuz
	[ -f "$dir/config" ] && KCONFIG=$dir/config
	KMODDIR=$(find "$dir/tree/lib/modules" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | head -n1 || true)
}

# Fails if the kernel config lacks what the VM needs; warns for backend needs.
check_config() {
	local cfg=$1 opt missing=() weak=()
	for opt in $REQUIRED_CONFIG ${ARCH_CONSOLE_CONFIG[$KARCH]}; do grep -q "^CONFIG_$opt=y" "$cfg" || missing+=("$opt"); done
	for opt in $WANTED_CONFIG; do grep -q "^CONFIG_$opt=y" "$cfg" || weak+=("$opt"); done
	[ ${#weak[@]} -eq 0 ] || say "WARNING: $KLABEL: not built in: ${weak[*]} (some backends or tests may fail)"
	if [ ${#missing[@]} -gt 0 ]; then
		say "$KLABEL: not built in: ${missing[*]}"
		return 1
	fi
}

# A module file, decompressed, on stdout.
modcat() {
	case $1 in
	*.xz) /bin/busybox xzcat "$1" ;;
	*.gz) gzip -dc "$1" ;;
	*.zst) zstd -qdc "$1" ;;
	*) cat "$1" ;;
	esac
}

# Module files (with their dependencies first), relative to the modules dir.
module_paths() {
	local moddir=$1 name
	declare -A seen=()
	add_mod() {
		local n=${1//-/_} f dep
		[ -z "${seen[$n]:-}" ] || return 0
		seen[$n]=1
		f=$(find "$moddir" -name "$n.ko*" -o -name "${1//_/-}.ko*" | head -n1)
		if [ -z "$f" ]; then
			grep -q "/$n.ko" "$moddir/modules.builtin" 2>/dev/null || say "WARNING: $KLABEL: module $1 not found"
			return 0
		fi
		for dep in $(modcat "$f" | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '); do add_mod "$dep"; done
		echo "${f#"$moddir"/}"
	}
	for name in $VMTEST_MODULES; do add_mod "$name"; done
}

# ------------------------------------------------------------------ initramfs

# Per architecture: STAGE and BARCH are set by build_initramfs.
STAGE='' BARCH=''
declare -a TEST_NAMES=()

# base_cpio is the base archive of architecture $1 (build_initramfs).
base_cpio() { echo "$VMTEST_CACHE/build/base-$1.cpio.gz"; }

copy_with_libs() {
	local bin=$1 dst=$2 lib
	mkdir -p "$STAGE$(dirname "$dst")"
	cp -L "$bin" "$STAGE$dst"
	is_static "$bin" && return 0
	for lib in $(ldd "$bin" | awk '/=> \// {print $3} /^\t\// {print $1}'); do
		[ -e "$STAGE$lib" ] && continue
		mkdir -p "$STAGE$(dirname "$lib")"
		cp -L "$lib" "$STAGE$lib"
	done
}

# The test binaries of PKGS, with their testdata, and their run.conf lines.
add_test_binaries() {
	local list ip dir rel slug out
	cd "$VMTEST_SRC"
	# shellcheck disable=SC2046 # PKGS is a list of patterns
	list=$(go list -f '{{.ImportPath}} {{.Dir}}' $(words "$PKGS")) || die "go list $PKGS failed"
	while read -r ip dir; do
		rel=${dir#"$VMTEST_SRC"}
		rel=${rel#/}
		slug=${rel//\//_}
		slug=${slug:-root}
		out=$STAGE/vmtest/bin/$slug.test
		CGO_ENABLED=0 GOARCH=$BARCH go test -c -o "$out" "$ip"
		if ! [ -f "$out" ]; then
			say "$ip has no test files: skipped"
			continue
		fi
		mkdir -p "$STAGE/vmtest/src/$rel"
		[ -d "$dir/testdata" ] && cp -a "$dir/testdata" "$STAGE/vmtest/src/$rel/"
		TEST_NAMES+=("./$rel")
		printf 'pkg=%s\t%s\t%s\n' "./$rel" "/vmtest/bin/$slug.test" "/vmtest/src/$rel" >>"$STAGE/vmtest/run.conf"
	done <<<"$list"
	cd - >/dev/null
	[ ${#TEST_NAMES[@]} -gt 0 ] || die "none of PKGS ($PKGS) has tests"
}

# The bench instead (VMTEST_BENCH): vminit runs it as it would a test binary,
# once per backend, through a script that drops the -test.* arguments and
# passes the backend on.
BENCH_PKG=./scripts/bench
add_bench() {
	(cd "$ROOT" && CGO_ENABLED=0 GOARCH=$BARCH go build -o "$STAGE/vmtest/bin/bench" "$BENCH_PKG")
	{
		echo '#!/bin/sh'
		echo "exec /vmtest/bin/bench -nstrace /usr/bin/nstrace -backend \"\$NSTRACE_TEST_BACKEND\" $VMTEST_BENCH"
	} >"$STAGE/vmtest/bin/bench.sh"
	chmod +x "$STAGE/vmtest/bin/bench.sh"
	TEST_NAMES+=("$BENCH_PKG")
	printf 'pkg=%s\t%s\t%s\n' "$BENCH_PKG" /vmtest/bin/bench.sh /vmtest >>"$STAGE/vmtest/run.conf"
}

# sysroot_for unpacks, once, FOREIGN_PKGS of architecture $1 and what they
# depend on, from this machine's release, and prints where.
sysroot_for() {
	local arch=$1 root dl pkgs deb
	root=$VMTEST_CACHE/sysroot/$arch dl=$VMTEST_CACHE/sysroot/debs-$arch
	if ! [ -f "$root/.ok" ]; then
		[ -n "$HOST_SUITE" ] || die "this machine's Debian release is unknown: no $arch tools"
		apt_for "$HOST_SUITE" "$arch"
		# shellcheck disable=SC2086 # lists of words
		pkgs=$(apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
			--no-breaks --no-replaces --no-enhances $FOREIGN_PKGS | grep -v '^[ <]' | sort -u)
		rm -rf "$root" "$dl"
		mkdir -p "$root" "$dl"
		say "downloading $arch tools: $(echo "$pkgs" | wc -l) packages"
		# shellcheck disable=SC2086
		apt_download "$HOST_SUITE" "$arch" "$dl" $pkgs || die "apt-get download of the $arch tools failed"
		for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$root"; done
		touch "$root/.ok"
	fi
	echo "$root"
}

# add_foreign_tools puts architecture $1's tools, busybox and shared
# libraries into STAGE (they cannot run here, so ldd cannot list what they
# need: every library of the sysroot goes in).
add_foreign_tools() {
	local arch=$1 root t d found
	root=$(sysroot_for "$arch")
	if [ -d "$root/lib" ]; then cp -a "$root/lib/." "$STAGE/usr/lib/"; fi
	cp -a "$root/usr/lib/." "$STAGE/usr/lib/"
	for t in $REQUIRED_TOOLS $OPTIONAL_TOOLS; do
		found=''
		for d in usr/bin usr/sbin bin sbin; do
			if [ -x "$root/$d/$t" ]; then found=$root/$d/$t; break; fi
		done
		if [ -z "$found" ]; then
			[[ " $OPTIONAL_TOOLS " == *" $t "* ]] || die "$t not in the $arch packages ($FOREIGN_PKGS)"
			continue
		fi
		cp -L "$found" "$STAGE/usr/bin/$t"
	done
	cp "$root/bin/busybox" "$STAGE/usr/bin/busybox"
}

# build_initramfs builds the base archive of architecture $1: vminit,
# nstrace, the test binaries (or the bench), the tools and busybox.
build_initramfs() {
	local t p archive
	BARCH=$1
	STAGE=$VMTEST_CACHE/build/root-$BARCH
	archive=$(base_cpio "$BARCH")
	TEST_NAMES=()
	rm -rf "$STAGE" "$archive"
	mkdir -p "$STAGE"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,proc,sys,dev,tmp,run,root,var/tmp,vmtest/bin,vmtest/src}
	ln -s usr/bin "$STAGE/bin"
	ln -s usr/sbin "$STAGE/sbin"
	ln -s usr/lib "$STAGE/lib"
	ln -s usr/lib64 "$STAGE/lib64"
	ln -s ../run "$STAGE/var/run"

	say "building vminit, nstrace and $([ -n "$VMTEST_BENCH" ] && echo "the bench" || echo "test binaries") ($BARCH)"
	(cd "$ROOT" && CGO_ENABLED=0 GOARCH=$BARCH go build -o "$STAGE/init" ./scripts/vminit)
	(cd "$VMTEST_SRC" && CGO_ENABLED=0 GOARCH=$BARCH go build -o "$STAGE/usr/bin/nstrace" "$NSTRACE_PKG")
	if [ -n "$VMTEST_BENCH" ]; then
		add_bench
	else
		add_test_binaries
	fi

	if [ "$BARCH" = "$HOST_ARCH" ]; then
		for t in $REQUIRED_TOOLS; do
			p=$(command -v "$t") || die "$t not found on the host"
			copy_with_libs "$p" "$p"
		done
		for t in $OPTIONAL_TOOLS; do
			if p=$(command -v "$t"); then copy_with_libs "$p" "$p"; fi
		done
		cp /bin/busybox "$STAGE/usr/bin/busybox"
	else
		add_foreign_tools "$BARCH"
	fi
	# The host's busybox names the applets (the same release's as the
	# foreign one, which cannot run here).
	for t in $(/bin/busybox --list); do
		[ -e "$STAGE/usr/bin/$t" ] || [ -e "$STAGE/usr/sbin/$t" ] || ln -s busybox "$STAGE/usr/bin/$t"
	done

	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$STAGE/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$STAGE/etc/group"
	printf '127.0.0.1 localhost vmtest\n::1 localhost\n' >"$STAGE/etc/hosts"
	printf 'passwd: files\ngroup: files\nhosts: files\n' >"$STAGE/etc/nsswitch.conf"
	echo vmtest >"$STAGE/etc/hostname"
	: >"$STAGE/etc/fstab"

	{
		echo "timeout=$VMTEST_TIMEOUT"
		[ -z "$VMTEST_RUN" ] || echo "run=$VMTEST_RUN"
		for t in $(words "$BACKENDS"); do echo "backend=$t"; done
		echo "env=NSTRACE_BIN=/usr/bin/nstrace"
		# An emulated foreign CPU runs several times slower again than
		# the host's own under emulation (4): the tests' deadlines scale.
		[ "$BARCH" = "$HOST_ARCH" ] || echo "env=NSTRACE_TEST_SLOW=16"
		for t in $VMTEST_ENV; do
			[[ $t == [A-Za-z_]*=* ]] || die "VMTEST_ENV: '$t' is not KEY=VALUE"
			echo "env=$t"
		done
		for t in $VMTEST_ARGS; do echo "arg=$t"; done
		[ "$VMTEST_SHELL" != 1 ] || echo "shell=1"
	} >>"$STAGE/vmtest/run.conf"

	(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -1 >"$archive"
	say "initramfs: $(du -h "$archive" | cut -f1) compressed, $(du -sh "$STAGE" | cut -f1) unpacked"
}

# The per-kernel part: kernel.conf and modules, appended as a second archive.
kernel_initrd() {
	local out=$1 kst=$VMTEST_CACHE/build/k-$KLABEL m
	rm -rf "$kst"
	mkdir -p "$kst/vmtest"
	echo "kernel=$KLABEL" >"$kst/vmtest/kernel.conf"
	[ "$KBACKENDS" = "$(words "$BACKENDS" | xargs)" ] || echo "backends=${KBACKENDS// /,}" >>"$kst/vmtest/kernel.conf"
	[ "$KPKGS" = "${TEST_NAMES[*]}" ] || echo "pkgs=${KPKGS// /,}" >>"$kst/vmtest/kernel.conf"
	if [ -n "$KMODDIR" ] && [ -n "$VMTEST_MODULES" ]; then
		local kver
		kver=$(basename "$KMODDIR")
		for m in $(module_paths "$KMODDIR"); do
			mkdir -p "$kst/lib/modules/$kver/$(dirname "$m")"
			# Decompressed here: not every kernel can load compressed modules.
			if [[ $m == *.zst ]] && ! command -v zstd >/dev/null; then
				cp "$KMODDIR/$m" "$kst/lib/modules/$kver/$m"
			else
				modcat "$KMODDIR/$m" >"$kst/lib/modules/$kver/${m%.ko*}.ko"
				m=${m%.ko*}.ko
			fi
			echo "module=/lib/modules/$kver/$m" >>"$kst/vmtest/kernel.conf"
		done
		# lib is a symlink in the base archive: put the files under usr/lib.
		mkdir -p "$kst/usr"
		[ -d "$kst/lib" ] && mv "$kst/lib" "$kst/usr/lib"
	fi
	{
		cat "$(base_cpio "$KARCH")"
		(cd "$kst" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -1
	} >"$out"
}

# ----------------------------------------------------------------------- qemu

QEMU_ACCEL=()
choose_accel() {
	local probe_kernel=$1 log
	case $VMTEST_ACCEL in
	tcg) QEMU_ACCEL=(-accel "tcg,thread=$VMTEST_TCG_THREAD"); return ;;
	kvm) QEMU_ACCEL=(-accel kvm -cpu host); return ;;
	esac
	QEMU_ACCEL=(-accel "tcg,thread=$VMTEST_TCG_THREAD")
	if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
		say "no usable /dev/kvm: software emulation (TCG)"
		return
	fi
	# /dev/kvm can exist and still not run a guest (nested virtualisation):
	# boot the kernel with no initramfs; it must reach its panic and reboot.
	log=$VMTEST_CACHE/logs/kvm-probe.log
	# (In a group with stderr to /dev/null: qemu can abort, and bash would
	# report that on stderr.)
	if { timeout 20 qemu-system-x86_64 -accel kvm -cpu host -m 256 -nographic -no-reboot -nic none -vga none \
		-kernel "$probe_kernel" -append "console=ttyS0 panic=-1 quiet" </dev/null >"$log" 2>&1; } 2>/dev/null &&
		grep -q 'Kernel panic' "$log"; then
		QEMU_ACCEL=(-accel kvm -cpu host)
		say "KVM works: using it"
	else
		say "/dev/kvm is there but KVM cannot boot a guest here (see $log): software emulation (TCG)"
	fi
}

# Strip the terminal control sequences SeaBIOS sends and the serial CRs.
clean_console() { sed -u -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' -e 's/\r$//' -e 's/\r/\n/g'; }

# The console lines of one run: between its START and END markers.
section() {
	awk -v s="@@VMTEST@@ START $1" -v e="@@VMTEST@@ END $1 " '
		index($0, s) { on = 1; next }
		on && index($0, e) { on = 0 }
		on { print }' "$2"
}

# ----------------------------------------------------------------------- main

mkdir -p "$VMTEST_CACHE/logs" "$VMTEST_CACHE/kernels"
exec 9>"$VMTEST_CACHE/.lock"
flock -n 9 || { say "another vmtest run holds $VMTEST_CACHE/.lock: waiting"; flock 9; }

# Whatever stops this script stops the VMs too (one pid file each).
RUNDIR=$VMTEST_CACHE/run
stop_vm() {
	local f pid
	for f in "$RUNDIR"/*.pid; do
		[ -f "$f" ] || continue
		pid=$(cat "$f" 2>/dev/null || true)
		if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
		rm -f "$f"
	done
}
trap stop_vm EXIT
trap 'stop_vm; exit 130' INT
trap 'stop_vm; exit 143' TERM

T0=$SECONDS
ensure_host_tools

mapfile -t ENTRIES < <(kernel_entries)
[ ${#ENTRIES[@]} -gt 0 ] || die "no kernels to test (KERNELS / $KERNELS_FILE)"
declare -a K_LABELS=() K_IMAGES=() K_CONFIGS=() K_MODDIRS=() K_BACKENDS=() K_ARCHS=() K_CIPKGS=()
for line in "${ENTRIES[@]}"; do
	read -r e opts <<<"$line"
	kernel_opts "${opts:-}"
	if [ -z "$KBACKENDS" ]; then
		say "kernel '$e' ($KSUITE, $KARCH): not in CI's subset (ci=none)"
		continue
	fi
	fetch_kernel "$e"
	K_LABELS+=("$KLABEL") K_IMAGES+=("$KIMAGE") K_CONFIGS+=("$KCONFIG") K_MODDIRS+=("$KMODDIR")
	K_BACKENDS+=("$KBACKENDS") K_ARCHS+=("$KARCH") K_CIPKGS+=("$KCIPKGS")
done
[ ${#K_LABELS[@]} -gt 0 ] || die "no kernel left to test (all ci=none)"
for a in $(printf '%s\n' "${K_ARCHS[@]}" | sort -u); do
	q=${ARCH_QEMU[$a]}
	command -v "$q" >/dev/null || apt_install "${ARCH_QEMU_PKG[$a]}"
	command -v "$q" >/dev/null || die "$q is still not in PATH after installing ${ARCH_QEMU_PKG[$a]}"
done
T_FETCH=$((SECONDS - T0))

rm -rf "$VMTEST_CACHE/build"
for a in $(printf '%s\n' "${K_ARCHS[@]}" | sort -u); do build_initramfs "$a"; done
T_BUILD=$((SECONDS - T0 - T_FETCH))

# KVM only for this machine's architecture; the others are emulated.
QEMU_ACCEL=(-accel "tcg,thread=$VMTEST_TCG_THREAD")
for i in "${!K_ARCHS[@]}"; do
	if [ "${K_ARCHS[$i]}" = "$HOST_ARCH" ]; then
		choose_accel "${K_IMAGES[$i]}"
		break
	fi
done
HOST_ACCEL=("${QEMU_ACCEL[@]}")

mapfile -t BACKEND_LIST < <(words "$BACKENDS")

# Each kernel's packages: with VMTEST_CI=1 those its ci-pkgs= names, else
# every one built.
declare -a K_PKGS=()
for i in "${!K_LABELS[@]}"; do
	pk=()
	for p in "${TEST_NAMES[@]}"; do
		if [ -z "${K_CIPKGS[$i]}" ] || [[ " ${K_CIPKGS[$i]} " == *" $p "* ]]; then pk+=("$p"); fi
	done
	[ ${#pk[@]} -gt 0 ] || die "kernels.txt: ci-pkgs=${K_CIPKGS[$i]// /,} of ${K_LABELS[$i]} names none of the packages built (${TEST_NAMES[*]})"
	K_PKGS+=("${pk[*]}")
done

# How many VMs run at once. Software emulation runs all of a VM's vCPUs in
# one host thread (VMTEST_TCG_THREAD=single), so a VM keeps one host CPU
# busy: as many VMs as CPUs, longest first, instead of one after the other
# with the other CPUs idle. A KVM guest's vCPUs are threads of their own,
# and a console shell needs the terminal: one at a time.
if [ -z "${VMTEST_JOBS:-}" ]; then
	VMTEST_JOBS=$(nproc 2>/dev/null || echo 1)
	[ "${HOST_ACCEL[1]}" != kvm ] || VMTEST_JOBS=1
fi
[[ $VMTEST_JOBS =~ ^[1-9][0-9]*$ ]] || die "VMTEST_JOBS must be a positive number, not '$VMTEST_JOBS'"
[ "$VMTEST_SHELL" != 1 ] || VMTEST_JOBS=1
[ "$VMTEST_JOBS" -le ${#K_LABELS[@]} ] || VMTEST_JOBS=${#K_LABELS[@]}
if [ "$VMTEST_JOBS" -gt 1 ] && [ "$VMTEST_QUIET" != 1 ]; then
	say "$VMTEST_JOBS VMs at once: their consoles go to their logs only"
	VMTEST_QUIET=1
fi

# kernel_runs is how many test binaries kernel $1 runs: backends x packages.
kernel_runs() { echo $(($(words "${K_BACKENDS[$1]}" | wc -l) * $(words "${K_PKGS[$1]}" | wc -l))); }

# vm_timeout is the hard limit of kernel $1's boot: its runs' timeouts.
vm_timeout() { echo "${VMTEST_VM_TIMEOUT:-$((120 + $(kernel_runs "$1") * (TIMEOUT_SECS + 45)))}"; }

# boot_kernel boots kernel $1 (an index of K_LABELS), which runs its tests
# and powers off. The console goes to the kernel's log; qemu's exit status,
# the VM's wall time, or what kept it from booting, to files in RUNDIR.
boot_kernel() {
	local i=$1 initrd stdin tb log rc limit
	KLABEL=${K_LABELS[$i]} KIMAGE=${K_IMAGES[$i]} KCONFIG=${K_CONFIGS[$i]} KMODDIR=${K_MODDIRS[$i]}
	KBACKENDS=${K_BACKENDS[$i]} KARCH=${K_ARCHS[$i]} KPKGS=${K_PKGS[$i]}
	QEMU_ACCEL=(-accel "tcg,thread=$VMTEST_TCG_THREAD")
	[ "$KARCH" != "$HOST_ARCH" ] || QEMU_ACCEL=("${HOST_ACCEL[@]}")
	# shellcheck disable=SC2206 # words on purpose
	QEMU_MACHINE=(${ARCH_MACHINE[$KARCH]})
	log=$VMTEST_CACHE/logs/$KLABEL.log rc=$RUNDIR/$KLABEL
	if [ -n "$KCONFIG" ] && ! check_config "$KCONFIG"; then
		echo "kernel config lacks what the VM needs" >"$rc.problem"
		return 0
	fi
	initrd=$VMTEST_CACHE/build/initrd-$KLABEL.img
	kernel_initrd "$initrd"
	limit=$(vm_timeout "$i")
	say "booting $KLABEL (${QEMU_ACCEL[*]}, $(kernel_runs "$i") run(s): backends $KBACKENDS x packages $KPKGS, limit ${limit}s); console log: $log"
	stdin=/dev/null
	[ "$VMTEST_SHELL" != 1 ] || stdin=/dev/stdin
	tb=$SECONDS
	# qemu runs in the background so that a signal to this script is
	# handled at once (trap above); --foreground keeps it in our process
	# group, so Ctrl-C reaches it too.
	exec 8<"$stdin"
	{
		# (set -e would end this subshell on a failure: hence the if.)
		if timeout --foreground --kill-after=10 "$limit" "${ARCH_QEMU[$KARCH]}" "${QEMU_MACHINE[@]}" "${QEMU_ACCEL[@]}" \
			-m "$VMTEST_MEM" -smp "$VMTEST_SMP" -nographic -no-reboot -nic none \
			-pidfile "$rc.pid" -kernel "$KIMAGE" -initrd "$initrd" \
			-append "console=${ARCH_CONSOLE[$KARCH]} panic=-1 quiet softlockup_panic=1 $VMTEST_APPEND" <&8 2>&1; then
			echo 0 >"$rc.rc"
		else
			echo $? >"$rc.rc"
		fi
	} | clean_console | if [ "$VMTEST_QUIET" = 1 ]; then cat >"$log"; else tee "$log"; fi &
	wait $! || true
	exec 8<&-
	echo $((SECONDS - tb)) >"$rc.wall"
	say "$KLABEL: done after $(cat "$rc.wall")s"
}

rm -rf "$RUNDIR"
mkdir -p "$RUNDIR"
for i in "${!K_LABELS[@]}"; do rm -f "$VMTEST_CACHE/logs/${K_LABELS[$i]}.log"; done
# Longest first (its runs, an emulated architecture's counting four
# times), so that the last VM to start is a short one.
mapfile -t ORDER < <(for i in "${!K_LABELS[@]}"; do
	w=$(kernel_runs "$i")
	[ "${K_ARCHS[$i]}" = "$HOST_ARCH" ] || w=$((w * 4))
	echo "$w $i"
done | sort -k1,1nr -k2,2n | awk '{ print $2 }')
for i in "${ORDER[@]}"; do
	while [ "$(jobs -rp | wc -l)" -ge "$VMTEST_JOBS" ]; do wait -n || true; done
	boot_kernel "$i" &
done
wait

KW=6 PW=7 # column widths
for t in "${K_LABELS[@]}"; do [ "${#t}" -le "$KW" ] || KW=${#t}; done
for t in "${TEST_NAMES[@]}"; do [ "${#t}" -le "$PW" ] || PW=${#t}; done
FAILS=()     # lines naming what failed
ROWS=()      # summary table rows
NPASS=0 NFAIL=0
for i in "${!K_LABELS[@]}"; do
	KLABEL=${K_LABELS[$i]} KBACKENDS=${K_BACKENDS[$i]}
	read -ra KBACKEND_LIST <<<"$KBACKENDS"
	read -ra KPKG_LIST <<<"${K_PKGS[$i]}"
	log=$VMTEST_CACHE/logs/$KLABEL.log rc=$RUNDIR/$KLABEL
	problem=$(cat "$rc.problem" 2>/dev/null || true)
	if [ -z "$problem" ]; then
		qrc=$(cat "$rc.rc" 2>/dev/null || echo "?")
		boot=$(grep -ao '@@VMTEST@@ BOOT .*' "$log" 2>/dev/null | sed -n 's/.* uptime=\([0-9.]*\).*/\1/p' | head -n1)
		say "$KLABEL: VM ran $(cat "$rc.wall" 2>/dev/null || echo "?")s (kernel reached the tests ${boot:-?}s after boot), qemu exit status $qrc"
		if ! [ -f "$log" ]; then
			problem="no console log (the VM did not start)"
		elif grep -aq 'Kernel panic - not syncing' "$log"; then
			problem="kernel panic: $(grep -a -m1 'Kernel panic - not syncing' "$log" | sed 's/.*not syncing: //')"
		elif [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
			problem="VM timed out after $(vm_timeout "$i")s"
		elif ! grep -aq "@@VMTEST@@ VERDICT kernel=$KLABEL " "$log"; then
			problem="no verdict line (qemu exit status $qrc)"
		elif [ "$qrc" != 0 ]; then
			problem="qemu exit status $qrc"
		fi
		if [ -f "$log" ] && grep -aqE 'Oops:|BUG: |WARNING: CPU:' "$log"; then
			say "WARNING: $KLABEL: the kernel log has Oops/BUG/WARNING splats:"
			grep -aE 'Oops:|BUG: |WARNING: CPU:' "$log" | head -n5 >&2
		fi
	fi
	kfailed=0 FAILED_KEYS=()
	for b in "${KBACKEND_LIST[@]}"; do
		for p in "${KPKG_LIST[@]}"; do
			key="kernel=$KLABEL backend=$b pkg=$p"
			res=NOTRUN secs=- counts=-
			if [ -f "$log" ]; then
				end=$(grep -ao "@@VMTEST@@ END $key result=.*" "$log" | tail -n1 || true)
				if [ -n "$end" ]; then
					[[ $end =~ result=([A-Z]+) ]] && res=${BASH_REMATCH[1]}
					[[ $end =~ secs=([0-9.]+) ]] && secs=${BASH_REMATCH[1]}s
				elif grep -aq "@@VMTEST@@ START $key\$" "$log"; then
					res=UNFINISHED
				fi
				# Top-level test results between this run's markers.
				counts=$(section "$key" "$log" | awk '
					/^--- PASS/ { p++ } /^--- FAIL/ { f++ } /^--- SKIP/ { k++ }
					END { printf "%d/%d/%d", p, f, k }')
			fi
			ROWS+=("$(printf "%-${KW}s %-11s %-${PW}s %-10s %8s  %s" "$KLABEL" "$b" "$p" "$res" "$secs" "$counts")")
			if [ "$res" = PASS ]; then
				NPASS=$((NPASS + 1))
			else
				NFAIL=$((NFAIL + 1)) kfailed=1
				FAILS+=("FAIL: kernel $KLABEL, backend $b, package $p: $res")
				if [ "$res" != NOTRUN ]; then
					FAILED_KEYS+=("$key")
					if [ "$res" = UNFINISHED ]; then
						t=$(section "$key" "$log" | grep -a '^=== RUN' | tail -n1 | sed 's/^=== RUN *//')
						FAILS+=("      the VM stopped during ${t:-the start of the test binary}")
					fi
					while read -r t; do FAILS+=("      $t"); done < <(section "$key" "$log" | grep -a -e '^ *--- FAIL' -e '^panic: ' | head -n 20)
				fi
			fi
		done
	done
	if [ -n "$problem" ]; then
		FAILS+=("FAIL: kernel $KLABEL: $problem")
		NFAIL=$((NFAIL + 1)) kfailed=1
	fi
	if [ "$kfailed" = 1 ] && [ -f "$log" ]; then
		if [ -n "$problem" ] || [ ${#FAILED_KEYS[@]} -eq 0 ]; then
			printf '\n---- %s: last %d lines of %s ----\n' "$KLABEL" "$TAIL_LINES" "$log" >&2
			tail -n "$TAIL_LINES" "$log" >&2
		else
			# Each failed run's own part of the console log.
			for key in "${FAILED_KEYS[@]}"; do
				printf '\n---- console log of %s (last %d lines; whole log: %s) ----\n' "$key" "$TAIL_LINES" "$log" >&2
				section "$key" "$log" | tail -n "$TAIL_LINES" >&2
			done
		fi
		printf -- '---- end of console log ----\n' >&2
	fi
done

if [ -n "$VMTEST_BENCH" ]; then
	for KLABEL in "${K_LABELS[@]}"; do
		for b in "${BACKEND_LIST[@]}"; do
			printf '\n==== bench: kernel %s, backend %s ====\n' "$KLABEL" "$b"
			log=$VMTEST_CACHE/logs/$KLABEL.log
			[ -f "$log" ] && section "kernel=$KLABEL backend=$b pkg=$BENCH_PKG" "$log"
		done
	done
fi

echo
echo "vmtest summary (tests: passed/failed/skipped; console logs in $VMTEST_CACHE/logs)"
printf "%-${KW}s %-11s %-${PW}s %-10s %8s  %s\n" KERNEL BACKEND PACKAGE RESULT TIME TESTS
printf '%s\n' "${ROWS[@]}"
[ ${#FAILS[@]} -eq 0 ] || { echo; printf '%s\n' "${FAILS[@]}"; }
echo "vmtest: time: fetch ${T_FETCH}s, build ${T_BUILD}s, total $((SECONDS - T0))s"
echo "vmtest: $NPASS passed, $NFAIL failed"
[ ${#FAILS[@]} -eq 0 ]
