//go:build linux

package main

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	in := "# run.conf\n" +
		"timeout=90s\n" +
		"run=TestA|TestB/sub=1\n" +
		"backend=fentry\nbackend=kprobe\n" +
		"pkg=./tracer\t/vmtest/bin/tracer.test\t/vmtest/src/tracer\n" +
		"env=NSTRACE_BIN=/usr/bin/nstrace\n" +
		"arg=-test.failfast\n" +
		"\n" +
		"kernel=linux-image-6.1.0-57-cloud-amd64\r\n" +
		"module=/lib/modules/x/veth.ko\n" +
		"shell=1\n"
	c := &Config{}
	if err := ParseConfig(c, strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Kernel:   "linux-image-6.1.0-57-cloud-amd64",
		Backends: []string{"fentry", "kprobe"},
		Packages: []Package{{Name: "./tracer", Binary: "/vmtest/bin/tracer.test", Dir: "/vmtest/src/tracer"}},
		Timeout:  90 * time.Second,
		Run:      "TestA|TestB/sub=1",
		Env:      []string{"NSTRACE_BIN=/usr/bin/nstrace"},
		Args:     []string{"-test.failfast"},
		Modules:  []string{"/lib/modules/x/veth.ko"},
		Shell:    true,
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
}

// A kernel.conf's backends replaces run.conf's list (CI's subset).
func TestParseConfigKernelBackends(t *testing.T) {
	c := &Config{}
	for _, in := range []string{"backend=fentry\nbackend=kprobe\nbackend=tracepoint\nbackend=auto\n", "kernel=k\nbackends=auto,tracepoint\n"} {
		if err := ParseConfig(c, strings.NewReader(in)); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"auto", "tracepoint"}; !reflect.DeepEqual(c.Backends, want) {
		t.Fatalf("backends %v, want %v", c.Backends, want)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, in := range []string{
		"nonsense",
		"color=blue",
		"timeout=soon",
		"timeout=-1s",
		"pkg=./tracer /bin/x /dir",
		"env=NOVALUE",
	} {
		if err := ParseConfig(&Config{}, strings.NewReader(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	c, err := LoadConfig("/nonexistent/run.conf")
	if err != nil {
		t.Fatal(err)
	}
	if c.Kernel != "unknown" || !reflect.DeepEqual(c.Backends, []string{"auto"}) || c.Timeout != 5*time.Minute {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestMarkerLine(t *testing.T) {
	got := markerLine("END", "kernel", "k 1", "backend", "fentry", "pkg", "./tracer", "result", "PASS", "run", "")
	want := "@@VMTEST@@ END kernel=k_1 backend=fentry pkg=./tracer result=PASS run=-"
	if got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestTestEnvAndArgs(t *testing.T) {
	c := &Config{Timeout: 2 * time.Minute, Run: "TestX", Env: []string{"NSTRACE_BIN=/usr/bin/nstrace", "NSTRACE_TEST_STRICT=0"}, Args: []string{"-test.count=2"}}
	env := TestEnv([]string{"PATH=/bin", "NSTRACE_TEST_BACKEND=old"}, c, "kprobe")
	want := []string{"NSTRACE_BIN=/usr/bin/nstrace", "NSTRACE_TEST_BACKEND=kprobe", "NSTRACE_TEST_SLOW=4", "NSTRACE_TEST_STRICT=1", "NSTRACE_TEST_VM=1", "PATH=/bin"}
	if !reflect.DeepEqual(env, want) {
		t.Fatalf("env %q want %q", env, want)
	}
	// VMTEST_ENV can set another slow-down factor.
	c.Env = append(c.Env, "NSTRACE_TEST_SLOW=8")
	if env := TestEnv(nil, c, "kprobe"); !slices.Contains(env, "NSTRACE_TEST_SLOW=8") {
		t.Fatalf("env %q does not keep NSTRACE_TEST_SLOW=8 from VMTEST_ENV", env)
	}
	args := TestArgs(c, Package{Binary: "/vmtest/bin/t.test"})
	wantArgs := []string{"/vmtest/bin/t.test", "-test.v", "-test.timeout=2m0s", "-test.run=TestX", "-test.count=2"}
	if !reflect.DeepEqual(args, wantArgs) {
		t.Fatalf("args %q want %q", args, wantArgs)
	}
}

// A kernel.conf's pkgs keeps only the packages it names, in run.conf's
// order (CI's subset: an emulated architecture runs fewer).
func TestLoadConfigKernelPackages(t *testing.T) {
	dir := t.TempDir()
	run, kernel := dir+"/run.conf", dir+"/kernel.conf"
	pkgs := "pkg=./tracer\t/b/tracer.test\t/s/tracer\npkg=./cmd/nstrace\t/b/cmd.test\t/s/cmd\npkg=./snapshot\t/b/snap.test\t/s/snap\n"
	if err := os.WriteFile(run, []byte(pkgs), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kernel, []byte("kernel=k\npkgs=./snapshot,./tracer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(run, kernel)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range c.Packages {
		names = append(names, p.Name)
	}
	if want := []string{"./tracer", "./snapshot"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("packages %v, want %v", names, want)
	}
}
