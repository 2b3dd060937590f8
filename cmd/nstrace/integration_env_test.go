package main

// A machine nstrace cannot trace on as it is: each cause gets one line in
// words a user can act on, and its exit code (1: cannot trace here; 2: a
// bad argument); what nstrace can fix itself (an unmounted tracefs) it
// fixes.

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// --btf: a copy of this kernel's BTF works; a missing or corrupt file is a
// bad argument.
func TestEnvBTFFile(t *testing.T) {
	backendIndependent(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "corrupt.btf")
	if err := os.WriteFile(bad, []byte("this is not BTF at all, not even its header"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, path, word string }{
		{"missing", filepath.Join(dir, "none.btf"), "no such file"},
		{"corrupt", bad, "BTF"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, itCfg.bin, nil, "--btf", c.path)
			if code != exitUsage || out != "" {
				t.Errorf("--btf %s: exit %d, stdout %q; want %d and nothing", c.path, code, out, exitUsage)
			}
			expectOneLine(t, "--btf "+c.name, errOut, "--btf", c.path, c.word)
		})
	}
	t.Run("copy", func(t *testing.T) {
		needTools(t, "unshare", "readlink")
		b, err := os.ReadFile("/sys/kernel/btf/vmlinux")
		if err != nil {
			t.Fatalf("this kernel's BTF: %v", err)
		}
		copyPath := filepath.Join(dir, "vmlinux")
		if err := os.WriteFile(copyPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
		tr := startTracer(t, "json", "--btf", copyPath)
		pid, inum := tr.unshareUTS()
		tr.await(eventTimeout(), func(e *jsonEvent) bool { return e.PID == pid },
			wantEvent{desc: "create with --btf", match: isEv("create", "uts", inum)})
		tr.stop(os.Interrupt)
	})
}

// A backend asked for by name that this kernel refuses: exit 1, one line
// that says why.
func TestEnvBackendRefused(t *testing.T) {
	backendIndependent(t) // it names the backends itself
	needRoot(t, "loading BPF programs")
	for _, b := range []struct{ name, why string }{
		{"fentry", "fentry"},
		{"kprobe", "kprobe"},
	} {
		t.Run(b.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, itCfg.bin, nil, "--backend", b.name, "--duration", "1ms")
			if code == exitOK {
				t.Skipf("SKIPPED: this kernel runs the %s backend: nothing refused to test (the host kernel refuses both)", b.name)
			}
			if code != exitError || out != "" {
				t.Errorf("--backend %s: exit %d, stdout %q; want %d and nothing", b.name, code, out, exitError)
			}
			expectOneLine(t, "--backend "+b.name, errOut, "backend "+b.name+":", b.why)
			checkNoCrash(t, "stderr", errOut)
		})
	}
}

// tracefs not mounted (in a mount namespace of the test's): the
// tracepoint backend mounts it, says so, and traces.
func TestEnvTracefsUnmounted(t *testing.T) {
	needRoot(t, "mount namespaces")
	needTools(t, "unshare", "umount", "sh")
	if itCfg.backend != "auto" && itCfg.backend != "tracepoint" {
		t.Skipf("SKIPPED: the %s backend needs no tracefs", itCfg.backend)
	}
	script := `umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null
test -e /sys/kernel/tracing/events && { echo "tracefs still mounted" >&2; exit 9; }
exec "$@"`
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
		itCfg.bin, "--backend", "tracepoint", "-o", "json", "-e", "create", "-t", "uts", "--count", "1")
	var out strings.Builder
	cmd.Stdout = &out
	errR, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	stderr := make(chan string)
	go func() { b, _ := io.ReadAll(errR); stderr <- string(b) }()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// It stops at its first event: make namespaces until it does.
	deadline := time.After(readyTimeout() + eventTimeout())
	for exited := false; !exited; {
		select {
		case err := <-done:
			exited = true
			errText := <-stderr
			if err != nil {
				t.Fatalf("nstrace with tracefs unmounted: %v; stderr:\n%s", err, errText)
			}
			if !strings.Contains(errText, "tracefs was not mounted: mounted it on /sys/kernel/tracing") {
				t.Errorf("stderr does not say it mounted tracefs:\n%s", errText)
			}
			if !strings.Contains(out.String(), `"event":"create"`) {
				t.Errorf("no create event: %q", out.String())
			}
		case <-deadline:
			t.Fatalf("nstrace with tracefs unmounted printed no event")
		case <-time.After(50 * time.Millisecond):
			exec.Command("unshare", "-u", "true").Run()
		}
	}
}

// BPF maps beyond the memory cgroup's limit: one line that names the limit
// and what to do.
func TestEnvMemoryLimit(t *testing.T) {
	backendIndependent(t)
	needRoot(t, "cgroups")
	if kernelBefore(t, 5, 11) {
		t.Skipf("SKIPPED: Linux %s charges BPF memory to RLIMIT_MEMLOCK, which nstrace raises, not to the memory cgroup (5.11+)", kernelRelease(t))
	}
	var dir, limitFile string
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		dir, limitFile = filepath.Join("/sys/fs/cgroup/memory", uniqueName("nstrace-test")), "memory.limit_in_bytes"
	} else if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil && strings.Contains(string(b), "memory") {
		// cgroup v2: the children of the root get the controller.
		if err := os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+memory"), 0o644); err != nil {
			t.Fatalf("enable the memory controller: %v", err)
		}
		dir, limitFile = filepath.Join("/sys/fs/cgroup", uniqueName("nstrace-test")), "memory.max"
	} else {
		t.Skipf("SKIPPED: no memory cgroup controller here")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 50 && os.Remove(dir) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(fmt.Sprint(64<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	// A ring buffer of 256 MiB in a cgroup of 64.
	code, out, errOut := runCLI(t, "/bin/sh", nil, "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, dir,
		itCfg.bin, "--backend", firstBackend(), "--ring-size", "256M", "--duration", "1ms")
	if code != exitError || out != "" {
		t.Errorf("exit %d, stdout %q; want %d and nothing; stderr:\n%s", code, out, exitError, errOut)
	}
	expectOneLine(t, "256M ring buffer in a 64M cgroup", errOut, "not enough memory", limitFile, "--ring-size")
	checkNoCrash(t, "stderr", errOut)
}

// firstBackend is the backend the tests run, or, for auto, the one auto
// would take: one named backend keeps the failure to one line.
func firstBackend() string {
	if itCfg.backend != "auto" {
		return itCfg.backend
	}
	return "tracepoint"
}
