package main

// Test entry point, configuration and the re-exec helper for the integration
// tests. See integration_test.go for the scenarios.
//
// Environment:
//
//	NSTRACE_BIN             nstrace binary under test (default: built with `go build` here)
//	NSTRACE_TEST_BACKEND    value passed as --backend (default: auto)
//	NSTRACE_TEST_STRICT=1   a missing tool, privilege or kernel feature fails instead of skipping
//	NSTRACE_TEST_SLOW       factor (>= 1) applied to every deadline, e.g. 10 under emulation
//	NSTRACE_TEST_ARTIFACTS  directory where a failed test leaves nstrace's full stdout and stderr
//	NSTRACE_TEST_HELPER     internal: set when the test binary re-executes itself as a helper

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

const helperEnv = "NSTRACE_TEST_HELPER"

var itCfg struct {
	bin     string  // absolute path of the nstrace binary under test
	backend string  // --backend value for every traced run
	strict  bool    // missing requirements fail instead of skip
	slow    float64 // deadline multiplier
	keep    string  // NSTRACE_TEST_ARTIFACTS
}

// The main goroutine keeps the main thread. Tests setns, unshare and drop
// capabilities on goroutines that end locked, so that their thread ends
// with them; but the runtime cannot end the main thread and parks it
// instead, still in the joined namespace. /proc/PID/ns shows the main
// thread's namespaces, which the tests take as the process's own.
func init() { runtime.LockOSThread() }

func TestMain(m *testing.M) {
	if mode, ok := os.LookupEnv(helperEnv); ok {
		os.Exit(runHelper(mode))
	}
	// The tests make BPF maps of their own: kernels before 5.11 charge
	// them to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		fmt.Fprintf(os.Stderr, "nstrace integration tests: raise RLIMIT_MEMLOCK: %v\n", err)
	}
	cleanup, err := setup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "nstrace integration tests: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func setup() (cleanup func(), err error) {
	cleanup = func() {}
	itCfg.backend = os.Getenv("NSTRACE_TEST_BACKEND")
	if itCfg.backend == "" {
		itCfg.backend = "auto"
	}
	itCfg.strict = os.Getenv("NSTRACE_TEST_STRICT") == "1"
	itCfg.keep = os.Getenv("NSTRACE_TEST_ARTIFACTS")
	itCfg.slow = 1
	if s := os.Getenv("NSTRACE_TEST_SLOW"); s != "" {
		itCfg.slow, err = strconv.ParseFloat(s, 64)
		if err != nil || itCfg.slow < 1 {
			return cleanup, fmt.Errorf("NSTRACE_TEST_SLOW=%q: want a number >= 1", s)
		}
	}
	if bin := os.Getenv("NSTRACE_BIN"); bin != "" {
		if itCfg.bin, err = filepath.Abs(bin); err != nil {
			return cleanup, err
		}
		if st, err := os.Stat(itCfg.bin); err != nil || st.Mode()&0o111 == 0 {
			return cleanup, fmt.Errorf("NSTRACE_BIN=%q is not an executable file (%v)", bin, err)
		}
		return cleanup, nil
	}
	dir, err := os.MkdirTemp("", "nstrace-it-")
	if err != nil {
		return cleanup, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	itCfg.bin = filepath.Join(dir, "nstrace")
	out, err := exec.Command("go", "build", "-o", itCfg.bin, ".").CombinedOutput()
	if err != nil {
		cleanup()
		return func() {}, fmt.Errorf("NSTRACE_BIN is unset and `go build -o %s .` failed: %v\n%s", itCfg.bin, err, out)
	}
	return cleanup, nil
}

// scaled applies NSTRACE_TEST_SLOW to a deadline.
func scaled(d time.Duration) time.Duration { return time.Duration(float64(d) * itCfg.slow) }

// Deadlines. eventTimeout is the contract's "within 2 s of the action".
func eventTimeout() time.Duration { return scaled(2 * time.Second) }
func readyTimeout() time.Duration { return scaled(15 * time.Second) }
func procTimeout() time.Duration  { return scaled(5 * time.Second) }
func stopTimeout() time.Duration  { return scaled(5 * time.Second) }

// need skips the test (loudly) when a requirement is missing, or fails it
// under NSTRACE_TEST_STRICT=1.
func need(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	what := fmt.Sprintf(format, args...)
	if itCfg.strict {
		t.Fatalf("NSTRACE_TEST_STRICT=1 and a requirement is missing: %s", what)
	}
	t.Skipf("SKIPPED, REQUIREMENT MISSING: %s (NSTRACE_TEST_STRICT=1 turns this into a failure)", what)
}

func needRoot(t *testing.T, why string) {
	t.Helper()
	need(t, os.Geteuid() == 0, "root (euid %d): %s", os.Geteuid(), why)
}

// backendIndependent skips a test in the VMs under every backend but auto:
// what it checks does not depend on the backend (userspace, or what all
// backends share), the host runs it, and each start of nstrace costs
// seconds under software emulation.
func backendIndependent(t *testing.T) {
	t.Helper()
	if os.Getenv("NSTRACE_TEST_VM") != "" && itCfg.backend != "auto" {
		t.Skipf("SKIPPED: backend-independent: in the VMs it runs under auto (and on the host); this run is %s", itCfg.backend)
	}
}

func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		_, err := exec.LookPath(n)
		need(t, err == nil, "program %q in PATH: %v", n, err)
	}
}

func needTimeNS(t *testing.T) {
	t.Helper()
	_, err := os.Stat("/proc/self/ns/time")
	need(t, err == nil, "time namespaces (CONFIG_TIME_NS): %v", err)
}

// runHelper is the body of the test binary when re-executed with
// NSTRACE_TEST_HELPER set.
func runHelper(mode string) int {
	switch mode {
	case "nsdump":
		// Report the namespaces, then hold them until stdin is closed.
		reportNamespaces()
		// Hold them in a single-threaded process, whose exit is one plain
		// release; "threads" is the case of many threads exiting at once.
		if sh, err := exec.LookPath("sh"); err == nil {
			err = syscall.Exec(sh, []string{"sh", "-c", "read x; exit 0"}, os.Environ())
			fmt.Fprintf(os.Stderr, "exec sh: %v\n", err)
			return 2
		}
		io.Copy(io.Discard, os.Stdin)
		return 0
	case "reap":
		return reap(os.Args[1:])
	case "soak":
		return soak(os.Args[1:])
	case "threads":
		// Like nsdump, but with many threads holding the namespaces, all
		// of which exit at once (exit_group) when stdin is closed.
		var started sync.WaitGroup
		for range 16 {
			started.Add(1)
			go func() {
				runtime.LockOSThread() // a thread of its own
				started.Done()
				select {}
			}()
		}
		started.Wait()
		reportNamespaces()
		io.Copy(io.Discard, os.Stdin)
		return 0 // exit_group: TestMain exits with it
	}
	fmt.Fprintf(os.Stderr, "%s=%q: unknown helper mode\n", helperEnv, mode)
	return 2
}

// reportNamespaces prints what nsScript prints: the namespaces this process
// is in, its pid, then "ready".
func reportNamespaces() {
	for _, f := range nsFiles {
		if l, err := os.Readlink("/proc/self/ns/" + f); err == nil {
			fmt.Printf("ns %s %s\n", f, l)
		}
	}
	fmt.Printf("self /proc/%d\n", os.Getpid())
	fmt.Println("ready")
}

// reap runs argv as a child subreaper: it prints "pid N" (the child's pid),
// forwards the child's stdout, and exits only after the child and every
// descendant orphaned under it have been reaped. A zombie keeps its pid
// namespace alive, and orphans otherwise go to PID 1, which may reap them
// late (on the CI machines it takes up to 2 s): with this the test knows when
// the last process of a sandbox really went away.
func reap(argv []string) int {
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "reap: no command")
		return 2
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "reap: PR_SET_CHILD_SUBREAPER: %v\n", err)
		return 2
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "reap: %v\n", err)
		return 2
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, outW, os.Stderr
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, helperEnv+"=") })
	err = cmd.Start()
	outW.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "reap: %v\n", err)
		return 2
	}
	fmt.Printf("pid %d\n", cmd.Process.Pid)
	copied := make(chan struct{})
	go func() {
		io.Copy(os.Stdout, outR)
		close(copied)
	}()
	code := 0
	if err := cmd.Wait(); err != nil {
		fmt.Fprintf(os.Stderr, "reap: %v: %v\n", argv, err)
		code = 1
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil { // ECHILD: nothing left
			break
		}
	}
	<-copied
	return code
}
