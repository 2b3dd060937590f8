package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// relativeInum opens /proc/PID/ns/FILE and returns the inode number of the
// namespace an nsfs ioctl (NS_GET_PARENT, NS_GET_USERNS) names.
func relativeInum(t *testing.T, pid int, file string, req uint) uint64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rfd, err := unix.IoctlRetInt(int(f.Fd()), req)
	if err != nil {
		t.Fatalf("ioctl on /proc/%d/ns/%s: %v", pid, file, err)
	}
	defer unix.Close(rfd)
	var st unix.Stat_t
	if err := unix.Fstat(rfd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// nsEnd is one namespace whose destroy a test awaits.
type nsEnd struct {
	typ    string
	inum   uint64
	create *jsonEvent
}

func (n nsEnd) desc() string { return fmt.Sprintf("destroy type=%s inum=%d", n.typ, n.inum) }

func (n nsEnd) isDestroy(e *jsonEvent) bool {
	return e.Event == "destroy" && e.Type == n.typ && e.Inum == n.inum && !e.wall.Before(n.create.wall)
}

// awaitEnds checks that none of ends is destroyed yet, runs release, and
// waits for each destroy within the deadline; it returns them in ends'
// order. A type the backend announced it cannot see is not awaited (nil).
func awaitEnds(tr *nstraceRun, release func(), ends ...nsEnd) []*jsonEvent {
	t := tr.t
	t.Helper()
	for _, n := range ends {
		forbid(t, tr.snapshot(), "destroy while the namespace is still in use", n.isDestroy)
	}
	released := time.Now()
	release()
	var wants []wantEvent
	var idx []int
	for i, n := range ends {
		if why := tr.blindSpot(n.typ); why != "" {
			t.Logf("not awaiting the %s destroy: backend %s announced %q", n.typ, tr.backend, why)
			tr.recall(n.typ, nil)
			continue
		}
		wants = append(wants, wantEvent{n.desc(), n.isDestroy})
		idx = append(idx, i)
	}
	related := func(e *jsonEvent) bool {
		for _, n := range ends {
			if e.Inum == n.inum || e.Event == "lost" {
				return true
			}
		}
		return false
	}
	found := tr.await(eventTimeout(), related, wants...)
	out := make([]*jsonEvent, len(ends))
	for j, i := range idx {
		d, n := found[j], ends[i]
		out[i] = d
		tr.recall(n.typ, d)
		var create *jsonEvent
		if n.create.Event == "create" {
			create = n.create
		}
		if why := checkNsID(d, create); why != "" {
			t.Errorf("%s: %s\n    create:  %v\n    destroy: %s", n.desc(), why, create, d.line)
		}
		if d.recv.Before(released) {
			t.Errorf("%s read before the release: %s", n.desc(), d.line)
		}
		switch seen := n.create.Event == "create"; {
		case seen && d.LifetimeNS == nil:
			t.Errorf("%s lacks lifetime_ns though its create was seen: %s", n.desc(), d.line)
		case !seen && d.LifetimeNS != nil:
			t.Errorf("%s has lifetime_ns though its create was not seen: %s", n.desc(), d.line)
		}
	}
	return out
}

// awaitCreate waits for the create of the namespace of type typ numbered
// inum, by a process named comm.
func awaitCreate(tr *nstraceRun, typ string, inum uint64, comm string) *jsonEvent {
	tr.t.Helper()
	tr.watch()
	desc := fmt.Sprintf("create type=%s inum=%d comm=%s", typ, inum, comm)
	e := tr.await(eventTimeout(), func(e *jsonEvent) bool { return e.Inum == inum }, wantEvent{desc, func(e *jsonEvent) bool {
		return e.Event == "create" && e.Type == typ && e.Inum == inum && e.Comm == comm
	}})[0]
	if why := checkNsID(e, nil); why != "" {
		tr.t.Errorf("%s: %s: %s", desc, why, e.line)
	}
	return e
}

// 7. Nested pid namespaces: the outer one lives as long as the inner one
// (its child) does; when the last process goes, the kernel frees the inner,
// then the outer with it.
func TestNestedPidNamespaces(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	tr := startTracer(t, "json")
	p := startNSProc(t, shCmd("unshare", "-p", "-f", "--", "unshare", "-p", "-f", "--"))
	inner := p.ns["pid"]
	outer := relativeInum(t, p.selfPID, "pid", unix.NS_GET_PARENT)
	if self := selfNS(t)["pid"]; outer == self || inner == self || relativeInum(t, p.selfPID, "pid", unix.NS_GET_PARENT) == 0 {
		t.Fatalf("unshare -p -f twice did not nest two new pid namespaces: inner %d, its parent %d, ours %d", inner, outer, self)
	}
	ends := []nsEnd{
		{typ: "pid", inum: inner, create: awaitCreate(tr, "pid", inner, "unshare")},
		{typ: "pid", inum: outer, create: awaitCreate(tr, "pid", outer, "unshare")},
	}
	if c := ends[1].create; c.PID != p.pid() {
		t.Errorf("create of the outer pid namespace by pid %d, want the first unshare (%d): %s", c.PID, p.pid(), c.line)
	}
	if c := ends[0].create; c.PPID != p.pid() || c.OldInum != outer {
		t.Errorf("create of the inner pid namespace: want ppid %d (the first unshare) and old_inum %d (the outer one): %s", p.pid(), outer, c.line)
	}
	got := awaitEnds(tr, p.release, ends...)
	if got[0] != nil && got[1] != nil && got[1].wall.Before(got[0].wall) {
		t.Errorf("the outer pid namespace was destroyed before the inner one, its child:\n    %s\n    %s", got[1].line, got[0].line)
	}
	evs := tr.stop(os.Interrupt)
	for _, n := range ends {
		exactlyOneDestroy(t, evs, n)
	}
}

// 8. A user namespace owning a network namespace: an open file keeps the
// net namespace, which keeps its owner, after every process is gone. The
// kernel frees the net namespace when the file closes, then the user one.
func TestUserNamespaceOwningNet(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	tr := startTracer(t, "json")
	// unshare creates the user namespace first; the net namespace it then
	// creates is owned by it.
	p := startNSProc(t, shCmd("unshare", "-U", "-r", "-n", "--"))
	user, net := p.ns["user"], p.ns["net"]
	if owner := relativeInum(t, p.selfPID, "net", unix.NS_GET_USERNS); owner != user {
		t.Fatalf("the net namespace %d is owned by user namespace %d, want %d (the new one)", net, owner, user)
	}
	pin, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", p.selfPID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pin.Close() })
	ends := []nsEnd{
		{typ: "net", inum: net, create: awaitCreate(tr, "net", net, "unshare")},
		{typ: "user", inum: user, create: awaitCreate(tr, "user", user, "unshare")},
	}
	// The process exits: both stay.
	p.release()
	time.Sleep(scaled(500 * time.Millisecond))
	got := awaitEnds(tr, func() { pin.Close() }, ends...)
	if got[0] != nil && got[1] != nil && got[1].wall.Before(got[0].wall) {
		t.Errorf("the user namespace was destroyed before the net namespace it owns:\n    %s\n    %s", got[1].line, got[0].line)
	}
	evs := tr.stop(os.Interrupt)
	for _, n := range ends {
		exactlyOneDestroy(t, evs, n)
	}
}

// exactlyOneDestroy fails unless the complete output has one destroy of n
// after its create and before nstrace was told to stop.
func exactlyOneDestroy(t *testing.T, evs []*jsonEvent, n nsEnd) {
	t.Helper()
	var ds []string
	for _, e := range evs {
		if n.isDestroy(e) {
			ds = append(ds, e.line)
		}
	}
	if len(ds) > 1 {
		t.Errorf("%d events for %s, want one:\n    %s", len(ds), n.desc(), strings.Join(ds, "\n    "))
	}
}

// 10. Namespaces made before nstrace started and kept only by a bind mount
// outside /run/netns, and a user namespace kept only because it owns one of
// them: nstrace finds them at start and reports their destroy, owner last,
// when the mount goes.
func TestPreexistingBindMountedAndOwner(t *testing.T) {
	needRoot(t, "bind-mounts namespaces and loads BPF programs")
	needTools(t, "unshare", "sh", "readlink")
	dir := t.TempDir()
	mounts := map[string]string{}
	p := startNSProc(t, shCmd("unshare", "-U", "-r", "-n", "-u", "--"))
	for _, typ := range []string{"net", "uts"} {
		mounts[typ] = dir + "/" + typ
		if err := os.WriteFile(mounts[typ], nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(fmt.Sprintf("/proc/%d/ns/%s", p.selfPID, typ), mounts[typ], "", unix.MS_BIND, ""); err != nil {
			t.Fatalf("bind mount of the %s namespace: %v", typ, err)
		}
		m := mounts[typ]
		t.Cleanup(func() { unix.Unmount(m, unix.MNT_DETACH) })
	}
	user, net, uts := p.ns["user"], p.ns["net"], p.ns["uts"]
	p.release()

	tr := startTracer(t, "json")
	ends := []nsEnd{{typ: "net", inum: net}, {typ: "uts", inum: uts}, {typ: "user", inum: user}}
	for i := range ends {
		ends[i].create = &jsonEvent{} // none: made before the start
	}
	var awaited []nsEnd
	for _, n := range ends {
		if why := tr.pinnedBlindSpot(n.typ); why != "" && n.typ != "user" {
			t.Logf("not awaiting the %s destroy: backend %s announced %q", n.typ, tr.backend, why)
			tr.recall(n.typ, nil)
			continue
		}
		awaited = append(awaited, n)
	}
	got := awaitEnds(tr, func() {
		for _, m := range mounts {
			if err := unix.Unmount(m, 0); err != nil {
				t.Fatalf("umount %s: %v", m, err)
			}
		}
	}, awaited...)
	byType := map[string]*jsonEvent{}
	for i, n := range awaited {
		byType[n.typ] = got[i]
	}
	for _, typ := range []string{"net", "uts"} {
		if d, u := byType[typ], byType["user"]; d != nil && u != nil && u.wall.Before(d.wall) {
			t.Errorf("the user namespace was destroyed before the %s namespace it owns:\n    %s\n    %s", typ, u.line, d.line)
		}
	}
	evs := tr.stop(os.Interrupt)
	for _, n := range awaited {
		exactlyOneDestroy(t, evs, n)
	}
}
