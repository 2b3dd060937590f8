package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/nstrace/nstrace"
	"github.com/nstrace/nstrace/metrics"
)

// commit is set by the Makefile (-X main.commit=...): git describe of the
// tree it was built from. Without it, the Go toolchain's own VCS stamp.
var commit string

// buildInfo is what this binary is: its module version ("(devel)" when
// built from a checkout), the commit it was built from (and whether the tree
// had changes), the Go version and the BPF object it embeds.
func buildInfo() metrics.Build {
	b := metrics.Build{Version: "(devel)", Commit: "unknown", GoVersion: runtime.Version(), BPFObject: nstrace.ObjectDigest()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if info.Main.Version != "" {
		b.Version = info.Main.Version
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if commit != "" {
		b.Commit = commit
	} else if rev != "" {
		b.Commit = rev[:min(12, len(rev))]
		if dirty {
			b.Commit += "-dirty"
		}
	}
	return b
}

func printVersion(w io.Writer) {
	b := buildInfo()
	fmt.Fprintf(w, "nstrace %s\ncommit:     %s\nbpf object: %s (%s)\ngo:         %s %s/%s\n",
		b.Version, b.Commit, b.BPFObject, runtime.GOARCH, b.GoVersion, runtime.GOOS, runtime.GOARCH)
}
