package main

// The harness (nstraceRun): runs the real nstrace binary, waits for its
// ready line, records every stdout line (decoding and schema-checking JSON
// events), and stops it with a signal, checking the exit status and the
// integrity of the output.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var readyRE = regexp.MustCompile(`^nstrace: tracing namespaces \(backend: ([a-z]+)\); Ctrl-C to stop$`)

var knownBackends = []string{"fentry", "kprobe", "tracepoint"}

// jsonEvent is one JSON line of `nstrace -o json`.
type jsonEvent struct {
	Time          string            `json:"time"`
	Event         string            `json:"event"`
	PID           int               `json:"pid"`
	TID           int               `json:"tid"`
	PPID          int               `json:"ppid"`
	UID           int64             `json:"uid"`
	Comm          string            `json:"comm"`
	Type          string            `json:"type"`
	Inum          uint64            `json:"inum"`
	NsID          uint64            `json:"ns_id"`
	OldInum       uint64            `json:"old_inum"`
	Syscall       string            `json:"syscall"`
	CloneFlags    []string          `json:"clone_flags"`
	CloneFlagsRaw uint64            `json:"clone_flags_raw"`
	ForChildren   *bool             `json:"for_children"`
	Namespaces    map[string]uint64 `json:"namespaces"`
	How           string            `json:"how"`
	LifetimeNS    *int64            `json:"lifetime_ns"`
	Count         uint64            `json:"count"`
	Exe           string            `json:"exe"`
	Partial       bool              `json:"partial"`
	ParentComm    string            `json:"parent_comm"`
	// fail, limit, and the usage of a create.
	Error       string   `json:"error"`
	Errno       int      `json:"errno"`
	Reason      string   `json:"reason"`
	Depth       *uint32  `json:"depth"`
	MaxDepth    *uint32  `json:"max_depth"`
	UserCount   *uint32  `json:"user_count"`
	UserLimit   *uint32  `json:"user_limit"`
	UserNs      uint64   `json:"user_ns"`
	UserUID     *uint32  `json:"user_uid"`
	WarnPercent uint32   `json:"warn_percent"`
	KernelStack []string `json:"kernel_stack"`
	// summary
	Since      string                  `json:"since"`
	IntervalNS int64                   `json:"interval_ns"`
	Types      map[string]summaryCount `json:"types"`
	jsonContext
	Owner *jsonOwner `json:"owner"`

	fields   map[string]json.RawMessage // which keys were present
	problems []string                   // schema violations
	line     string                     // the raw line
	recv     time.Time                  // when the harness read it
	wall     time.Time                  // Time, parsed
	// Its kernel stack was not kept, and nstrace counted it (set by
	// TestKernelStack).
	stackless bool
}

// jsonContext is whose event it is (README: cgroup, container and pod).
type jsonContext struct {
	Cgroup        string `json:"cgroup"`
	CgroupID      uint64 `json:"cgroup_id"`
	ContainerID   string `json:"container_id"`
	ContainerName string `json:"container_name"`
	Image         string `json:"image"`
	Runtime       string `json:"runtime"`
	PodUID        string `json:"pod_uid"`
	PodName       string `json:"pod_name"`
	PodNamespace  string `json:"pod_namespace"`
}

// summaryCount is one type's counts in a summary event.
type summaryCount struct {
	Created    uint64 `json:"created"`
	Destroyed  uint64 `json:"destroyed"`
	Joined     uint64 `json:"joined"`
	Failed     uint64 `json:"failed"`
	Alive      uint64 `json:"alive"`
	PeakAlive  uint64 `json:"peak_alive"`
	LifetimeUS []struct {
		From  uint64 `json:"from"`
		To    uint64 `json:"to"`
		Count uint64 `json:"count"`
	} `json:"lifetime_us"`
}

type jsonOwner struct {
	PID int `json:"pid"`
	jsonContext
}

var (
	containerIDRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	podUIDRE      = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	runtimes      = []string{"docker", "containerd", "cri-o", "podman", "nerdctl"}
)

// checkContext checks the context fields' formats (README's schema).
func checkContext(what string, c *jsonContext) []string {
	var p []string
	if c.Cgroup != "" && !strings.HasPrefix(c.Cgroup, "/") {
		p = append(p, fmt.Sprintf("%scgroup %q does not start with /", what, c.Cgroup))
	}
	if c.ContainerID != "" && !containerIDRE.MatchString(c.ContainerID) {
		p = append(p, fmt.Sprintf("%scontainer_id %q is not 64 hex digits", what, c.ContainerID))
	}
	if c.ContainerID == "" && (c.ContainerName != "" || c.Runtime != "" || c.Image != "") {
		p = append(p, what+"container_name, image or runtime without container_id")
	}
	if c.Runtime != "" && !slices.Contains(runtimes, c.Runtime) {
		p = append(p, fmt.Sprintf("%sruntime %q is not one of %v", what, c.Runtime, runtimes))
	}
	if c.PodUID != "" && !podUIDRE.MatchString(c.PodUID) {
		p = append(p, fmt.Sprintf("%spod_uid %q is not a UUID", what, c.PodUID))
	}
	return p
}

func (e *jsonEvent) has(key string) bool { _, ok := e.fields[key]; return ok }

func (e *jsonEvent) String() string { return e.line }

// outLine is one stdout line with the time it was read.
type outLine struct {
	text string
	recv time.Time
}

type nstraceRun struct {
	t       *testing.T
	args    []string
	json    bool
	cmd     *exec.Cmd
	backend string    // as named by the ready line
	started time.Time // just before exec
	stopAt  time.Time // wall clock when the stop signal was sent

	mu       sync.Mutex
	lines    []outLine
	events   []*jsonEvent
	problems []string            // invalid JSON, truncated output
	watchAll bool                // every event is the test's concern
	watched  map[int]bool        // pids whose events are the test's concern
	matched  map[*jsonEvent]bool // events a test waited for
	stderr   bytes.Buffer
	notify   chan struct{} // closed (and replaced) whenever something is recorded

	stdoutDone chan struct{}
	stderrDone chan struct{}
	exited     chan struct{}
	waitErr    error
}

// startTracer runs nstrace with -o format --backend <configured> and extra
// arguments, and returns once it has printed its ready line.
func startTracer(t *testing.T, format string, extra ...string) *nstraceRun {
	t.Helper()
	needRoot(t, "nstrace loads BPF programs")
	tr := &nstraceRun{
		t:          t,
		args:       append([]string{"-o", format, "--backend", itCfg.backend}, extra...),
		json:       format == "json",
		notify:     make(chan struct{}),
		watched:    map[int]bool{},
		matched:    map[*jsonEvent]bool{},
		stdoutDone: make(chan struct{}),
		stderrDone: make(chan struct{}),
		exited:     make(chan struct{}),
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	tr.cmd = exec.Command(itCfg.bin, tr.args...)
	tr.cmd.Stdout, tr.cmd.Stderr = outW, errW
	tr.started = time.Now()
	err = tr.cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		t.Fatalf("starting %s: %v", tr.cmdline(), err)
	}
	t.Cleanup(tr.kill)
	t.Cleanup(tr.keepArtifacts)
	readyCh := make(chan string, 1)
	go tr.readStdout(outR)
	go tr.readStderr(errR, readyCh)
	go func() {
		tr.waitErr = tr.cmd.Wait()
		close(tr.exited)
	}()

	timer := time.NewTimer(readyTimeout())
	defer timer.Stop()
	select {
	case tr.backend = <-readyCh:
	case <-tr.exited:
		<-tr.stderrDone
		t.Fatalf("%s exited (%v) before printing its ready line; stderr:\n%s", tr.cmdline(), tr.waitErr, tr.stderrText())
	case <-timer.C:
		t.Fatalf("%s printed no ready line within %v; stderr so far:\n%s", tr.cmdline(), readyTimeout(), tr.stderrText())
	}
	if !slices.Contains(knownBackends, tr.backend) {
		t.Fatalf("ready line names backend %q, not one of %v", tr.backend, knownBackends)
	}
	if itCfg.backend != "auto" && tr.backend != itCfg.backend {
		t.Fatalf("requested --backend %s but the ready line names %q", itCfg.backend, tr.backend)
	}
	return tr
}

func (tr *nstraceRun) cmdline() string {
	return strings.Join(append([]string{"nstrace"}, tr.args...), " ")
}

func (tr *nstraceRun) signalChanged() {
	close(tr.notify)
	tr.notify = make(chan struct{})
}

func (tr *nstraceRun) readStdout(r io.ReadCloser) {
	defer close(tr.stdoutDone)
	defer r.Close()
	br := bufio.NewReaderSize(r, 1<<16)
	for {
		line, err := br.ReadString('\n')
		now := time.Now()
		tr.mu.Lock()
		if strings.HasSuffix(line, "\n") {
			text := strings.TrimSuffix(line, "\n")
			tr.lines = append(tr.lines, outLine{text, now})
			if tr.json {
				tr.decode(text, now)
			}
		} else if line != "" {
			tr.problems = append(tr.problems, fmt.Sprintf("stdout ends with an unterminated line: %q", line))
		}
		tr.signalChanged()
		tr.mu.Unlock()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				tr.mu.Lock()
				tr.problems = append(tr.problems, fmt.Sprintf("reading stdout: %v", err))
				tr.mu.Unlock()
			}
			return
		}
	}
}

// decode parses one JSON line; called with tr.mu held.
func (tr *nstraceRun) decode(text string, now time.Time) {
	e := &jsonEvent{line: text, recv: now}
	if err := json.Unmarshal([]byte(text), &e.fields); err != nil {
		tr.problems = append(tr.problems, fmt.Sprintf("stdout line is not a JSON object (%v): %q", err, text))
		return
	}
	if err := json.Unmarshal([]byte(text), e); err != nil {
		tr.problems = append(tr.problems, fmt.Sprintf("JSON line does not fit the schema's types (%v): %s", err, text))
		return
	}
	e.problems = validateEvent(e, tr.started, now)
	tr.events = append(tr.events, e)
}

func (tr *nstraceRun) readStderr(r io.ReadCloser, readyCh chan<- string) {
	defer close(tr.stderrDone)
	defer r.Close()
	sent := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		tr.mu.Lock()
		tr.stderr.WriteString(sc.Text() + "\n")
		tr.mu.Unlock()
		if m := readyRE.FindStringSubmatch(sc.Text()); m != nil && !sent {
			readyCh <- m[1]
			sent = true
		}
	}
}

var blindSpotRE = regexp.MustCompile(`(?m)^nstrace: blind spot: ([a-z]+) namespace destroy.*$`)

// blindSpot returns the startup line in which nstrace said it cannot see
// the destroy of namespaces of type typ, or "".
func (tr *nstraceRun) blindSpot(typ string) string {
	for _, m := range blindSpotRE.FindAllStringSubmatch(tr.stderrText(), -1) {
		if m[1] == typ {
			return m[0]
		}
	}
	return ""
}

func (tr *nstraceRun) stderrText() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.stderr.String()
}

// snapshot returns the events decoded so far.
func (tr *nstraceRun) snapshot() []*jsonEvent {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.events)
}

// outLines returns the stdout lines read so far.
func (tr *nstraceRun) outLines() []outLine {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.lines)
}

func (tr *nstraceRun) lost() uint64 {
	var n uint64
	for _, e := range tr.snapshot() {
		if e.Event == "lost" {
			n += e.Count
		}
	}
	return n
}

// waitUntil re-evaluates cond whenever output arrives, until it holds (true)
// or the timeout passes or stdout is closed (false).
func (tr *nstraceRun) waitUntil(timeout time.Duration, cond func(evs []*jsonEvent, lines []outLine) bool) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		tr.mu.Lock()
		ok := cond(tr.events, tr.lines)
		ch := tr.notify
		tr.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-tr.stdoutDone:
			tr.mu.Lock()
			ok := cond(tr.events, tr.lines)
			tr.mu.Unlock()
			return ok
		case <-timer.C:
			return false
		}
	}
}

// want is one event a scenario waits for.
// unshareUTS runs `unshare -u readlink /proc/self/ns/uts` to its end, has
// tr watch it, and returns its pid and the inode of the uts namespace it
// made, as the kernel gave it.
func (tr *nstraceRun) unshareUTS() (int, uint64) {
	tr.t.Helper()
	pid, out := runProgram(tr.t, "unshare", "-u", "readlink", "/proc/self/ns/uts")
	inum, err := parseNSLink("uts", strings.TrimSpace(out))
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.watch(pid)
	return pid, inum
}

type wantEvent struct {
	desc  string
	match func(*jsonEvent) bool
	// slack is how much later than the deadline the event may come when
	// the kernel, not nstrace, sets when it happens (a free the kernel
	// defers past an RCU grace period to a workqueue). An event in that
	// window must pass lateOK, which says why not ("" if fine).
	slack  time.Duration
	lateOK func(*jsonEvent) string
}

// await waits up to timeout (plus a want's slack) until every want has a
// matching event, and returns the first match of each. On timeout it fails
// the test, listing what is missing and every event related to the
// scenario.
func (tr *nstraceRun) await(timeout time.Duration, related func(*jsonEvent) bool, wants ...wantEvent) []*jsonEvent {
	tr.t.Helper()
	start := time.Now()
	found := make([]*jsonEvent, len(wants))
	var slack time.Duration
	for _, w := range wants {
		slack = max(slack, w.slack)
	}
	ok := tr.waitUntil(timeout+slack, func(evs []*jsonEvent, _ []outLine) bool {
		all := true
		for i, w := range wants {
			if found[i] != nil {
				continue
			}
			for _, e := range evs {
				if w.match(e) {
					found[i] = e
					tr.matched[e] = true // under tr.mu, as waitUntil calls us
					break
				}
			}
			all = all && found[i] != nil
		}
		return all
	})
	var missing, late []string
	for i, w := range wants {
		e := found[i]
		switch {
		case e == nil:
			missing = append(missing, w.desc)
		case e.recv.Sub(start) <= timeout:
		case w.slack == 0 || e.recv.Sub(start) > timeout+w.slack:
			late = append(late, fmt.Sprintf("%s: came %v after the start of the wait (deadline %v): %s", w.desc, e.recv.Sub(start).Round(time.Millisecond), timeout, e.line))
		default:
			if why := w.lateOK(e); why != "" {
				late = append(late, fmt.Sprintf("%s: came %v after the start of the wait, past the deadline of %v, and %s: %s", w.desc, e.recv.Sub(start).Round(time.Millisecond), timeout, why, e.line))
			} else {
				tr.t.Logf("%s: the kernel set its time: it came %v after the start of the wait (deadline %v, slack %v): %s", w.desc, e.recv.Sub(start).Round(time.Millisecond), timeout, w.slack, e.line)
			}
		}
	}
	if len(late) > 0 {
		tr.t.Errorf("late events:\n  %s", strings.Join(late, "\n  "))
	}
	if !ok {
		desc := tr.describe(related)
		tr.t.Fatalf("within %v, no event for:\n  %s\n%s\n%s", timeout+slack, strings.Join(missing, "\n  "), desc, tr.diagnoseMissing(wants, found))
	}
	return found
}

// diagnoseMissing, after an await timed out, stops nstrace and says, for
// each want still missing, whether it came late (before the stop) or not at
// all, with what nstrace's stderr said about drops.
func (tr *nstraceRun) diagnoseMissing(wants []wantEvent, found []*jsonEvent) string {
	var b strings.Builder
	deadline := time.Now()
	tr.cmd.Process.Signal(os.Interrupt)
	select {
	case <-tr.exited:
		<-tr.stderrDone
	case <-time.After(stopTimeout()):
		b.WriteString("  nstrace did not stop for the diagnosis\n")
	}
	evs := tr.snapshot()
	for i, w := range wants {
		if found[i] != nil {
			continue
		}
		late := "never came (until nstrace stopped)"
		for _, e := range evs {
			if w.match(e) {
				late = fmt.Sprintf("came %v after the deadline: %s", e.recv.Sub(deadline).Round(time.Millisecond), e.line)
				break
			}
		}
		fmt.Fprintf(&b, "  %s: %s\n", w.desc, late)
	}
	fmt.Fprintf(&b, "  nstrace's stderr:\n%s", tr.stderrText())
	return b.String()
}

// describe lists the events related to a scenario, for failure messages.
func (tr *nstraceRun) describe(related func(*jsonEvent) bool) string {
	evs := tr.snapshot()
	var b strings.Builder
	n := 0
	for _, e := range evs {
		if related(e) {
			if n < 60 {
				fmt.Fprintf(&b, "    %s\n", e.line)
			}
			n++
		}
	}
	fmt.Fprintf(&b, "  (%d related events of %d seen; lost events reported: %d; backend %s)", n, len(evs), tr.lost(), tr.backend)
	return "  related events seen:\n" + b.String()
}

// stop sends sig, requires exit status 0 within the deadline, and returns all
// events after checking the output's integrity.
func (tr *nstraceRun) stop(sig os.Signal) []*jsonEvent {
	tr.t.Helper()
	tr.stopAt = time.Now()
	if err := tr.cmd.Process.Signal(sig); err != nil {
		tr.t.Fatalf("sending %v to nstrace: %v", sig, err)
	}
	tr.expectExit(0, stopTimeout())
	return tr.finish()
}

// expectExit waits for nstrace to exit by itself and requires the exit code.
func (tr *nstraceRun) expectExit(code int, timeout time.Duration) {
	tr.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-tr.exited:
	case <-timer.C:
		tr.kill()
		tr.t.Fatalf("%s did not exit within %v; stderr:\n%s", tr.cmdline(), timeout, tr.stderrText())
	}
	if got := itExitCode(tr.waitErr); got != code {
		<-tr.stderrDone
		tr.t.Fatalf("%s: exit status %v, want %d; stderr:\n%s", tr.cmdline(), tr.waitErr, code, tr.stderrText())
	}
}

// watch declares pids whose events the test is about (with no pid: all
// events). finish fails on schema violations in those events, in events a
// test waited for, and in lost events. Those of other events (activity the
// tests do not control) are only logged, so it cannot decide the outcome.
func (tr *nstraceRun) watch(pids ...int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(pids) == 0 {
		tr.watchAll = true
	}
	for _, p := range pids {
		tr.watched[p] = true
	}
}

// concerns reports whether the test is about e (see watch); with tr.mu held.
func (tr *nstraceRun) concerns(e *jsonEvent) bool {
	return tr.watchAll || tr.matched[e] || e.Event == "lost" || (e.has("pid") && tr.watched[e.PID])
}

// finish waits for the output to be fully read after exit, fails on any
// invalid output, and returns all events.
func (tr *nstraceRun) finish() []*jsonEvent {
	tr.t.Helper()
	for _, ch := range []chan struct{}{tr.stdoutDone, tr.stderrDone} {
		select {
		case <-ch:
		case <-time.After(stopTimeout()):
			tr.t.Fatalf("nstrace exited but its output was not closed within %v (a child holds it?)", stopTimeout())
		}
	}
	tr.mu.Lock()
	problems := slices.Clone(tr.problems)
	concerned := map[*jsonEvent]bool{}
	for _, e := range tr.events {
		concerned[e] = tr.concerns(e)
	}
	tr.mu.Unlock()
	unrelated := 0
	for _, e := range tr.snapshot() {
		if len(e.problems) == 0 {
			continue
		}
		if concerned[e] {
			for _, p := range e.problems {
				problems = append(problems, p+": "+e.line)
			}
		} else if unrelated++; unrelated <= 5 {
			tr.t.Logf("NOTE, not failing this test: schema violation in an event of unrelated activity: %s: %s", strings.Join(e.problems, "; "), e.line)
		}
	}
	if unrelated > 5 {
		tr.t.Logf("NOTE: %d unrelated events had schema violations", unrelated)
	}
	for i, p := range problems {
		if i == 20 {
			tr.t.Errorf("... and %d more output problems", len(problems)-i)
			break
		}
		tr.t.Errorf("invalid output: %s", p)
	}
	stderr := tr.stderrText()
	checkNoCrash(tr.t, "nstrace stderr", stderr)
	n := 0
	for _, l := range strings.Split(stderr, "\n") {
		if readyRE.MatchString(l) {
			n++
		}
	}
	if n != 1 {
		tr.t.Errorf("stderr has %d ready lines, want exactly 1:\n%s", n, stderr)
	}
	return tr.snapshot()
}

// keepArtifacts saves the full output of a failed test's nstrace run.
func (tr *nstraceRun) keepArtifacts() {
	if !tr.t.Failed() || itCfg.keep == "" {
		return
	}
	tr.kill()
	<-tr.stdoutDone
	<-tr.stderrDone
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out strings.Builder
	for _, l := range tr.lines {
		fmt.Fprintf(&out, "%s\n", l.text)
	}
	base := filepath.Join(itCfg.keep, strings.NewReplacer("/", "_", " ", "_").Replace(tr.t.Name())+fmt.Sprintf("-%d", tr.cmd.Process.Pid))
	err := errors.Join(os.MkdirAll(itCfg.keep, 0o755),
		os.WriteFile(base+".stdout", []byte(out.String()), 0o644),
		os.WriteFile(base+".stderr", tr.stderr.Bytes(), 0o644))
	if err != nil {
		tr.t.Logf("saving nstrace output: %v", err)
	} else {
		tr.t.Logf("nstrace output kept in %s.{stdout,stderr}", base)
	}
}

func (tr *nstraceRun) kill() {
	select {
	case <-tr.exited:
	default:
		tr.cmd.Process.Kill()
		<-tr.exited
	}
}

func itExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return -1000
}

// checkNoCrash fails if output shows a Go panic or stack trace.
func checkNoCrash(t *testing.T, what, out string) {
	t.Helper()
	for _, bad := range []string{"panic", "goroutine ", "runtime error", "SIGSEGV"} {
		if strings.Contains(out, bad) {
			t.Errorf("%s contains %q (a crash or Go stack trace):\n%s", what, bad, out)
		}
	}
}

// Schema (CONTRACT.md "JSON lines").

var (
	nsTypes       = []string{"mnt", "uts", "ipc", "pid", "net", "user", "cgroup", "time"}
	knownSyscalls = []string{"clone", "clone3", "fork", "vfork", "unshare", "unknown"}
	eventKeys     = map[string][]string{
		"create":       {"time", "event", "pid", "tid", "ppid", "uid", "comm", "type", "inum", "old_inum", "syscall", "clone_flags", "clone_flags_raw", "cgroup", "cgroup_id", "user_count", "user_limit", "user_ns", "user_uid"},
		"join":         {"time", "event", "pid", "tid", "ppid", "uid", "comm", "type", "inum", "old_inum", "syscall", "clone_flags", "clone_flags_raw", "cgroup", "cgroup_id"},
		"nsproxy_free": {"time", "event", "pid", "tid", "ppid", "uid", "comm", "namespaces", "cgroup", "cgroup_id"},
		"destroy":      {"time", "event", "type", "inum", "how"}, // and the task fields unless polled
		"lost":         {"time", "event", "count"},
		"fail":         {"time", "event", "pid", "tid", "ppid", "uid", "comm", "syscall", "clone_flags", "clone_flags_raw", "error", "errno", "cgroup", "cgroup_id"},
		"limit":        {"time", "event", "pid", "tid", "ppid", "uid", "comm", "type", "inum", "user_count", "user_limit", "user_ns", "user_uid", "warn_percent"},
		"summary":      {"time", "event", "since", "interval_ns", "types"},
	}
	forbiddenKeys = map[string][]string{
		"nsproxy_free": {"type", "inum"},
		"lost":         {"type", "inum", "pid", "cgroup", "exe"},
		"fail":         {"inum", "ns_id", "old_inum"},
		"join":         {"user_count", "user_limit"},
		"destroy":      {"user_count", "user_limit"},
		"summary":      {"pid", "type", "inum"},
	}
	timeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d)$`)
)

// nsproxyKeys are the keys of nsproxy_free's "namespaces" on this kernel.
func nsproxyKeys() []string {
	keys := []string{"mnt", "uts", "ipc", "net", "cgroup", "pid_for_children"}
	if _, err := os.Stat("/proc/self/ns/time"); err == nil {
		keys = append(keys, "time", "time_for_children")
	}
	return keys
}

// validateEvent checks one event against the contract's schema. started and
// recv bound the wall-clock time (with a tolerance for the clock conversion;
// this catches a monotonic or boot-relative clock printed as if it were wall
// time).
func validateEvent(e *jsonEvent, started, recv time.Time) []string {
	var p []string
	bad := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	keys, known := eventKeys[e.Event]
	if !known {
		return []string{fmt.Sprintf("unknown event %q", e.Event)}
	}
	for _, k := range keys {
		if !e.has(k) {
			bad("%s event lacks %q", e.Event, k)
		}
	}
	for _, k := range forbiddenKeys[e.Event] {
		if e.has(k) {
			bad("%s event must not have %q", e.Event, k)
		}
	}
	if !timeRE.MatchString(e.Time) {
		bad("time %q is not RFC 3339 with 9-digit nanoseconds", e.Time)
	} else if w, err := time.Parse(time.RFC3339Nano, e.Time); err != nil {
		bad("time %q: %v", e.Time, err)
	} else {
		e.wall = w
		tol := scaled(2 * time.Second)
		if w.Before(started.Add(-tol)) || w.After(recv.Add(tol)) {
			bad("time %s is not wall-clock time between nstrace's start (%s) and reception (%s)",
				e.Time, started.Format(time.RFC3339Nano), recv.Format(time.RFC3339Nano))
		}
	}
	p = append(p, checkContext("", &e.jsonContext)...)
	if e.Owner != nil {
		p = append(p, checkContext("owner.", &e.Owner.jsonContext)...)
		if e.Event != "join" && e.Event != "destroy" && e.Event != "orphan" {
			bad("%s event must not have \"owner\"", e.Event)
		}
		if e.Owner.PID <= 0 {
			bad("owner.pid must be positive")
		}
	}
	// README: a destroy nstrace found (polled, reused) names no task.
	foundGone := e.How == "polled" || e.How == "reused"
	if foundGone && (e.has("exe") || e.has("parent_comm")) {
		bad("%s destroy must not have exe or parent_comm", e.How)
	}
	// README: partial is true or absent, on creates, joins and destroys.
	if e.has("partial") && (!e.Partial || e.Event != "create" && e.Event != "join" && e.Event != "destroy") {
		bad("\"partial\" must be true, and only on create, join or destroy")
	}
	switch e.Event {
	case "create", "join":
		if !slices.Contains(nsTypes, e.Type) {
			bad("type %q is not one of %v", e.Type, nsTypes)
		}
		if e.Inum == 0 || e.OldInum == 0 {
			bad("inum and old_inum must be non-zero")
		}
		if e.Event == "create" && !slices.Contains(knownSyscalls, e.Syscall) {
			bad("create syscall %q is not one of %v", e.Syscall, knownSyscalls)
		}
		if e.Event == "join" && e.Syscall != "setns" {
			bad("join syscall %q, want setns", e.Syscall)
		}
		// README: for_children marks pid/time namespaces that only the
		// caller's future children enter (unshare, setns); after clone the
		// child itself is in the new one.
		forChildren := (e.Type == "pid" || e.Type == "time") && (e.Syscall == "unshare" || e.Syscall == "setns")
		switch {
		case forChildren && (e.ForChildren == nil || !*e.ForChildren):
			bad("%s %s event needs \"for_children\": true", e.Type, e.Event)
		case !forChildren && e.has("for_children"):
			bad("for_children must be omitted for type %s after %s", e.Type, e.Syscall)
		}
		if e.has("clone_flags") && e.CloneFlags == nil {
			bad("clone_flags must be an array, not null")
		}
		p = append(p, checkFlagNames(e)...)
	case "nsproxy_free":
		want := nsproxyKeys()
		for k, v := range e.Namespaces {
			if !slices.Contains(want, k) {
				bad("namespaces has unexpected key %q (want %v)", k, want)
			}
			if v == 0 {
				bad("namespaces[%q] is 0", k)
			}
		}
		for _, k := range want {
			if _, ok := e.Namespaces[k]; !ok {
				bad("namespaces lacks %q", k)
			}
		}
	case "destroy":
		if !slices.Contains(nsTypes, e.Type) {
			bad("type %q is not one of %v", e.Type, nsTypes)
		}
		if e.Inum == 0 {
			bad("inum must be non-zero")
		}
		if !slices.Contains([]string{"last_ref", "freed", "polled", "reused"}, e.How) {
			bad("how %q, want last_ref, freed, polled or reused", e.How)
		}
		for _, k := range []string{"pid", "tid", "ppid", "uid", "comm"} {
			if foundGone && e.has(k) {
				bad("%s destroy must not have %q", e.How, k)
			}
			if !foundGone && !e.has(k) {
				bad("destroy event lacks %q", k)
			}
		}
		if e.LifetimeNS != nil && *e.LifetimeNS <= 0 {
			bad("lifetime_ns %d must be positive", *e.LifetimeNS)
		}
	case "lost":
		if e.Count == 0 {
			bad("lost count must be positive")
		}
	case "fail":
		if !slices.Contains([]string{"clone", "clone3", "unshare", "setns"}, e.Syscall) {
			bad("fail syscall %q is not clone, clone3, unshare or setns", e.Syscall)
		}
		if e.Errno <= 0 || !strings.HasPrefix(e.Error, "E") {
			bad("fail needs a positive errno and its name, not %d %q", e.Errno, e.Error)
		}
		switch e.Reason {
		case "":
			if e.has("type") || e.has("user_count") {
				bad("fail without a reason must have neither type nor user_count")
			}
		case "limit":
			if !slices.Contains(nsTypes, e.Type) || e.UserCount == nil || e.UserLimit == nil || e.UserNs == 0 || *e.UserCount < *e.UserLimit {
				bad("fail for a limit needs its type and a user_count at user_limit, in a user_ns")
			}
		case "depth":
			if (e.Type != "user" && e.Type != "pid") || e.Depth == nil || e.MaxDepth == nil || *e.Depth <= *e.MaxDepth {
				bad("fail for depth needs type user or pid and a depth beyond max_depth")
			}
		default:
			bad("fail reason %q, want limit or depth", e.Reason)
		}
		p = append(p, checkFlagNames(e)...)
	case "limit":
		if e.UserCount == nil || e.UserLimit == nil || e.WarnPercent == 0 ||
			uint64(*e.UserCount)*100 < uint64(e.WarnPercent)*uint64(*e.UserLimit) {
			bad("limit event's user_count must have reached warn_percent of user_limit")
		}
	case "summary":
		for typ := range e.Types {
			if !slices.Contains(nsTypes, typ) {
				bad("summary type %q is not one of %v", typ, nsTypes)
			}
		}
	}
	if e.Event == "create" && e.UserCount != nil && *e.UserCount == 0 {
		bad("a create's user_count counts the namespace created: it cannot be 0")
	}
	return p
}
