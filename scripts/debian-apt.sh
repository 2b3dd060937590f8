# shellcheck shell=bash
# debian-apt.sh, sourced: Debian's archive seen through a private apt
# configuration per suite and architecture, under $DEBIAN_APT_DIR (the
# machine's own sources, which name its release only, are neither read nor
# changed). Needs say and die. Used by vmtest.sh (the VM kernels) and
# vmlinux-arm64.sh (the arm64 kernel's BTF).

# apt_for sets APT_OPTS for suite $1, architecture $2; the package lists
# are fetched on first use.
declare -A APT_FRESH=()
apt_for() {
	local suite=$1 arch=$2 d
	d=$DEBIAN_APT_DIR/$suite-$arch
	APT_OPTS=(-o "Dir::Etc::SourceList=$d/sources.list" -o "Dir::Etc::SourceParts=$d/parts.d"
		-o "Dir::Etc::Preferences=$d/preferences" -o "Dir::Etc::PreferencesParts=$d/parts.d"
		-o "Dir::State=$d" -o "Dir::State::Lists=$d/lists" -o "Dir::State::status=$d/status"
		-o "Dir::Cache=$d/cache" -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch"
		-o Acquire::Languages=none -o APT::Sandbox::User=root)
	[ -f "$d/sources.list" ] && [ -d "$d/parts.d" ] && [ -n "$(find "$d/lists" -name '*_Packages*' 2>/dev/null | head -n1)" ] && return 0
	apt_refresh "$suite" "$arch"
}

# apt_refresh fetches the package lists of suite $1, architecture $2 (once
# per run).
apt_refresh() {
	local suite=$1 arch=$2 d keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	d=$DEBIAN_APT_DIR/$suite-$arch
	[ -z "${APT_FRESH[$suite-$arch]:-}" ] || return 0
	[ -f "$keyring" ] || die "$keyring not found (package debian-archive-keyring)"
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/parts.d"
	: >"$d/status"
	{
		echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite main"
		echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite-updates main"
		echo "deb [signed-by=$keyring] http://deb.debian.org/debian-security $suite-security main"
	} >"$d/sources.list"
	say "apt-get update ($suite, $arch: private configuration in $d)"
	apt-get -qq "${APT_OPTS[@]}" update >&2 || die "apt-get update of $suite ($arch) failed"
	APT_FRESH[$suite-$arch]=1
}

# apt_download downloads packages $4... of suite $1, architecture $2 into
# folder $3, fetching the lists again once if that fails (they were stale:
# the archive has newer builds).
apt_download() {
	local suite=$1 arch=$2 dir=$3
	shift 3
	(cd "$dir" && apt-get -qq "${APT_OPTS[@]}" download "$@" >&2) && return 0
	apt_refresh "$suite" "$arch"
	(cd "$dir" && apt-get -qq "${APT_OPTS[@]}" download "$@" >&2)
}

# resolve_glob prints the newest package of the suite (APT_OPTS) whose name
# matches the glob $1.
resolve_glob() {
	local pat=$1 prefix name
	prefix=${pat%%[*?[]*}
	while read -r name; do
		# shellcheck disable=SC2053 # glob match on purpose
		[[ $name == $pat ]] || continue
		echo "$name"
		return 0
	done < <(apt-cache "${APT_OPTS[@]}" pkgnames "$prefix" 2>/dev/null | sort -rV)
	return 1
}
