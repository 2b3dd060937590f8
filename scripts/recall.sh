#!/bin/sh
# recall.sh LOG...: from verbose test output (go test -v, or the VM console
# logs under $VMTEST_CACHE/logs), the destroys the ground-truth scenarios
# awaited and saw ("seen") against those a backend announced it cannot see,
# per kernel, backend and namespace type. Feeds README's recall table.
awk '
/@@VMTEST@@ (BOOT|START)/ { for (i = 1; i <= NF; i++) if ($i ~ /^kernel=/) kernel = substr($i, 8) }
/recall: backend=/ {
	for (i = 1; i <= NF; i++) {
		if ($i ~ /^backend=/) b = substr($i, 9)
		if ($i ~ /^type=/) t = substr($i, 6)
		if ($i ~ /^seen=/) s = substr($i, 6)
	}
	k = (kernel == "" ? "host" : kernel) " " b " " t
	total[k]++
	if (s == "true") seen[k]++
}
END {
	for (k in total) printf "%-50s %3d/%-3d seen\n", k, seen[k], total[k]
}' "$@" | sort
