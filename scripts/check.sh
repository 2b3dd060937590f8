#!/usr/bin/env bash
# The whole test suite on a fresh machine, as root: installs make if it is
# missing (make check installs the rest: scripts/deps.sh), then runs the
# host tests, a smoke run of the bench (make bench-smoke: it fails only if the
# bench cannot run) and the VM tests, in that order (make check). README's
# "Run the tests" command; .ci/run runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
start=$SECONDS
if ! command -v make >/dev/null; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make
fi
make check
echo "check: finished in $((SECONDS - start)) s"
