package main

// Failed namespace operations, per-user limits and summaries, each against
// what the kernel itself says: the errno a real program got, and whether a
// real unshare succeeds or fails at a limit set in /proc/sys/user.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// isFail matches the fail event of process pid.
func isFail(pid int) func(*jsonEvent) bool {
	return func(e *jsonEvent) bool { return e.Event == "fail" && e.PID == pid }
}

// runFailing runs argv (as cred, if set), which must fail, and returns its
// pid and stderr.
func runFailing(t *testing.T, cred *syscall.Credential, argv ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var errb strings.Builder
	cmd.Stderr = &errb
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", argv, err)
	}
	ok, err := waitWithin(cmd, procTimeout())
	if !ok {
		t.Fatalf("%v did not finish within %v", argv, procTimeout())
	}
	if err == nil {
		t.Fatalf("%v succeeded; the test needs it to fail", argv)
	}
	return cmd.Process.Pid, errb.String()
}

// An unprivileged user's unshare -n: EPERM, no reason.
func TestFailUnprivileged(t *testing.T) {
	needTools(t, "unshare")
	tr := startTracer(t, "json")
	pid, stderr := runFailing(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "unshare", "-n", "true")
	if !strings.Contains(stderr, "Operation not permitted") {
		t.Fatalf("unshare -n as nobody: stderr %q, want EPERM's message", stderr)
	}
	tr.watch(pid)
	e := tr.await(eventTimeout(), isFail(pid), wantEvent{desc: "fail of unshare -n by nobody", match: isFail(pid)})[0]
	if e.Syscall != "unshare" || e.Error != "EPERM" || e.Errno != int(syscall.EPERM) || e.UID != 65534 ||
		e.Reason != "" || strings.Join(e.CloneFlags, "|") != "CLONE_NEWNET" {
		t.Errorf("fail event %s: want syscall unshare, error EPERM (1), uid 65534, clone_flags [CLONE_NEWNET], no reason", e)
	}
	tr.stop(os.Interrupt)
}

// limitScript runs in a new user namespace, where root may set the
// namespace limits (the initial namespace's need CAP_SYS_RESOURCE, which
// some machines' root lacks): max_uts_namespaces 1 and one holder of a
// uts namespace, so that an unshare -u is refused; then the limit raised
// to 2, a second holder, that holder gone, and an unshare -u allowed.
// Each step prints its pid.
const limitScript = `echo 1 > /proc/sys/user/max_uts_namespaces || exit 10
echo "userns $(readlink /proc/self/ns/user)"
sh -c 'echo h1 $$; exec unshare -u sleep 60' & h1=$!
sleep 0.2
sh -c 'echo fail $$; exec unshare -u true'
echo "rc $?"
echo 2 > /proc/sys/user/max_uts_namespaces || exit 11
sh -c 'echo h2 $$; exec unshare -u sleep 60' & h2=$!
sleep 0.2
kill $h2; wait $h2
sh -c 'echo again $$; exec unshare -u true'
echo "rc2 $?"
kill $h1; wait $h1
exit 0
`

// A limit reached: the kernel refuses the next unshare -u with ENOSPC, and
// nstrace names uts, the count and the limit (1 of 1), in the user
// namespace whose limit it is. The counts are the kernel's: a fresh user
// namespace where root holds exactly the uts namespaces the script made,
// and a kernel that refuses one more at the limit. --warn-limit 100
// prints a limit event at the limit (h1), not again while the count stays
// there (h2, after the limit was raised to 2), and again once a destroy
// took it below (again).
func TestFailLimit(t *testing.T) {
	needTools(t, "unshare", "sh", "readlink", "sleep")
	tr := startTracer(t, "json", "--warn-limit", "100")
	cmd := exec.Command("unshare", "-U", "-r", "sh", "-c", limitScript)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("limit script: %v; output:\n%s", err, out)
	}
	step := map[string]uint64{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		if f[0] == "userns" {
			inum, err := parseNSLink("user", f[1])
			if err != nil {
				t.Fatal(err)
			}
			step[f[0]] = inum
		} else if n, err := strconv.ParseUint(f[1], 10, 64); err == nil {
			step[f[0]] = n
		}
	}
	if step["userns"] == 0 || step["h1"] == 0 || step["h2"] == 0 || step["fail"] == 0 || step["again"] == 0 || step["rc"] != 1 || step["rc2"] != 0 {
		t.Fatalf("the script did not run as planned (want the first unshare -u refused, the last allowed):\n%s", out)
	}
	if !strings.Contains(string(out), "No space left on device") {
		t.Fatalf("the refused unshare -u did not get ENOSPC:\n%s", out)
	}
	userNS := step["userns"]
	for _, k := range []string{"h1", "h2", "fail", "again"} {
		tr.watch(int(step[k]))
	}
	byPid := func(kind string, pid uint64) func(*jsonEvent) bool {
		return func(e *jsonEvent) bool {
			return e.Event == kind && e.PID == int(pid) && (kind == "fail" || e.Type == "uts")
		}
	}
	related := func(e *jsonEvent) bool { return e.UserNs == userNS }
	got := tr.await(eventTimeout(), related,
		wantEvent{desc: "create by h1", match: byPid("create", step["h1"])},
		wantEvent{desc: "limit event at h1's create", match: byPid("limit", step["h1"])},
		wantEvent{desc: "fail of the refused unshare", match: byPid("fail", step["fail"])},
		wantEvent{desc: "create by h2", match: byPid("create", step["h2"])},
		wantEvent{desc: "create after h2 went", match: byPid("create", step["again"])},
		wantEvent{desc: "limit event again", match: byPid("limit", step["again"])},
	)
	usage := func(e *jsonEvent, count, limit uint32) {
		t.Helper()
		if e.UserCount == nil || e.UserLimit == nil || e.UserUID == nil || *e.UserCount != count || *e.UserLimit != limit ||
			e.UserNs != userNS || *e.UserUID != 0 {
			t.Errorf("%s: want user_count %d, user_limit %d, user_ns %d, user_uid 0", e, count, limit, userNS)
		}
	}
	usage(got[0], 1, 1)
	usage(got[1], 1, 1)
	fail := got[2]
	usage(fail, 1, 1)
	if fail.Error != "ENOSPC" || fail.Errno != int(syscall.ENOSPC) || fail.Reason != "limit" || fail.Type != "uts" || fail.Syscall != "unshare" {
		t.Errorf("fail event %s: want ENOSPC (28), reason limit, type uts, syscall unshare", fail)
	}
	usage(got[3], 2, 2)
	usage(got[4], 2, 2)
	usage(got[5], 2, 2)
	if got[1].WarnPercent != 100 || got[1].Inum != got[0].Inum {
		t.Errorf("limit event %s: want warn_percent 100 and the inum of h1's create (%d)", got[1], got[0].Inum)
	}
	evs := tr.stop(os.Interrupt)
	var limits []string
	for _, e := range evs {
		if e.Event == "limit" && e.UserNs == userNS {
			limits = append(limits, e.line)
		}
	}
	if len(limits) != 2 {
		t.Errorf("%d limit events in user namespace %d, want 2 (h1's, and again's after h2 went, none for h2):\n%s", len(limits), userNS, strings.Join(limits, "\n"))
	}
}

// Nested user namespaces until the kernel refuses: nstrace's reason is the
// depth, with the depth asked for and the deepest allowed (the initial
// user namespace is level 0; the kernel refuses a parent deeper than 32).
// Since 4.9 the kernel says ENOSPC here, EUSERS before.
func TestFailUserNamespaceDepth(t *testing.T) {
	needTools(t, "unshare", "sh")
	self, err := os.Readlink("/proc/self/ns/user")
	need(t, err == nil && self == "user:[4026531837]", "running in the initial user namespace (%s, %v)", self, err)
	tr := startTracer(t, "json")
	// Each level maps root to the one above it, so that the next may nest;
	// the script runs itself one level deeper until unshare fails.
	script := filepath.Join(t.TempDir(), "nest.sh")
	body := "#!/bin/sh\necho \"level $1 pid $$\"\n[ \"$1\" -ge 40 ] && exit 3\nexec unshare -U -r \"$0\" $(($1 + 1))\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("unshare", "-U", "-r", script, "1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "No space left on device") || !strings.Contains(string(out), "level 33 pid") ||
		strings.Contains(string(out), "level 34 pid") {
		t.Fatalf("nesting user namespaces: %v; want ENOSPC after level 33, output:\n%s", err, out)
	}
	// The process at level 33 is the one refused.
	var pid int
	for _, l := range strings.Split(string(out), "\n") {
		if n, _ := fmt.Sscanf(l, "level 33 pid %d", &pid); n == 1 {
			break
		}
	}
	tr.watch(pid)
	e := tr.await(eventTimeout(), isFail(pid), wantEvent{desc: "fail of the unshare at level 33", match: isFail(pid)})[0]
	if e.Type != "user" || e.Error != "ENOSPC" || e.Reason != "depth" || e.Depth == nil || e.MaxDepth == nil || *e.Depth != 34 || *e.MaxDepth != 33 {
		t.Errorf("fail event %s: want type user, ENOSPC, reason depth, depth 34, max_depth 33", e)
	}
	tr.stop(os.Interrupt)
}

// summaryTotals counts the printed events per type, as a summary should.
func summaryTotals(evs []*jsonEvent) map[string]*summaryCount {
	tot := map[string]*summaryCount{}
	of := func(typ string) *summaryCount {
		if tot[typ] == nil {
			tot[typ] = &summaryCount{}
		}
		return tot[typ]
	}
	for _, e := range evs {
		switch e.Event {
		case "create":
			of(e.Type).Created++
		case "join":
			of(e.Type).Joined++
		case "destroy":
			of(e.Type).Destroyed++
		case "fail":
			if e.Type != "" {
				of(e.Type).Failed++
				continue
			}
			for _, typ := range nsTypes {
				if e.CloneFlagsRaw&cloneNewFlag[typ] != 0 {
					of(typ).Failed++
				}
			}
		}
	}
	return tot
}

// --summary at exit: the counts equal the events printed in the same run,
// the lifetimes histogram holds every destroy whose lifetime was printed,
// and alive is what was created and not destroyed.
func TestSummary(t *testing.T) {
	needTools(t, "unshare")
	tr := startTracer(t, "json", "--summary")
	for range 3 {
		runProgram(t, "unshare", "-u", "true")
	}
	runProgram(t, "unshare", "-i", "-m", "true")
	runFailing(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "unshare", "-n", "true")
	evs := tr.stop(os.Interrupt)
	var sums []*jsonEvent
	for _, e := range evs {
		if e.Event == "summary" {
			sums = append(sums, e)
		}
	}
	if len(sums) != 1 || evs[len(evs)-1] != sums[0] {
		t.Fatalf("%d summary events, want one, last", len(sums))
	}
	s := sums[0]
	tot := summaryTotals(evs)
	if c := tot["uts"]; c == nil || c.Created < 3 || c.Destroyed < 3 {
		t.Errorf("the run printed %+v for uts, want at least 3 creates and destroys", c)
	}
	if c := tot["net"]; c == nil || c.Failed < 1 {
		t.Errorf("the run printed %+v for net, want the failed unshare -n", c)
	}
	lifetimes := map[string]uint64{}
	for _, e := range evs {
		if e.Event == "destroy" && e.LifetimeNS != nil {
			lifetimes[e.Type]++
		}
	}
	for _, typ := range nsTypes {
		want, got := tot[typ], s.Types[typ]
		if want == nil {
			if got.Created+got.Destroyed+got.Joined+got.Failed != 0 {
				t.Errorf("summary of %s: %+v, but no %s event was printed", typ, got, typ)
			}
			continue
		}
		if got.Created != want.Created || got.Destroyed != want.Destroyed || got.Joined != want.Joined || got.Failed != want.Failed {
			t.Errorf("summary of %s: created %d destroyed %d joined %d failed %d; the events printed: %d %d %d %d",
				typ, got.Created, got.Destroyed, got.Joined, got.Failed, want.Created, want.Destroyed, want.Joined, want.Failed)
		}
		var inHist uint64
		for _, b := range got.LifetimeUS {
			if b.Count == 0 || b.From > b.To || (b.From > 1 && b.To != 2*b.From-1) {
				t.Errorf("summary of %s: bad lifetime bucket %+v", typ, b)
			}
			inHist += b.Count
		}
		if inHist != lifetimes[typ] {
			t.Errorf("summary of %s: %d lifetimes in the histogram, %d destroys with lifetime_ns printed", typ, inHist, lifetimes[typ])
		}
		if got.Alive != got.Created-lifetimes[typ] || got.PeakAlive < got.Alive || got.PeakAlive > got.Created {
			t.Errorf("summary of %s: alive %d, peak %d; want created %d - destroyed with a known lifetime %d, and a peak between",
				typ, got.Alive, got.PeakAlive, got.Created, lifetimes[typ])
		}
	}
}

// --interval: a summary every interval, each counting from the one
// before, so that together they count every event.
func TestSummaryInterval(t *testing.T) {
	needTools(t, "unshare")
	tr := startTracer(t, "json", "--summary", "--interval", "300ms")
	deadline := time.Now().Add(scaled(1200 * time.Millisecond))
	for time.Now().Before(deadline) {
		runProgram(t, "unshare", "-u", "true")
		time.Sleep(50 * time.Millisecond)
	}
	evs := tr.stop(os.Interrupt)
	var created, summaries uint64
	var last time.Time
	for _, e := range evs {
		if e.Event != "summary" {
			continue
		}
		summaries++
		created += e.Types["uts"].Created
		since, err := time.Parse(time.RFC3339Nano, e.Since)
		if err != nil || (!last.IsZero() && !since.Equal(last)) {
			t.Errorf("summary %d counts since %s, want the time of the one before (%s)", summaries, e.Since, last)
		}
		last = e.wall
	}
	if summaries < 3 {
		t.Errorf("%d summaries in %v with --interval 300ms, want at least 3", summaries, scaled(1200*time.Millisecond))
	}
	if want := summaryTotals(evs)["uts"]; want == nil || created != want.Created || created < 3 {
		t.Errorf("the summaries count %d uts creates, the events printed %+v", created, want)
	}
}

// --summary in text: the counts per type and the lifetimes as BCC's tools
// print histograms, after the events.
func TestSummaryText(t *testing.T) {
	needTools(t, "unshare")
	tr := startTracer(t, "text", "--summary")
	for range 2 {
		runProgram(t, "unshare", "-u", "true")
	}
	tr.stop(os.Interrupt)
	var out []string
	for _, l := range tr.outLines() {
		out = append(out, l.text)
	}
	text := strings.Join(out, "\n")
	i := strings.Index(text, "\nSummary, ")
	if i < 0 {
		t.Fatalf("no summary after the events:\n%s", text)
	}
	sum := text[i:]
	for _, want := range []string{"  uts    created=", " destroyed=", " peak_alive=", "lifetime (us)", ": count     distribution", "|****************************************|"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary lacks %q:\n%s", want, sum)
		}
	}
}

// clone and clone3 that the kernel refuses (CLONE_NEWUSER with CLONE_FS:
// EINVAL), called by this test process as os/exec starts a helper.
func TestFailClone(t *testing.T) {
	for _, r := range []struct {
		name, syscall string
		flags         uintptr
	}{
		{"clone", "clone", syscall.CLONE_NEWUSER | syscall.CLONE_FS},
		{"clone3", "clone3", syscall.CLONE_NEWUSER | syscall.CLONE_FS | 0x80}, // Go uses clone3 for CLONE_NEWTIME
	} {
		t.Run(r.name, func(t *testing.T) {
			if r.flags&0x80 != 0 {
				needTimeNS(t)
			}
			tr := startTracer(t, "json")
			cmd := helperCmd(t)
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: r.flags}
			if err := cmd.Start(); err == nil || !strings.Contains(err.Error(), "invalid argument") {
				if err == nil {
					cmd.Process.Kill()
					cmd.Wait()
				}
				t.Fatalf("starting a helper with clone flags %#x: %v, want EINVAL", r.flags, err)
			}
			pid := os.Getpid()
			tr.watch(pid)
			isOurs := func(e *jsonEvent) bool { return isFail(pid)(e) && e.Syscall == r.syscall }
			e := tr.await(eventTimeout(), isFail(pid), wantEvent{desc: r.syscall + " failure of this process", match: isOurs})[0]
			if e.Error != "EINVAL" || e.Errno != int(syscall.EINVAL) || e.Reason != "" ||
				e.CloneFlagsRaw&uint64(r.flags) != uint64(r.flags) {
				t.Errorf("fail event %s: want EINVAL, no reason, clone_flags_raw with %#x", e, r.flags)
			}
			tr.stop(os.Interrupt)
		})
	}
}

var stacklessRE = regexp.MustCompile(`nstrace: (\d+) records went without their kernel stack`)

var frameRE = regexp.MustCompile(`^[A-Za-z0-9_.]+( \[[A-Za-z0-9_]+\])?\+0x[0-9a-f]+$`)

// checkStack checks a kernel_stack: named frames, none of them BPF's own
// machinery on top, and among them every function in want.
func checkStack(t *testing.T, e *jsonEvent, want ...string) {
	t.Helper()
	if e.stackless {
		return
	}
	if len(e.KernelStack) == 0 {
		t.Errorf("%s event without kernel_stack: %s", e.Event, e)
		return
	}
	funcs := map[string]bool{}
	for i, f := range e.KernelStack {
		if !frameRE.MatchString(f) {
			t.Errorf("%s event: frame %d %q is not function+0xoffset", e.Event, i, f)
		}
		if i == 0 && strings.HasPrefix(f, "bpf_") {
			t.Errorf("%s event: the stack starts in BPF's own frames: %q", e.Event, e.KernelStack)
		}
		name, _, _ := strings.Cut(f, "+")
		funcs[name] = true
	}
	for _, w := range want {
		if !funcs[w] {
			t.Errorf("%s event: kernel_stack %q lacks %s", e.Event, e.KernelStack, w)
		}
	}
}

// --kernel-stack: the stack of the hook that saw each event, named from
// kallsyms. What it shows depends on the backend (README): the syscall
// tracepoints see the syscall's exit, the fentry and kprobe hooks the
// function that made the namespace.
func TestKernelStack(t *testing.T) {
	needTools(t, "unshare")
	tr := startTracer(t, "json", "--kernel-stack")
	pid, _ := runProgram(t, "unshare", "-u", "true")
	failPid, _ := runFailing(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "unshare", "-n", "true")
	cmd := helperCmd(t)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUTS}
	p := startNSProc(t, cmd)
	p.release()
	tr.watch(pid, failPid, p.pid(), os.Getpid())
	ev := func(kind string, pid int) func(*jsonEvent) bool {
		return func(e *jsonEvent) bool { return e.Event == kind && e.PID == pid && (kind == "fail" || e.Type == "uts") }
	}
	got := tr.await(eventTimeout(), nil,
		wantEvent{desc: "create by unshare", match: ev("create", pid)},
		wantEvent{desc: "destroy at its exit", match: ev("destroy", pid)},
		wantEvent{desc: "fail of unshare -n", match: ev("fail", failPid)},
		wantEvent{desc: "create by clone", match: ev("create", os.Getpid())},
	)
	tr.stop(os.Interrupt)
	for i, what := range []string{"unshare create", "exit destroy", "unshare fail", "clone create"} {
		t.Logf("%s backend, %s: %s", tr.backend, what, strings.Join(got[i].KernelStack, " < "))
	}
	// A stack whose hash bucket another stack holds is not kept (README):
	// nstrace counts those, and only so many events may lack one.
	if m := stacklessRE.FindStringSubmatch(tr.stderrText()); m != nil {
		n, _ := strconv.Atoi(m[1])
		for _, e := range got {
			if len(e.KernelStack) == 0 && n > 0 {
				t.Logf("%s event without a stack, one of the %d nstrace counted as not kept", e.Event, n)
				n--
				e.stackless = true
			}
		}
	}
	checkStack(t, got[1], "do_exit")
	// kretprobes before 5.15: the kernel's unwinder stops at their
	// trampoline (README), so what one saw has that one frame.
	if tr.backend == "kprobe" && kernelBefore(t, 5, 15) {
		for _, e := range []*jsonEvent{got[0], got[2], got[3]} {
			if len(e.KernelStack) != 1 || !strings.HasPrefix(e.KernelStack[0], "kretprobe_trampoline+") {
				t.Errorf("%s event under kretprobe on %s: kernel_stack %q, want only the trampoline", e.Event, kernelRelease(t), e.KernelStack)
			}
		}
		return
	}
	checkStack(t, got[3], "copy_process", "kernel_clone")
	if tr.backend != "tracepoint" {
		checkStack(t, got[0], "ksys_unshare", syscallEntry)
		checkStack(t, got[2], syscallEntry)
		return
	}
	// The syscall tracepoints: their exit, or on 6.1 and before (whose
	// syscall tracepoints hand the program the user registers) nothing.
	if kernelBefore(t, 6, 2) {
		for _, e := range []*jsonEvent{got[0], got[2]} {
			if e.has("kernel_stack") {
				t.Errorf("%s event at a syscall tracepoint of %s with a kernel stack: %s", e.Event, kernelRelease(t), e)
			}
		}
		return
	}
	checkStack(t, got[0], syscallEntry)
	checkStack(t, got[2], syscallEntry)
}

// syscallEntry is a kernel function every syscall's stack passes through
// on this architecture, on the way in and at the exit tracepoint alike.
var syscallEntry = map[string]string{"amd64": "do_syscall_64", "arm64": "el0_svc"}[runtime.GOARCH]

func kernelRelease(t *testing.T) string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

// kernelBefore says whether the running kernel is older than major.minor.
func kernelBefore(t *testing.T, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(kernelRelease(t), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", kernelRelease(t), err)
	}
	return ma < major || ma == major && mi < minor
}
