package main

// The soak: many namespace lifecycles of every type, nstrace's JSON to a
// file. Every event the driver caused is printed or counted as lost,
// exactly; nstrace's memory, its BPF state and its goroutines end where
// they started. NSTRACE_SOAK_LIFECYCLES sets the size (CI: 50,000; the
// full run in RELIABILITY.md: 1,000,000).

import (
	"bufio"
	"bytes"
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
		n = 5000 // software-emulated VMs
	}
	if s := os.Getenv("NSTRACE_SOAK_LIFECYCLES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 100 {
			t.Fatalf("NSTRACE_SOAK_LIFECYCLES=%q: want a number of at least 100", s)
		}
	}
	return n
}

// vmRSS is pid's resident memory in KiB.
func vmRSS(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return strconv.Atoi(string(m[1]))
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
// per-process entries are no more than the processes alive; the caches
// of strings (exes, cgroups) are bounded LRU maps and are not compared.
func stateProblems(before, after map[string]int) []string {
	var p []string
	for name, n := range after {
		switch name {
		case "exes", "cgroups":
		case "filter_pids":
			if n != 0 {
				p = append(p, fmt.Sprintf("filter_pids has %d entries once the driver and its children are gone", n))
			}
		case "procs":
			procs, _ := filepath.Glob("/proc/[0-9]*")
			if n > len(procs) {
				p = append(p, fmt.Sprintf("procs has %d entries for %d processes", n, len(procs)))
			}
		default:
			if n != before[name] {
				p = append(p, fmt.Sprintf("%s has %d entries, %d before", name, n, before[name]))
			}
		}
	}
	return p
}

var goroutinesRE = regexp.MustCompile(`nstrace: (running|stopping) goroutines=(\d+)`)

func TestSoak(t *testing.T) {
	needRoot(t, "nstrace loads BPF programs")
	n := soakSize(t)

	// The driver first: nstrace follows it (and its children) alone.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	drv := exec.Command(self, strconv.Itoa(n))
	drv.Env = append(os.Environ(), helperEnv+"=soak")
	drvIn, err := drv.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	drvOut, err := drv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var drvErr bytes.Buffer
	drv.Stderr = &drvErr
	if err := drv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Process.Kill(); drv.Wait() })
	br := bufio.NewReader(drvOut)
	var drvPID int
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "pid ") {
		t.Fatalf("soak driver: %q, %v; stderr: %s", l, err, drvErr.String())
	} else {
		drvPID, _ = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(l, "pid ")))
	}

	out, err := os.Create(filepath.Join(t.TempDir(), "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	nst := exec.Command(itCfg.bin, "-o", "json", "--backend", itCfg.backend, "-v", "--pid", strconv.Itoa(drvPID), "--children")
	nst.Stdout = out
	stderrR, stderrW := io.Pipe()
	nst.Stderr = stderrW
	if err := nst.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nst.Process.Kill() })
	var (
		mu     sync.Mutex
		stderr strings.Builder
		ready  = make(chan struct{})
		once   sync.Once
	)
	go func() {
		sc := bufio.NewScanner(stderrR)
		for sc.Scan() {
			mu.Lock()
			stderr.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if readyRE.MatchString(sc.Text()) {
				once.Do(func() { close(ready) })
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- nst.Wait(); stderrW.Close() }()
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("nstrace exited (%v) before its ready line:\n%s", err, stderr.String())
	case <-time.After(readyTimeout()):
		t.Fatalf("nstrace not ready within %v", readyTimeout())
	}
	base := stateMaps(t, nst.Process.Pid)

	// RSS every 200 ms while the driver runs.
	var rss []int
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		for {
			if kb, err := vmRSS(nst.Process.Pid); err == nil {
				rss = append(rss, kb)
			}
			select {
			case <-stopRSS:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	// Long-lived ones of the types whose end this backend sees when an open
	// file held them (net's goes through cleanup_net, seen or not).
	var pins []string
	mu.Lock()
	errText := stderr.String()
	mu.Unlock()
	for _, typ := range []string{"uts", "ipc", "net", "cgroup"} {
		if !strings.Contains(errText, "blind spot: pinned "+typ+" ") && !strings.Contains(errText, "blind spot: "+typ+" ") {
			pins = append(pins, typ)
		}
	}
	if len(pins) == 0 {
		t.Fatalf("no type whose pinned namespaces this backend sees end:\n%s", errText)
	}
	start := time.Now()
	io.WriteString(drvIn, "go "+strings.Join(pins, ",")+"\n")
	var counts soakCounts
	if err := json.NewDecoder(br).Decode(&counts); err != nil {
		t.Fatalf("soak driver: %v; stderr: %s", err, drvErr.String())
	}
	if err := drv.Wait(); err != nil {
		t.Fatalf("soak driver: %v; stderr: %s", err, drvErr.String())
	}
	took := time.Since(start)
	close(stopRSS)
	<-rssDone
	want := 0
	for _, v := range counts.Events {
		want += v
	}
	t.Logf("driver: %d lifecycles in %v (%.0f/s), %d events: %v; creates by type %v",
		counts.Lifecycles, took.Round(time.Millisecond), float64(counts.Lifecycles)/took.Seconds(), want, counts.Events, counts.Creates)

	// Settle: the last destroys come from work queues, RCU and the poll.
	deadline := time.Now().Add(scaled(10 * time.Second))
	var after map[string]int
	for {
		after = stateMaps(t, nst.Process.Pid)
		if len(stateProblems(base, after)) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range stateProblems(base, after) {
		t.Errorf("BPF state after the soak: %s (before %v, after %v)", p, base, after)
	}
	nst.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("nstrace: %v", err)
		}
	case <-time.After(stopTimeout()):
		t.Fatalf("nstrace did not stop within %v", stopTimeout())
	}

	// Every line one JSON object; received + lost = what the driver caused.
	if _, err := out.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	creates, destroys := map[string]int{}, map[string]int{}
	var lost, lines int
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
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
		if e.Event == "lost" {
			lost += e.Count
			continue
		}
		got[e.Event]++
		switch e.Event {
		case "create":
			creates[e.Type]++
		case "destroy":
			destroys[e.Type]++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	received := 0
	for _, v := range got {
		received += v
	}
	t.Logf("nstrace: %d received + %d lost = %d; by kind %v", received, lost, received+lost, got)
	if received+lost != want {
		t.Errorf("received %d + lost %d = %d events, the driver caused %d (%v, received %v)", received, lost, received+lost, want, counts.Events, got)
	}
	// Every namespace the driver made is gone by the end.
	if lost == 0 && (!maps.Equal(got, counts.Events) || !maps.Equal(creates, counts.Creates) || !maps.Equal(destroys, counts.Creates)) {
		t.Errorf("nothing lost, yet events by kind %v (creates %v, destroys %v), the driver caused %v (creates and destroys %v)",
			got, creates, destroys, counts.Events, counts.Creates)
	}

	// Memory after warm-up (the first fifth) stays within 10%.
	if len(rss) >= 10 {
		warm := rss[len(rss)/5]
		peak := slices.Max(rss[len(rss)/5:])
		t.Logf("RSS: %d KiB after warm-up, peak after %d KiB, at start %d KiB (%d samples)", warm, peak, rss[0], len(rss))
		if float64(peak) > 1.10*float64(warm) {
			t.Errorf("RSS grew from %d KiB after warm-up to %d KiB", warm, peak)
		}
	} else {
		t.Logf("RSS: %d samples only (%v), too few to judge", len(rss), rss)
	}
	mu.Lock()
	errText = stderr.String()
	mu.Unlock()
	g := goroutinesRE.FindAllStringSubmatch(errText, -1)
	if len(g) != 2 {
		t.Fatalf("want the running and stopping goroutine counts on stderr:\n%s", errText)
	}
	running, _ := strconv.Atoi(g[0][2])
	stopping, _ := strconv.Atoi(g[1][2])
	t.Logf("goroutines: %d running, %d stopping; maps %v", running, stopping, after)
	if stopping > running+1 {
		t.Errorf("goroutines grew from %d to %d", running, stopping)
	}
	checkNoCrash(t, "nstrace stderr", errText)
}
