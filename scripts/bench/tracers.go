package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type kind int

const (
	untraced kind = iota
	nstraceKind
	bpftraceKind
)

// A mode is a column of the ratio table: what traces the workloads.
type mode struct {
	name string // column heading
	desc string // what it runs, for humans
	kind kind
	bin  string
	args []string
	// out is where the tracer's output goes: a file, truncated per run, or
	// os.DevNull.
	out string
	// probes is how many tracepoints a bpftrace program attaches: it is
	// ready when they all have their BPF program.
	probes int
	// filterRows: this mode also runs the rows that show a filter's cost.
	filterRows bool
}

var untracedMode = mode{name: "untraced", desc: "no tracer", kind: untraced, filterRows: true}

// tracer is one running nstrace or bpftrace.
type tracer struct {
	m     mode
	cmd   *exec.Cmd
	start time.Time
	// ready is exec to ready: nstrace's "tracing namespaces" line, or every
	// tracepoint of the bpftrace program attached.
	ready time.Duration
	// attaching is, for bpftrace, exec to its "Attaching N probes" line.
	attaching time.Duration
	backend   string // nstrace's, from its ready line
	// cpuAtReady is what starting cost it: CPU time is counted from there.
	cpuAtReady time.Duration
	stderr     lineLog
	readyLine  chan string   // nstrace's ready line, once
	exited     chan struct{} // closed at the end of its stderr: it has exited
}

// outcome is what one traced run reports.
type outcome struct {
	events, lost uint64
	maxRSS       int64         // KiB: peak resident set (VmHWM) at exit, from wait4's rusage
	endRSS       int64         // KiB: resident set (VmRSS) when asked to stop, 0 if unknown
	cpu          time.Duration // user + system, from ready to exit
}

const (
	readyTimeout = 3 * time.Minute // software-emulated VMs are slow
	stopTimeout  = 2 * time.Minute // draining a full ring buffer to a file, ditto
)

// startTracer starts m's tracer with extra arguments and returns once it is
// ready.
func startTracer(m mode, extra ...string) (*tracer, error) {
	out, err := openOutput(m.out)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the tracer has its own descriptor
	t := &tracer{m: m, readyLine: make(chan string, 1), exited: make(chan struct{})}
	t.cmd = exec.Command(m.bin, append(slices.Clone(m.args), extra...)...)
	t.cmd.Stdout = out
	stderr, err := t.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	t.start = time.Now()
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	go t.readStderr(stderr)
	if m.kind == bpftraceKind {
		err = t.waitAttached()
	} else {
		err = t.waitReadyLine()
	}
	if err != nil {
		t.cmd.Process.Kill()
		<-t.exited
		t.cmd.Wait()
		return nil, fmt.Errorf("%s: %w%s", m.name, err, t.stderr.tail())
	}
	t.cpuAtReady = procCPU(t.cmd.Process.Pid)
	return t, nil
}

func openOutput(path string) (*os.File, error) {
	if path == os.DevNull {
		return os.OpenFile(path, os.O_WRONLY, 0)
	}
	return os.Create(path)
}

func (t *tracer) readStderr(r io.Reader) {
	defer close(t.exited)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		t.stderr.add(line)
		if strings.Contains(line, "tracing namespaces") {
			select {
			case t.readyLine <- line:
			default:
			}
		}
	}
	io.Copy(io.Discard, r) // a line too long for the scanner: never block the tracer
}

func (t *tracer) waitReadyLine() error {
	select {
	case line := <-t.readyLine:
		t.ready = time.Since(t.start)
		if _, rest, ok := strings.Cut(line, "(backend: "); ok {
			t.backend, _, _ = strings.Cut(rest, ")")
		}
		return nil
	case <-t.exited:
		return errors.New("exited before it was ready")
	case <-time.After(readyTimeout):
		return fmt.Errorf("not ready after %s", readyTimeout)
	}
}

// waitAttached polls until every tracepoint of the bpftrace program has its
// BPF program: bpftrace prints "Attaching N probes..." before it loads and
// attaches them, and says nothing after.
func (t *tracer) waitAttached() error {
	deadline := time.Now().Add(readyTimeout)
	for {
		if t.attaching == 0 && fileHasPrefix(t.m.out, "Attaching") {
			t.attaching = time.Since(t.start)
		}
		if n := attachedTracepoints(t.cmd.Process.Pid); n >= t.m.probes {
			t.ready = time.Since(t.start)
			if t.attaching == 0 {
				t.attaching = t.ready
			}
			return nil
		}
		select {
		case <-t.exited:
			return errors.New("exited before its probes were attached")
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("probes not attached after %s", readyTimeout)
		}
	}
}

func fileHasPrefix(path, prefix string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, len(prefix))
	n, _ := io.ReadFull(f, b)
	return string(b[:n]) == prefix
}

// stop interrupts the tracer, as Ctrl-C would, and reads what it reports.
func (t *tracer) stop() (outcome, error) {
	var o outcome
	o.endRSS = vmRSS(t.cmd.Process.Pid)
	t.cmd.Process.Signal(os.Interrupt)
	select {
	case <-t.exited:
	case <-time.After(stopTimeout):
		t.cmd.Process.Kill()
		<-t.exited
	}
	err := t.cmd.Wait()
	if ru, ok := t.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		o.maxRSS = ru.Maxrss
		o.cpu = time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) - t.cpuAtReady
	}
	if err != nil {
		return o, fmt.Errorf("%s: %v%s", t.m.name, err, t.stderr.tail())
	}
	if t.m.kind == bpftraceKind {
		o.events, o.lost, err = bpftraceCounts(t.m.out, t.stderr.all())
	} else {
		o.events, o.lost, err = nstraceSummary(t.stderr.all())
	}
	if err != nil {
		err = fmt.Errorf("%s: %w%s", t.m.name, err, t.stderr.tail())
	}
	return o, err
}

// vmRSS is process pid's VmRSS in KiB, 0 if unknown.
func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// nstraceSummary reads nstrace's last words: "nstrace: N events, M lost".
func nstraceSummary(stderr []string) (events, lost uint64, err error) {
	for _, line := range slices.Backward(stderr) {
		if _, err := fmt.Sscanf(line, "nstrace: %d events, %d lost", &events, &lost); err == nil {
			return events, lost, nil
		}
	}
	return 0, 0, errors.New("no summary line at exit")
}

// bpftraceCounts counts the lines the bpftrace program printed, and adds up
// bpftrace's "Lost N events" reports (perf buffer overruns), which go to its
// output, and to stderr in some versions.
func bpftraceCounts(out string, stderr []string) (events, lost uint64, err error) {
	b, err := os.ReadFile(out)
	if err != nil {
		return 0, 0, err
	}
	var inStderr uint64
	for line := range bytes.Lines(b) {
		s := string(bytes.TrimSpace(line))
		if n, ok := lostReport(s); ok {
			lost += n
		} else if s != "" && !strings.HasPrefix(s, "Attaching ") {
			events++
		}
	}
	for _, line := range stderr {
		n, _ := lostReport(line)
		inStderr += n
	}
	if lost == 0 { // (a version that reports in both places is counted once)
		lost = inStderr
	}
	return events, lost, nil
}

func lostReport(line string) (uint64, bool) {
	var n uint64
	_, err := fmt.Sscanf(strings.TrimSpace(line), "Lost %d events", &n)
	return n, err == nil
}

// lineLog keeps a process's stderr lines.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) < 10000 {
		l.lines = append(l.lines, s)
	}
}

func (l *lineLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// tail is the last lines, minus bpftrace's harmless memlock warning, for an
// error message.
func (l *lineLog) tail() string {
	var keep []string
	for _, s := range l.all() {
		if !strings.Contains(s, "RLIMIT_MEMLOCK") {
			keep = append(keep, s)
		}
	}
	if len(keep) > 8 {
		keep = keep[len(keep)-8:]
	}
	if len(keep) == 0 {
		return ""
	}
	return "; its stderr ends:\n\t" + strings.Join(keep, "\n\t")
}
