//go:build linux

// Command vminit is /init of the initramfs that scripts/vmtest.sh boots under
// qemu. It mounts the kernel file systems the tracer and its tests need, runs
// every test binary once per backend with the output on the serial console,
// between marker lines that the host script parses, prints a verdict and
// powers the machine off.
//
// It reads /vmtest/run.conf (what to run) and /vmtest/kernel.conf (the kernel
// label and modules to load); see Config. It is built with CGO_ENABLED=0 and
// only uses the standard library, so it runs with nothing else in the image.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	runConf    = "/vmtest/run.conf"
	kernelConf = "/vmtest/kernel.conf"
	// How long past -test.timeout a test binary may run before init kills its
	// process group (the test binary panics itself at -test.timeout).
	killGrace                = 30 * time.Second
	hostname                 = "vmtest"
	moduleInitCompressedFile = 4
	path                     = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// console is where everything goes: the serial console.
var console = os.Stdout

func logf(format string, args ...any) {
	fmt.Fprintf(console, "vminit: "+format+"\n", args...)
}

func marker(kind string, kv ...string) {
	fmt.Fprintf(console, "\n%s\n", markerLine(kind, kv...))
}

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "vminit: this is the init program of the vmtest initramfs; run scripts/vmtest.sh")
		os.Exit(2)
	}
	// PID 1 must never exit: that panics the kernel. A Go panic here still
	// prints its message, then the machine is powered off, and the host sees
	// no verdict line.
	defer func() {
		if r := recover(); r != nil {
			logf("PANIC in init: %v", r)
		}
		powerOff()
	}()
	setup()
	cfg, err := LoadConfig(runConf, kernelConf)
	if err != nil {
		logf("ERROR: %v", err)
		marker("VERDICT", "kernel", "unknown", "result", "FAIL", "passed", "0", "failed", "1")
		return
	}
	loadModules(cfg.Modules)
	describe(cfg)
	runAll(cfg)
	if cfg.Shell {
		shell()
	}
}

// setup makes the root a real mount, mounts the kernel file systems and sets
// up the bits of a system the tests expect.
func setup() {
	// devtmpfs first, to get a console even if the initramfs has no
	// /dev/console node.
	mkdirs("/dev")
	mount("devtmpfs", "/dev", "devtmpfs", syscall.MS_NOSUID, "mode=0755")
	if f, err := os.OpenFile("/dev/console", os.O_RDWR|syscall.O_NOCTTY, 0); err == nil {
		for _, fd := range []int{0, 1, 2} {
			_ = syscall.Dup3(int(f.Fd()), fd, 0)
		}
		f.Close()
	}
	console = os.Stdout
	fmt.Fprintln(console) // the firmware leaves a partial line

	pivotable()

	type mnt struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}
	mounts := []mnt{
		{"proc", "/proc", "proc", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, ""},
		{"devpts", "/dev/pts", "devpts", syscall.MS_NOSUID | syscall.MS_NOEXEC, "gid=5,mode=620,ptmxmode=666"},
		{"tmpfs", "/dev/shm", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=1777"},
		{"mqueue", "/dev/mqueue", "mqueue", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, ""},
		{"tracefs", "/sys/kernel/tracing", "tracefs", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, ""},
		{"debugfs", "/sys/kernel/debug", "debugfs", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, ""},
		{"securityfs", "/sys/kernel/security", "securityfs", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, ""},
		{"bpf", "/sys/fs/bpf", "bpf", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, "mode=0700"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, "nsdelegate"},
		{"tmpfs", "/tmp", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=0755"},
	}
	for _, m := range mounts {
		mkdirs(m.dst)
		mount(m.src, m.dst, m.fstype, m.flags, m.data)
	}
	// What systemd does: mount events propagate unless a namespace opts out.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_SHARED, ""); err != nil {
		logf("WARNING: make / shared: %v", err)
	}
	for _, d := range []string{"/run/netns", "/run/runc", "/var/tmp", "/root"} {
		mkdirs(d)
	}
	for _, l := range [][2]string{
		{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"},
	} {
		_ = os.Symlink(l[0], l[1])
	}
	enableControllers()
	if err := syscall.Sethostname([]byte(hostname)); err != nil {
		logf("WARNING: sethostname: %v", err)
	}
	if err := loopbackUp(); err != nil {
		logf("WARNING: loopback up: %v", err)
	}
	os.Clearenv()
	for _, kv := range []string{"PATH=" + path, "HOME=/root", "TMPDIR=/tmp", "TERM=dumb", "USER=root", "LANG=C"} {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	_ = os.Chdir("/")
}

// pivotable moves a bind mount of the initramfs onto /: the initramfs itself
// (rootfs) has no parent mount, and pivot_root(2) refuses to work on it, which
// breaks bwrap and runc. On a bind mount of it, pivot_root works.
func pivotable() {
	const nr = "/.vmroot"
	mkdirs(nr)
	if err := syscall.Mount("/", nr, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		logf("WARNING: bind / for pivot_root: %v", err)
		return
	}
	if err := syscall.Chdir(nr); err != nil {
		logf("WARNING: %v", err)
		return
	}
	if err := syscall.Mount(".", "/", "", syscall.MS_MOVE, ""); err != nil {
		logf("WARNING: move root: %v", err)
		_ = syscall.Chdir("/")
		return
	}
	if err := syscall.Chroot("."); err != nil {
		logf("WARNING: chroot: %v", err)
	}
	_ = syscall.Chdir("/")
}

func mkdirs(p string) {
	if err := os.MkdirAll(p, 0o755); err != nil {
		logf("WARNING: mkdir %s: %v", p, err)
	}
}

func mount(src, dst, fstype string, flags uintptr, data string) {
	if err := syscall.Mount(src, dst, fstype, flags, data); err != nil {
		logf("WARNING: mount %s on %s: %v", fstype, dst, err)
	}
}

// enableControllers hands every cgroup v2 controller to child cgroups, as
// systemd does, so runc and tests can use them.
func enableControllers() {
	b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if err != nil {
		return
	}
	for _, c := range strings.Fields(string(b)) {
		_ = os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+"+c), 0)
	}
}

func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var ifr struct {
		name  [syscall.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(ifr.name[:], "lo")
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return e
	}
	ifr.flags |= syscall.IFF_UP | syscall.IFF_RUNNING
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return e
	}
	return nil
}

func loadModules(mods []string) {
	for _, m := range mods {
		f, err := os.Open(m)
		if err != nil {
			logf("WARNING: module %s: %v", m, err)
			continue
		}
		empty := []byte{0}
		var flags uintptr
		if strings.HasSuffix(m, ".xz") || strings.HasSuffix(m, ".gz") || strings.HasSuffix(m, ".zst") {
			flags = moduleInitCompressedFile // the kernel decompresses (5.17+)
		}
		_, _, e := syscall.Syscall(unix.SYS_FINIT_MODULE, f.Fd(), uintptr(unsafe.Pointer(&empty[0])), flags)
		f.Close()
		if e != 0 && e != syscall.EEXIST {
			logf("WARNING: load module %s: %v", m, e)
		} else {
			logf("loaded module %s", filepath.Base(m))
		}
	}
}

// describe prints what the tests will find, to make failures readable.
func describe(cfg *Config) {
	var u syscall.Utsname
	_ = syscall.Uname(&u)
	release := cstr(u.Release[:])
	up := "-"
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			up = f[0]
		}
	}
	marker("BOOT", "kernel", cfg.Kernel, "uname", release, "uptime", up)
	logf("kernel %s %s, %d CPUs", release, cstr(u.Version[:]), runtime.NumCPU())
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		logf("cmdline: %s", strings.TrimSpace(string(b)))
	}
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) == nil {
		logf("memory: %d MiB total, %d MiB free", si.Totalram*uint64(si.Unit)>>20, si.Freeram*uint64(si.Unit)>>20)
	}
	check := func(what, p string) {
		if _, err := os.Stat(p); err != nil {
			logf("%-28s missing (%s)", what, p)
		} else {
			logf("%-28s ok (%s)", what, p)
		}
	}
	check("BTF", "/sys/kernel/btf/vmlinux")
	check("tracefs", "/sys/kernel/tracing/events/syscalls")
	check("kprobe events", "/sys/kernel/tracing/kprobe_events")
	check("cgroup v2", "/sys/fs/cgroup/cgroup.controllers")
	check("bpffs", "/sys/fs/bpf")
	if b, err := os.ReadFile("/sys/kernel/security/lockdown"); err == nil {
		logf("%-28s %s", "lockdown", strings.TrimSpace(string(b)))
	}
	if ents, err := os.ReadDir("/proc/self/ns"); err == nil {
		var ns []string
		for _, e := range ents {
			if l, err := os.Readlink("/proc/self/ns/" + e.Name()); err == nil {
				ns = append(ns, e.Name()+"="+l[strings.Index(l, ":")+1:])
			}
		}
		logf("namespaces: %s", strings.Join(ns, " "))
	}
	var missing []string
	for _, prog := range []string{"sh", "cat", "readlink", "sleep", "true", "mount", "unshare", "nsenter", "bwrap", "ip", "runc", "lsns"} {
		if p, ok := lookPath(prog); ok {
			logf("%-28s %s", "program "+prog, p)
		} else {
			missing = append(missing, prog)
		}
	}
	if len(missing) > 0 {
		logf("programs not in the image: %s", strings.Join(missing, " "))
	}
	logf("backends: %s; timeout per test binary: %s; -test.run: %q", strings.Join(cfg.Backends, " "), cfg.Timeout, cfg.Run)
}

func lookPath(prog string) (string, bool) {
	for _, d := range filepath.SplitList(path) {
		p := filepath.Join(d, prog)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

func cstr(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func runAll(cfg *Config) {
	passed, failed := 0, 0
	if len(cfg.Packages) == 0 {
		logf("ERROR: no test binaries in the image")
		failed++
	}
	for _, b := range cfg.Backends {
		for _, p := range cfg.Packages {
			marker("START", "kernel", cfg.Kernel, "backend", b, "pkg", p.Name)
			start := time.Now()
			res, code := runOne(cfg, b, p)
			secs := fmt.Sprintf("%.1f", time.Since(start).Seconds())
			marker("END", "kernel", cfg.Kernel, "backend", b, "pkg", p.Name,
				"result", string(res), "exit", fmt.Sprint(code), "secs", secs)
			if res == Pass {
				passed++
			} else {
				failed++
			}
		}
	}
	verdict := Pass
	if failed > 0 {
		verdict = Fail
	}
	marker("VERDICT", "kernel", cfg.Kernel, "result", string(verdict),
		"passed", fmt.Sprint(passed), "failed", fmt.Sprint(failed))
}

// runOne runs one test binary to its end and reaps every orphan that gets
// reparented to init meanwhile.
func runOne(cfg *Config, backend string, p Package) (Result, int) {
	null, err := os.Open("/dev/null")
	if err != nil {
		logf("ERROR: %v", err)
		return Fail, -1
	}
	defer null.Close()
	proc, err := os.StartProcess(p.Binary, TestArgs(cfg, p), &os.ProcAttr{
		Dir:   p.Dir,
		Env:   TestEnv(os.Environ(), cfg, backend),
		Files: []*os.File{null, console, console},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		logf("ERROR: start %s: %v", p.Binary, err)
		return Fail, -1
	}
	pid := proc.Pid
	timedOut := make(chan struct{})
	timer := time.AfterFunc(cfg.Timeout+killGrace, func() {
		close(timedOut)
		logf("ERROR: %s (backend %s) still running %s after -test.timeout; killing it", p.Name, backend, killGrace)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	})
	defer timer.Stop()
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			logf("ERROR: wait: %v", err)
			return Fail, -1
		}
		if got != pid {
			continue // an orphan: reaped
		}
		// Whatever the test left behind in its process group goes too.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		reapOrphans()
		code := ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		select {
		case <-timedOut:
			return Timeout, code
		default:
		}
		if ws.Exited() && code == 0 {
			return Pass, 0
		}
		return Fail, code
	}
}

func reapOrphans() {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if got <= 0 || err != nil {
			return
		}
	}
}

func shell() {
	logf("VMTEST_SHELL: starting /bin/sh on the console; 'exit' powers off")
	tty, err := os.OpenFile("/dev/ttyS0", os.O_RDWR, 0)
	if err != nil {
		tty = console
	}
	proc, err := os.StartProcess("/bin/sh", []string{"-sh"}, &os.ProcAttr{
		Dir:   "/",
		Env:   os.Environ(),
		Files: []*os.File{tty, tty, tty},
		Sys:   &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0},
	})
	if err != nil {
		logf("ERROR: shell: %v", err)
		return
	}
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || got == proc.Pid {
			return
		}
	}
}

func powerOff() {
	syscall.Sync()
	logf("powering off")
	_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	// Only reached if the reboot call failed: never return from PID 1.
	for {
		time.Sleep(time.Hour)
	}
}
