package main

import (
	"fmt"
	"os"
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

// awaitCreate waits for the create of the namespace of type typ numbered
// inum, by a process named comm.
func awaitCreate(tr *nstraceRun, typ string, inum uint64, comm string) *jsonEvent {
	tr.t.Helper()
	tr.watch()
	desc := fmt.Sprintf("create type=%s inum=%d comm=%s", typ, inum, comm)
	e := tr.await(eventTimeout(), func(e *jsonEvent) bool { return e.Inum == inum }, wantEvent{desc: desc, match: func(e *jsonEvent) bool {
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
	if self := selfNS(t)["pid"]; outer == self || inner == self || outer == 0 {
		t.Fatalf("unshare -p -f twice did not nest two new pid namespaces: inner %d, its parent %d, ours %d", inner, outer, self)
	}
	td := teardown{started: p.started, release: p.release, pid: p.pid(),
		inum:    map[string]uint64{"pid": inner, "pid/outer": outer},
		creates: map[string]*jsonEvent{"pid": awaitCreate(tr, "pid", inner, "unshare"), "pid/outer": awaitCreate(tr, "pid", outer, "unshare")}}
	if c := td.creates["pid/outer"]; c.PID != p.pid() {
		t.Errorf("create of the outer pid namespace by pid %d, want the first unshare (%d): %s", c.PID, p.pid(), c.line)
	}
	if c := td.creates["pid"]; c.PPID != p.pid() || c.OldInum != outer {
		t.Errorf("create of the inner pid namespace: want ppid %d (the first unshare) and old_inum %d (the outer one): %s", p.pid(), outer, c.line)
	}
	got := td.expect(tr)
	// A polled destroy's time is the poll's, up to a poll interval (and,
	// in a VM, the poll's scheduling) after the kernel freed it (README):
	// an exact destroy of the outer one may then carry an earlier time.
	// What is exact must be in order.
	if in, out := got["pid"], got["pid/outer"]; in != nil && out != nil {
		slack := time.Duration(0)
		if in.How == "polled" {
			slack = scaled(50 * time.Millisecond)
		}
		if out.wall.Before(in.wall.Add(-slack)) {
			t.Errorf("the outer pid namespace was destroyed before the inner one, its child (allowing %v for a polled time):\n    %s\n    %s", slack, out.line, in.line)
		}
	}
	td.verifyHistory(tr, tr.stop(os.Interrupt))
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
	td := teardown{started: p.started, release: func() { pin.Close() }, pid: p.pid(), pinned: true,
		inum:    map[string]uint64{"net": net, "user": user},
		creates: map[string]*jsonEvent{"net": awaitCreate(tr, "net", net, "unshare"), "user": awaitCreate(tr, "user", user, "unshare")}}
	// The process exits: both stay.
	p.release()
	time.Sleep(scaled(500 * time.Millisecond))
	got := td.expect(tr)
	if n, u := got["net"], got["user"]; n != nil && u != nil && u.wall.Before(n.wall) {
		t.Errorf("the user namespace was destroyed before the net namespace it owns:\n    %s\n    %s", u.line, n.line)
	}
	td.verifyHistory(tr, tr.stop(os.Interrupt))
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
	started := p.started
	p.release()

	tr := startTracer(t, "json")
	td := teardown{started: started, pid: p.pid(), pinned: true,
		inum: map[string]uint64{"net": net, "uts": uts, "user": user},
		release: func() {
			for _, m := range mounts {
				if err := unix.Unmount(m, 0); err != nil {
					t.Fatalf("umount %s: %v", m, err)
				}
			}
		}}
	got := td.expect(tr)
	for _, typ := range []string{"net", "uts"} {
		if d, u := got[typ], got["user"]; d != nil && u != nil && u.wall.Before(d.wall) {
			t.Errorf("the user namespace was destroyed before the %s namespace it owns:\n    %s\n    %s", typ, u.line, d.line)
		}
	}
	td.verifyHistory(tr, tr.stop(os.Interrupt))
}
