package main

// Slow and stuck consumers, and stopping in a storm: nstrace behind a pipe
// nobody reads keeps its memory, counts what it drops and says so once the
// pipe moves; a second nstrace at the same time sees every event; SIGINT
// in the middle of a storm ends it within a second, its output whole.

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

func TestStuckConsumer(t *testing.T) {
	backendIndependent(t)
	needRoot(t, "nstrace loads BPF programs")
	n := 20000
	if itCfg.slow > 1 {
		n = 1500
	}
	drv := startSoakDriver(t, n)
	filter := []string{"--pid", strconv.Itoa(drv.pid), "--children"}

	// a: to a file, as fast as it goes.
	out, err := os.Create(filepath.Join(t.TempDir(), "a.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	a := startRawTracer(t, out, filter...)
	// b: to a pipe read by no one until the driver is done, with a ring
	// buffer too small for what comes meanwhile.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b := startRawTracer(t, pw, append(filter, "-v", "--ring-size", "256K")...)
	pw.Close()
	defer pr.Close()
	before, err := vmRSS(b.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}

	drv.begin(a.pinTypes(t))
	var peak int
	done := make(chan soakCounts)
	go func() { done <- drv.wait(t) }()
	var counts soakCounts
wait:
	for {
		select {
		case counts = <-done:
			break wait
		case <-time.After(100 * time.Millisecond):
			if kb, err := vmRSS(b.cmd.Process.Pid); err == nil {
				peak = max(peak, kb)
			}
		}
	}
	// Still stuck a while after the storm, then the pipe moves.
	time.Sleep(scaled(time.Second))
	if kb, err := vmRSS(b.cmd.Process.Pid); err == nil {
		peak = max(peak, kb)
	}
	var bOut bytes.Buffer
	copied := make(chan error, 1)
	go func() { _, err := io.Copy(&bOut, pr); copied <- err }()
	time.Sleep(scaled(2 * time.Second)) // the last destroys: work queues, RCU, the poll
	a.stop(t, stopTimeout())
	b.stop(t, stopTimeout())
	if err := <-copied; err != nil {
		t.Fatal(err)
	}

	want := counts.total()
	if _, err := out.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	gotA, _, _, lostA := jsonCounts(t, out)
	gotB, _, _, lostB := jsonCounts(t, &bOut)
	t.Logf("driver: %d events; a: %d received, %d lost; b (stuck): %d received, %d lost; b's RSS %d KiB before, peak %d KiB while stuck",
		want, sum(gotA), lostA, sum(gotB), lostB, before, peak)
	if sum(gotA) != want || lostA != 0 {
		t.Errorf("the nstrace beside a stuck one: %d received, %d lost; want all %d", sum(gotA), lostA, want)
	}
	for _, l := range strings.Split(b.stderrText(), "\n") {
		if strings.Contains(l, "skipped") || strings.Contains(l, "full") {
			t.Log(l)
		}
	}
	if sum(gotB)+lostB != want {
		t.Errorf("the stuck nstrace: %d received + %d lost = %d, want %d", sum(gotB), lostB, sum(gotB)+lostB, want)
	}
	if lostB == 0 {
		t.Errorf("the stuck nstrace lost nothing: the test did not stall it enough to drop")
	}
	// It blocks on the pipe; what the kernel drops meanwhile takes no
	// memory of its own.
	if peak > before+8<<10 {
		t.Errorf("the stuck nstrace grew from %d KiB to %d KiB", before, peak)
	}
}

func TestStopInStorm(t *testing.T) {
	backendIndependent(t)
	needRoot(t, "nstrace loads BPF programs")
	drv := startSoakDriver(t, 10_000_000) // more than it gets to do
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	tr := startRawTracer(t, pw, "--pid", strconv.Itoa(drv.pid), "--children")
	pw.Close()
	var out bytes.Buffer
	copied := make(chan error, 1)
	go func() { _, err := io.Copy(&out, pr); copied <- err }()
	drv.begin(tr.pinTypes(t))
	time.Sleep(scaled(time.Second))
	took := tr.stop(t, scaled(time.Second))
	drv.cmd.Process.Kill()
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	got, _, _, lost := jsonCounts(t, &out) // fails on a line cut short
	t.Logf("stopped in %v, with %d events out (%d lost)", took.Round(time.Millisecond), sum(got), lost)
	if sum(got) == 0 {
		t.Errorf("no events in the storm")
	}
	if b := out.Bytes(); len(b) > 0 && b[len(b)-1] != '\n' {
		t.Errorf("output ends inside a line")
	}
}

// nstracePrograms lists the BPF programs loaded now whose names are
// nstrace's (as the kernel keeps them: 15 bytes).
func nstracePrograms(t *testing.T) []string {
	t.Helper()
	var names []string
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			break
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			continue
		}
		for _, prefix := range []string{"tp_", "fentry_", "fexit_", "kprobe_", "kretprobe_", "common_"} {
			if strings.HasPrefix(info.Name, prefix) {
				names = append(names, info.Name)
				break
			}
		}
	}
	return names
}

// However nstrace dies (SIGKILL; its stdout closed under it, SIGPIPE),
// nothing of it stays in the kernel.
func TestDeathLeavesNothing(t *testing.T) {
	needRoot(t, "nstrace loads BPF programs")
	needTools(t, "unshare", "true")
	if p := nstracePrograms(t); len(p) > 0 {
		t.Fatalf("programs of another nstrace are loaded already: %v", p)
	}
	for _, how := range []string{"sigkill", "closed_stdout"} {
		t.Run(how, func(t *testing.T) {
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			tr := startRawTracer(t, pw, "--docker-socket", "")
			pw.Close()
			if len(nstracePrograms(t)) == 0 {
				t.Fatalf("no nstrace program is loaded while it runs: the check would see nothing")
			}
			var ended error
			if how == "sigkill" {
				tr.cmd.Process.Kill()
				pr.Close()
			} else {
				pr.Close()
			}
			// Its next write fails: make events until it ends.
			deadline := time.After(scaled(5 * time.Second))
		wait:
			for {
				select {
				case ended = <-tr.exited:
					break wait
				case <-deadline:
					t.Fatalf("nstrace still runs")
				case <-time.After(scaled(20 * time.Millisecond)):
					exec.Command("unshare", "-u", "true").Run()
				}
			}
			t.Logf("nstrace ended: %v", ended)
			// The kernel frees a program once its last fd and link are gone.
			until := time.Now().Add(scaled(5 * time.Second))
			for left := nstracePrograms(t); len(left) > 0; left = nstracePrograms(t) {
				if time.Now().After(until) {
					t.Fatalf("left loaded after nstrace died: %v", left)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
