package main

// Integration tests: each runs the real nstrace binary (real BPF programs in
// the real kernel), drives real programs that create, join and drop
// namespaces, and compares nstrace's events with the inode numbers the kernel
// shows in /proc/PID/ns inside the driven programs. Events are matched by the
// pids of the driven processes and the inums they report, so other activity
// on the machine does not disturb them. Configuration: helper_main_test.go.

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// 1. unshare(2) through util-linux unshare, then exit.
func TestUnshareCreateAndDestroy(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	tr := startTracer(t, "json")
	types := []string{"cgroup", "ipc", "mnt", "net", "uts"}
	p := startNSProc(t, shCmd("unshare", "-u", "-i", "-n", "-m", "-C", "--"))
	c := newChange(t, "create", p.pid(), "unshare", "unshare", types, p.ns).withRaw(flagsFor(types...), ^uint64(0))
	verify := lifecycle(tr, p, c, p.pid())
	verify(tr.stop(os.Interrupt))
}

// 2. clone(2)/clone3(2) called by this test process (Go's os/exec with
// SysProcAttr.Cloneflags) to start the "nsdump" helper.
func TestCloneCreateAndDestroy(t *testing.T) {
	for _, r := range []struct {
		name    string
		flags   uint64
		syscall string // Go uses clone3 only when CLONE_NEWTIME is asked for
	}{
		{"uts_ipc_net_mnt_cgroup", syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWCGROUP, "clone"},
		{"pid", syscall.CLONE_NEWPID, "clone"},
		{"user_uts", syscall.CLONE_NEWUSER | syscall.CLONE_NEWUTS, "clone"},
		{"time_uts_clone3", syscall.CLONE_NEWTIME | syscall.CLONE_NEWUTS, "clone3"},
	} {
		t.Run(r.name, func(t *testing.T) {
			if r.flags&syscall.CLONE_NEWTIME != 0 {
				needTimeNS(t)
			}
			tr := startTracer(t, "json")
			cmd := helperCmd(t)
			pidfd := -1 // asking for one makes CLONE_PIDFD certain (os/exec adds it when pidfds work)
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: uintptr(r.flags), PidFD: &pidfd}
			p := startNSProc(t, cmd)
			if pidfd >= 0 {
				syscall.Close(pidfd)
			}
			var types []string
			for _, typ := range nsTypes {
				if r.flags&cloneNewFlag[typ] != 0 {
					types = append(types, typ)
				}
			}
			c := newChange(t, "create", os.Getpid(), selfComm(t), r.syscall, types, p.ns).withRaw(goCloneRaw(r.flags), ^uint64(0))
			c.goCaller, c.ppid = true, os.Getppid()
			verify := lifecycle(tr, p, c, p.pid())
			evs := tr.stop(os.Interrupt)
			verify(evs)
			forbid(t, evs, "create by the clone child (its exec creates no namespace)", func(e *jsonEvent) bool {
				return e.Event == "create" && e.PID == p.pid()
			})
		})
	}
}

// goCloneRaw is the clone flags Go's syscall.forkAndExecInChild passes:
// CLONE_VFORK|CLONE_VM unless a user namespace is made, and CLONE_PIDFD as
// SysProcAttr.PidFD is set. clone_flags_raw holds the kernel's clone flags:
// for clone(2) without the exit signal (SIGCHLD) that shares its low byte,
// which clone3(2) passes in a separate field anyway.
func goCloneRaw(flags uint64) uint64 {
	flags |= syscall.CLONE_PIDFD
	if flags&syscall.CLONE_NEWUSER == 0 {
		flags |= syscall.CLONE_VFORK | syscall.CLONE_VM
	}
	return flags
}

// 3. bubblewrap: one clone(2) with every namespace flag, by a real sandbox tool.
func TestBubblewrap(t *testing.T) {
	needTools(t, "bwrap", "sh", "readlink")
	tr := startTracer(t, "json")
	// bwrap's outer process can exit before its pid-1 child is reaped;
	// reaped() makes the release include that reaping.
	p := startNSProc(t, reaped(t, shCmd("bwrap", "--unshare-all", "--dev-bind", "/", "/", "--")))
	types := differingTypes(p.ns, selfNS(t))
	for _, typ := range []string{"ipc", "mnt", "net", "pid", "uts"} {
		if !slices.Contains(types, typ) {
			t.Fatalf("bwrap --unshare-all did not give the sandbox a new %s namespace (sandbox %v, ours %v)", typ, p.ns, selfNS(t))
		}
	}
	c := newChange(t, "create", p.pid(), "bwrap", "clone", types, p.ns).withRaw(flagsFor(types...), allNewFlags)
	c.ppid = p.ppid()
	verify := lifecycle(tr, p, c, 0)
	verify(tr.stop(os.Interrupt))
}

// 4. setns(2) through util-linux nsenter into another process's namespaces.
func TestSetnsJoin(t *testing.T) {
	needTools(t, "unshare", "nsenter", "sh", "readlink")
	tr := startTracer(t, "json")
	types := []string{"net", "uts"}
	target := startNSProc(t, shCmd("unshare", "-u", "-n", "--"))
	created := newChange(t, "create", target.pid(), "unshare", "unshare", types, target.ns).withRaw(flagsFor(types...), ^uint64(0))

	pid, out := runProgram(t, "nsenter", "-t", strconv.Itoa(target.pid()), "-u", "-n", "--", "readlink", "/proc/self/ns/uts")
	if got, err := parseNSLink("uts", out); err != nil || got != target.ns["uts"] {
		t.Fatalf("nsenter did not enter the target's uts namespace: readlink printed %q (%v), target has %d", out, err, target.ns["uts"])
	}
	// util-linux nsenter calls setns(fd, CLONE_NEWUTS), then setns(fd, CLONE_NEWNET).
	joined := newChange(t, "join", pid, "nsenter", "setns", types, target.ns)
	joined.rawMask = ^uint64(0)
	for _, typ := range types {
		joined.raw[typ] = cloneNewFlag[typ]
	}
	joined.expect(tr)

	verifyTarget := lifecycle(tr, target, created, target.pid())
	evs := tr.stop(os.Interrupt)
	verifyTarget(evs)
	joined.verifyExact(t, evs)
	forbid(t, evs, "create by nsenter (it only joins)", func(e *jsonEvent) bool { return e.Event == "create" && e.PID == pid })
}

// 4b. setns(2) with nstype 0 (whatever namespace the fd is) and with a
// pidfd naming two types, each on a thread of its own: at the syscall's
// exit nstrace reads again only the namespaces a call names, and every
// one for nstype 0, so both must still report exactly what was joined.
func TestSetnsAnyTypeAndPidfd(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	tr := startTracer(t, "json")
	target := startNSProc(t, shCmd("unshare", "-u", "-n", "--"))
	uts, err := os.Open(fmt.Sprintf("/proc/%d/ns/uts", target.pid()))
	if err != nil {
		t.Fatal(err)
	}
	defer uts.Close()
	pidfd, err := unix.PidfdOpen(target.pid(), 0)
	if err != nil {
		t.Fatalf("pidfd_open: %v", err)
	}
	defer unix.Close(pidfd)
	var tidAny, tidPidfd int
	if err := onThread(func() error {
		tidAny = unix.Gettid()
		return unix.Setns(int(uts.Fd()), 0)
	}); err != nil {
		t.Fatalf("setns(uts fd, 0): %v", err)
	}
	if err := onThread(func() error {
		tidPidfd = unix.Gettid()
		return unix.Setns(pidfd, unix.CLONE_NEWUTS|unix.CLONE_NEWNET)
	}); err != nil {
		t.Fatalf("setns(pidfd, CLONE_NEWUTS|CLONE_NEWNET): %v", err)
	}
	evs := tr.stop(os.Interrupt)
	for _, c := range []struct {
		name string
		tid  int
		raw  uint64
		want map[string]uint64
	}{
		{"setns(fd, 0)", tidAny, 0, map[string]uint64{"uts": target.ns["uts"]}},
		{"setns(pidfd, CLONE_NEWUTS|CLONE_NEWNET)", tidPidfd, unix.CLONE_NEWUTS | unix.CLONE_NEWNET,
			map[string]uint64{"uts": target.ns["uts"], "net": target.ns["net"]}},
	} {
		got := map[string]uint64{}
		for _, e := range evs {
			if e.Event != "join" || e.TID != c.tid {
				continue
			}
			if _, dup := got[e.Type]; dup {
				t.Errorf("%s: two %s joins", c.name, e.Type)
			}
			got[e.Type] = e.Inum
			if e.Syscall != "setns" || e.CloneFlagsRaw != c.raw {
				t.Errorf("%s: join of %s says syscall %q, flags %#x; want setns, %#x", c.name, e.Type, e.Syscall, e.CloneFlagsRaw, c.raw)
			}
		}
		if !maps.Equal(got, c.want) {
			t.Errorf("%s: joins by thread %d: %v, want %v (the target's, from /proc)", c.name, c.tid, got, c.want)
		}
	}
}

// 5. A user namespace by unshare(CLONE_NEWUSER).
func TestUserNamespace(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	tr := startTracer(t, "json")
	p := startNSProc(t, shCmd("unshare", "-U", "--"))
	c := newChange(t, "create", p.pid(), "unshare", "unshare", []string{"user"}, p.ns).withRaw(syscall.CLONE_NEWUSER, ^uint64(0))
	verify := lifecycle(tr, p, c, 0)
	verify(tr.stop(os.Interrupt))
}

// 6. pid and time namespaces: unshare(2) changes only what children get;
// the forked child (unshare -f) is inside.
func TestForChildren(t *testing.T) {
	for _, r := range []struct{ typ, flag string }{{"pid", "-p"}, {"time", "-T"}} {
		t.Run(r.typ, func(t *testing.T) {
			if r.typ == "time" {
				needTimeNS(t)
			}
			needTools(t, "unshare", "sh", "readlink")
			tr := startTracer(t, "json")
			p := startNSProc(t, shCmd("unshare", r.flag, "-f", "--"))
			if p.ns[r.typ] != p.ns[nsKey(r.typ)] {
				t.Fatalf("the child of unshare %s -f is not in its %s namespace: %v", r.flag, nsKey(r.typ), p.ns)
			}
			c := newChange(t, "create", p.pid(), "unshare", "unshare", []string{r.typ}, p.ns).withRaw(cloneNewFlag[r.typ], ^uint64(0))
			verify := lifecycle(tr, p, c, 0)
			verify(tr.stop(os.Interrupt))
		})
	}
}

// 9. iproute2: ip netns add (unshare + setns back), ip netns exec (setns +
// unshare of a mount namespace), ip netns del (the bind mount was the last
// reference).
func TestIPNetns(t *testing.T) {
	needTools(t, "ip", "sh", "readlink")
	tr := startTracer(t, "json")
	name := fmt.Sprintf("nstrace-test-%d", os.Getpid())
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })

	started := time.Now()
	addPID, _ := runProgram(t, "ip", "netns", "add", name)
	var st syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+name, &st); err != nil {
		t.Fatalf("ip netns add left no /run/netns/%s: %v", name, err)
	}
	netns := map[string]uint64{"net": st.Ino}
	add := newChange(t, "create", addPID, "ip", "unshare", []string{"net"}, netns).withRaw(syscall.CLONE_NEWNET, ^uint64(0))
	creates := add.expect(tr)
	back := newChange(t, "join", addPID, "ip", "setns", []string{"net"}, netns).withRaw(syscall.CLONE_NEWNET, ^uint64(0))
	back.inum, back.old = back.old, back.inum // ip returns to where it was
	back.expect(tr)

	p := startNSProc(t, shCmd("ip", "netns", "exec", name))
	if p.ns["net"] != st.Ino {
		t.Fatalf("ip netns exec ran in net namespace %d, not %d", p.ns["net"], st.Ino)
	}
	enter := newChange(t, "join", p.pid(), "ip", "setns", []string{"net"}, p.ns).withRaw(syscall.CLONE_NEWNET, ^uint64(0))
	enter.expect(tr)
	mnt := newChange(t, "create", p.pid(), "ip", "unshare", []string{"mnt"}, p.ns).withRaw(syscall.CLONE_NEWNS, ^uint64(0))
	verifyExec := lifecycle(tr, p, mnt, p.pid())

	del := teardown{started: started, pid: addPID, inum: netns, creates: creates,
		release: func() { runProgram(t, "ip", "netns", "del", name) }}
	del.expect(tr)

	evs := tr.stop(os.Interrupt)
	add.verifyExact(t, evs)
	back.verifyExact(t, evs)
	enter.verifyExact(t, evs)
	verifyExec(evs)
	del.verifyHistory(tr, evs)
}

// 10. Namespaces created before nstrace started: destroy without lifetime_ns,
// and no create.
func TestDestroyOfPreexistingNamespaces(t *testing.T) {
	needRoot(t, "nstrace loads BPF programs")
	needTools(t, "unshare", "sh", "readlink")
	p := startNSProc(t, shCmd("unshare", "-u", "-i", "--"))
	c := newChange(t, "create", p.pid(), "unshare", "unshare", []string{"ipc", "uts"}, p.ns)
	tr := startTracer(t, "json")
	td := procTeardown(p, c, nil, p.pid())
	td.expect(tr)
	evs := tr.stop(os.Interrupt)
	td.verifyHistory(tr, evs)
	forbid(t, evs, "create reported for a namespace made before nstrace started", func(e *jsonEvent) bool {
		return e.Event == "create" && e.PID == p.pid()
	})
}

// 8. SIGINT and SIGTERM: exit 0 after draining what already happened.
func TestSignalsDrainAndExitZero(t *testing.T) {
	needTools(t, "unshare", "readlink")
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			tr := startTracer(t, "json")
			pid, out := runProgram(t, "unshare", "-u", "--", "readlink", "/proc/self/ns/uts")
			inum, err := parseNSLink("uts", out)
			if err != nil {
				t.Fatal(err)
			}
			tr.watch(pid)
			evs := tr.stop(sig) // right away: the event must be drained, not dropped
			if !slices.ContainsFunc(evs, func(e *jsonEvent) bool {
				return e.Event == "create" && e.Type == "uts" && e.PID == pid && e.Inum == inum
			}) {
				t.Errorf("after %v, output lacks the create uts pid=%d inum=%d that happened before the signal\n%s",
					sig, pid, inum, tr.describe(func(e *jsonEvent) bool { return e.PID == pid || e.Event == "lost" }))
			}
		})
	}
}

// 7. CLI behaviour.

func TestCountExitsByItself(t *testing.T) {
	needTools(t, "unshare", "true")
	tr := startTracer(t, "json", "--count", "1")
	tr.watch() // the one event printed
	runProgram(t, "unshare", "-u", "--", "true")
	tr.expectExit(0, eventTimeout()+stopTimeout())
	evs, lines := tr.finish(), tr.outLines()
	if len(lines) != 1 || len(evs) != 1 {
		t.Errorf("--count 1 printed %d lines (%d events), want exactly 1:\n%s", len(lines), len(evs), joinLines(lines))
	}
}

func TestDurationExitsByItself(t *testing.T) {
	tr := startTracer(t, "json", "--duration", "1s")
	tr.expectExit(0, time.Second+stopTimeout())
	if el := time.Since(tr.started); el < time.Second {
		t.Errorf("--duration 1s exited after %v", el)
	}
	tr.finish()
}

var textCols = []string{"TIME", "EVENT", "TYPE", "INUM", "PID", "COMM", "CONTAINER", "DETAILS"}

// textTable locates the columns of the text output by its header.
type textTable struct{ offs []int }

func parseTextHeader(h string) (textTable, error) {
	if !slices.Equal(strings.Fields(h), textCols) {
		return textTable{}, fmt.Errorf("header %q, want columns %v", h, textCols)
	}
	var tt textTable
	from := 0
	for _, c := range textCols {
		i := strings.Index(h[from:], c)
		tt.offs = append(tt.offs, from+i)
		from += i + len(c)
	}
	return tt, nil
}

// field returns column i of line, cut at the header's column positions.
func (tt textTable) field(line string, i int) string {
	lo := min(tt.offs[i], len(line))
	hi := len(line)
	if i+1 < len(tt.offs) {
		hi = min(tt.offs[i+1], len(line))
	}
	return strings.TrimSpace(line[lo:hi])
}

// check reports how line fails to be aligned under the header.
func (tt textTable) check(line string) error {
	for i := 1; i < len(tt.offs); i++ {
		if o := tt.offs[i]; o < len(line) && line[o-1] != ' ' {
			return fmt.Errorf("no column break before %s at offset %d", textCols[i], o)
		}
	}
	ev := tt.field(line, 1)
	if _, ok := eventKeys[ev]; !ok {
		return fmt.Errorf("EVENT column holds %q", ev)
	}
	if ev == "create" || ev == "join" || ev == "destroy" {
		if !slices.Contains(nsTypes, tt.field(line, 2)) {
			return fmt.Errorf("TYPE column holds %q", tt.field(line, 2))
		}
		if _, err := strconv.ParseUint(tt.field(line, 3), 10, 64); err != nil {
			return fmt.Errorf("INUM column holds %q", tt.field(line, 3))
		}
	}
	if ev != "lost" {
		if _, err := strconv.Atoi(tt.field(line, 4)); err != nil {
			return fmt.Errorf("PID column holds %q", tt.field(line, 4))
		}
	}
	if tt.field(line, 0) == "" {
		return fmt.Errorf("TIME column is empty")
	}
	return nil
}

func TestTextOutput(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink")
	tr := startTracer(t, "text")
	p := startNSProc(t, shCmd("unshare", "-u", "--"))
	inum := strconv.FormatUint(p.ns["uts"], 10)
	pid := strconv.Itoa(p.pid())
	var tt textTable
	var headerErr error
	find := func(event string, cols map[int]string) func([]*jsonEvent, []outLine) bool {
		return func(_ []*jsonEvent, lines []outLine) bool {
			if len(lines) == 0 {
				return false
			}
			if tt, headerErr = parseTextHeader(lines[0].text); headerErr != nil {
				return true
			}
			return slices.ContainsFunc(lines[1:], func(l outLine) bool {
				if tt.field(l.text, 1) != event {
					return false
				}
				for i, v := range cols {
					if tt.field(l.text, i) != v {
						return false
					}
				}
				return true
			})
		}
	}
	createCols := map[int]string{2: "uts", 3: inum, 4: pid, 5: "unshare", 6: "-"}
	if !tr.waitUntil(eventTimeout(), find("create", createCols)) {
		t.Fatalf("no text line: create uts %s pid %s comm unshare within %v; output:\n%s", inum, pid, eventTimeout(), joinLines(tr.outLines()))
	}
	if headerErr != nil {
		t.Fatalf("first line: %v", headerErr)
	}
	released := time.Now()
	p.release()
	if !tr.waitUntil(eventTimeout(), find("destroy", map[int]string{2: "uts", 3: inum})) {
		t.Fatalf("no text line: destroy uts %s within %v of the exit; output:\n%s", inum, time.Since(released), joinLines(tr.outLines()))
	}
	tr.stop(os.Interrupt)
	lines := tr.outLines()
	n := 0
	for _, l := range lines[1:] {
		if err := tt.check(l.text); err != nil {
			t.Errorf("text line not aligned with the header (%v):\n    %s\n    %s", err, lines[0].text, l.text)
		}
		if tt.field(l.text, 1) == "create" && tt.field(l.text, 2) == "uts" && tt.field(l.text, 4) == pid {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d text lines for the create of uts by pid %s, want 1:\n%s", n, pid, joinLines(lines))
	}
}

func joinLines(lines []outLine) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("    " + l.text + "\n")
	}
	return b.String()
}

// runCLI runs bin to completion (within the deadline) and returns its exit
// code and output.
func runCLI(t *testing.T, bin string, cred *syscall.Credential, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Dir = filepath.Dir(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nstrace %v: %v", args, err)
	}
	ok, err := waitWithin(cmd, readyTimeout())
	if !ok {
		t.Fatalf("nstrace %v still running after %v; stderr:\n%s", args, readyTimeout(), errb.String())
	}
	return itExitCode(err), out.String(), errb.String()
}

// expectOneLine checks stderr is exactly one line containing every word.
func expectOneLine(t *testing.T, what, stderr string, words ...string) {
	t.Helper()
	line, ok := strings.CutSuffix(stderr, "\n")
	if !ok || line == "" || strings.Contains(line, "\n") {
		t.Errorf("%s: stderr must be exactly one line, got %q", what, stderr)
	}
	for _, w := range words {
		if !strings.Contains(stderr, w) {
			t.Errorf("%s: stderr %q does not mention %q", what, stderr, w)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, r := range []struct {
		name  string
		args  []string
		words []string
	}{
		{"bad_output", []string{"-o", "xml"}, []string{"text", "json"}},
		{"bad_backend", []string{"--backend", "bogus"}, []string{"auto", "fentry", "kprobe", "tracepoint"}},
		{"unknown_flag", []string{"--bogus-flag"}, []string{"bogus-flag"}},
		{"bad_duration", []string{"--duration", "soon"}, []string{"duration"}},
		{"bad_count", []string{"--count", "many"}, []string{"count"}},
		{"positional_argument", []string{"extra"}, []string{"extra"}},
	} {
		t.Run(r.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, itCfg.bin, nil, r.args...)
			if code != 2 {
				t.Errorf("nstrace %v: exit code %d, want 2 (usage error)", r.args, code)
			}
			if out != "" {
				t.Errorf("nstrace %v wrote to stdout: %q", r.args, out)
			}
			expectOneLine(t, fmt.Sprint("nstrace ", r.args), errOut, r.words...)
			checkNoCrash(t, "stderr", errOut)
		})
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		t.Run(arg, func(t *testing.T) {
			code, out, errOut := runCLI(t, itCfg.bin, nil, arg)
			all := out + errOut
			if code != 0 {
				t.Errorf("nstrace %s: exit code %d, want 0; output:\n%s", arg, code, all)
			}
			lower := strings.ToLower(all)
			for _, w := range []string{"usage", "example", "-o", "--backend", "--duration", "--count", "json", "tracepoint"} {
				if !strings.Contains(lower, w) {
					t.Errorf("nstrace %s output does not mention %q:\n%s", arg, w, all)
				}
			}
			if strings.Contains(all, "help requested") {
				t.Errorf("nstrace %s prints a parser error instead of only the usage:\n%s", arg, all)
			}
			checkNoCrash(t, "output", all)
		})
	}
}

// binForAnyone is a copy of the nstrace under test that every user may run.
func binForAnyone(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nstrace-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "nstrace")
	if err := itCopyFile(itCfg.bin, bin); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestNotRoot(t *testing.T) {
	needRoot(t, "to run nstrace as another user")
	bin := binForAnyone(t)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
	code, out, errOut := runCLI(t, bin, nobody, "-o", "json", "--backend", itCfg.backend)
	if code != 1 {
		t.Errorf("nstrace as uid 65534: exit code %d, want 1; stderr:\n%s", code, errOut)
	}
	if out != "" {
		t.Errorf("nstrace as uid 65534 wrote to stdout: %q", out)
	}
	expectOneLine(t, "nstrace as uid 65534", errOut)
	if !strings.Contains(errOut, "root") && !strings.Contains(errOut, "CAP_BPF") {
		t.Errorf("nstrace as uid 65534: stderr %q names neither root nor CAP_BPF", errOut)
	}
	checkNoCrash(t, "stderr", errOut)
}

func itCopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// The kernel hands a freed inode number to the next namespace at once:
// ns_id tells the two apart, and each destroy carries its own create's id.
func TestNsIDSurvivesInumReuse(t *testing.T) {
	needTools(t, "unshare", "readlink")
	tr := startTracer(t, "json")
	const runs = 3
	var pids []int
	inums := map[uint64]bool{}
	for range runs {
		pid, out := runProgram(t, "unshare", "-u", "--", "readlink", "/proc/self/ns/uts")
		inum, err := parseNSLink("uts", out)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
		inums[inum] = true
	}
	creates := map[int]*jsonEvent{}
	destroys := map[uint64]*jsonEvent{}
	ok := tr.waitUntil(eventTimeout(), func(evs []*jsonEvent, _ []outLine) bool {
		for _, e := range evs {
			if e.Event == "create" && e.Type == "uts" && slices.Contains(pids, e.PID) {
				creates[e.PID] = e
			}
			if e.Event == "destroy" && e.Type == "uts" && inums[e.Inum] {
				destroys[e.NsID] = e
			}
		}
		for _, c := range creates {
			if destroys[c.NsID] == nil {
				return false
			}
		}
		return len(creates) == runs
	})
	if !ok {
		t.Fatalf("within %v, want %d uts creates (pids %v) each with a destroy of the same ns_id; have creates %v, destroys %v", eventTimeout(), runs, pids, creates, destroys)
	}
	ids := map[uint64]bool{}
	for _, c := range creates {
		if why := checkNsID(c, nil); why != "" {
			t.Errorf("create: %s: %s", why, c.line)
		}
		if ids[c.NsID] {
			t.Errorf("ns_id %d given to two namespaces: %s", c.NsID, c.line)
		}
		ids[c.NsID] = true
		if d := destroys[c.NsID]; d.Inum != c.Inum {
			t.Errorf("destroy with ns_id %d names inum %d, its create %d", c.NsID, d.Inum, c.Inum)
		}
	}
	t.Logf("%d uts namespaces over %d inode numbers", runs, len(inums))
	tr.stop(os.Interrupt)
}

// The threads of a process in namespaces of its own exit at once
// (exit_group): each may see the others still holding the nsproxy they
// share; it is released once, and its namespaces destroyed once.
func TestMultiThreadedExit(t *testing.T) {
	// A Go program that does not exec: the runtime's open cpu.max pins
	// the cgroup namespace until the file is released after the exit.
	const flags = syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWCGROUP
	types := []string{"cgroup", "ipc", "uts"}
	for i := range 5 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			tr := startTracer(t, "json")
			cmd := helperCmd(t)
			cmd.Env = append(cmd.Env, helperEnv+"=threads")
			pidfd := -1
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, PidFD: &pidfd}
			p := startNSProc(t, cmd)
			if pidfd >= 0 {
				syscall.Close(pidfd)
			}
			if n, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", p.pid())); err != nil || len(n) < 16 {
				t.Fatalf("the threads helper has %d threads (%v), want at least 16", len(n), err)
			}
			c := newChange(t, "create", os.Getpid(), selfComm(t), "clone", types, p.ns).withRaw(goCloneRaw(flags), ^uint64(0))
			c.goCaller, c.ppid = true, os.Getppid()
			verify := lifecycle(tr, p, c, 0)
			evs := tr.stop(os.Interrupt)
			verify(evs)
			var frees []string
			for _, e := range evs {
				if e.Event == "nsproxy_free" && e.PID == p.pid() {
					frees = append(frees, e.line)
				}
			}
			if len(frees) != 1 {
				t.Errorf("%d nsproxy_free events by the exiting process, want 1:\n    %s", len(frees), strings.Join(frees, "\n    "))
			}
		})
	}
}
