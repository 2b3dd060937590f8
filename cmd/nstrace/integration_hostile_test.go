package main

// Names chosen by whoever runs a process or makes a cgroup: quotes,
// backslashes, newlines, terminal escapes, invalid UTF-8, a right-to-left
// override, and a comm cut by the kernel inside a UTF-8 sequence. JSON
// stays one valid object per line; text escapes them so that nothing can
// move the cursor or forge a line.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// hostileExe is 12 bytes of trouble, then "ab" and an é whose second byte
// the kernel's 15-byte comm cuts off.
const (
	hostileExe  = "n\"\\\n\x1b[2J\xff\u202eab\u00e9z"
	hostileComm = "n\"\\\n\x1b[2J\xff\u202eab\xc3"
	// hostileComm as the text output must print it.
	hostileCommText = `n"\\\n\x1b[2J\xff\u202eab\xc3`
	// cgroup_mkdir refuses a newline (it would break /proc/PID/cgroup).
	hostileCgroup = "c \"\\\t\x1b]0;x\a\xff\u202e"
)

// asJSONDecodes is s as a JSON string of it decodes: each invalid byte
// becomes U+FFFD.
func asJSONDecodes(s string) string { return string([]rune(s)) }

func TestHostileNames(t *testing.T) {
	backendIndependent(t)
	needTools(t, "unshare", "sh", "readlink")
	if len(hostileComm) != 15 || utf8.ValidString(hostileComm) {
		t.Fatalf("test bug: the comm must be 15 bytes, cut inside a character")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), hostileExe)
	b, err := os.ReadFile(unshare)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	h := hierarchy(t)
	rel := "/" + uniqueName("nstrace-test") + "/" + hostileCgroup
	dir, _ := testCgroup(t, h, rel)

	js := startTracer(t, "json")
	text := startTracer(t, "text")
	p := startNSProc(t, shCmd(append(inCgroup(dir), exe, "-u", "-n", "--")...))
	u := &unshared{p: p, uts: p.ns["uts"], net: p.ns["net"]}
	if got := cgroupOf(t, u.pid(), h); got != rel {
		t.Fatalf("the driven process is in %q, want %q", got, rel)
	}
	evs := u.lifecycle(t, js)[0]
	for _, e := range evs[:2] {
		if e.Comm != asJSONDecodes(hostileComm) || e.Exe != asJSONDecodes(exe) || e.Cgroup != asJSONDecodes(rel) {
			t.Errorf("create: comm %q exe %q cgroup %q, want %q, %q, %q", e.Comm, e.Exe, e.Cgroup,
				asJSONDecodes(hostileComm), asJSONDecodes(exe), asJSONDecodes(rel))
		}
	}
	js.stop(os.Interrupt) // fails the test on any line that is not one valid JSON object
	text.stop(os.Interrupt)

	found := 0
	for _, l := range text.outLines() {
		if !utf8.ValidString(l.text) || strings.IndexFunc(l.text, func(r rune) bool { return !strconv.IsPrint(r) }) >= 0 {
			t.Errorf("text output line with a control character, invalid UTF-8 or a format character: %q", l.text)
		}
		if strings.Contains(l.text, fmt.Sprint(u.uts)) && strings.Contains(l.text, "create") {
			found++
			for _, want := range []string{" " + hostileCommText + " ", " exe=" + strconv.Quote(exe), " cgroup=" + strconv.Quote(rel)} {
				if !strings.Contains(l.text, want) {
					t.Errorf("text create line lacks %s:\n%s", want, l.text)
				}
			}
		}
	}
	if found != 1 {
		t.Errorf("text output has %d create lines for uts %d, want 1", found, u.uts)
	}
}
