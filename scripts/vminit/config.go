//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
)

// Config is what scripts/vmtest.sh puts in the initramfs for one boot.
//
// The files are line based: "key=value", one per line, blank lines and lines
// starting with '#' ignored. Keys that may repeat build lists (backend, pkg,
// env, arg, module); backends (comma-separated) replaces the list so far,
// and pkgs (comma-separated names) keeps only those packages. A pkg value is
// three tab-separated fields: the package
// name as the host knows it (./tracer), the test binary in the VM, and the
// directory to run it in (a copy of the package directory with its testdata).
type Config struct {
	Kernel   string        // label of the kernel (Debian package name or file)
	Backends []string      // NSTRACE_TEST_BACKEND values, in order
	Packages []Package     // test binaries, in order
	Only     []string      // if set, the names of Packages to run (kernel.conf: CI's subset)
	Timeout  time.Duration // passed as -test.timeout to every test binary
	Run      string        // passed as -test.run when not empty
	Env      []string      // extra KEY=VALUE for every test binary
	Args     []string      // extra arguments for every test binary
	Modules  []string      // kernel module files to load, in order
	Shell    bool          // start a shell on the console before powering off
}

// Package is one test binary to run.
type Package struct {
	Name   string // ./tracer
	Binary string // /vmtest/bin/tracer.test
	Dir    string // /vmtest/src/tracer
}

// ParseConfig reads one config file into c; later files add to lists and
// override single values.
func ParseConfig(c *Config, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(text) == "" || strings.HasPrefix(strings.TrimSpace(text), "#") {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if !ok {
			return fmt.Errorf("line %d: want key=value, got %q", line, text)
		}
		switch key {
		case "kernel":
			c.Kernel = value
		case "backend":
			c.Backends = append(c.Backends, value)
		case "backends":
			// A kernel's own list (kernel.conf, CI's subset): replaces
			// the run's.
			c.Backends = strings.Split(value, ",")
		case "pkgs":
			c.Only = strings.Split(value, ",")
		case "pkg":
			f := strings.Split(value, "\t")
			if len(f) != 3 || f[0] == "" || f[1] == "" || f[2] == "" {
				return fmt.Errorf("line %d: pkg wants NAME<TAB>BINARY<TAB>DIR, got %q", line, value)
			}
			c.Packages = append(c.Packages, Package{Name: f[0], Binary: f[1], Dir: f[2]})
		case "timeout":
			d, err := time.ParseDuration(value)
			if err != nil || d <= 0 {
				return fmt.Errorf("line %d: bad timeout %q", line, value)
			}
			c.Timeout = d
		case "run":
			c.Run = value
		case "env":
			if !strings.Contains(value, "=") {
				return fmt.Errorf("line %d: env wants KEY=VALUE, got %q", line, value)
			}
			c.Env = append(c.Env, value)
		case "arg":
			c.Args = append(c.Args, value)
		case "module":
			c.Modules = append(c.Modules, value)
		case "shell":
			c.Shell = value == "1" || value == "true" || value == "yes"
		default:
			return fmt.Errorf("line %d: unknown key %q", line, key)
		}
	}
	return sc.Err()
}

// LoadConfig reads every file in paths that exists, in order.
func LoadConfig(paths ...string) (*Config, error) {
	c := &Config{Timeout: 5 * time.Minute}
	for _, p := range paths {
		f, err := os.Open(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		err = ParseConfig(c, f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	if c.Only != nil {
		var keep []Package
		for _, p := range c.Packages {
			if slices.Contains(c.Only, p.Name) {
				keep = append(keep, p)
			}
		}
		c.Packages = keep
	}
	if c.Kernel == "" {
		c.Kernel = "unknown"
	}
	if len(c.Backends) == 0 {
		c.Backends = []string{"auto"}
	}
	return c, nil
}

// The console protocol. scripts/vmtest.sh greps for these lines; keep the two
// in step. Every marker starts with Marker and is written on a line of its own
// (a newline is written before it in case a test left a partial line).
//
//	@@VMTEST@@ BOOT kernel=K uname=R uptime=SECONDS
//	@@VMTEST@@ START kernel=K backend=B pkg=P
//	@@VMTEST@@ END kernel=K backend=B pkg=P result=PASS|FAIL|TIMEOUT exit=N secs=S
//	@@VMTEST@@ VERDICT kernel=K result=PASS|FAIL passed=N failed=M
const Marker = "@@VMTEST@@"

// Result of one test binary run.
type Result string

const (
	Pass    Result = "PASS"
	Fail    Result = "FAIL"
	Timeout Result = "TIMEOUT"
)

func markerLine(kind string, kv ...string) string {
	var b strings.Builder
	b.WriteString(Marker)
	b.WriteString(" ")
	b.WriteString(kind)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %s=%s", kv[i], field(kv[i+1]))
	}
	return b.String()
}

// field keeps a marker value to one shell word.
func field(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == '=' || r == 0x7f {
			return '_'
		}
		return r
	}, s)
}

// TestEnv is the environment of one test binary run: base, then cfg.Env, then
// NSTRACE_TEST_BACKEND, NSTRACE_TEST_STRICT=1 and NSTRACE_TEST_VM=1 (these win).
func TestEnv(base []string, cfg *Config, backend string) []string {
	m := map[string]string{}
	var order []string
	add := func(kv string) {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := m[k]; !ok {
			order = append(order, k)
		}
		m[k] = v
	}
	for _, kv := range base {
		add(kv)
	}
	// Software emulation runs the guest several times slower than the host,
	// asynchronous kernel work (RCU, work queues) included: deadlines scale.
	// VMTEST_ENV may override it.
	add("NSTRACE_TEST_SLOW=4")
	for _, kv := range cfg.Env {
		add(kv)
	}
	add("NSTRACE_TEST_BACKEND=" + backend)
	add("NSTRACE_TEST_STRICT=1")
	// Tells tests they run in the qemu VM (software emulation: slow).
	add("NSTRACE_TEST_VM=1")
	sort.Strings(order)
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+m[k])
	}
	return env
}

// TestArgs is the command line of one test binary run.
func TestArgs(cfg *Config, p Package) []string {
	args := []string{p.Binary, "-test.v", "-test.timeout=" + cfg.Timeout.String()}
	if cfg.Run != "" {
		args = append(args, "-test.run="+cfg.Run)
	}
	return append(args, cfg.Args...)
}
