#!/bin/sh
# recall.sh LOG...: from verbose test output (go test -v, or the VM console
# logs under $VMTEST_CACHE/logs), the destroys the ground-truth scenarios
# awaited and saw against those a backend announced it cannot see, per
# kernel, backend and namespace type, with how they were seen. Feeds
# README's recall table.
awk '
/@@VMTEST@@ (BOOT|START)/ {
	for (i = 1; i <= NF; i++) {
		if ($i ~ /^kernel=/) kernel = substr($i, 8)
		if ($i ~ /^backend=/) asked = substr($i, 9)
	}
}
/recall: backend=/ {
	how = "-"
	for (i = 1; i <= NF; i++) {
		if ($i ~ /^backend=/) b = substr($i, 9)
		if ($i ~ /^type=/) t = substr($i, 6)
		if ($i ~ /^seen=/) s = substr($i, 6)
		if ($i ~ /^how=/) how = substr($i, 5)
	}
	if (asked != "" && asked != b) b = asked "->" b
	k = (kernel == "" ? "host" : kernel) " " b " " t
	total[k]++
	if (s == "true") { seen[k]++; hows[k] = hows[k] " " how }
}
END {
	for (k in total) {
		n = split(hows[k], hs, " "); delete c; desc = ""
		for (i = 1; i <= n; i++) c[hs[i]]++
		for (h in c) desc = desc " " h "=" c[h]
		printf "%-48s %3d/%-3d seen%s\n", k, seen[k], total[k], desc
	}
}' "$@" | sort
