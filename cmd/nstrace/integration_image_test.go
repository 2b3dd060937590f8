package main

// The container image and the DaemonSet: the manifest decodes strictly into
// Kubernetes' own types; the Dockerfile builds with the real Docker daemon,
// offline (the Go image it builds with is made here from this machine's Go
// and module cache); and the image, run with the DaemonSet's settings,
// traces a namespace created on the host.

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/nstrace/nstrace/internal/dockertest"
)

// repoRoot is the repository's top directory (this package is cmd/nstrace).
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(wd, "..", "..")
	if _, err := os.Stat(filepath.Join(root, "Dockerfile")); err != nil {
		t.Skipf("SKIPPED: no Dockerfile at %s (the test runs from a checkout): %v", root, err)
	}
	return root
}

// daemonSet reads deploy/daemonset.yaml into the Kubernetes API's types,
// refusing any field they do not have.
func daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(raw, &ds); err != nil {
		t.Fatalf("deploy/daemonset.yaml: %v", err)
	}
	return &ds
}

func TestDaemonSetManifest(t *testing.T) {
	ds := daemonSet(t)
	if ds.APIVersion != "apps/v1" || ds.Kind != "DaemonSet" {
		t.Errorf("apiVersion %q kind %q, want apps/v1 DaemonSet", ds.APIVersion, ds.Kind)
	}
	spec := &ds.Spec.Template.Spec
	if !spec.HostPID {
		t.Errorf("hostPID is not set: nstrace would see the pod's processes, not the node's")
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
	}) {
		t.Errorf("no toleration of every taint (operator Exists, no key): some nodes would go untraced")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := &spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged != nil && *sc.Privileged || sc.Capabilities == nil ||
		!slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) == 0 {
		t.Errorf("security context %+v: want not privileged, every capability dropped and the needed ones added", sc)
	}
	if sc != nil && (sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem) {
		t.Errorf("the root file system is writable")
	}
	args := strings.Join(c.Args, " ")
	if !strings.Contains(args, "-o json") || !strings.Contains(args, "--metrics-addr") {
		t.Errorf("args %q: want JSON on stdout (-o json) and --metrics-addr", args)
	}
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
		return p.Name == "metrics" && strings.Contains(args, fmt.Sprint(p.ContainerPort))
	}) {
		t.Errorf("ports %+v: want one named metrics, on the port of --metrics-addr", c.Ports)
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("resources %+v: want a memory limit and a CPU request", c.Resources)
	}
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = true
	}
	for _, p := range []string{"/sys/kernel/btf", "/sys/kernel/tracing"} {
		if !mounts[p] {
			t.Errorf("no volume mounted on %s", p)
		}
	}
	// The flags given are nstrace's.
	var opts options
	var raw rawFlags
	if err := newFlagSet(&opts, &raw, io.Discard).Parse(c.Args); err != nil {
		t.Errorf("args %q: %v", args, err)
	}
}

// dockerRunArgs translates the DaemonSet's pod settings into docker run's.
func dockerRunArgs(t *testing.T, ds *appsv1.DaemonSet) []string {
	t.Helper()
	spec := &ds.Spec.Template.Spec
	c := &spec.Containers[0]
	var a []string
	if spec.HostPID {
		a = append(a, "--pid=host")
	}
	sc := c.SecurityContext
	for _, d := range sc.Capabilities.Drop {
		a = append(a, "--cap-drop="+string(d))
	}
	// Debian 12's dockerd (20.10) predates CAP_BPF and CAP_PERFMON and
	// refuses them; CAP_SYS_ADMIN, which the manifest adds too, covers
	// what they allow. containerd, under Kubernetes, knows them.
	old := dockerdVersion < 23
	for _, ad := range sc.Capabilities.Add {
		if old && (ad == "BPF" || ad == "PERFMON") {
			t.Logf("dockerd %d does not know CAP_%s: left out (CAP_SYS_ADMIN covers it)", dockerdVersion, ad)
			continue
		}
		a = append(a, "--cap-add="+string(ad))
	}
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		a = append(a, "--read-only")
	}
	if sc.RunAsUser != nil {
		a = append(a, fmt.Sprintf("--user=%d", *sc.RunAsUser))
	}
	if lim := c.Resources.Limits.Memory(); !lim.IsZero() {
		a = append(a, fmt.Sprintf("--memory=%d", lim.Value()))
	}
	vols := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		vols[spec.Volumes[i].Name] = &spec.Volumes[i]
	}
	for _, m := range c.VolumeMounts {
		v := vols[m.Name]
		if v == nil || v.HostPath == nil {
			t.Fatalf("volume %q is not a hostPath: no docker equivalent here", m.Name)
		}
		ro := ""
		if m.ReadOnly {
			ro = ":ro"
		}
		a = append(a, "-v", v.HostPath.Path+":"+m.MountPath+ro)
	}
	return a
}

// dockerdVersion is the major version of the test's dockerd.
var dockerdVersion int

// goBuilderImage imports, as name, an image with this machine's Go, its
// module cache and a busybox shell: what the Dockerfile's BUILDER needs,
// without a registry.
func goBuilderImage(t *testing.T, d *dockertest.Daemon, name string) {
	t.Helper()
	goroot := runtime.GOROOT()
	out, err := exec.Command(filepath.Join(goroot, "bin", "go"), "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	modcache := strings.TrimSpace(string(out))
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skipf("SKIPPED: no busybox for the builder image's shell: %v", err)
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := func() error {
			now := time.Now()
			for _, dir := range []string{"bin", "tmp", "root", "etc", "usr/local"} {
				mode := int64(0o755)
				if dir == "tmp" {
					mode = 0o1777
				}
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: mode, ModTime: now}); err != nil {
					return err
				}
			}
			if err := addFile(tw, bb, "bin/busybox"); err != nil {
				return err
			}
			for _, a := range []string{"sh", "mkdir", "cp", "ls", "rm", "cat", "env"} {
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: now}); err != nil {
					return err
				}
			}
			if err := addTree(tw, goroot, "usr/local/go"); err != nil {
				return err
			}
			// The downloads alone: go extracts them into the cache anew.
			return addTree(tw, filepath.Join(modcache, "cache", "download"), "go/pkg/mod/cache/download")
		}()
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	t0 := time.Now()
	cmd := d.Command(context.Background(), "import",
		"--change", "ENV PATH=/usr/local/go/bin:/bin",
		"--change", "ENV GOROOT=/usr/local/go",
		"--change", "ENV GOMODCACHE=/go/pkg/mod",
		"--change", "ENV GOCACHE=/tmp/go-build",
		"--change", "ENV GOPROXY=off",
		"--change", "ENV GOFLAGS=-mod=mod",
		"--change", "ENV GOTOOLCHAIN=local",
		"--change", "ENV HOME=/root",
		"-", name)
	cmd.Stdin = pr
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker import of the Go builder: %v\n%s", err, out)
	}
	t.Logf("Go builder image imported in %v", time.Since(t0).Round(time.Millisecond))
}

func addFile(tw *tar.Writer, path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(fi.Mode().Perm()), Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// addTree adds the tree at root to tw under name.
func addTree(tw *tar.Writer, root, name string) error {
	return filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		dst := filepath.ToSlash(filepath.Join(name, rel))
		info, err := de.Info()
		if err != nil {
			return err
		}
		switch {
		case de.IsDir():
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dst + "/", Mode: 0o755, ModTime: info.ModTime()})
		case info.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: dst, Linkname: l, Mode: 0o777, ModTime: info.ModTime()})
		case info.Mode().IsRegular():
			return addFile(tw, path, dst)
		}
		return nil
	})
}

func TestContainerImage(t *testing.T) {
	if os.Getenv("NSTRACE_TEST_VM") == "1" {
		t.Skip("SKIPPED: the image is built and run in the host suite; the VM image has no Docker daemon")
	}
	needRoot(t, "runs a Docker daemon")
	needTools(t, "unshare", "readlink")
	root := repoRoot(t)
	ds := daemonSet(t)
	d := dockertest.Start(t)
	fmt.Sscanf(d.Docker(t, "version", "-f", "{{.Server.Version}}"), "%d", &dockerdVersion)
	goBuilderImage(t, d, "nstrace-test/go-builder")

	t0 := time.Now()
	build := d.Command(context.Background(), "build", "-q", "-t", "nstrace-test:latest",
		"--build-arg", "BUILDER=nstrace-test/go-builder", "--build-arg", "COMMIT=image-test", root)
	build.Env = append(build.Env, "DOCKER_BUILDKIT=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Logf("image built in %v", time.Since(t0).Round(time.Millisecond))
	// FROM scratch: the binary and nothing else.
	layers := d.Docker(t, "image", "inspect", "-f", "{{len .RootFS.Layers}} {{.Config.Entrypoint}}", "nstrace-test:latest")
	if layers != "1 [/nstrace]" {
		t.Errorf("image: %q, want one layer and entrypoint /nstrace", layers)
	}
	if v := d.Docker(t, "run", "--rm", "nstrace-test:latest", "--version"); !strings.Contains(v, "commit:     image-test") {
		t.Errorf("nstrace --version in the image:\n%s", v)
	}

	// Run with the DaemonSet's settings (and its arguments, but for the
	// metrics address: this daemon's containers have no network).
	c := &ds.Spec.Template.Spec.Containers[0]
	args := append([]string{"run", "--rm", "--name", "nstrace-image-test", "--network", "none"}, dockerRunArgs(t, ds)...)
	args = append(append(args, "nstrace-test:latest"), c.Args...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := d.Command(ctx, args...)
	stdout, err := run.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := run.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		d.Command(context.Background(), "kill", "nstrace-image-test").Run()
		run.Wait()
	}()
	var errLog strings.Builder
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			errLog.WriteString(sc.Text() + "\n")
			if m := readyRE.FindStringSubmatch(sc.Text()); m != nil {
				ready <- m[1]
			}
		}
		close(ready)
	}()
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	backend, ok := <-ready
	if !ok {
		var rest []string
		for l := range lines {
			rest = append(rest, l)
		}
		t.Fatalf("nstrace in the container printed no ready line (%v); docker %s\nstdout:\n%s\nstderr:\n%s", run.Wait(), strings.Join(args, " "), strings.Join(rest, "\n"), errLog.String())
	}
	t.Logf("nstrace in the container traces with %s", backend)

	// Ground truth: the inum the host's kernel gives the namespace.
	pid, out := runProgram(t, "unshare", "-u", "readlink", "/proc/self/ns/uts")
	inum, err := parseNSLink("uts", strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`"event":"create","type":"uts","inum":%d,`, inum)
	deadline := time.After(scaled(10 * time.Second))
	for found := false; !found; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the container's output ended before the create of uts %d by pid %d; stderr:\n%s", inum, pid, errLog.String())
			}
			found = strings.Contains(l, want) && strings.Contains(l, fmt.Sprintf(`"pid":%d,`, pid))
		case <-deadline:
			t.Fatalf("no create of uts namespace %d (unshare, pid %d on the host) from nstrace in the container; stderr:\n%s", inum, pid, errLog.String())
		}
	}
	d.Docker(t, "stop", "-t", "10", "nstrace-image-test")
	if err := run.Wait(); err != nil {
		t.Errorf("docker run of nstrace ended with %v (SIGTERM should end it with 0); stderr:\n%s", err, errLog.String())
	}
}
