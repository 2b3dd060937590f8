package main

// Integration tests of --snapshot: namespaces that exist before nstrace
// starts are printed as exist events, before the live stream and before the
// ready line, with the holder, the process and the parent and owning
// namespaces the kernel shows.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	// The exist event in the harness's schema (README, JSON schema).
	eventKeys["exist"] = []string{"time", "event", "type", "inum", "held_by", "nprocs"}
	forbiddenKeys["exist"] = []string{"tid", "old_inum", "for_children", "syscall", "clone_flags", "clone_flags_raw", "how", "lifetime_ns", "namespaces", "count"}
}

// existRecord is the part of an exist event the harness's jsonEvent lacks.
type existRecord struct {
	*jsonEvent
	HeldBy     string `json:"held_by"`
	Nprocs     *int   `json:"nprocs"`
	ParentInum uint64 `json:"parent_inum"`
	OwnerInum  uint64 `json:"owner_user_inum"`
	Mountpoint string `json:"mountpoint"`
}

var holders = []string{"process", "bind_mount", "fd", "namespace"}

// existRecords returns the exist events among evs, failing on any that does
// not fit the schema.
func existRecords(t *testing.T, evs []*jsonEvent) []*existRecord {
	t.Helper()
	var out []*existRecord
	for _, e := range evs {
		if e.Event != "exist" {
			continue
		}
		x := &existRecord{jsonEvent: e}
		if err := json.Unmarshal([]byte(e.line), x); err != nil {
			t.Errorf("exist event does not fit the schema's types (%v): %s", err, e.line)
			continue
		}
		var bad []string
		if !slices.Contains(nsTypes, e.Type) || e.Inum == 0 {
			bad = append(bad, "type or inum")
		}
		if !slices.Contains(holders, x.HeldBy) {
			bad = append(bad, fmt.Sprintf("held_by %q is not one of %v", x.HeldBy, holders))
		}
		if x.Nprocs == nil || *x.Nprocs < 0 || (*x.Nprocs > 0 && x.HeldBy != "process") {
			bad = append(bad, "nprocs missing, negative, or positive while not held by a process")
		}
		if x.ParentInum != 0 && e.Type != "pid" && e.Type != "user" {
			bad = append(bad, "parent_inum on a type that has no parent")
		}
		if x.OwnerInum != 0 && e.Type == "user" {
			bad = append(bad, "owner_user_inum on a user namespace (its parent_inum says it)")
		}
		if e.has("pid") != e.has("comm") || e.has("pid") != e.has("ppid") || e.has("pid") != e.has("uid") {
			bad = append(bad, "pid, ppid, uid and comm come together")
		}
		if e.has("pid") && e.PID <= 0 {
			bad = append(bad, "pid must be positive")
		}
		if len(bad) > 0 {
			t.Errorf("exist event: %s: %s", strings.Join(bad, "; "), e.line)
		}
		out = append(out, x)
	}
	return out
}

// checkSnapshotOrder checks, on the complete output, that the exist events
// come first, each namespace once, and that every parent and owner they
// name was printed before.
func checkSnapshotOrder(t *testing.T, evs []*jsonEvent) []*existRecord {
	t.Helper()
	xs := existRecords(t, evs)
	for i, e := range evs {
		if e.Event != "exist" && i < len(xs) {
			t.Errorf("event %d is %q, before the last of the %d exist events: %s", i, e.Event, len(xs), e.line)
			break
		}
	}
	printed := map[string]bool{}
	for _, x := range xs {
		k := fmt.Sprintf("%s:%d", x.Type, x.Inum)
		if printed[k] {
			t.Errorf("namespace %s printed twice: %s", k, x.line)
		}
		printed[k] = true
		for _, rel := range []string{fmt.Sprintf("%s:%d", x.Type, x.ParentInum), fmt.Sprintf("user:%d", x.OwnerInum)} {
			if !strings.HasSuffix(rel, ":0") && !printed[rel] {
				t.Errorf("exist event names %s, not printed before it: %s", rel, x.line)
			}
		}
	}
	return xs
}

func isExist(typ string, inum uint64) func(*jsonEvent) bool {
	return func(e *jsonEvent) bool { return e.Event == "exist" && e.Type == typ && e.Inum == inum }
}

// awaitExist waits for the exist event of each namespace (type -> inum).
func awaitExist(tr *nstraceRun, inums map[string]uint64) map[string]*existRecord {
	tr.t.Helper()
	var types []string
	var wants []wantEvent
	for _, typ := range slices.Sorted(maps.Keys(inums)) {
		types = append(types, typ)
		wants = append(wants, wantEvent{desc: fmt.Sprintf("exist type=%s inum=%d", typ, inums[typ]), match: isExist(typ, inums[typ])})
	}
	related := func(e *jsonEvent) bool {
		return e.Event == "lost" || slices.Contains(slices.Collect(maps.Values(inums)), e.Inum)
	}
	found := tr.await(eventTimeout(), related, wants...)
	out := map[string]*existRecord{}
	for i, typ := range types {
		xs := existRecords(tr.t, found[i:i+1])
		if len(xs) == 1 {
			out[typ] = xs[0]
		}
	}
	if len(out) != len(types) {
		tr.t.FailNow()
	}
	return out
}

func readComm(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// S1. Namespaces made before nstrace starts are exist events, held by the
// process in them, which stands for them; after the stream has them, their
// destroy follows when that process exits.
func TestSnapshotPreexisting(t *testing.T) {
	needRoot(t, "nstrace loads BPF programs")
	needTools(t, "unshare", "sh", "readlink")
	types := []string{"ipc", "net", "uts"}
	p := startNSProc(t, shCmd("unshare", "-u", "-i", "-n", "--"))
	c := newChange(t, "create", p.pid(), "unshare", "unshare", types, p.ns)
	comm := readComm(t, p.pid())
	tr := startTracer(t, "json", "--snapshot")
	tr.watch(p.pid())

	want := map[string]uint64{"mnt": p.ns["mnt"], "user": p.ns["user"], "pid": p.ns["pid"]}
	for _, typ := range types {
		want[typ] = p.ns[typ]
	}
	got := awaitExist(tr, want)
	for _, typ := range types {
		x := got[typ]
		var bad []string
		check := func(field string, have, want any) {
			if have != want {
				bad = append(bad, fmt.Sprintf("%s=%v, want %v", field, have, want))
			}
		}
		check("held_by", x.HeldBy, "process")
		check("nprocs", *x.Nprocs, 1)
		check("pid", x.PID, p.pid())
		check("ppid", x.PPID, os.Getpid())
		check("uid", x.UID, int64(os.Getuid()))
		check("comm", x.Comm, comm)
		check("owner_user_inum", x.OwnerInum, p.ns["user"])
		check("parent_inum", x.ParentInum, uint64(0))
		check("has tid", x.has("tid"), false)
		if why := checkNsID(x.jsonEvent, nil); why != "" {
			bad = append(bad, why)
		}
		if len(bad) > 0 {
			t.Errorf("exist %s: %s\n    event: %s", typ, strings.Join(bad, "; "), x.line)
		}
	}
	for _, typ := range []string{"mnt", "user", "pid"} {
		// Shared with us and everyone: held by processes, the lowest of which
		// is not above the test's own pid.
		if x := got[typ]; x.HeldBy != "process" || *x.Nprocs < 2 || x.PID > os.Getpid() {
			t.Errorf("exist %s (ours, shared with the scenario): want held_by process, nprocs >= 2, pid <= %d: %s", typ, os.Getpid(), x.line)
		}
	}

	td := procTeardown(p, c, nil, p.pid())
	td.exists = map[string]*jsonEvent{}
	for typ, x := range got {
		td.exists[typ] = x.jsonEvent
	}
	td.expect(tr)
	evs := tr.stop(os.Interrupt)
	checkSnapshotOrder(t, evs)
	td.verifyHistory(tr, evs)
	forbid(t, evs, "create reported for a namespace made before nstrace started", func(e *jsonEvent) bool {
		return e.Event == "create" && e.PID == p.pid()
	})
}

// S2. ip netns add before nstrace starts: a network namespace held only by
// its bind mount in /run/netns; ip netns del is its destroy.
func TestSnapshotIPNetns(t *testing.T) {
	needRoot(t, "nstrace loads BPF programs")
	needTools(t, "ip")
	name := fmt.Sprintf("nstrace-test-snap-%d", os.Getpid())
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	started := time.Now()
	addPID, _ := runProgram(t, "ip", "netns", "add", name)
	path := "/run/netns/" + name
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("ip netns add left no %s: %v", path, err)
	}
	self := selfNS(t)

	tr := startTracer(t, "json", "--snapshot")
	x := awaitExist(tr, map[string]uint64{"net": st.Ino})["net"]
	if x.HeldBy != "bind_mount" || *x.Nprocs != 0 || x.Mountpoint != path || x.OwnerInum != self["user"] || x.ParentInum != 0 {
		t.Errorf("exist net of %s: want held_by bind_mount, nprocs 0, mountpoint %s, owner_user_inum %d (ours), no parent_inum:\n    %s",
			path, path, self["user"], x.line)
	}
	if x.has("pid") && !mountinfoHas(t, x.PID, fmt.Sprintf("net:[%d]", st.Ino), path) {
		t.Errorf("exist net of %s: the mount namespace of pid %d has no such bind mount:\n    %s", path, x.PID, x.line)
	}

	// The net namespace is followed from nstrace's start (its cleanup_net
	// is matched to what is tracked), so its teardown is reported.
	if why := checkNsID(x.jsonEvent, nil); why != "" {
		t.Errorf("exist net of %s: %s\n    %s", path, why, x.line)
	}
	del := teardown{started: started, pid: addPID, inum: map[string]uint64{"net": st.Ino},
		exists:  map[string]*jsonEvent{"net": x.jsonEvent},
		release: func() { runProgram(t, "ip", "netns", "del", name) }}
	del.expect(tr)
	evs := tr.stop(os.Interrupt)
	checkSnapshotOrder(t, evs)
	del.verifyHistory(tr, evs)
}

// mountinfoHas reports whether the mountinfo of pid lists an nsfs mount of
// root at mountpoint (true if pid is gone: it cannot tell).
func mountinfoHas(t *testing.T, pid int, root, mountpoint string) bool {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return true
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT ... - FSTYPE ...
		before, after, ok := strings.Cut(sc.Text(), " - ")
		f := strings.Fields(before)
		if ok && len(f) >= 5 && f[3] == root && f[4] == mountpoint && strings.HasPrefix(after, "nsfs ") {
			return true
		}
	}
	return false
}

// kernelRelatives asks the kernel for the parent (NS_GET_PARENT) and owner
// (NS_GET_USERNS) of the namespace /proc/PID/ns/FILE, which must be inum.
// ok is false if the process is no longer in it.
func kernelRelatives(t *testing.T, pid int, file string, inum uint64) (parent, owner uint64, ok bool) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, file))
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Ino != inum {
		return 0, 0, false
	}
	rel := func(req uint) uint64 {
		fd, err := unix.IoctlRetInt(int(f.Fd()), req)
		if err == unix.EPERM {
			return 0 // top-level, or outside our user namespace
		}
		if err != nil {
			t.Fatalf("ioctl %#x on /proc/%d/ns/%s: %v", req, pid, file, err)
		}
		defer unix.Close(fd)
		var rst unix.Stat_t
		if err := unix.Fstat(fd, &rst); err != nil {
			t.Fatal(err)
		}
		return rst.Ino
	}
	if file == "pid" || file == "user" {
		parent = rel(unix.NS_GET_PARENT)
	}
	if file != "user" {
		owner = rel(unix.NS_GET_USERNS)
	}
	return parent, owner, true
}

// lsnsRelatives runs util-linux lsns for PNS and ONS, keyed "type:inum";
// nil if this lsns has no such columns.
func lsnsRelatives(t *testing.T) map[string][2]uint64 {
	t.Helper()
	if _, err := exec.LookPath("lsns"); err != nil {
		return nil
	}
	help, _ := exec.Command("lsns", "--help").CombinedOutput()
	if !strings.Contains(string(help), "PNS") || !strings.Contains(string(help), "ONS") {
		t.Logf("this lsns has no PNS/ONS columns; ground truth from NS_GET_PARENT/NS_GET_USERNS only")
		return nil
	}
	_, out := runProgram(t, "lsns", "-J", "-o", "NS,TYPE,PNS,ONS")
	var doc struct {
		Namespaces []map[string]any `json:"namespaces"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("lsns -J: %v\n%s", err, out)
	}
	num := func(v any) uint64 {
		switch v := v.(type) {
		case float64:
			return uint64(v)
		case string:
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
		return 0 // null: none
	}
	rels := map[string][2]uint64{}
	for _, ns := range doc.Namespaces {
		rels[fmt.Sprintf("%v:%d", ns["type"], num(ns["ns"]))] = [2]uint64{num(ns["pns"]), num(ns["ons"])}
	}
	return rels
}

// S3. parent_inum and owner_user_inum are what the kernel says: nested user
// and pid namespaces (two levels) with a uts namespace owned by the inner
// user namespace, made before nstrace starts; checked with our own
// NS_GET_PARENT/NS_GET_USERNS calls on every namespace a process of the
// snapshot is still in, and with lsns's PNS/ONS for ours.
func TestSnapshotParentOwner(t *testing.T) {
	needRoot(t, "nstrace loads BPF programs")
	needTools(t, "unshare", "sh", "readlink")
	outer := []string{"unshare", "-U", "-r", "-p", "-f", "--"}
	p := startNSProc(t, shCmd(append(outer, "unshare", "-U", "-r", "-p", "-f", "-u", "--")...))
	self := selfNS(t)
	for _, typ := range []string{"user", "pid", "uts"} {
		if p.ns[typ] == self[typ] {
			t.Fatalf("the scenario is not in a %s namespace of its own: %v", typ, p.ns)
		}
	}
	tr := startTracer(t, "json", "--snapshot")
	got := awaitExist(tr, map[string]uint64{"user": p.ns["user"], "pid": p.ns["pid"], "uts": p.ns["uts"]})
	evs := tr.stop(os.Interrupt)
	xs := checkSnapshotOrder(t, evs)
	defer p.release()

	// The chain the scenario built, from the kernel.
	inner := map[string]uint64{}
	for _, typ := range []string{"user", "pid", "uts"} {
		x := got[typ]
		parent, owner, ok := kernelRelatives(t, x.PID, typ, x.Inum)
		if !ok {
			t.Fatalf("exist %s: pid %d is not in it: %s", typ, x.PID, x.line)
		}
		inner[typ+".parent"], inner[typ+".owner"] = parent, owner
	}
	if inner["user.parent"] == 0 || inner["user.parent"] == self["user"] || inner["pid.parent"] == 0 || inner["pid.parent"] == self["pid"] ||
		inner["uts.owner"] != p.ns["user"] || inner["pid.owner"] != p.ns["user"] {
		t.Fatalf("the scenario did not nest two levels of user and pid namespaces: kernel says %v (ours %v)", inner, self)
	}

	lsns := lsnsRelatives(t)
	// Ours and the scenario's: every one must be checked.
	mine := map[string]bool{}
	for _, typ := range nsTypes {
		for _, ns := range []map[string]uint64{self, p.ns} {
			if ns[typ] != 0 {
				mine[fmt.Sprintf("%s:%d", typ, ns[typ])] = true
			}
		}
	}
	checked := 0
	for _, x := range xs {
		if x.HeldBy != "process" || *x.Nprocs == 0 || !x.has("pid") {
			continue
		}
		parent, owner, ok := kernelRelatives(t, x.PID, x.Type, x.Inum)
		if !ok {
			continue // its process exited or moved since the snapshot
		}
		checked++
		if x.ParentInum != parent || x.OwnerInum != owner {
			t.Errorf("exist %s %d: parent_inum %d, owner_user_inum %d; the kernel says %d, %d\n    %s",
				x.Type, x.Inum, x.ParentInum, x.OwnerInum, parent, owner, x.line)
		}
		// Ours and the scenario's, whose lsns line is about the same namespace.
		k := fmt.Sprintf("%s:%d", x.Type, x.Inum)
		if !mine[k] {
			continue
		}
		delete(mine, k)
		if l, ok := lsns[fmt.Sprintf("%s:%d", x.Type, x.Inum)]; ok {
			wantPNS, wantONS := x.ParentInum, x.OwnerInum
			if x.Type == "user" {
				wantONS = x.ParentInum // lsns shows the parent as a user namespace's owner
			}
			if l[0] != wantPNS || l[1] != wantONS {
				t.Errorf("exist %s %d: lsns says PNS %d ONS %d\n    %s", x.Type, x.Inum, l[0], l[1], x.line)
			}
		} else if lsns != nil {
			t.Errorf("lsns does not list %s %d", x.Type, x.Inum)
		}
	}
	if len(mine) > 0 {
		t.Errorf("checked %d exist events against the kernel, but not ours or the scenario's %v", checked, slices.Sorted(maps.Keys(mine)))
	}
	// The intermediate user and pid namespaces (the outer unshare's) have
	// a process in them too: printed, with the right parents.
	for _, typ := range []string{"user", "pid"} {
		mid := inner[typ+".parent"]
		i := slices.IndexFunc(xs, func(x *existRecord) bool { return x.Type == typ && x.Inum == mid })
		if i < 0 {
			t.Errorf("no exist event for the outer %s namespace %d", typ, mid)
			continue
		}
		if xs[i].ParentInum != self[typ] {
			t.Errorf("outer %s namespace: parent_inum %d, want ours %d: %s", typ, xs[i].ParentInum, self[typ], xs[i].line)
		}
	}
}

// S4. Without --snapshot there is no exist event; with it, --count counts
// only what happens after.
func TestSnapshotOffByDefault(t *testing.T) {
	needTools(t, "unshare", "readlink")
	tr := startTracer(t, "json")
	pid, out := runProgram(t, "unshare", "-u", "--", "readlink", "/proc/self/ns/uts")
	inum, err := parseNSLink("uts", out)
	if err != nil {
		t.Fatal(err)
	}
	tr.await(eventTimeout(), func(e *jsonEvent) bool { return e.PID == pid }, wantEvent{
		desc:  fmt.Sprintf("create uts pid=%d", pid),
		match: func(e *jsonEvent) bool { return e.Event == "create" && e.Type == "uts" && e.Inum == inum },
	})
	evs := tr.stop(os.Interrupt)
	forbid(t, evs, "exist without --snapshot", func(e *jsonEvent) bool { return e.Event == "exist" })
}

func TestSnapshotCount(t *testing.T) {
	needTools(t, "unshare", "true")
	tr := startTracer(t, "json", "--snapshot", "--count", "1")
	tr.watch()
	runProgram(t, "unshare", "-u", "--", "true")
	tr.expectExit(0, eventTimeout()+stopTimeout())
	evs := tr.finish()
	xs := checkSnapshotOrder(t, evs)
	// lost events are not counted by --count (TestCountExitsByItself is
	// about them); exist events neither.
	var others strings.Builder
	n := 0
	for _, e := range evs[len(xs):] {
		others.WriteString("\n    " + e.line)
		if e.Event != "lost" {
			n++
		}
	}
	if len(xs) == 0 || n != 1 {
		t.Errorf("--snapshot --count 1 printed %d exist events and %d others, want the snapshot and 1 event:%s", len(xs), n, others.String())
	}
}

// S5. The text form: exist lines aligned under the header, with the holder.
func TestSnapshotText(t *testing.T) {
	tr := startTracer(t, "text", "--snapshot")
	uts := strconv.FormatUint(selfNS(t)["uts"], 10)
	var tt textTable
	var headerErr error
	ok := tr.waitUntil(eventTimeout(), func(_ []*jsonEvent, lines []outLine) bool {
		if len(lines) == 0 {
			return false
		}
		if tt, headerErr = parseTextHeader(lines[0].text); headerErr != nil {
			return true
		}
		return slices.ContainsFunc(lines[1:], func(l outLine) bool {
			return tt.field(l.text, 1) == "exist" && tt.field(l.text, 2) == "uts" && tt.field(l.text, 3) == uts &&
				existDetails.MatchString(tt.field(l.text, 7))
		})
	})
	if headerErr != nil {
		t.Fatalf("first line: %v", headerErr)
	}
	if !ok {
		t.Fatalf("no text line: exist uts %s ns_id=N held_by=process within %v; output:\n%s", uts, eventTimeout(), joinLines(tr.outLines()))
	}
	tr.stop(os.Interrupt)
	lines := tr.outLines()
	for _, l := range lines[1:] {
		text := l.text
		if o := tt.offs[4]; tt.field(text, 1) == "exist" && tt.field(text, 4) == "-" && tt.field(text, 5) == "-" {
			// Every process it was found through exited before nstrace
			// read it: no pid (README).
			text = text[:o] + "0" + text[o+1:]
		}
		if err := tt.check(text); err != nil {
			t.Errorf("text line not aligned with the header (%v):\n    %s\n    %s", err, lines[0].text, l.text)
		}
	}
}

// existDetails is the start of an exist line's DETAILS for a namespace
// processes are in.
var existDetails = regexp.MustCompile(`^ns_id=[1-9][0-9]* held_by=process nprocs=`)
