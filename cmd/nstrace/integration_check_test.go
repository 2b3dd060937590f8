package main

// nstrace check against what nstrace itself does here: a backend it says
// works must start, one it says does not must refuse with the reason it
// gave, auto must pick what it names, and its teardown words must agree
// with the blind spots a real run reports.

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// runCheckCLI runs nstrace check args (as cred, if set) and returns its exit
// status, stdout and stderr. It loads every backend: more time than a start.
func runCheckCLI(t *testing.T, cred *syscall.Credential, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	bin := itCfg.bin
	if cred != nil {
		bin = binForAnyone(t)
	}
	cmd := exec.Command(bin, append([]string{"check"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nstrace check: %v", err)
	}
	ok, err := waitWithin(cmd, 4*readyTimeout())
	if !ok {
		t.Fatalf("nstrace check still running after %v; stderr:\n%s", 4*readyTimeout(), errb.String())
	}
	return itExitCode(err), out.String(), errb.String()
}

func TestCheck(t *testing.T) {
	backendIndependent(t) // it tries every backend itself
	needRoot(t, "nstrace check loads every backend")
	code, out, errOut := runCheckCLI(t, nil, "-o", "json")
	if code != exitOK {
		t.Fatalf("nstrace check -o json as root: exit %d, stderr:\n%s", code, errOut)
	}
	var r checkReport
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("nstrace check -o json: %v\n%s", err, out)
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	if want := unix.ByteSliceToString(uts.Release[:]); r.Kernel != want {
		t.Errorf("kernel %q, uname says %q", r.Kernel, want)
	}
	if !r.BTF.OK || !r.RingBuffer.OK {
		t.Errorf("btf %+v, ring buffer %+v: both work here (the tests run)", r.BTF, r.RingBuffer)
	}
	// The object for kernels before 5.15 where the kernel is one (5.10 in
	// the VMs), or where the environment forces it (make test's second run).
	wantObj := "current"
	if kernelBefore(t, 5, 15) || os.Getenv("NSTRACE_BPF_OBJECT") == "compat" {
		wantObj = "compat"
	}
	if r.BPFObject.Name != wantObj || (kernelBefore(t, 5, 15) != (len(r.BPFObject.Lacking) > 0)) {
		t.Errorf("bpf_object %+v on %s, want %s, with what it lacks where the kernel is older than 5.15", r.BPFObject, r.Kernel, wantObj)
	}
	if r.Euid != 0 || !strings.Contains(strings.Join(r.Capabilities, " "), "CAP_SYS_ADMIN") {
		t.Errorf("as root: euid %d, capabilities %v", r.Euid, r.Capabilities)
	}
	wantV := 1
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		wantV = 2
	}
	if r.Cgroup.Version != wantV {
		t.Errorf("cgroup version %d, /sys/fs/cgroup says %d", r.Cgroup.Version, wantV)
	}
	if len(r.Backends) != len(knownBackends) {
		t.Fatalf("backends %+v, want one report each for %v", r.Backends, knownBackends)
	}

	// Each verdict against a real start with that backend.
	for _, b := range r.Backends {
		code, _, stderr := runCLI(t, itCfg.bin, nil, "--backend", b.Name, "--duration", "1ms", "-o", "json")
		started := strings.Contains(stderr, "tracing namespaces (backend: "+b.Name+")")
		switch {
		case b.Works && !started:
			t.Errorf("check says %s works; nstrace --backend %s exited %d without starting:\n%s", b.Name, b.Name, code, stderr)
		case !b.Works && started:
			t.Errorf("check says %s does not work (%s); nstrace --backend %s started", b.Name, b.Reason, b.Name)
		case !b.Works && (b.Reason == "" || !strings.Contains(stderr, b.Reason)):
			t.Errorf("check's reason for %s, %q, is not what nstrace --backend %s says:\n%s", b.Name, b.Reason, b.Name, stderr)
		}
		if !b.Works {
			continue
		}
		// Teardown words against the blind spots a real run reports.
		tr := startTracer(t, "json", "--backend", b.Name)
		for typ, how := range b.Teardowns {
			blind := tr.blindSpot(typ) != ""
			if (how == "blind" || how == "at-release") != blind {
				t.Errorf("%s: check says %s teardowns are %s; the run's blind spot line for it: %q", b.Name, typ, how, tr.blindSpot(typ))
			}
		}
		if len(b.Teardowns) != 8 {
			t.Errorf("%s: teardowns %v, want all 8 types", b.Name, b.Teardowns)
		}
		tr.stop(os.Interrupt)
	}
	if r.Auto == "" {
		t.Fatalf("check names no backend for auto, yet the tests run")
	}
	tr := startTracer(t, "json", "--backend", "auto")
	if tr.backend != r.Auto {
		t.Errorf("check says auto picks %s; nstrace --backend auto started %s", r.Auto, tr.backend)
	}
	tr.stop(os.Interrupt)

	// The text form says the same in words.
	code, text, errOut := runCheckCLI(t, nil)
	if code != exitOK || !strings.Contains(text, "nstrace can trace here: --backend auto picks "+r.Auto+".") {
		t.Errorf("nstrace check: exit %d, output:\n%s\nstderr:\n%s", code, text, errOut)
	}
	for _, b := range r.Backends {
		if !b.Works && !strings.Contains(text, b.Reason) {
			t.Errorf("text output does not give %s's reason %q:\n%s", b.Name, b.Reason, text)
		}
	}
}

// Without privileges no backend works: exit 1, and each says why.
func TestCheckUnprivileged(t *testing.T) {
	backendIndependent(t)
	needRoot(t, "runs nstrace check as another user")
	code, out, errOut := runCheckCLI(t, &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}, "-o", "json")
	if code != exitError {
		t.Fatalf("nstrace check as nobody: exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, exitError, out, errOut)
	}
	var r checkReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("nstrace check -o json as nobody: %v\n%s", err, out)
	}
	if r.Auto != "" || r.Euid != 65534 || len(r.Capabilities) != 0 {
		t.Errorf("as nobody: auto %q, euid %d, capabilities %v", r.Auto, r.Euid, r.Capabilities)
	}
	for _, b := range r.Backends {
		if b.Works || !strings.Contains(b.Reason, "tracing needs root") {
			t.Errorf("as nobody, %s: works %v, reason %q; want the privileges explained", b.Name, b.Works, b.Reason)
		}
	}
}

func TestCheckUsage(t *testing.T) {
	backendIndependent(t)
	code, _, stderr := runCLI(t, itCfg.bin, nil, "check", "--bogus")
	if code != exitUsage {
		t.Errorf("nstrace check --bogus: exit %d, want %d", code, exitUsage)
	}
	expectOneLine(t, "nstrace check --bogus", stderr, "bogus")
	code, _, stderr = runCLI(t, itCfg.bin, nil, "check", "-o", "yaml")
	if code != exitUsage {
		t.Errorf("nstrace check -o yaml: exit %d, want %d", code, exitUsage)
	}
	expectOneLine(t, "nstrace check -o yaml", stderr, "yaml")
}
