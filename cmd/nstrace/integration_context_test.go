package main

// Context (cgroup, container, pod, exe) on events, and the filters, against
// what the kernel says of the processes (/proc/PID/cgroup, the cgroup
// directory's inode) and with a negative control for every filter: events
// that must not be printed happen in the same run, seen by a second,
// unfiltered nstrace.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nstrace/nstrace/tracer"
)

// hierarchy is the cgroup hierarchy nstrace attributes events in here.
func hierarchy(t *testing.T) tracer.CgroupHierarchy {
	t.Helper()
	h, err := tracer.ChooseCgroupHierarchy("")
	if err != nil {
		t.Fatal(err)
	}
	need(t, h.Mount != "", "the %s cgroup hierarchy mounted", h.Name)
	return h
}

// testCgroup makes cgroup rel (e.g. "/nstrace-test-1/a") in hierarchy h and
// returns its directory and id (the directory's inode number, as the
// kernel's cgroup id). It is removed when the test ends.
func testCgroup(t *testing.T, h tracer.CgroupHierarchy, rel string) (string, uint64) {
	t.Helper()
	dir := filepath.Join(h.Mount, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Deepest first; a cgroup goes once its last task is gone.
		for d := dir; d != h.Mount && d != "/"; d = filepath.Dir(d) {
			for i := 0; i < 50 && os.Remove(d) != nil; i++ {
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return dir, st.Ino
}

// inCgroup is a wrapper command line that moves itself into cgroup dir and
// then runs the rest.
func inCgroup(dir string) []string {
	return []string{"sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, dir}
}

// cgroupOf is pid's cgroup in hierarchy h, from /proc/PID/cgroup.
func cgroupOf(t *testing.T, pid int, h tracer.CgroupHierarchy) string {
	t.Helper()
	p, _, ok := h.Of(pid)
	if !ok {
		t.Fatalf("/proc/%d/cgroup has no %s line", pid, h.Name)
	}
	return p
}

func uniqueName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), hex.EncodeToString(b))
}

// unshared is an `unshare -u -n` holding its namespaces until released.
type unshared struct {
	p        *nsProc
	uts, net uint64
}

// pid is the process in the namespaces (the one that reported them).
func (u *unshared) pid() int { return u.p.selfPID }

func startUnshared(t *testing.T, wrapper ...string) *unshared {
	t.Helper()
	// By its path: a shell (busybox's) may prefer its own applet to a name.
	path, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatal(err)
	}
	p := startNSProc(t, shCmd(append(wrapper, path, "-u", "-n", "--")...))
	u := &unshared{p: p, uts: p.ns["uts"], net: p.ns["net"]}
	if self := selfNS(t); u.uts == self["uts"] || u.net == self["net"] {
		t.Fatalf("unshare -u -n did not make new namespaces: %v", p.ns)
	}
	return u
}

func isEv(event, typ string, inum uint64) func(*jsonEvent) bool {
	return func(e *jsonEvent) bool { return e.Event == event && e.Type == typ && e.Inum == inum }
}

// lifecycle waits in tr for u's creates, releases it, and waits for the
// destroys; it returns the four events: create uts, create net, destroy
// uts, destroy net.
func (u *unshared) lifecycle(t *testing.T, trs ...*nstraceRun) [][]*jsonEvent {
	t.Helper()
	related := func(e *jsonEvent) bool { return e.Inum == u.uts || e.Inum == u.net || e.PID == u.pid() }
	out := make([][]*jsonEvent, len(trs))
	for i, tr := range trs {
		tr.watch(u.pid())
		out[i] = tr.await(eventTimeout(), related,
			wantEvent{desc: fmt.Sprintf("create uts %d", u.uts), match: isEv("create", "uts", u.uts)},
			wantEvent{desc: fmt.Sprintf("create net %d", u.net), match: isEv("create", "net", u.net)})
	}
	u.p.release()
	for i, tr := range trs {
		out[i] = append(out[i], tr.await(scaled(5*time.Second), related,
			wantEvent{desc: fmt.Sprintf("destroy uts %d", u.uts), match: isEv("destroy", "uts", u.uts)},
			wantEvent{desc: fmt.Sprintf("destroy net %d", u.net), match: isEv("destroy", "net", u.net)})...)
	}
	return out
}

// 20. Every event of a process carries its cgroup (path and id, as the
// kernel has them), its executable and its parent's name; the destroy,
// even the kworker's of the network namespace, carries the owner's.
func TestContextOfEvents(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	h := hierarchy(t)
	rel := "/" + uniqueName("nstrace-test") + "/inner"
	dir, cgid := testCgroup(t, h, rel)
	tr := startTracer(t, "json")
	u := startUnshared(t, inCgroup(dir)...)
	if got := cgroupOf(t, u.pid(), h); got != rel {
		t.Fatalf("the driven process is in %s, want %s", got, rel)
	}
	unsharePath, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatal(err)
	}
	evs := u.lifecycle(t, tr)[0]
	for _, e := range evs[:2] {
		if e.Cgroup != rel || e.CgroupID != cgid || e.Exe != unsharePath || e.ParentComm != selfComm(t) || e.ContainerID != "" {
			t.Errorf("create: want cgroup %s, cgroup_id %d, exe %s, parent_comm %s, no container\n    event: %s", rel, cgid, unsharePath, selfComm(t), e)
		}
	}
	for _, e := range evs[2:] {
		if e.Cgroup != rel || e.CgroupID != cgid || e.Owner == nil || e.Owner.PID != u.pid() || e.Owner.Cgroup != rel {
			t.Errorf("destroy: want the owner's cgroup %s (id %d) and owner pid %d\n    event: %s", rel, cgid, u.pid(), e)
		}
	}
	all := tr.stop(os.Interrupt)
	for _, e := range all {
		if e.Event == "nsproxy_free" && e.PID == u.pid() && (e.Cgroup != rel || e.CgroupID != cgid) {
			t.Errorf("nsproxy_free of the process: want cgroup %s (id %d)\n    event: %s", rel, cgid, e)
		}
	}
}

// An actor's executable is remembered with its task between calls
// (task_states), and an exec forgets it: one task joins twice, with
// nsenter and then, exec'd by it, a copy of nsenter under another name.
// Each join must name the program that made it.
func TestExeAfterExec(t *testing.T) {
	needTools(t, "unshare", "nsenter", "sh")
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(nsenter)
	if err != nil {
		t.Fatal(err)
	}
	again := filepath.Join(t.TempDir(), "nsenter-again")
	if err := os.WriteFile(again, b, 0o755); err != nil {
		t.Fatal(err)
	}
	holder := startUnshared(t)
	tr := startTracer(t, "json")
	ns := func(typ string) string { return fmt.Sprintf("--%s=/proc/%d/ns/%s", typ, holder.pid(), typ) }
	p := startNSProc(t, shCmd(nsenter, ns("uts"), "--", again, ns("net"), "--"))
	if p.ns["uts"] != holder.uts || p.ns["net"] != holder.net {
		t.Fatalf("nsenter did not join %v (the holder's uts and net): %v", holder.p.ns, p.ns)
	}
	tr.watch(p.selfPID)
	evs := tr.await(eventTimeout(), func(e *jsonEvent) bool { return e.PID == p.selfPID },
		wantEvent{desc: fmt.Sprintf("join uts %d", holder.uts), match: isEv("join", "uts", holder.uts)},
		wantEvent{desc: fmt.Sprintf("join net %d", holder.net), match: isEv("join", "net", holder.net)})
	if evs[0].Exe != nsenter || evs[1].Exe != again {
		t.Errorf("want the joins by %s then %s\n    events: %s\n            %s", nsenter, again, evs[0], evs[1])
	}
	p.release()
	holder.p.release()
}

// What an actor's task remembers between its calls (task_states) must not
// outlive a move: a task that moves to another cgroup between two
// operations is attributed to the new one, path and id. One task: unshare
// -i in cgroup a, nsenter joining a uts namespace there (by then the
// cgroup's path has gone out: this call remembers that), then a shell that
// moves itself to cgroup b and execs nsenter to join a net namespace.
func TestCgroupAfterMove(t *testing.T) {
	needTools(t, "unshare", "nsenter", "sh")
	h := hierarchy(t)
	base := "/" + uniqueName("nstrace-test")
	dirA, idA := testCgroup(t, h, base+"/a")
	dirB, idB := testCgroup(t, h, base+"/b")
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatal(err)
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Fatal(err)
	}
	holder := startUnshared(t)
	tr := startTracer(t, "json")
	ns := func(typ string) string { return fmt.Sprintf("--%s=/proc/%d/ns/%s", typ, holder.pid(), typ) }
	line := append(inCgroup(dirA), unshare, "-i", "--", nsenter, ns("uts"), "--")
	line = append(line, inCgroup(dirB)...)
	p := startNSProc(t, shCmd(append(line, nsenter, ns("net"), "--")...))
	if got := cgroupOf(t, p.selfPID, h); got != base+"/b" {
		t.Fatalf("the driven process is in %s, want %s/b", got, base)
	}
	tr.watch(p.selfPID)
	evs := tr.await(eventTimeout(), func(e *jsonEvent) bool { return e.PID == p.selfPID },
		wantEvent{desc: fmt.Sprintf("create ipc %d", p.ns["ipc"]), match: isEv("create", "ipc", p.ns["ipc"])},
		wantEvent{desc: fmt.Sprintf("join uts %d", holder.uts), match: isEv("join", "uts", holder.uts)},
		wantEvent{desc: fmt.Sprintf("join net %d", holder.net), match: isEv("join", "net", holder.net)})
	for i, want := range []struct {
		rel string
		id  uint64
	}{{base + "/a", idA}, {base + "/a", idA}, {base + "/b", idB}} {
		if evs[i].Cgroup != want.rel || evs[i].CgroupID != want.id {
			t.Errorf("want cgroup %s (id %d)\n    event: %s", want.rel, want.id, evs[i])
		}
	}
	p.release()
	holder.p.release()
}

// filtered runs nstrace with args (a) and an unfiltered one (b) as ground
// truth: other runs its whole lifecycle first (seen by b), then selected
// (seen by both). a must print every event of selected and none of other's
// processes (by pid, or by owner pid for destroys by a kworker).
func filtered(t *testing.T, args []string, other, selected func() *unshared) (sel []*jsonEvent, evs []*jsonEvent) {
	t.Helper()
	a := startTracer(t, "json", args...)
	b := startTracer(t, "json")
	o := other()
	o.lifecycle(t, b)
	s := selected()
	sel = s.lifecycle(t, a, b)[0]
	b.stop(os.Interrupt)
	evs = a.stop(os.Interrupt)
	a.watch()
	for _, e := range evs {
		if e.PID == o.pid() || (e.Owner != nil && e.Owner.PID == o.pid()) {
			t.Errorf("nstrace %s printed an event of the process it must filter out (pid %d):\n    %s", strings.Join(args, " "), o.pid(), e)
		}
	}
	return sel, evs
}

// 21. --cgroup: that cgroup and below; a sibling's events are not printed.
func TestFilterCgroup(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	h := hierarchy(t)
	base := "/" + uniqueName("nstrace-test")
	in, _ := testCgroup(t, h, base+"/sel/below")
	out, _ := testCgroup(t, h, base+"/selx") // a name sharing the prefix
	filtered(t, []string{"--cgroup", base + "/sel"},
		func() *unshared { return startUnshared(t, inCgroup(out)...) },
		func() *unshared { return startUnshared(t, inCgroup(in)...) })
}

// 22. --comm, with a copy of unshare under another name as the control.
func TestFilterComm(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	path, _ := exec.LookPath("unshare")
	dir := t.TempDir()
	copyAs := func(name string) string {
		dst := filepath.Join(dir, name)
		if err := itCopyFile(path, dst); err != nil {
			t.Fatal(err)
		}
		return dst
	}
	sel, other := copyAs("nst-selected"), copyAs("nst-other")
	start := func(bin string) func() *unshared {
		return func() *unshared {
			p := startNSProc(t, exec.Command(bin, "-u", "-n", "--", "sh", "-c", nsScript))
			return &unshared{p: p, uts: p.ns["uts"], net: p.ns["net"]}
		}
	}
	got, _ := filtered(t, []string{"--comm", "nst-selected,nst-absent"}, start(other), start(sel))
	if got[0].Comm != "nst-selected" {
		t.Errorf("create by comm %q, want nst-selected: %s", got[0].Comm, got[0])
	}
}

// 23. --pid with --children: a process the named one forks after the
// start is followed; one this test forks is not.
func TestFilterPidChildren(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	// Forks, once told, an unshare that holds its namespaces.
	parent := beginNSProc(t, exec.Command("sh", "-c", `read go; unshare -u -n -- sh -c "$0"; :`, nsScript))
	filtered(t, []string{"--pid", strconv.Itoa(parent.cmd.Process.Pid), "--children"},
		func() *unshared { return startUnshared(t) },
		func() *unshared {
			if _, err := io.WriteString(parent.stdin, "go\n"); err != nil {
				t.Fatal(err)
			}
			parent.awaitReport()
			u := &unshared{p: parent, uts: parent.ns["uts"], net: parent.ns["net"]}
			if u.pid() == parent.cmd.Process.Pid {
				t.Fatalf("the unshare was not forked: pid %d", u.pid())
			}
			return u
		})
}

// 24. --uid (by name): a user namespace made by an unprivileged user, with
// root's unshare as the control.
func TestFilterUid(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	nobody, err := user.Lookup("nobody")
	need(t, err == nil, "user nobody: %v", err)
	uid, _ := strconv.Atoi(nobody.Uid)
	got, _ := filtered(t, []string{"--uid", "nobody"},
		func() *unshared { return startUnshared(t) },
		func() *unshared {
			cmd := shCmd("unshare", "-U", "-u", "-n", "--")
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
			cmd.Dir = "/"
			p := startNSProc(t, cmd)
			return &unshared{p: p, uts: p.ns["uts"], net: p.ns["net"]}
		})
	if got[0].UID != int64(uid) {
		t.Errorf("create by uid %d, want %d: %s", got[0].UID, uid, got[0])
	}
}

// 25. --type and --event select in the kernel: only net namespaces' events,
// or only destroys, of the same process whose other events exist.
func TestFilterTypeAndEvent(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	for _, c := range []struct {
		args []string
		ok   func(*jsonEvent) bool
		want []string // of the lifecycle: create uts, create net, destroy uts, destroy net
	}{
		{[]string{"-t", "net"}, func(e *jsonEvent) bool { return e.Type == "net" }, []string{"create net", "destroy net"}},
		{[]string{"--event", "destroy,join"}, func(e *jsonEvent) bool { return e.Event == "destroy" || e.Event == "join" }, []string{"destroy uts", "destroy net"}},
	} {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			a := startTracer(t, "json", c.args...)
			u := startUnshared(t)
			a.watch(u.pid())
			related := func(e *jsonEvent) bool { return e.PID == u.pid() || e.Inum == u.uts || e.Inum == u.net }
			inum := map[string]uint64{"uts": u.uts, "net": u.net}
			var wants []wantEvent
			for _, w := range c.want {
				ev, typ, _ := strings.Cut(w, " ")
				wants = append(wants, wantEvent{desc: w, match: isEv(ev, typ, inum[typ])})
			}
			if c.want[0] == "create net" {
				a.await(eventTimeout(), related, wants[0])
			}
			u.p.release()
			a.await(scaled(5*time.Second), related, wants...)
			for _, e := range a.stop(os.Interrupt) {
				if e.Event != "lost" && !c.ok(e) {
					t.Errorf("nstrace %s printed: %s", strings.Join(c.args, " "), e)
				}
			}
		})
	}
}

// 26. Bad filter (and --ring-size, --nice) values: one line naming what is valid, exit 2.
func TestFilterUsageErrors(t *testing.T) {
	needRoot(t, "nstrace checks filters before loading, but runs as root in CI")
	for _, c := range []struct {
		args  []string
		words []string
	}{
		{[]string{"--type", "nett"}, []string{"--type", "nett", "mnt", "time"}},
		{[]string{"-e", "created"}, []string{"--event", "created", "nsproxy_free", "destroy"}},
		{[]string{"--pid", "0"}, []string{"--pid", "0"}},
		{[]string{"--pid", "x1"}, []string{"--pid", "x1"}},
		{[]string{"--children"}, []string{"--children", "--pid"}},
		{[]string{"--container", "ABC!"}, []string{"--container", "ABC!", "hex"}},
		{[]string{"--container", "0123456789012345678901234567890123456789012345678901234567890123456789"}, []string{"--container"}},
		{[]string{"--cgroup", "docker"}, []string{"--cgroup", "docker", "/"}},
		{[]string{"--uid", "no-such-user-here"}, []string{"--uid", "no-such-user-here"}},
		{[]string{"-e", "exist"}, []string{"exist", "--snapshot"}},
		{[]string{"--cgroup-hierarchy", "nosuchcontroller"}, []string{"--cgroup-hierarchy", "nosuchcontroller"}},
		{[]string{"--ring-size", "3M"}, []string{"--ring-size", "3M", "power-of-two"}},
		{[]string{"--ring-size", "12k"}, []string{"--ring-size", "12k", "pages"}},
		{[]string{"--ring-size", "lots"}, []string{"--ring-size", "lots", "16M"}},
		{[]string{"--ring-size", "2G"}, []string{"--ring-size", "2G", "1G"}},
		{[]string{"--nice", "20"}, []string{"--nice", "20", "-20", "19"}},
		{[]string{"--nice", "-21"}, []string{"--nice", "-21", "-20", "19"}},
		{[]string{"--nice", "high"}, []string{"--nice", "high"}},
		{[]string{"--interval", "1s"}, []string{"--interval", "--summary"}},
		{[]string{"--summary", "--interval", "10ms"}, []string{"--interval", "10ms", "100ms"}},
		{[]string{"--summary", "--interval", "often"}, []string{"--interval", "often"}},
		{[]string{"--warn-limit", "101"}, []string{"--warn-limit", "101", "100"}},
		{[]string{"--warn-limit", "-5"}, []string{"--warn-limit", "-5"}},
		{[]string{"-e", "limit", "--warn-limit", "0"}, []string{"--event limit", "--warn-limit"}},
	} {
		code, stdout, stderr := runCLI(t, itCfg.bin, nil, c.args...)
		if code != exitUsage || stdout != "" {
			t.Errorf("nstrace %s: exit %d, stdout %q; want exit %d and no output; stderr:\n%s", strings.Join(c.args, " "), code, stdout, exitUsage, stderr)
			continue
		}
		expectOneLine(t, "nstrace "+strings.Join(c.args, " "), stderr, c.words...)
	}
}

// 27. Namespaces older than nstrace: their exist events carry the context
// of the process that stands for them, --snapshot passes the filters too,
// and their destroy carries the owner the start-up walk found.
func TestContextOfExisting(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	h := hierarchy(t)
	rel := "/" + uniqueName("nstrace-test")
	dir, cgid := testCgroup(t, h, rel)
	u := startUnshared(t, inCgroup(dir)...)
	// unshare has executed the script's shell by now.
	path, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", u.pid()))
	if err != nil {
		t.Fatal(err)
	}
	tr := startTracer(t, "json", "--snapshot", "--cgroup", rel)
	tr.watch(u.pid())
	related := func(e *jsonEvent) bool { return e.Inum == u.uts || e.Inum == u.net }
	exist := tr.await(eventTimeout(), related,
		wantEvent{desc: "exist uts", match: isEv("exist", "uts", u.uts)}, wantEvent{desc: "exist net", match: isEv("exist", "net", u.net)})
	for _, e := range exist {
		if e.PID != u.pid() || e.Cgroup != rel || e.CgroupID != cgid || e.Exe != path || e.ParentComm != selfComm(t) {
			t.Errorf("exist: want pid %d, cgroup %s (id %d), exe %s, parent_comm %s\n    event: %s", u.pid(), rel, cgid, path, selfComm(t), e)
		}
	}
	u.p.release()
	destroys := tr.await(scaled(5*time.Second), related,
		wantEvent{desc: "destroy uts", match: isEv("destroy", "uts", u.uts)}, wantEvent{desc: "destroy net", match: isEv("destroy", "net", u.net)})
	for _, e := range destroys {
		if e.Owner == nil || e.Owner.PID != u.pid() || e.Cgroup != rel {
			t.Errorf("destroy: want owner pid %d, cgroup %s\n    event: %s", u.pid(), rel, e)
		}
	}
	for _, e := range tr.stop(os.Interrupt) {
		if e.Event == "exist" && e.Cgroup != rel {
			t.Errorf("--snapshot --cgroup %s printed an exist event of another cgroup: %s", rel, e)
		}
	}
}
