package main

// Containers as runtimes make them: runc with Kubernetes-style cgroup paths
// (both cgroup drivers' shapes) and a real Docker daemon. The container id,
// pod uid and names on every event, and --container with an unshare beside
// the container as the negative control.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/dockertest"
)

func randomHex(n int) string {
	b := make([]byte, n/2)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newUUID() string {
	h := randomHex(32)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// runcInitPid is the pid of container id's first process (runc state).
func runcInitPid(t *testing.T, id string) int {
	t.Helper()
	out, err := exec.Command("runc", "state", id).Output()
	if err != nil {
		t.Fatalf("runc state %s: %v", id, err)
	}
	var st struct{ Pid int }
	if err := json.Unmarshal(out, &st); err != nil || st.Pid == 0 {
		t.Fatalf("runc state %s: %v: %s", id, err, out)
	}
	return st.Pid
}

// removeCgroupsAt removes cgroup path rel (and its parents) from every
// cgroup hierarchy mounted here, deepest first, once it is empty.
func removeCgroupsAt(rel string) {
	mounts, _ := filepath.Glob("/sys/fs/cgroup/*")
	mounts = append(mounts, "/sys/fs/cgroup")
	for _, m := range mounts {
		for d := filepath.Join(m, rel); d != m && strings.HasPrefix(d, m+"/"); d = filepath.Dir(d) {
			os.Remove(d)
		}
	}
}

// 30. runc with the cgroup paths Kubernetes makes, cgroupfs driver
// (/kubepods/burstable/pod<uid>/<id>) and systemd driver's names: every
// event of the container's namespaces carries its id, the pod uid and, for
// a runtime the path names, the runtime; --container <id prefix> prints
// those and nothing of an unshare run beside it.
func TestRuncKubernetesCgroups(t *testing.T) {
	needTools(t, "runc", "busybox", "unshare")
	h := hierarchy(t)
	for _, style := range []struct {
		name    string
		path    func(uid, id string) string
		runtime string
	}{
		{"cgroupfs", func(uid, id string) string { return "/kubepods/burstable/pod" + uid + "/" + id }, ""},
		{"systemd", func(uid, id string) string {
			u := strings.ReplaceAll(uid, "-", "_")
			return "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/cri-containerd-" + id + ".scope"
		}, "containerd"},
	} {
		t.Run(style.name, func(t *testing.T) {
			uid, id := newUUID(), randomHex(64)
			cgPath := style.path(uid, id)
			bundle := runcBundle(t, func(spec map[string]any) {
				spec["linux"].(map[string]any)["cgroupsPath"] = cgPath
			})
			t.Cleanup(func() { removeCgroupsAt(filepath.Dir(cgPath)) })
			a := startTracer(t, "json", "--container", id[:12])
			b := startTracer(t, "json")
			other := startUnshared(t)
			other.lifecycle(t, b)

			t.Cleanup(func() { exec.Command("runc", "delete", "--force", id).Run() })
			p := startNSProc(t, exec.Command("runc", "run", "--bundle", bundle, id))
			if got := cgroupOf(t, runcInitPid(t, id), h); got != cgPath {
				t.Fatalf("runc put the container in %s, want %s", got, cgPath)
			}
			types := differingTypes(p.ns, selfNS(t))
			var wants []wantEvent
			for _, typ := range types {
				wants = append(wants, wantEvent{desc: fmt.Sprintf("create %s %d", typ, p.ns[nsKey(typ)]), match: isEv("create", typ, p.ns[nsKey(typ)])})
			}
			related := func(e *jsonEvent) bool { return e.ContainerID == id || e.Event == "lost" }
			a.watch()
			creates := a.await(eventTimeout(), related, wants...)
			check := func(e *jsonEvent, c *jsonContext) {
				if c.ContainerID != id || c.PodUID != uid || c.Runtime != style.runtime || c.Cgroup != cgPath {
					t.Errorf("want container_id %s, pod_uid %s, runtime %q, cgroup %s\n    event: %s", id, uid, style.runtime, cgPath, e)
				}
			}
			for _, e := range creates {
				check(e, &e.jsonContext)
			}
			p.release()
			var dwants []wantEvent
			for _, c := range creates {
				dwants = append(dwants, wantEvent{desc: fmt.Sprintf("destroy %s ns_id %d", c.Type, c.NsID),
					match: func(e *jsonEvent) bool { return e.Event == "destroy" && e.Type == c.Type && e.NsID == c.NsID }})
			}
			for _, e := range a.await(scaled(8*time.Second), related, dwants...) {
				check(e, &e.jsonContext)
				if e.Owner == nil {
					t.Errorf("destroy without owner: %s", e)
				} else {
					check(e, &e.Owner.jsonContext)
				}
			}
			b.stop(os.Interrupt)
			for _, e := range a.stop(os.Interrupt) {
				if e.Event == "lost" {
					continue
				}
				if e.PID == other.pid() || (e.Owner != nil && e.Owner.PID == other.pid()) {
					t.Errorf("--container %s printed an event of the unshare beside it: %s", id[:12], e)
				}
				if e.ContainerID != id {
					t.Errorf("--container %s printed an event of another container or none: %s", id[:12], e)
				}
			}
		})
	}
}

// 31. A real Docker daemon: `docker run --rm --name NAME --network none`
// while an unshare runs outside any container. nstrace --container NAME
// (a name only the daemon knows, of a container created after nstrace
// started) prints the container's creates, nsproxy releases and destroys,
// each with its id, name, image and runtime, and nothing of the unshare.
func TestDockerContainer(t *testing.T) {
	if os.Getenv("NSTRACE_TEST_VM") == "1" {
		t.Skip("SKIPPED: Docker is tested in the host suite; the VM image has no Docker daemon")
	}
	needRoot(t, "runs a Docker daemon")
	d := dockertest.Start(t)
	img := d.Image(t)
	name := "web-" + randomHex(8)
	a := startTracer(t, "json", "--container", name, "--docker-socket", d.Socket)
	text := startTracer(t, "text", "--docker-socket", d.Socket)
	b := startTracer(t, "json")
	other := startUnshared(t)
	other.lifecycle(t, b)

	cid := filepath.Join(t.TempDir(), "cid")
	d.Docker(t, "run", "--rm", "--name", name, "--network", "none", "--cidfile", cid, img, "true")
	raw, err := os.ReadFile(cid)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(string(raw))
	a.watch()
	related := func(e *jsonEvent) bool { return e.ContainerID == id || e.Event == "lost" }
	var wants []wantEvent
	for _, typ := range []string{"mnt", "uts", "ipc", "pid", "net"} {
		wants = append(wants, wantEvent{desc: "create " + typ + " of the container", match: func(e *jsonEvent) bool { return e.Event == "create" && e.Type == typ }})
	}
	wants = append(wants, wantEvent{desc: "nsproxy_free in the container", match: func(e *jsonEvent) bool { return e.Event == "nsproxy_free" }})
	found := a.await(scaled(5*time.Second), related, wants...)
	var dwants []wantEvent
	for _, c := range found[:5] {
		dwants = append(dwants, wantEvent{desc: fmt.Sprintf("destroy %s ns_id %d", c.Type, c.NsID),
			match: func(e *jsonEvent) bool { return e.Event == "destroy" && e.Type == c.Type && e.NsID == c.NsID }})
	}
	a.await(scaled(8*time.Second), related, dwants...)
	b.stop(os.Interrupt)
	evs := a.stop(os.Interrupt)
	mine := map[uint64]bool{} // the container's namespaces, by inum
	for _, e := range evs {
		if e.Event == "create" {
			mine[e.Inum] = true
		}
	}
	isWeb := func(c *jsonContext) bool {
		return c.ContainerID == id && c.ContainerName == name && c.Runtime == "docker" && c.Image == img
	}
	for _, e := range evs {
		// README: creates, nsproxy releases and destroys carry the
		// container's context; a join into its namespaces by another
		// process (dockerd setting up its network) carries it as the
		// owner's, and a release of that process's nsproxy holds one of
		// the container's namespaces.
		ok := isWeb(&e.jsonContext)
		switch e.Event {
		case "lost":
			continue
		case "join":
			ok = ok || (e.Owner != nil && isWeb(&e.Owner.jsonContext))
		case "nsproxy_free":
			for _, inum := range e.Namespaces {
				ok = ok || mine[inum]
			}
		}
		if !ok {
			t.Errorf("--container %s: want container_id %s, container_name %s, runtime docker, image %s\n    event: %s", name, id, name, img, e)
		}
		if e.PID == other.pid() || (e.Owner != nil && e.Owner.PID == other.pid()) {
			t.Errorf("--container %s printed an event of the unshare outside: %s", name, e)
		}
	}
	// The text output names the container in its CONTAINER column.
	if !text.waitUntil(eventTimeout(), func(_ []*jsonEvent, lines []outLine) bool {
		for _, l := range lines {
			if f := strings.Fields(l.text); len(f) > 6 && f[1] == "create" && f[6] == name {
				return true
			}
		}
		return false
	}) {
		t.Errorf("text output has no create line with CONTAINER %s:\n%s", name, joinLines(text.outLines()))
	}
	text.stop(os.Interrupt)
}
