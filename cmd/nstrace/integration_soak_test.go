package main

// The soak: many namespace lifecycles of every type, nstrace's JSON to a
// file. Every event the driver caused is printed or counted as lost,
// exactly; nstrace's memory, its BPF state and its goroutines end where
// they started. NSTRACE_SOAK_LIFECYCLES sets the size (CI: 50,000; the
// full run in RELIABILITY.md: 1,000,000).

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

func soakSize(t *testing.T) int {
	n := 50000
	if itCfg.slow > 1 {
		n = 2000 // software-emulated VMs
	}
	if s := os.Getenv("NSTRACE_SOAK_LIFECYCLES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 100 {
			t.Fatalf("NSTRACE_SOAK_LIFECYCLES=%q: want a number of at least 100", s)
		}
	}
	return n
}

// vmRSS is pid's resident memory in KiB, but for the mappings of BPF maps:
// those are the ring buffer's pages (mapped twice) and the arrays', kernel
// memory of a fixed size that some kernels (6.1) map in only as the reader
// first reaches each page: up to 8 MiB more over a run, not growth of
// nstrace's own.
func vmRSS(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	total, bpf := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			// A mapping's first line: range, perms, offset, dev, inode, [name].
			bpf = len(fields) >= 6 && fields[5] == "anon_inode:bpf-map"
		case len(fields) == 3 && fields[0] == "Rss:" && !bpf:
			kb, err := strconv.Atoi(fields[1])
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/smaps: %q: %w", pid, sc.Text(), err)
			}
			total += kb
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if total == 0 {
		return 0, fmt.Errorf("no Rss in /proc/%d/smaps", pid)
	}
	return total, nil
}

// stateMaps counts the entries of the hash maps process pid holds (its
// BPF state: namespaces alive, watched, per-process), by name; arrays have
// a fixed size and are left out.
func stateMaps(t *testing.T, pid int) map[string]int {
	fds, err := filepath.Glob(fmt.Sprintf("/proc/%d/fdinfo/*", pid))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[ebpf.MapID]bool{}
	for _, f := range fds {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // closed meanwhile
		}
		if m := regexp.MustCompile(`(?m)^map_id:\s+(\d+)`).FindSubmatch(b); m != nil {
			id, _ := strconv.Atoi(string(m[1]))
			ids[ebpf.MapID(id)] = true
		}
	}
	counts := map[string]int{}
	lastFollowed = lastFollowed[:0]
	for id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			t.Fatalf("map %d: %v", id, err)
		}
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case info.Name == "live_ns":
			// Direct-mapped by inum (struct ns_info): the slots in use.
			var k uint32
			var v []byte
			n := 0
			it := m.Iterate()
			for it.Next(&k, &v) {
				if v[liveOffset] != 0 {
					n++
				}
			}
			if err := it.Err(); err != nil {
				t.Fatalf("map %s: %v", info.Name, err)
			}
			counts[info.Name] = n
		case info.Type == ebpf.Hash || info.Type == ebpf.LRUHash || info.Type == ebpf.PerCPUHash || info.Type == ebpf.LRUCPUHash:
			var k, v []byte
			n := 0
			it := m.Iterate()
			for it.Next(&k, &v) {
				n++
				if info.Name == "filter_pids" {
					lastFollowed = append(lastFollowed, followed{binary.NativeEndian.Uint32(k), binary.NativeEndian.Uint64(v)})
				}
			}
			if err := it.Err(); err != nil {
				t.Fatalf("map %s: %v", info.Name, err)
			}
			counts[info.Name] = n
		}
		m.Close()
	}
	if len(counts) == 0 {
		t.Fatalf("nstrace (pid %d) holds no hash maps", pid)
	}
	return counts
}

// liveOffset is that of live in struct ns_info (bpf/lib/maps.h).
const liveOffset = 26

// stateProblems compares nstrace's BPF state after the soak with before:
// what tracks namespaces and the driver's processes is back where it was;
// the caches (exe ids by pid, strings of exes and cgroups) are bounded LRU
// maps, replaced as pids and ids come again, and are not compared.
func stateProblems(before, after map[string]int) []string {
	var p []string
	for name, n := range after {
		switch name {
		case "exes", "cgroups", "procs":
		case "filter_pids":
			// A few entries of freed children can stay (RELIABILITY.md,
			// known gaps): keyed by start time, they must match no
			// process alive, and stay few.
			if n > 16 {
				p = append(p, fmt.Sprintf("filter_pids has %d entries once the driver and its children are gone", n))
			}
			for _, f := range lastFollowed {
				if f.alive() {
					p = append(p, fmt.Sprintf("filter_pids still follows process %d (started at %d ns), alive", f.pid, f.start))
				}
			}
		default:
			if n != before[name] {
				p = append(p, fmt.Sprintf("%s has %d entries, %d before", name, n, before[name]))
			}
		}
	}
	return p
}

// followed is a filter_pids entry: a tgid and its process's start time
// (CLOCK_MONOTONIC ns; 0 for one userspace named).
type followed struct {
	pid   uint32
	start uint64
}

// lastFollowed is filter_pids as the last stateMaps found it.
var lastFollowed []followed

// alive says whether the process the entry is for is alive: a process
// with its pid that started then (/proc/PID/stat's starttime is in clock
// ticks, 100 a second here).
func (f followed) alive() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", f.pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(fields) < 20 {
		return false
	}
	ticks, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return false
	}
	if f.start == 0 {
		return true
	}
	d := int64(ticks*10_000_000) - int64(f.start)
	return d > -20_000_000 && d < 20_000_000
}

// logDoubles logs, for a few namespaces destroyed twice with no create
// between, every line about them.
func logDoubles(t *testing.T, r io.Reader) {
	type key struct {
		typ  string
		inum uint64
	}
	var all []string
	lines := map[key][]int{}
	destroyed := map[key]bool{}
	var doubles []key
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e struct {
			Event string `json:"event"`
			Type  string `json:"type"`
			Inum  uint64 `json:"inum"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Inum == 0 {
			continue
		}
		k := key{e.Type, e.Inum}
		all = append(all, sc.Text())
		lines[k] = append(lines[k], len(all)-1)
		switch e.Event {
		case "create":
			destroyed[k] = false
		case "destroy":
			if destroyed[k] && len(doubles) < 3 {
				doubles = append(doubles, k)
			}
			destroyed[k] = true
		}
	}
	for _, k := range doubles {
		t.Logf("%s %d destroyed twice; its lines:", k.typ, k.inum)
		for _, i := range lines[k][max(0, len(lines[k])-8):] {
			t.Logf("  %s", all[i])
		}
	}
}

var debugStateRE = regexp.MustCompile(`nstrace: (running|stopping) goroutines=(\d+) heap_live=(\d+)`)

// soakDriver is the soak's driver process, waiting for "go".
type soakDriver struct {
	cmd *exec.Cmd
	pid int
	in  io.WriteCloser
	out *bufio.Reader
	err bytes.Buffer
}

// startSoakDriver starts a driver of n lifecycles; it waits for begin.
func startSoakDriver(t *testing.T, n int) *soakDriver {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d := &soakDriver{cmd: exec.Command(self, strconv.Itoa(n))}
	d.cmd.Env = append(os.Environ(), helperEnv+"=soak")
	if d.in, err = d.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = &d.err
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.cmd.Process.Kill(); d.cmd.Wait() })
	d.out = bufio.NewReader(stdout)
	l, err := d.out.ReadString('\n')
	if err != nil || !strings.HasPrefix(l, "pid ") {
		t.Fatalf("soak driver: %q, %v; stderr: %s", l, err, d.err.String())
	}
	d.pid, _ = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(l, "pid ")))
	return d
}

// begin starts the driver, with long-lived namespaces of types pins.
func (d *soakDriver) begin(pins []string) {
	io.WriteString(d.in, "go "+strings.Join(pins, ",")+"\n")
}

// wait returns the driver's counts once it is done.
func (d *soakDriver) wait(t *testing.T) soakCounts {
	t.Helper()
	var c soakCounts
	if err := json.NewDecoder(d.out).Decode(&c); err != nil {
		t.Fatalf("soak driver: %v; stderr: %s", err, d.err.String())
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("soak driver: %v; stderr: %s", err, d.err.String())
	}
	return c
}

func (c soakCounts) total() int {
	n := 0
	for _, v := range c.Events {
		n += v
	}
	return n
}

// rawTracer is nstrace with its stdout wherever the test wants it (a file,
// a pipe nobody reads) and its stderr collected.
type rawTracer struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr strings.Builder
	exited chan error
}

// startRawTracer starts nstrace -o json with args, and returns once it is
// ready.
func startRawTracer(t *testing.T, stdout io.Writer, args ...string) *rawTracer {
	t.Helper()
	r := &rawTracer{exited: make(chan error, 1)}
	r.cmd = exec.Command(itCfg.bin, append([]string{"-o", "json", "--backend", itCfg.backend}, args...)...)
	r.cmd.Stdout = stdout
	stderrR, stderrW := io.Pipe()
	r.cmd.Stderr = stderrW
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cmd.Process.Kill() })
	ready := make(chan struct{})
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(stderrR)
		for sc.Scan() {
			r.mu.Lock()
			r.stderr.WriteString(sc.Text() + "\n")
			r.mu.Unlock()
			if readyRE.MatchString(sc.Text()) {
				once.Do(func() { close(ready) })
			}
		}
	}()
	go func() { r.exited <- r.cmd.Wait(); stderrW.Close() }()
	select {
	case <-ready:
	case err := <-r.exited:
		t.Fatalf("nstrace exited (%v) before its ready line:\n%s", err, r.stderrText())
	case <-time.After(readyTimeout()):
		t.Fatalf("nstrace not ready within %v", readyTimeout())
	}
	return r
}

func (r *rawTracer) stderrText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stderr.String()
}

// stop interrupts nstrace and waits up to limit for it to exit cleanly;
// it returns how long that took.
func (r *rawTracer) stop(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	r.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-r.exited:
		if err != nil {
			t.Errorf("nstrace: %v; stderr:\n%s", err, r.stderrText())
		}
	case <-time.After(limit):
		t.Fatalf("nstrace did not exit within %v of SIGINT", limit)
	}
	return time.Since(start)
}

// pinTypes are the types whose pinned namespaces' end nstrace r sees.
func (r *rawTracer) pinTypes(t *testing.T) []string {
	var pins []string
	errText := r.stderrText()
	for _, typ := range []string{"uts", "ipc", "net", "cgroup"} {
		if !strings.Contains(errText, "blind spot: pinned "+typ+" ") && !strings.Contains(errText, "blind spot: "+typ+" ") {
			pins = append(pins, typ)
		}
	}
	if len(pins) == 0 {
		t.Fatalf("no type whose pinned namespaces this backend sees end:\n%s", errText)
	}
	return pins
}

// jsonCounts reads nstrace's JSON output: events by kind, creates and
// destroys by type, and the lost count; every line must be one object.
func jsonCounts(t *testing.T, r io.Reader) (got, creates, destroys map[string]int, lost int) {
	t.Helper()
	got, creates, destroys = map[string]int{}, map[string]int{}, map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	lines := 0
	for sc.Scan() {
		lines++
		var e struct {
			Event string `json:"event"`
			Type  string `json:"type"`
			Count int    `json:"count"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %d is not JSON (%v): %q", lines, err, sc.Text())
		}
		switch e.Event {
		case "lost":
			lost += e.Count
			continue
		case "create":
			creates[e.Type]++
		case "destroy":
			destroys[e.Type]++
		}
		got[e.Event]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return got, creates, destroys, lost
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func TestSoak(t *testing.T) {
	needRoot(t, "nstrace loads BPF programs")
	n := soakSize(t)
	// The driver first: nstrace follows it (and its children) alone.
	drv := startSoakDriver(t, n)
	t.Logf("driver pid %d", drv.pid)
	out, err := os.Create(filepath.Join(t.TempDir(), "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	nst := startRawTracer(t, out, "-v", "--pid", strconv.Itoa(drv.pid), "--children")
	base := stateMaps(t, nst.cmd.Process.Pid)

	// RSS every 200 ms while the driver runs.
	var rss []int
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		for {
			if kb, err := vmRSS(nst.cmd.Process.Pid); err == nil {
				rss = append(rss, kb)
			}
			select {
			case <-stopRSS:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	drv.begin(nst.pinTypes(t))
	counts := drv.wait(t)
	took := time.Since(start)
	close(stopRSS)
	<-rssDone
	want := counts.total()
	t.Logf("driver: %d lifecycles in %v (%.0f/s), %d events: %v; creates by type %v",
		counts.Lifecycles, took.Round(time.Millisecond), float64(counts.Lifecycles)/took.Seconds(), want, counts.Events, counts.Creates)

	// Settle: the last destroys come from work queues, RCU and the poll.
	deadline := time.Now().Add(scaled(10 * time.Second))
	var after map[string]int
	for {
		after = stateMaps(t, nst.cmd.Process.Pid)
		if len(stateProblems(base, after)) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range stateProblems(base, after) {
		t.Errorf("BPF state after the soak: %s (before %v, after %v)", p, base, after)
	}
	nst.stop(t, stopTimeout())

	// Every line one JSON object; received + lost = what the driver caused.
	if _, err := out.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	got, creates, destroys, lost := jsonCounts(t, out)
	received := sum(got)
	t.Logf("nstrace: %d received + %d lost = %d; by kind %v", received, lost, received+lost, got)
	if received+lost != want {
		t.Errorf("received %d + lost %d = %d events, the driver caused %d (%v, received %v)", received, lost, received+lost, want, counts.Events, got)
	}
	// Every namespace the driver made is gone by the end.
	if lost == 0 && (!maps.Equal(got, counts.Events) || !maps.Equal(creates, counts.Creates) || !maps.Equal(destroys, counts.Creates)) {
		if _, err := out.Seek(0, 0); err == nil {
			logDoubles(t, out)
		}
		t.Errorf("nothing lost, yet events by kind %v (creates %v, destroys %v), the driver caused %v (creates and destroys %v)",
			got, creates, destroys, counts.Events, counts.Creates)
	}

	errText := nst.stderrText()
	for _, l := range strings.Split(errText, "\n") {
		if strings.Contains(l, "skipped") || strings.Contains(l, "lost") || strings.Contains(l, "full") || strings.Contains(l, "warn") {
			t.Log(l)
		}
	}
	g := debugStateRE.FindAllStringSubmatch(errText, -1)
	if len(g) != 2 {
		t.Fatalf("want the running and stopping goroutine counts on stderr:\n%s", errText)
	}
	running, _ := strconv.Atoi(g[0][2])
	stopping, _ := strconv.Atoi(g[1][2])
	t.Logf("goroutines: %d running, %d stopping; maps %v", running, stopping, after)
	if stopping > running+1 {
		t.Errorf("goroutines grew from %d to %d", running, stopping)
	}
	// The heap live after a collection, at the ready line and once the
	// stream ends: what nstrace keeps, whatever the collector's timing.
	liveStart, _ := strconv.Atoi(g[0][3])
	liveEnd, _ := strconv.Atoi(g[1][3])
	t.Logf("heap live after a collection: %d KiB running, %d KiB stopping", liveStart>>10, liveEnd>>10)
	if float64(liveEnd) > 1.10*float64(liveStart) {
		t.Errorf("the live heap grew from %d KiB to %d KiB", liveStart>>10, liveEnd>>10)
	}
	// Memory after warm-up (the first fifth) grows by no more than the
	// collector lets it, plus 10%: nstrace gives the start-up's heap back
	// at the ready line, and at GOGC=100 the heap then grows to twice what
	// is live before a collection, by as much again as the live heap.
	if len(rss) >= 10 {
		warm := rss[len(rss)/5]
		peak := slices.Max(rss[len(rss)/5:])
		limit := int(1.10*float64(warm)) + liveStart>>10
		t.Logf("RSS: %d KiB after warm-up, peak after %d KiB (limit %d), at start %d KiB (%d samples)", warm, peak, limit, rss[0], len(rss))
		if peak > limit {
			t.Errorf("RSS grew from %d KiB after warm-up to %d KiB, more than 10%% and the live heap (%d KiB)", warm, peak, liveStart>>10)
		}
	} else {
		t.Logf("RSS: %d samples only (%v), too few to judge", len(rss), rss)
	}
	checkNoCrash(t, "nstrace stderr", errText)
}
