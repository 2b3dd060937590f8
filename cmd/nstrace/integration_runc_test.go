package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// 12. A runc container with a busybox rootfs: runc's own helper processes
// create the namespaces, so creates are matched by the inums the container
// sees, not by pid; every one is destroyed after the container exits.
func TestRuncContainer(t *testing.T) {
	needTools(t, "runc", "busybox")
	bundle := runcBundle(t, nil)
	tr := startTracer(t, "json")

	id := fmt.Sprintf("nstrace-test-%d", os.Getpid())
	t.Cleanup(func() { exec.Command("runc", "delete", "--force", id).Run() })
	started := tr.started
	p := startNSProc(t, exec.Command("runc", "run", "--bundle", bundle, id))
	self := selfNS(t)
	types := differingTypes(p.ns, self)
	for _, typ := range []string{"ipc", "mnt", "net", "pid", "uts"} {
		if !slices.Contains(types, typ) {
			t.Fatalf("runc did not give the container a new %s namespace (container %v, ours %v)", typ, p.ns, self)
		}
	}

	inum := map[string]uint64{}
	var wants []wantEvent
	for _, typ := range types {
		inum[typ] = p.ns[typ]
		wants = append(wants, wantEvent{
			desc:  fmt.Sprintf("create type=%s inum=%d", typ, p.ns[typ]),
			match: func(e *jsonEvent) bool { return e.Event == "create" && e.Type == typ && e.Inum == p.ns[typ] },
		})
	}
	related := func(e *jsonEvent) bool {
		for _, v := range inum {
			if e.Inum == v {
				return true
			}
		}
		return e.Event == "lost"
	}
	found := tr.await(eventTimeout(), related, wants...)
	creates := map[string]*jsonEvent{}
	for i, typ := range types {
		e := found[i]
		creates[typ] = e
		if !slices.Contains([]string{"clone", "clone3", "unshare"}, e.Syscall) || e.OldInum != self[nsKey(typ)] ||
			e.CloneFlagsRaw&cloneNewFlag[typ] == 0 {
			t.Errorf("runc's %s create: want syscall clone/clone3/unshare, old_inum %d and %s in clone_flags_raw\n    event: %s",
				typ, self[nsKey(typ)], typ, e.line)
		}
	}

	td := teardown{started: started, release: p.release, pid: p.pid(), inum: inum, creates: creates}
	td.expect(tr)
	evs := tr.stop(os.Interrupt)
	td.verifyHistory(tr, evs)
}

// runcBundle makes an OCI bundle whose rootfs is a static busybox and whose
// process is nsScript: it reports its namespaces and waits for stdin. edit,
// if not nil, changes the spec (runc's default) further.
func runcBundle(t *testing.T, edit func(spec map[string]any)) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "rootfs", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	bb, _ := exec.LookPath("busybox")
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "readlink", "cat", "sleep"} {
		if err := os.Symlink("busybox", filepath.Join(bin, applet)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("runc", "spec", "--bundle", dir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	path := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = []string{"/bin/sh", "-c", nsScript}
	if edit != nil {
		edit(spec)
	}
	if raw, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
