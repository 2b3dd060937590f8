package main

// --metrics-addr: a scrape over HTTP during real churn, against the events
// nstrace printed and against what the kernel says is alive.

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nstrace/nstrace/tracer"
)

var metricsURLRE = regexp.MustCompile(`(?m)^nstrace: serving metrics url=(http://\S+)$`)

// scrape reads url's metrics in the text format: "name{labels}" to value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: %s: %s", url, resp.Status, b)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("scrape %s: bad line %q", url, line)
		}
		m[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return m
}

// printedCounts counts evs as nstrace_events_total does: by event and type.
func printedCounts(evs []*jsonEvent) map[string]float64 {
	n := map[string]float64{}
	for _, e := range evs {
		if e.Event == "lost" {
			continue
		}
		n[fmt.Sprintf(`nstrace_events_total{event=%q,type=%q}`, e.Event, e.Type)]++
	}
	return n
}

// utsAlive is the number of uts namespaces the processes are in, from
// /proc/PID/ns/uts: the kernel's answer to how many are alive (nothing but
// processes holds one here: no bind mount or open fd of a uts namespace).
func utsAlive(t *testing.T) int {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + d.Name() + "/ns/uts"); err == nil {
			seen[l] = true
		}
	}
	return len(seen)
}

func TestMetrics(t *testing.T) {
	needTools(t, "unshare", "sleep")
	// Only what unshare does: the numbers are then the test's own.
	tr := startTracer(t, "json", "--metrics-addr", "127.0.0.1:0", "--comm", "unshare")
	tr.watch()
	m := metricsURLRE.FindStringSubmatch(tr.stderrText())
	if m == nil {
		t.Fatalf("no 'serving metrics' line before the ready line; stderr:\n%s", tr.stderrText())
	}
	url := m[1]
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Errorf("metrics served at %s, want 127.0.0.1", url)
	}

	before := scrape(t, url)
	for _, k := range []string{`nstrace_events_total{event="create",type="uts"}`, `nstrace_lost_events_total`} {
		if v, ok := before[k]; !ok || v != 0 {
			t.Errorf("before any churn: %s = %v (present %v), want 0", k, v, ok)
		}
	}
	if v := before[fmt.Sprintf(`nstrace_backend_info{backend=%q}`, tr.backend)]; v != 1 {
		t.Errorf("nstrace_backend_info{backend=%q} = %v, want 1", tr.backend, v)
	}
	if v := before[`nstrace_ring_buffer_size_bytes`]; v != tracer.DefaultRingBufferSize {
		t.Errorf("nstrace_ring_buffer_size_bytes = %v, want the default %d", v, tracer.DefaultRingBufferSize)
	}
	_, version, _ := runCLI(t, itCfg.bin, nil, "--version")
	obj := regexp.MustCompile(`bpf object: ([0-9a-f]{12})`).FindStringSubmatch(version)
	if obj == nil {
		t.Fatalf("nstrace --version names no BPF object:\n%s", version)
	}
	build := false
	for k, v := range before {
		build = build || strings.HasPrefix(k, "nstrace_build_info{") && strings.Contains(k, `bpf_object="`+obj[1]+`"`) && v == 1
	}
	if !build {
		t.Errorf("no nstrace_build_info with bpf_object=%q", obj[1])
	}

	// Churn: short-lived uts and net namespaces, one failure, one holder.
	const nUTS, nNet = 20, 5
	for range nUTS {
		runProgram(t, "unshare", "-u", "true")
	}
	for range nNet {
		runProgram(t, "unshare", "-n", "true")
	}
	runFailing(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "unshare", "-n", "true")
	holder := exec.Command("unshare", "-u", "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Process.Kill()
	want := map[string]float64{
		`nstrace_events_total{event="create",type="uts"}`:  nUTS + 1,
		`nstrace_events_total{event="destroy",type="uts"}`: nUTS,
		`nstrace_events_total{event="create",type="net"}`:  nNet,
		`nstrace_events_total{event="destroy",type="net"}`: nNet,
		`nstrace_events_total{event="fail",type=""}`:       1,
	}
	if !tr.waitUntil(eventTimeout()*4, func(evs []*jsonEvent, _ []outLine) bool {
		got := printedCounts(evs)
		for k, v := range want {
			if got[k] < v {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the churn's events were not all printed: %v, want at least %v", printedCounts(tr.snapshot()), want)
	}

	// The scrape against what was printed: equal once nothing more
	// arrives between the two reads of the output around it.
	var got map[string]float64
	var printed map[string]float64
	for try := 0; ; try++ {
		time.Sleep(300 * time.Millisecond)
		printed = printedCounts(tr.snapshot())
		got = scrape(t, url)
		if after := printedCounts(tr.snapshot()); maps.Equal(printed, after) || try == 5 {
			break
		}
	}
	for k, v := range want {
		if printed[k] != v {
			t.Errorf("printed %s events: %v, want %v (the churn's own)", k, printed[k], v)
		}
	}
	for k, v := range printed {
		if got[k] != v {
			t.Errorf("%s = %v, but %v such events were printed", k, got[k], v)
		}
	}
	for k, v := range got {
		if strings.HasPrefix(k, "nstrace_events_total{") && v != printed[k] {
			t.Errorf("%s = %v, but %v such events were printed", k, v, printed[k])
		}
	}
	if v := got[`nstrace_failures_total{errno="EPERM",syscall="unshare"}`]; v != 1 {
		t.Errorf(`nstrace_failures_total{errno="EPERM",syscall="unshare"} = %v, want 1`, v)
	}
	if v := got[`nstrace_namespace_lifetime_seconds_count{type="uts"}`]; v != nUTS {
		t.Errorf("uts lifetimes observed: %v, want %d (every destroy of a create seen)", v, nUTS)
	}
	if v := got[`nstrace_lost_events_total`]; v != 0 || tr.lost() != 0 {
		t.Errorf("nstrace_lost_events_total = %v, lost events printed %d: want both 0", v, tr.lost())
	}
	keys := slices.Sorted(maps.Keys(got))
	for _, k := range keys {
		if strings.Contains(k, "pid=") || strings.Contains(k, "inum=") || strings.Contains(k, "container") || strings.Contains(k, "cgroup_id") {
			t.Errorf("unbounded label in %s", k)
		}
	}

	// Alive: the kernel's count of uts namespaces, and one less once the
	// holder is gone.
	alive := func() float64 { return scrape(t, url)[`nstrace_namespaces_alive{type="uts"}`] }
	checkAlive := func(when string) {
		t.Helper()
		var a float64
		var k int
		for range 5 { // a process may come or go between the two reads
			a, k = alive(), utsAlive(t)
			if a == float64(k) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("%s: nstrace_namespaces_alive{type=\"uts\"} = %v, /proc/*/ns/uts shows %d", when, a, k)
	}
	checkAlive("with the holder")
	holder.Process.Kill()
	holder.Wait()
	if !tr.waitUntil(eventTimeout(), func(evs []*jsonEvent, _ []outLine) bool {
		return printedCounts(evs)[`nstrace_events_total{event="destroy",type="uts"}`] == nUTS+1
	}) {
		t.Fatalf("the holder's uts namespace was not reported destroyed")
	}
	checkAlive("after the holder")
	tr.stop(os.Interrupt)
}
