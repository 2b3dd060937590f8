package main

// Namespace ground truth (what the kernel shows in /proc/PID/ns), the
// scenario processes the tests drive, and the expectations checked against
// nstrace's events.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/snapshot"
)

// nsFiles are the /proc/PID/ns entries a scenario process reports.
var nsFiles = []string{"user", "uts", "ipc", "net", "mnt", "cgroup", "pid", "pid_for_children", "time", "time_for_children"}

// nsScript prints, like the "nsdump" helper, the namespaces the shell is in
// as "ns FILE TYPE:[INUM]" lines, then "self /proc/PID" (its pid in our
// /proc, so the test can open its namespaces), then "ready", then holds them
// until its stdin is closed.
const nsScript = `for f in user uts ipc net mnt cgroup pid pid_for_children time time_for_children; do
	l=$(readlink /proc/self/ns/$f 2>/dev/null) && echo "ns $f $l"
done
cd -P /proc/self && echo "self $PWD"; cd /
echo ready
read x
exit 0`

// kernelIDs maps inum to the kernel's namespace id (NS_GET_ID, Linux 6.18+),
// ground truth for ns_id, for every namespace a driven program reported.
var kernelIDs sync.Map

// learnKernelIDs reads the ids of the namespaces pid reported being in (ns,
// by /proc/PID/ns file), if the kernel has them, while pid holds them. They
// are forgotten when the test ends: later tests' namespaces reuse the inums.
func learnKernelIDs(t *testing.T, pid int, ns map[string]uint64) {
	for file, inum := range ns {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, file))
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) == nil && st.Ino == inum {
			if id := snapshot.KernelID(int(f.Fd())); id != 0 {
				kernelIDs.Store(inum, id)
				t.Cleanup(func() { kernelIDs.Delete(inum) })
			}
		}
		f.Close()
	}
}

// kernelID is the kernel's id of the namespace numbered inum, 0 if unknown.
func kernelID(inum uint64) uint64 {
	if v, ok := kernelIDs.Load(inum); ok {
		return v.(uint64)
	}
	return 0
}

// checkNsID says what is wrong with e's ns_id, given the create (or exist)
// event of the same namespace (nil if not seen), or "".
func checkNsID(e, create *jsonEvent) string {
	switch {
	case e.NsID == 0:
		return "no ns_id"
	case create != nil && e != create && e.NsID != create.NsID:
		return fmt.Sprintf("ns_id=%d, but its %s event had %d", e.NsID, create.Event, create.NsID)
	case kernelID(e.Inum) != 0 && e.NsID != kernelID(e.Inum):
		return fmt.Sprintf("ns_id=%d, want the kernel's id %d (NS_GET_ID)", e.NsID, kernelID(e.Inum))
	}
	return ""
}

// nsKey is the /proc/PID/ns file whose inode number a create or join of
// type typ reports (CONTRACT.md: pid and time report the _for_children one).
func nsKey(typ string) string {
	if typ == "pid" || typ == "time" {
		return typ + "_for_children"
	}
	return typ
}

var cloneNewFlag = map[string]uint64{
	"mnt":    syscall.CLONE_NEWNS,
	"cgroup": syscall.CLONE_NEWCGROUP,
	"uts":    syscall.CLONE_NEWUTS,
	"ipc":    syscall.CLONE_NEWIPC,
	"user":   syscall.CLONE_NEWUSER,
	"pid":    syscall.CLONE_NEWPID,
	"net":    syscall.CLONE_NEWNET,
	"time":   syscall.CLONE_NEWTIME,
}

// allNewFlags is every CLONE_NEW* bit.
var allNewFlags = flagsFor(nsTypes...)

// cloneFlagNames are the names clone_flags may use, with their bits.
var cloneFlagNames = map[string]uint64{
	"CLONE_VM": syscall.CLONE_VM, "CLONE_FS": syscall.CLONE_FS, "CLONE_FILES": syscall.CLONE_FILES,
	"CLONE_SIGHAND": syscall.CLONE_SIGHAND, "CLONE_PIDFD": syscall.CLONE_PIDFD,
	"CLONE_PTRACE": syscall.CLONE_PTRACE, "CLONE_VFORK": syscall.CLONE_VFORK,
	"CLONE_PARENT": syscall.CLONE_PARENT, "CLONE_THREAD": syscall.CLONE_THREAD,
	"CLONE_NEWNS": syscall.CLONE_NEWNS, "CLONE_SYSVSEM": syscall.CLONE_SYSVSEM,
	"CLONE_SETTLS": syscall.CLONE_SETTLS, "CLONE_PARENT_SETTID": syscall.CLONE_PARENT_SETTID,
	"CLONE_CHILD_CLEARTID": syscall.CLONE_CHILD_CLEARTID, "CLONE_DETACHED": syscall.CLONE_DETACHED,
	"CLONE_UNTRACED": syscall.CLONE_UNTRACED, "CLONE_CHILD_SETTID": syscall.CLONE_CHILD_SETTID,
	"CLONE_NEWCGROUP": syscall.CLONE_NEWCGROUP, "CLONE_NEWUTS": syscall.CLONE_NEWUTS,
	"CLONE_NEWIPC": syscall.CLONE_NEWIPC, "CLONE_NEWUSER": syscall.CLONE_NEWUSER,
	"CLONE_NEWPID": syscall.CLONE_NEWPID, "CLONE_NEWNET": syscall.CLONE_NEWNET,
	"CLONE_IO": syscall.CLONE_IO, "CLONE_CLEAR_SIGHAND": syscall.CLONE_CLEAR_SIGHAND,
	"CLONE_INTO_CGROUP": syscall.CLONE_INTO_CGROUP, "CLONE_NEWTIME": syscall.CLONE_NEWTIME,
}

func flagsFor(types ...string) uint64 {
	var f uint64
	for _, t := range types {
		f |= cloneNewFlag[t]
	}
	return f
}

// checkFlagNames checks that clone_flags agrees with clone_flags_raw: every
// name is a CLONE_* flag set in raw, and every CLONE_NEW* bit of raw is named.
func checkFlagNames(e *jsonEvent) []string {
	var p []string
	named := map[uint64]bool{}
	for _, n := range e.CloneFlags {
		bit, ok := cloneFlagNames[n]
		switch {
		case !ok:
			p = append(p, fmt.Sprintf("clone_flags has unknown name %q", n))
		case e.CloneFlagsRaw&bit == 0:
			p = append(p, fmt.Sprintf("clone_flags names %s but clone_flags_raw %#x lacks it", n, e.CloneFlagsRaw))
		}
		named[bit] = true
	}
	for _, t := range nsTypes {
		if bit := cloneNewFlag[t]; e.CloneFlagsRaw&bit != 0 && !named[bit] {
			p = append(p, fmt.Sprintf("clone_flags_raw %#x has %#x but clone_flags %v does not name it", e.CloneFlagsRaw, bit, e.CloneFlags))
		}
	}
	return p
}

var nsLinkRE = regexp.MustCompile(`^([a-z]+):\[(\d+)\]$`)

// parseNSLink parses "uts:[4026531838]" for /proc/PID/ns/<file>.
func parseNSLink(file, link string) (uint64, error) {
	m := nsLinkRE.FindStringSubmatch(strings.TrimSpace(link))
	if m == nil || m[1] != strings.TrimSuffix(file, "_for_children") {
		return 0, fmt.Errorf("/proc/PID/ns/%s reads %q, want %s:[N]", file, link, strings.TrimSuffix(file, "_for_children"))
	}
	return strconv.ParseUint(m[2], 10, 64)
}

// selfNS returns this test process's namespaces, keyed by /proc/self/ns file.
func selfNS(t *testing.T) map[string]uint64 {
	t.Helper()
	ns := map[string]uint64{}
	for _, f := range nsFiles {
		l, err := os.Readlink("/proc/self/ns/" + f)
		if err != nil {
			continue // e.g. time on kernels without time namespaces
		}
		if ns[f], err = parseNSLink(f, l); err != nil {
			t.Fatal(err)
		}
	}
	return ns
}

func selfComm(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// nsProc is a driven program that reports the namespaces it is in and holds
// them until released (nsScript, or the "nsdump" helper).
type nsProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stderr  bytes.Buffer
	ns      map[string]uint64 // /proc/self/ns file -> inum, as seen inside
	started time.Time         // just before exec: nothing it creates is older
	cmdPID  int               // the command's pid, when run under reaped()
	selfPID int               // the pid of the process that reported ns, in our /proc
	done    chan struct{}
	waitErr error
	lines   chan string // its stdout until "ready"
}

// shCmd runs nsScript under the given wrapper command line (e.g. unshare ... --).
func shCmd(wrapper ...string) *exec.Cmd {
	return exec.Command(wrapper[0], append(wrapper[1:], "sh", "-c", nsScript)...)
}

// reaped runs cmd under the "reap" helper (a child subreaper), so that the
// command's exit is reported only once every process it left behind is gone.
func reaped(t *testing.T, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := exec.Command(self, append([]string{cmd.Path}, cmd.Args[1:]...)...)
	r.Env = append(cmd.Environ(), helperEnv+"=reap")
	return r
}

// helperCmd re-executes this test binary as the "nsdump" helper.
func helperCmd(t *testing.T) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	// The Go runtime keeps its cgroup's cpu.max open to follow CPU limits,
	// and an open cgroup file pins the cgroup namespace it was opened in
	// until the file is released, which for an exiting process comes after
	// its nsproxy, from a work item: a real case of a namespace that
	// outlives its last process.
	cmd.Env = append(os.Environ(), helperEnv+"=nsdump")
	return cmd
}

// startNSProc starts cmd and waits for its namespace report.
func startNSProc(t *testing.T, cmd *exec.Cmd) *nsProc {
	t.Helper()
	p := beginNSProc(t, cmd)
	p.awaitReport()
	return p
}

// beginNSProc starts cmd; awaitReport then waits for its namespace report.
func beginNSProc(t *testing.T, cmd *exec.Cmd) *nsProc {
	t.Helper()
	p := &nsProc{t: t, cmd: cmd, ns: map[string]uint64{}, done: make(chan struct{}), lines: make(chan string)}
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = outW, &p.stderr
	cmd.WaitDelay = procTimeout()
	p.started = time.Now()
	err = cmd.Start()
	outW.Close()
	if err != nil {
		t.Fatalf("starting %v: %v", cmd.Args, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})

	go func() {
		defer close(p.lines)
		defer outR.Close()
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			p.lines <- sc.Text()
			if sc.Text() == "ready" {
				return
			}
		}
	}()
	return p
}

func (p *nsProc) awaitReport() {
	t, cmd, lines := p.t, p.cmd, p.lines
	t.Helper()
	var err error
	timer := time.NewTimer(procTimeout())
	defer timer.Stop()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				<-p.done
				t.Fatalf("%v ended (%v) before reporting its namespaces; stderr:\n%s", cmd.Args, p.waitErr, p.stderr.String())
			}
			if l == "ready" {
				return
			}
			if _, err := fmt.Sscanf(l, "pid %d", &p.cmdPID); err == nil {
				continue
			}
			var self int
			if _, err := fmt.Sscanf(l, "self /proc/%d", &self); err == nil {
				p.selfPID = self
				learnKernelIDs(t, self, p.ns)
				continue
			}
			var file, link string
			if _, err := fmt.Sscanf(l, "ns %s %s", &file, &link); err != nil {
				t.Fatalf("%v printed %q: %v", cmd.Args, l, err)
			}
			if p.ns[file], err = parseNSLink(file, link); err != nil {
				t.Fatal(err)
			}
		case <-timer.C:
			t.Fatalf("%v did not report its namespaces within %v", cmd.Args, procTimeout())
		}
	}
}

func (p *nsProc) pid() int {
	if p.cmdPID != 0 {
		return p.cmdPID
	}
	return p.cmd.Process.Pid
}

// ppid is the parent of pid(): this test, or the reaper.
func (p *nsProc) ppid() int {
	if p.cmdPID != 0 {
		return p.cmd.Process.Pid
	}
	return os.Getpid()
}

// release closes stdin and requires a clean exit within the deadline.
func (p *nsProc) release() {
	p.t.Helper()
	p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(procTimeout()):
		p.t.Fatalf("%v did not exit within %v of closing its stdin", p.cmd.Args, procTimeout())
	}
	if p.waitErr != nil {
		p.t.Fatalf("%v: %v; stderr:\n%s", p.cmd.Args, p.waitErr, p.stderr.String())
	}
}

// runProgram runs a short command to completion (exit 0 within the deadline) and
// returns its pid and stdout.
func runProgram(t *testing.T, argv ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", argv, err)
	}
	ok, err := waitWithin(cmd, procTimeout())
	if !ok {
		t.Fatalf("%v did not finish within %v", argv, procTimeout())
	}
	if err != nil {
		t.Fatalf("%v: %v; stderr:\n%s", argv, err, errb.String())
	}
	return cmd.Process.Pid, out.String()
}

// waitWithin waits for a started cmd; past the deadline it kills it and
// returns finished false.
func waitWithin(cmd *exec.Cmd, d time.Duration) (finished bool, err error) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return true, err
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return false, nil
	}
}

// nsChange is what nstrace must report for namespaces one process creates
// or joins.
type nsChange struct {
	kind     string // "create" or "join"
	pid      int    // tgid of the process whose action it is
	goCaller bool   // pid is this (multi-threaded) test process
	ppid     int
	comm     string
	syscall  string
	types    []string
	inum     map[string]uint64 // type -> the namespace created or joined
	old      map[string]uint64 // type -> what the process had before
	raw      map[string]uint64 // type -> clone_flags_raw & rawMask
	rawMask  uint64
}

// newChange fills inum/old from ground truth: the namespaces seen inside
// (keyed by ns file) against ours. Every type must really differ.
func newChange(t *testing.T, kind string, pid int, comm, sys string, types []string, inside map[string]uint64) nsChange {
	t.Helper()
	self := selfNS(t)
	c := nsChange{kind: kind, pid: pid, ppid: os.Getpid(), comm: comm, syscall: sys, types: types,
		inum: map[string]uint64{}, old: map[string]uint64{}, raw: map[string]uint64{}}
	for _, typ := range types {
		k := nsKey(typ)
		c.inum[typ], c.old[typ] = inside[k], self[k]
		if inside[k] == 0 || self[k] == 0 || inside[k] == self[k] {
			t.Fatalf("scenario did not put the process in another %s namespace: /proc/PID/ns/%s inside %d, ours %d", typ, k, inside[k], self[k])
		}
	}
	return c
}

// withRaw sets the expected clone_flags_raw (masked) for every type.
func (c nsChange) withRaw(raw, mask uint64) nsChange {
	for _, typ := range c.types {
		c.raw[typ] = raw & mask
	}
	c.rawMask = mask
	return c
}

// related selects the events worth showing when something is missing.
func (c nsChange) related() func(*jsonEvent) bool {
	inums := slices.Collect(maps.Values(c.inum))
	return func(e *jsonEvent) bool {
		if e.PID == c.pid || slices.Contains(inums, e.Inum) {
			return true
		}
		for _, v := range e.Namespaces {
			if slices.Contains(inums, v) {
				return true
			}
		}
		return e.Event == "lost"
	}
}

// expect waits for one event per type and checks every field against
// ground truth. It returns the events by type.
func (c nsChange) expect(tr *nstraceRun) map[string]*jsonEvent {
	t := tr.t
	t.Helper()
	var wants []wantEvent
	for _, typ := range c.types {
		wants = append(wants, wantEvent{
			desc:  fmt.Sprintf("%s type=%s pid=%d (inum %d)", c.kind, typ, c.pid, c.inum[typ]),
			match: func(e *jsonEvent) bool { return e.Event == c.kind && e.PID == c.pid && e.Type == typ },
		})
	}
	tr.watch(c.pid)
	found := tr.await(eventTimeout(), c.related(), wants...)
	got := map[string]*jsonEvent{}
	for i, typ := range c.types {
		e := found[i]
		got[typ] = e
		var bad []string
		check := func(field string, have, want any) {
			if have != want {
				bad = append(bad, fmt.Sprintf("%s=%v, want %v", field, have, want))
			}
		}
		check("inum", e.Inum, c.inum[typ])
		if why := checkNsID(e, nil); why != "" {
			bad = append(bad, why)
		}
		check("old_inum", e.OldInum, c.old[typ])
		check("syscall", e.Syscall, c.syscall)
		check("ppid", e.PPID, c.ppid)
		check("uid", e.UID, int64(os.Getuid()))
		check("comm", e.Comm, c.comm)
		if c.rawMask != 0 {
			check(fmt.Sprintf("clone_flags_raw&%#x", c.rawMask), fmt.Sprintf("%#x", e.CloneFlagsRaw&c.rawMask), fmt.Sprintf("%#x", c.raw[typ]))
		}
		if c.goCaller {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", c.pid, e.TID)); err != nil {
				bad = append(bad, fmt.Sprintf("tid=%d is not a thread of pid %d", e.TID, c.pid))
			}
		} else {
			check("tid", e.TID, c.pid)
		}
		if len(bad) > 0 {
			t.Errorf("%s %s event has wrong fields: %s\n    event: %s", c.kind, typ, strings.Join(bad, "; "), e.line)
		}
	}
	return got
}

// verifyExact checks, on the complete output, that the process caused
// exactly one event of c.kind per expected type and none of other types.
// (That nobody else reported creating these namespaces while they lived is
// teardown.verifyHistory's job: inode numbers are reused at once.)
func (c nsChange) verifyExact(t *testing.T, evs []*jsonEvent) {
	t.Helper()
	perType := map[string][]string{}
	for _, e := range evs {
		if e.Event == c.kind && e.PID == c.pid {
			perType[e.Type] = append(perType[e.Type], e.line)
		}
	}
	for _, typ := range slices.Sorted(maps.Keys(perType)) {
		want := 0
		if slices.Contains(c.types, typ) {
			want = 1
		}
		if n := len(perType[typ]); n != want {
			t.Errorf("%d %s events of type %s by pid %d, want %d:\n    %s",
				n, c.kind, typ, c.pid, want, strings.Join(perType[typ], "\n    "))
		}
	}
}

// forbid fails for every event matching pred.
func forbid(t *testing.T, evs []*jsonEvent, desc string, pred func(*jsonEvent) bool) {
	t.Helper()
	for _, e := range evs {
		if pred(e) {
			t.Errorf("unexpected event (%s): %s", desc, e.line)
		}
	}
}

// teardown describes namespaces whose end one action (a process exiting,
// a bind mount going away) must cause.
type teardown struct {
	started    time.Time             // before the namespaces were created
	release    func()                // the action that drops their last use
	pid        int                   // the process concerned (for failure messages)
	inum       map[string]uint64     // key (type, or type/label) -> inum
	creates    map[string]*jsonEvent // key -> create seen by this run; nil: created before nstrace started
	exists     map[string]*jsonEvent // key -> exist event (--snapshot), for namespaces created before
	holder     map[string]uint64     // if set, the last holder's view of /proc/self/ns: an nsproxy_free with exactly these must follow
	nsproxyPID int                   // if non-zero, the pid that frees that nsproxy
	pinned     bool                  // a bind mount or an open file holds them last, not a process
}

// procTeardown: p's exit ends the namespaces of c. Unless c is only a user
// namespace (which lives in the credentials, not the nsproxy), p has an
// nsproxy of its own, which its exit frees.
func procTeardown(p *nsProc, c nsChange, creates map[string]*jsonEvent, nsproxyPID int) teardown {
	td := teardown{started: p.started, release: p.release, pid: p.pid(), inum: c.inum,
		creates: creates, nsproxyPID: nsproxyPID}
	if slices.ContainsFunc(c.types, func(typ string) bool { return typ != "user" }) {
		td.holder = p.ns
	}
	return td
}

// lifecycle checks the creates c describes and then the teardown caused by
// p's exit; it returns the checks to run on the complete output.
func lifecycle(tr *nstraceRun, p *nsProc, c nsChange, nsproxyPID int) func([]*jsonEvent) {
	tr.t.Helper()
	td := procTeardown(p, c, c.expect(tr), nsproxyPID)
	td.expect(tr)
	return func(evs []*jsonEvent) {
		c.verifyExact(tr.t, evs)
		td.verifyHistory(tr, evs)
	}
}

// keys lists the namespaces of a teardown: its keys are a type ("pid"), or
// a type and a label ("pid/outer") where several share a type.
func (td teardown) keys() []string { return slices.Sorted(maps.Keys(td.inum)) }

// nsTypeOf is the type of a teardown key.
func nsTypeOf(key string) string {
	typ, _, _ := strings.Cut(key, "/")
	return typ
}

// blind returns the startup line in which nstrace said it cannot see the
// destroy of key, or "".
func (td teardown) blind(tr *nstraceRun, key string) string {
	if why := tr.blindSpot(nsTypeOf(key)); why != "" || !td.pinned {
		return why
	}
	return tr.pinnedBlindSpot(nsTypeOf(key))
}

// born is the event time of our create of typ (zero if not seen). Events
// of the same inum stamped earlier belong to a previous namespace that had
// the number: the kernel reuses inode numbers at once.
func (td teardown) born(key string) time.Time {
	if c := td.creates[key]; c != nil {
		return c.wall
	}
	return time.Time{}
}

func (td teardown) related(e *jsonEvent) bool {
	if e.PID == td.pid || e.Event == "lost" {
		return true
	}
	for _, v := range td.inum {
		if e.Inum == v || slices.Contains(slices.Collect(maps.Values(e.Namespaces)), v) {
			return true
		}
	}
	return false
}

func (td teardown) isDestroy(key string) func(*jsonEvent) bool {
	return func(e *jsonEvent) bool {
		return e.Event == "destroy" && e.Type == nsTypeOf(key) && e.Inum == td.inum[key] && !e.wall.Before(td.born(key))
	}
}

// isHolderFree matches the nsproxy_free of the last holder: its namespaces
// are exactly those the holder reported (which tells it from an nsproxy
// replaced earlier, e.g. at exec), and its pid is nsproxyPID if known (which
// tells it from another process that was in the same namespaces).
func (td teardown) isHolderFree(e *jsonEvent) bool {
	if e.Event != "nsproxy_free" || (td.nsproxyPID != 0 && e.PID != td.nsproxyPID) {
		return false
	}
	for _, key := range td.keys() {
		if e.wall.Before(td.born(key)) {
			return false
		}
	}
	for _, k := range nsproxyKeys() {
		if e.Namespaces[k] != td.holder[k] {
			return false
		}
	}
	return true
}

func (td teardown) holderDesc() string {
	var b strings.Builder
	b.WriteString("nsproxy_free")
	if td.nsproxyPID != 0 {
		fmt.Fprintf(&b, " pid=%d", td.nsproxyPID)
	}
	b.WriteString(" namespaces={")
	for i, k := range nsproxyKeys() {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s:%d", k, td.holder[k])
	}
	b.WriteString("}")
	return b.String()
}

// expect checks nothing ended early, performs the release and waits for the
// destroys (and nsproxy_free) it causes, checking their fields. It returns
// the destroys by key (none for a blind one).
func (td teardown) expect(tr *nstraceRun) map[string]*jsonEvent {
	t := tr.t
	t.Helper()
	tr.watch(td.pid)
	for _, key := range td.keys() {
		forbid(t, tr.snapshot(), "destroy while the namespace is still in use", td.isDestroy(key))
	}
	if td.holder != nil {
		forbid(t, tr.snapshot(), "nsproxy_free while its holder is still running", td.isHolderFree)
	}
	released := time.Now()
	td.release()
	// A teardown nstrace said at startup it cannot see here (README's
	// capability table) is not awaited; everything else is.
	var keys []string
	var wants []wantEvent
	for _, key := range td.keys() {
		if why := td.blind(tr, key); why != "" {
			t.Logf("not awaiting the %s destroy: backend %s announced %q", key, tr.backend, why)
			tr.recall(nsTypeOf(key), nil)
			continue
		}
		keys = append(keys, key)
		w := wantEvent{desc: fmt.Sprintf("destroy type=%s inum=%d", nsTypeOf(key), td.inum[key]), match: td.isDestroy(key)}
		if deferredFree[nsTypeOf(key)] {
			w.slack, w.lateOK = deferredFreeSlack(), freedPromptly
		}
		wants = append(wants, w)
	}
	if td.holder != nil {
		wants = append(wants, wantEvent{desc: td.holderDesc(), match: td.isHolderFree})
	}
	found := tr.await(eventTimeout(), td.related, wants...)
	destroys := map[string]*jsonEvent{}
	for i, key := range keys {
		td.checkDestroy(t, key, found[i], released)
		tr.recall(nsTypeOf(key), found[i])
		destroys[key] = found[i]
	}
	return destroys
}

// deferredFree holds the types whose free the kernel defers past an RCU
// grace period, and for user and net to a workqueue after it: the release
// only queues it, and on a loaded machine (a software-emulated VM on a busy
// CI host) the free has come 8 s after the release. nstrace cannot report a
// free before the kernel does it, so a destroy of these types may come
// later than the deadline, if it is the hooked free and nstrace delivered
// it promptly.
var deferredFree = map[string]bool{"user": true, "net": true, "pid": true}

func deferredFreeSlack() time.Duration { return scaled(8 * time.Second) }

// freedPromptly accepts a late destroy if it is the kernel's own free
// (how=freed, not a poll that came late) and nstrace delivered it within the
// event deadline of the time the kernel did it.
func freedPromptly(e *jsonEvent) string {
	if e.How != "freed" {
		return fmt.Sprintf("it is %q, not the kernel's free", e.How)
	}
	if lag := e.recv.Sub(e.wall); lag > eventTimeout() {
		return fmt.Sprintf("nstrace delivered it %v after the kernel's free (more than %v)", lag.Round(time.Millisecond), eventTimeout())
	}
	return ""
}

// recall logs, for README's recall table, whether a destroy of a namespace
// of type typ that a scenario made was awaited and seen, or not awaited
// because the backend announced it cannot see it.
func (tr *nstraceRun) recall(typ string, d *jsonEvent) {
	tr.t.Helper()
	how := "-"
	if d != nil {
		how = d.How
	}
	tr.t.Logf("recall: backend=%s type=%s seen=%v how=%s", tr.backend, typ, d != nil, how)
}

func (td teardown) checkDestroy(t *testing.T, typ string, d *jsonEvent, released time.Time) {
	t.Helper()
	c := td.creates[typ] // typ: a teardown key
	first := c
	if first == nil {
		first = td.exists[typ]
	}
	if why := checkNsID(d, first); why != "" {
		t.Errorf("%s destroy: %s\n    create or exist: %v\n    destroy: %s", typ, why, first, d.line)
	}
	switch {
	case td.creates == nil && d.LifetimeNS != nil:
		t.Errorf("destroy of a %s namespace created before nstrace started has lifetime_ns %d; the contract says it is present only when the create was seen\n    event: %s", typ, *d.LifetimeNS, d.line)
	case td.creates != nil && d.LifetimeNS == nil:
		t.Errorf("destroy of a %s namespace whose create this run reported lacks lifetime_ns\n    create:  %s\n    destroy: %s", typ, c.line, d.line)
	case td.creates != nil:
		// The namespace existed from before its create event was read until
		// after the release, and no longer than from before its creation
		// until the destroy event was read.
		lo, hi := released.Sub(c.recv), d.recv.Sub(td.started)
		if l := time.Duration(*d.LifetimeNS); l < lo || l > hi {
			t.Errorf("%s lifetime_ns %v is impossible: the namespace provably lived at least %v and at most %v\n    create:  %s\n    destroy: %s", typ, l, lo, hi, c.line, d.line)
		}
		if d.wall.Before(c.wall) {
			t.Errorf("%s destroy time precedes its create time\n    create:  %s\n    destroy: %s", typ, c.line, d.line)
		}
	}
}

// verifyHistory checks, on the complete output and in event-time order,
// each of our inode numbers from our create on (from the start if it
// predates this run) until nstrace was told to stop (after that, while the
// probes are detached one by one, it sees only part of what happens). An
// inode number names one live namespace at a time, of any type, and the
// kernel reuses it at once: ours must be destroyed once, then the number may
// be created and destroyed again by whoever reuses it, but never created
// while alive nor destroyed while dead or as another type.
func (td teardown) verifyHistory(tr *nstraceRun, evs []*jsonEvent) {
	t := tr.t
	t.Helper()
	for _, key := range td.keys() {
		if td.blind(tr, key) != "" {
			// Its free went unseen and the number may be reused by any
			// namespace since: there is no history to check.
			continue
		}
		var hist []*jsonEvent
		for _, e := range evs {
			if (e.Event == "create" || e.Event == "destroy") && e.Inum == td.inum[key] &&
				!e.wall.Before(td.born(key)) && e.wall.Before(tr.stopAt) {
				hist = append(hist, e)
			}
		}
		slices.SortStableFunc(hist, func(a, b *jsonEvent) int { return a.wall.Compare(b.wall) })
		alive := nsTypeOf(key) // type of the live namespace with this number; "" if none
		for _, e := range hist {
			if e == td.creates[key] {
				continue
			}
			var bad string
			switch {
			case e.Event == "create" && alive != "":
				bad = "created while a " + alive + " namespace with that number was alive"
			case e.Event == "create":
				alive = e.Type
			case alive != e.Type:
				bad = fmt.Sprintf("destroyed as a %s namespace while the live one with that number was %q", e.Type, alive)
			default:
				alive = ""
			}
			if bad != "" {
				var b strings.Builder
				for _, h := range hist {
					fmt.Fprintf(&b, "\n    %s", h.line)
				}
				t.Errorf("inode number %d (our %s namespace): %s (lost events reported in this run: %d)\n  event: %s\n  history of the number from our create on:%s",
					td.inum[key], key, bad, tr.lost(), e.line, b.String())
				break
			}
		}
	}
}

// differingTypes returns, sorted, the namespace types whose inum differs
// between inside and ours.
func differingTypes(inside, self map[string]uint64) []string {
	var types []string
	for _, typ := range nsTypes {
		k := nsKey(typ)
		if inside[k] != 0 && inside[k] != self[k] {
			types = append(types, typ)
		}
	}
	sort.Strings(types)
	return types
}
