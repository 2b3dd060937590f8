package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestBpftraceCounts(t *testing.T) {
	// What bpftrace 0.17 writes to its output: the attach line, the
	// program's lines, and a "Lost N events" line per perf-buffer overrun.
	out := filepath.Join(t.TempDir(), "out.txt")
	text := "Attaching 9 probes...\n" +
		"unshare pid=1 comm=a flags=0x4000000 ret=0\n" +
		"Lost 12 events\n" +
		"unshare pid=1 comm=a flags=0x4000000 ret=0\n" +
		"Lost 3 events\n\n\n"
	if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	events, lost, err := bpftraceCounts(out, []string{"Lost 99 events"})
	if err != nil || events != 2 || lost != 15 {
		t.Errorf("bpftraceCounts = %d, %d, %v; want 2, 15 (stderr ignored when the output has reports)", events, lost, err)
	}
	if err := os.WriteFile(out, []byte("Attaching 1 probe...\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if events, lost, _ := bpftraceCounts(out, []string{"ERROR: couldn't set RLIMIT_MEMLOCK", "Lost 7 events"}); events != 0 || lost != 7 {
		t.Errorf("bpftraceCounts = %d, %d; want 0, 7 (from stderr)", events, lost)
	}
}

func TestNstraceSummary(t *testing.T) {
	stderr := []string{"nstrace: tracing namespaces (backend: fentry); Ctrl-C to stop", "nstrace: 300000 events, 42 lost"}
	if events, lost, err := nstraceSummary(stderr); err != nil || events != 300000 || lost != 42 {
		t.Errorf("nstraceSummary = %d, %d, %v; want 300000, 42", events, lost, err)
	}
	if _, _, err := nstraceSummary(stderr[:1]); err == nil {
		t.Error("nstraceSummary without a summary line: no error")
	}
}
