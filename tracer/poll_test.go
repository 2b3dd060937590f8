package tracer

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/events"
)

// The tracepoint backend polls the namespaces only a bind mount or an open
// file keeps: it must not poll while none is watched (idle costs nothing),
// start when one comes under watch, report its destroy, and stop again.
func TestPollOnlyWhileWatched(t *testing.T) {
	needRoot(t)
	if b := testBackend(); b != Tracepoint && b != Auto {
		t.Skipf("backend %s does not poll (only the tracepoint backend watches namespaces; its run tests this)", b)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs util-linux unshare")
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enable BPF run statistics: %v", err)
	}
	defer stats.Close()
	tr, err := Open(Options{Backend: Tracepoint})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	poll := tr.coll.Programs["tp_poll_watched"]
	watched := tr.coll.Maps["watched"]
	runs := func() uint64 {
		t.Helper()
		st, err := poll.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.RunCount
	}

	// Read like nstrace does: REC_WATCH records wake the poll.
	dec, err := events.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	destroyed := make(chan uint32, 64)
	go func() {
		var rec ringbuf.Record
		for {
			err := tr.Read(&rec)
			if errors.Is(err, ringbuf.ErrFlushed) || errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			if _, _, ok, _ := events.DecodeString(rec.RawSample); ok || err != nil {
				continue
			}
			evs, _, _ := dec.Decode(rec.RawSample)
			for _, ev := range evs {
				if ev.Kind == events.Destroy && ev.How == events.Polled {
					destroyed <- ev.Inum
				}
			}
		}
	}()

	// idle asserts that the poll does not run over d while nothing is
	// watched (if something else on the machine is watched meanwhile, the
	// poll is right to run, and this proves nothing: that fails too).
	idle := func(when string, d time.Duration) {
		t.Helper()
		before := runs()
		time.Sleep(d)
		if n := mapLen(t, watched); n != 0 {
			t.Fatalf("%s: %d namespaces are watched though this test pins none (nstrace watches some that never die, or something else on this machine pins them); cannot check that an idle poll does not run", when, n)
		}
		if after := runs(); after != before {
			t.Errorf("%s: nothing watched, yet the poll ran %d times in %s", when, after-before, d)
		}
	}
	time.Sleep(100 * time.Millisecond) // what the start-up found is settled
	idle("after start", 500*time.Millisecond)

	// A uts namespace that only a bind mount keeps once unshare exits.
	pin := filepath.Join(t.TempDir(), "uts")
	if err := os.WriteFile(pin, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("unshare", "--uts="+pin, "true").CombinedOutput(); err != nil {
		t.Fatalf("unshare --uts=%s: %v: %s", pin, err, out)
	}
	var st unix.Stat_t
	if err := unix.Stat(pin, &st); err != nil {
		t.Fatal(err)
	}
	inum := uint32(st.Ino)
	start := runs()
	deadline := time.Now().Add(2 * time.Second)
	for runs() < start+3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := runs() - start; got < 3 {
		t.Fatalf("a namespace came under watch, but the poll ran %d times in 2s", got)
	}
	if err := unix.Unmount(pin, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-destroyed:
		if got != inum {
			t.Errorf("polled destroy of %d, want %d (the unmounted uts namespace)", got, inum)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("no polled destroy of uts %d within 2s of its unmount", inum)
	}
	time.Sleep(3 * PollInterval) // the poll that found it gone, and the one after
	idle("after the destroy", 500*time.Millisecond)
}
