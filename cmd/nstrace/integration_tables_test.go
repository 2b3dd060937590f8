package main

// A full table: nstrace's table of live namespaces, made small on purpose
// (--table-size), overflows. It says so once, marks the events it can no
// longer make exact as partial instead of losing them, and recovers as
// entries free.

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestFullTable(t *testing.T) {
	needTools(t, "unshare", "sleep", "true")
	const size, held = 16, 40
	tr := startTracer(t, "json", "--table-size", fmt.Sprint(size))
	var cmds []*exec.Cmd
	inums := map[uint64]bool{}
	t.Cleanup(func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	})
	for range held {
		c := exec.Command("unshare", "-u", "sleep", "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
		tr.watch(c.Process.Pid)
	}
	// unshare execs sleep once the namespace is made: read it then.
	for _, c := range cmds {
		var inum uint64
		for i := 0; i < 100; i++ {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/uts", c.Process.Pid))
			if err == nil {
				if inum, err = parseNSLink("uts", link); err == nil && inum != selfNS(t)["uts"] {
					break
				}
			}
			inum = 0
			time.Sleep(scaled(10 * time.Millisecond))
		}
		if inum == 0 {
			t.Fatalf("process %d never got its uts namespace", c.Process.Pid)
		}
		inums[inum] = true
	}
	var wants []wantEvent
	for inum := range inums {
		wants = append(wants, wantEvent{desc: fmt.Sprintf("create uts %d", inum), match: isEv("create", "uts", inum)})
	}
	creates := tr.await(eventTimeout(), func(e *jsonEvent) bool { return inums[e.Inum] }, wants...)
	partial := map[uint64]bool{}
	for _, e := range creates {
		if e.Partial {
			partial[e.Inum] = true
		}
	}
	// The table had room for at most size, some taken by namespaces that
	// were there before.
	if len(partial) < held-size {
		t.Errorf("%d of %d creates marked partial with a table of %d", len(partial), held, size)
	}
	t.Logf("%d of %d creates partial", len(partial), held)

	for _, c := range cmds {
		c.Process.Kill()
		c.Wait()
	}
	cmds = nil
	wants = wants[:0]
	for inum := range inums {
		wants = append(wants, wantEvent{desc: fmt.Sprintf("destroy uts %d", inum), match: isEv("destroy", "uts", inum)})
	}
	for _, d := range tr.await(eventTimeout(), func(e *jsonEvent) bool { return inums[e.Inum] }, wants...) {
		// What the table did not keep has no owner or lifetime: partial;
		// what it kept is exact.
		if d.Partial != partial[d.Inum] || !d.Partial && d.LifetimeNS == nil {
			t.Errorf("destroy of uts %d (create partial: %v): %s", d.Inum, partial[d.Inum], d)
		}
	}

	// Room again: exact events.
	_, inum := tr.unshareUTS()
	ev := tr.await(eventTimeout(), func(e *jsonEvent) bool { return e.Inum == inum },
		wantEvent{desc: "create after the table freed", match: isEv("create", "uts", inum)},
		wantEvent{desc: "its destroy", match: isEv("destroy", "uts", inum)})
	if ev[0].Partial || ev[1].Partial || ev[1].LifetimeNS == nil {
		t.Errorf("with room in the table again, still partial or without a lifetime:\n  %s\n  %s", ev[0], ev[1])
	}
	evs := tr.stop(os.Interrupt)
	if n := strings.Count(tr.stderrText(), "the table of live namespaces is full"); n != 1 {
		t.Errorf("stderr says the table is full %d times, want once:\n%s", n, tr.stderrText())
	}
	// The other tables are as small: what they lose (the machine's
	// other namespaces) is theirs.
	other := strings.Contains(tr.stderrText(), "watched for their end is full") || strings.Contains(tr.stderrText(), "net namespaces is full")
	if l := tr.lost(); l != 0 && !other {
		t.Errorf("%d events lost; a full table of live namespaces loses none", l)
	}
	_ = evs
}
