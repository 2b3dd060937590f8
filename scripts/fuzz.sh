#!/usr/bin/env bash
# Runs each fuzz target for FUZZTIME (default 10s): the committed corpora
# (testdata/fuzz) run with every `go test`; this looks for new inputs.
# A failure leaves the input in the package's testdata/fuzz: commit it
# with the fix.
#   scripts/fuzz.sh [FUZZTIME]
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-${FUZZTIME:-10s}}
# The cmd/nstrace package's TestMain wants the binary it would test.
export NSTRACE_BIN=${NSTRACE_BIN:-$PWD/nstrace}
[ -x "$NSTRACE_BIN" ] || go build -o "$NSTRACE_BIN" ./cmd/nstrace
for t in ./events:FuzzRecord ./cmd/nstrace:FuzzParseFlags ./container:FuzzParse; do
	pkg=${t%%:*} name=${t#*:}
	echo "fuzz: $name ($pkg) for $time"
	# Minimizing a new input is bounded by runs, not time: a large input
	# can take the whole budget otherwise.
	go test -run '^$' -fuzz "^$name\$" -fuzztime "$time" -fuzzminimizetime 200x "$pkg"
done
