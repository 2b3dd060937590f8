// Package dockertest runs a private Docker daemon for tests.
//
// Start runs Debian's dockerd (docker.io) with its own containerd, both on
// private sockets and directories, so that nothing is shared with a Docker or
// containerd of the host, and tears everything down at the end of the test.
// It needs root; without it, or without the programs, tests are skipped
// (or fail with NSTRACE_TEST_STRICT=1).
package dockertest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/snapshot"
)

// Programs the fixture runs. The docker CLI is Debian's: another docker
// may come first in PATH.
const (
	DockerCLI = "/usr/bin/docker"
	dockerd   = "dockerd"
)

// ImageName is the tag of the image made by Image.
const ImageName = "nstrace-busybox:test"

// Applets linked to bin/busybox in the image.
var applets = []string{
	"sh", "sleep", "cat", "readlink", "true", "false", "echo", "ls", "ps",
	"mkdir", "rm", "touch", "ln", "env", "id", "hostname", "unshare",
	"nsenter", "mount", "umount", "kill", "wc", "grep", "head", "tail",
	"sync", "test", "[", "printf", "stat", "date", "uname",
}

// Daemon is a dockerd (and the containerd it uses) private to one test.
type Daemon struct {
	Socket string // unix socket path
	Root   string // its data-root

	base       string // every directory and socket of the daemon is under base
	execRoot   string
	pidfile    string
	config     string
	ctrdSocket string
	ctrdConfig string
	logPath    string // dockerd's log
	ctrdLog    string // containerd's log
	args       []string

	dockerd    *proc
	containerd *proc

	imageMu   sync.Mutex
	imageDone bool
}

// proc is a started process and the result of waiting for it.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait returned
	err  error
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func strict() bool { return os.Getenv("NSTRACE_TEST_STRICT") == "1" }

// need skips the test (fails it with NSTRACE_TEST_STRICT=1) if !ok.
func need(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	what := fmt.Sprintf(format, args...)
	if strict() {
		t.Fatalf("NSTRACE_TEST_STRICT=1 and a requirement is missing: %s", what)
	}
	t.Skipf("SKIPPED, REQUIREMENT MISSING: %s (NSTRACE_TEST_STRICT=1 turns this into a failure)", what)
}

// Start runs dockerd (Debian's docker.io) for the test on a private socket,
// data-root, exec-root and pidfile, with its own containerd, and registers a
// t.Cleanup that removes its containers, stops both, unmounts what is left
// under their directories and deletes them. It fails the test if the daemon
// does not answer /_ping within 60 s, showing its log.
func Start(t testing.TB) *Daemon {
	t.Helper()
	need(t, os.Geteuid() == 0, "root (euid %d): to run dockerd", os.Geteuid())
	dockerdPath, err := exec.LookPath(dockerd)
	if err != nil {
		// Debian's is in /usr/sbin, which a user's PATH may lack.
		if _, e := os.Stat("/usr/sbin/dockerd"); e == nil {
			dockerdPath, err = "/usr/sbin/dockerd", nil
		}
	}
	need(t, err == nil, "program dockerd (Debian package docker.io): %v", err)
	_, err = os.Stat(DockerCLI)
	need(t, err == nil, "program %s (Debian package docker.io): %v", DockerCLI, err)
	ctrdPath, err := exec.LookPath("containerd")
	need(t, err == nil, "program containerd (Debian package containerd): %v", err)
	for _, p := range []string{"runc", "containerd-shim-runc-v2"} {
		_, err := exec.LookPath(p)
		need(t, err == nil, "program %s in PATH: %v", p, err)
	}

	// Unix socket paths are limited to 108 bytes and dockerd puts some
	// under its exec-root, so the directories live in a short /tmp/dtNNN
	// rather than in t.TempDir().
	base, err := os.MkdirTemp("/tmp", "dt")
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	logDir := t.TempDir()
	d := &Daemon{
		Socket:     filepath.Join(base, "docker.sock"),
		Root:       filepath.Join(base, "root"),
		base:       base,
		execRoot:   filepath.Join(base, "exec"),
		pidfile:    filepath.Join(base, "dockerd.pid"),
		config:     filepath.Join(base, "daemon.json"),
		ctrdSocket: filepath.Join(base, "containerd", "containerd.sock"),
		ctrdConfig: filepath.Join(base, "containerd", "config.toml"),
		logPath:    filepath.Join(logDir, "dockerd.log"),
		ctrdLog:    filepath.Join(logDir, "containerd.log"),
	}
	t.Cleanup(func() { d.cleanup(t) })

	for _, dir := range []string{d.Root, d.execRoot, filepath.Join(base, "containerd"), filepath.Join(base, "cli")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatalf("dockertest: %v", err)
		}
	}

	// containerd: everything under base, no CRI (it wants CNI and more),
	// no debug or metrics sockets, nothing in /opt/containerd.
	ctrdToml := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = ""

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(base, "containerd", "root"), filepath.Join(base, "containerd", "state"),
		d.ctrdSocket, filepath.Join(base, "containerd", "opt"))
	if err := os.WriteFile(d.ctrdConfig, []byte(ctrdToml), 0o600); err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	// The config file replaces /etc/docker/daemon.json; the key path keeps
	// dockerd 20.10 from writing /etc/docker/key.json.
	cfg, _ := json.Marshal(map[string]any{"deprecated-key-path": filepath.Join(base, "key.json")})
	if err := os.WriteFile(d.config, cfg, 0o600); err != nil {
		t.Fatalf("dockertest: %v", err)
	}

	t0 := time.Now()
	d.containerd, err = startProc(ctrdPath, []string{"--config", d.ctrdConfig}, d.ctrdLog)
	if err != nil {
		t.Fatalf("dockertest: starting containerd: %v", err)
	}
	if err := waitFor(60*time.Second, d.containerd, func() bool {
		c, err := net.DialTimeout("unix", d.ctrdSocket, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		t.Fatalf("dockertest: containerd did not come up: %v\n--- containerd log:\n%s", err, tailFile(d.ctrdLog))
	}

	d.args = []string{
		"--config-file=" + d.config,
		"--host=unix://" + d.Socket,
		"--data-root=" + d.Root,
		"--exec-root=" + d.execRoot,
		"--pidfile=" + d.pidfile,
		"--containerd=" + d.ctrdSocket,
		"--iptables=false",
		"--ip-forward=false", // else it sets net.ipv4.ip_forward=1 on the host
		"--ip-masq=false",
		"--bridge=none",
		"--log-level=info",
	}
	if dockerdHasFlag(dockerdPath, "--ip6tables") {
		d.args = append(d.args, "--ip6tables=false")
	}
	if overlayWorks(base) {
		d.args = append(d.args, "--storage-driver=overlay2")
	} else {
		d.args = append(d.args, "--storage-driver=vfs")
	}
	d.startDockerd(t, dockerdPath)
	t.Logf("dockertest: dockerd on %s ready in %v", d.Socket, time.Since(t0).Round(time.Millisecond))
	return d
}

func (d *Daemon) startDockerd(t testing.TB, path string) {
	t.Helper()
	var err error
	d.dockerd, err = startProc(path, d.args, d.logPath)
	if err != nil {
		t.Fatalf("dockertest: starting dockerd: %v", err)
	}
	if err := waitFor(60*time.Second, d.dockerd, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := d.api(ctx, "GET", "/_ping", nil)
		return err == nil
	}); err != nil {
		t.Fatalf("dockertest: dockerd did not answer /_ping: %v\n--- dockerd log:\n%s\n--- containerd log:\n%s",
			err, tailFile(d.logPath), tailFile(d.ctrdLog))
	}
}

// Restart stops dockerd (not its containerd: containers without a restart
// policy are stopped) and starts it again on the same directories, for tests of
// clients that must survive a daemon restart.
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	if d.dockerd == nil {
		t.Fatalf("dockertest: Restart of a daemon that is not running")
	}
	stopProc(t, "dockerd", d.dockerd, 20*time.Second)
	d.startDockerd(t, d.dockerd.cmd.Path)
}

// Image makes (once per daemon) an image from a busybox-static root with
// docker import: bin/busybox plus applet symlinks (sh, sleep, cat, readlink,
// true, echo and more), tagged ImageName, and returns its name.
func (d *Daemon) Image(t testing.TB) string {
	t.Helper()
	d.imageMu.Lock()
	defer d.imageMu.Unlock()
	if d.imageDone {
		return ImageName
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		bb = "/bin/busybox"
	}
	bin, err := os.ReadFile(bb)
	need(t, err == nil, "busybox (Debian package busybox-static): %v", err)
	need(t, isStatic(bin), "a static busybox (Debian package busybox-static), %s is dynamic", bb)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	dir := func(name string, mode int64) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: now})
	}
	for _, n := range []string{"bin", "dev", "etc", "proc", "sys", "root"} {
		dir(n, 0o755)
	}
	dir("tmp", 0o1777)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: now})
	tw.Write(bin)
	for _, a := range applets {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: now})
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("dockertest: making the image tar: %v", err)
	}

	t0 := time.Now()
	cmd := d.command(context.Background(), "import", "--change", "ENV PATH=/bin", "-", ImageName)
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dockertest: docker import: %v\n%s", err, out)
	}
	t.Logf("dockertest: image %s imported in %v", ImageName, time.Since(t0).Round(time.Millisecond))
	d.imageDone = true
	return ImageName
}

// Docker runs /usr/bin/docker -H unix://Socket with args and returns its
// combined output without trailing white space, failing the test on error.
// Call it from the test's goroutine.
func (d *Daemon) Docker(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := d.command(ctx, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dockertest: docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimRight(string(out), " \t\r\n")
}

// Command is the docker CLI talking to d, for a test that needs its
// standard streams (docker run attached, docker import from stdin).
func (d *Daemon) Command(ctx context.Context, args ...string) *exec.Cmd {
	return d.command(ctx, args...)
}

// command is the docker CLI talking to d, with a private configuration
// directory and no DOCKER_* variables of the environment.
func (d *Daemon) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, DockerCLI, append([]string{"-H", "unix://" + d.Socket}, args...)...)
	env := []string{"DOCKER_CONFIG=" + filepath.Join(d.base, "cli")}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "DOCKER_") {
			env = append(env, e)
		}
	}
	cmd.Env = env
	return cmd
}

// api does one request of the Engine API and returns the body of a 2xx answer.
func (d *Daemon) api(ctx context.Context, method, path string, body io.Reader) ([]byte, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

// cleanup removes the containers, stops dockerd then containerd, kills
// shims left behind, unmounts what is left under base and removes it.
func (d *Daemon) cleanup(t testing.TB) {
	if d.dockerd != nil && !d.dockerd.exited() {
		d.removeContainers(t)
		stopProc(t, "dockerd", d.dockerd, 20*time.Second)
	}
	if d.containerd != nil && !d.containerd.exited() {
		stopProc(t, "containerd", d.containerd, 20*time.Second)
	}
	d.killShims(t)
	if err := unmountUnder(d.base); err != nil {
		t.Errorf("dockertest: %v", err)
	}
	if err := os.RemoveAll(d.base); err != nil {
		t.Errorf("dockertest: removing %s: %v", d.base, err)
	}
	if t.Failed() {
		t.Logf("dockertest: dockerd %v\n--- dockerd log (%s):\n%s\n--- containerd log (%s):\n%s",
			d.args, d.logPath, tailFile(d.logPath), d.ctrdLog, tailFile(d.ctrdLog))
	}
}

func (d *Daemon) removeContainers(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := d.api(ctx, "GET", "/containers/json?all=1", nil)
	if err != nil {
		t.Logf("dockertest: listing containers: %v", err)
		return
	}
	var list []struct {
		ID string `json:"Id"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Logf("dockertest: listing containers: %v", err)
		return
	}
	var wg sync.WaitGroup
	for _, c := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.api(ctx, "DELETE", "/containers/"+url.PathEscape(c.ID)+"?force=1&v=1", nil); err != nil {
				t.Logf("dockertest: removing container %.12s: %v", c.ID, err)
			}
		}()
	}
	wg.Wait()
}

// killShims kills containerd shims still serving d's containerd (none if
// every container was removed), found by the socket path in their command line.
func (d *Daemon) killShims(t testing.TB) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || pid <= 1 {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for _, a := range args {
			if a == d.ctrdSocket || a == "unix://"+d.ctrdSocket {
				t.Logf("dockertest: killing leftover %s (pid %d)", args[0], pid)
				syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
}

func startProc(path string, args []string, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a ^C of the test does not reach it
	// before the cleanup does; killed should the test process die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Pdeathsig is sent when the thread that forked exits, and a thread
	// exits when a goroutine locked to it does (as tests with setns do):
	// fork and wait from a thread of their own.
	p := &proc{cmd: cmd, done: make(chan struct{})}
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return // and the thread with it
		}
		started <- nil
		p.err = cmd.Wait()
		runtime.UnlockOSThread()
		logf.Close()
		close(p.done)
	}()
	if err := <-started; err != nil {
		logf.Close()
		return nil, err
	}
	return p, nil
}

// stopProc sends SIGTERM, waits up to grace, then SIGKILLs and waits.
func stopProc(t testing.TB, name string, p *proc, grace time.Duration) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	t.Logf("dockertest: %s (pid %d) still running %v after SIGTERM, killing it", name, p.cmd.Process.Pid, grace)
	p.cmd.Process.Kill()
	<-p.done
}

// waitFor polls ready until it is true, p exits or timeout passes.
func waitFor(timeout time.Duration, p *proc, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ready() {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("it exited: %v", p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timeout after %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func dockerdHasFlag(path, flag string) bool {
	out, _ := exec.Command(path, "--help").CombinedOutput()
	return bytes.Contains(out, []byte(flag+" ")) || bytes.Contains(out, []byte(flag+"\n"))
}

// overlayWorks tells whether an overlay mount with upper and work directories
// under dir works, as dockerd's overlay2 needs.
func overlayWorks(dir string) bool {
	p, err := os.MkdirTemp(dir, "ovl")
	if err != nil {
		return false
	}
	defer os.RemoveAll(p)
	for _, n := range []string{"l", "u", "w", "m"} {
		if os.Mkdir(filepath.Join(p, n), 0o700) != nil {
			return false
		}
	}
	opts := fmt.Sprintf("lowerdir=%s/l,upperdir=%s/u,workdir=%s/w", p, p, p)
	if err := unix.Mount("overlay", filepath.Join(p, "m"), "overlay", 0, opts); err != nil {
		return false
	}
	unix.Unmount(filepath.Join(p, "m"), unix.MNT_DETACH)
	return true
}

// unmountUnder unmounts (lazily, deepest first) every mount at or under dir.
func unmountUnder(dir string) error {
	var errs []error
	for range 3 {
		mps, err := mountsUnder(dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		errs = errs[:0]
		for _, mp := range mps {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
			}
		}
	}
	if mps, _ := mountsUnder(dir); len(mps) > 0 {
		errs = append(errs, fmt.Errorf("mounts left under %s: %v", dir, mps))
	}
	return errors.Join(errs...)
}

func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := snapshot.UnescapeMountPath(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// Deepest first.
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	return mps, nil
}

// isStatic tells whether an ELF executable has no program interpreter.
func isStatic(bin []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return false
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// tailFile returns the end (up to 64 KiB) of a log file.
func tailFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	if len(b) > 64<<10 {
		b = append([]byte("...\n"), b[len(b)-64<<10:]...)
	}
	return string(b)
}
