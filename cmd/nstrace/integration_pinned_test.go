package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// 11. Namespaces pinned by a bind mount or by an open /proc/PID/ns file
// outlive their process: the destroy comes when the pin goes, not at exit.
func TestPinnedNamespaces(t *testing.T) {
	for _, pin := range []string{"bind_mount", "fd"} {
		t.Run(pin, func(t *testing.T) {
			needTools(t, "unshare", "sh", "readlink")
			tr := startTracer(t, "json")
			types := []string{"ipc", "net", "uts"}

			// unshare --uts=FILE bind-mounts the new namespace on FILE.
			wrapper := []string{"unshare"}
			var mounts []string
			for _, typ := range types {
				if pin == "bind_mount" {
					f := filepath.Join(t.TempDir(), typ)
					if err := os.WriteFile(f, nil, 0o644); err != nil {
						t.Fatal(err)
					}
					mounts = append(mounts, f)
					wrapper = append(wrapper, "--"+typ+"="+f)
				} else {
					wrapper = append(wrapper, "--"+typ)
				}
			}
			started := time.Now()
			p := startNSProc(t, shCmd(append(wrapper, "--")...))
			c := newChange(t, "create", p.pid(), "unshare", "unshare", types, p.ns).withRaw(flagsFor(types...), ^uint64(0))
			creates := c.expect(tr)

			var files []*os.File
			for _, typ := range types {
				if pin == "fd" {
					f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", p.pid(), typ))
					if err != nil {
						t.Fatal(err)
					}
					files = append(files, f)
				}
			}
			t.Cleanup(func() {
				for _, f := range files {
					f.Close()
				}
				for _, m := range mounts {
					unix.Unmount(m, unix.MNT_DETACH)
				}
			})
			unpin := func() {
				for _, m := range mounts {
					if err := unix.Unmount(m, 0); err != nil {
						t.Fatalf("umount %s: %v", m, err)
					}
				}
				for _, f := range files {
					f.Close()
				}
			}
			td := teardown{started: started, pid: p.pid(), inum: c.inum, creates: creates, release: unpin, pinned: true}

			// The process exits, its nsproxy goes, the namespaces stay.
			p.release()
			time.Sleep(scaled(500 * time.Millisecond))
			// Then the pin goes. A type whose pinned teardown the backend
			// announced it cannot see is not awaited; it must still never
			// be reported early (checked here and in expect).
			td.expect(tr)
			evs := tr.stop(os.Interrupt)
			c.verifyExact(t, evs)
			td.verifyHistory(tr, evs)
		})
	}
}

var pinnedBlindSpotRE = regexp.MustCompile(`(?m)^nstrace: blind spot: pinned ([a-z]+) namespace destroy.*$`)

// pinnedBlindSpot returns the startup line in which nstrace said it cannot
// see the destroy of a pinned namespace of type typ, or "".
func (tr *nstraceRun) pinnedBlindSpot(typ string) string {
	for _, m := range pinnedBlindSpotRE.FindAllStringSubmatch(tr.stderrText(), -1) {
		if m[1] == typ {
			return m[0]
		}
	}
	return ""
}
