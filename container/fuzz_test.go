package container

import (
	"regexp"
	"strings"
	"testing"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// FuzzParse gives Parse any path, as a cgroup's name is whatever its
// creator chose: it never panics, and what it finds is well formed and in
// the path.
func FuzzParse(f *testing.F) {
	for _, p := range []string{
		"/docker/" + id1, "/system.slice/docker-" + id1 + ".scope", "/docker/" + id1 + "/docker/" + id2,
		"/system.slice:docker:" + id1, "/kubepods/burstable/pod" + uid + "/" + id1,
		"/kubepods.slice/kubepods-pod" + uid_ + ".slice/cri-containerd-" + id1 + ".scope",
		"/machine.slice/libpod-conmon-" + id1 + ".scope", "/", "", "//", "-" + id1, ":" + id1 + ".scope",
		"/k8s.io/" + id1, "/a\n/b\x1b[2J/\xff" + id1,
	} {
		f.Add(p)
	}
	known := map[string]bool{"": true}
	for _, r := range prefixRuntimes {
		known[r] = true
	}
	for _, r := range parentRuntimes {
		known[r] = true
	}
	f.Fuzz(func(t *testing.T, p string) {
		in := Parse(p)
		if in != Parse(p) {
			t.Fatalf("Parse(%q) differs between two calls", p)
		}
		if in.ID != "" && (len(in.ID) != idLen || !isHex(in.ID) || !strings.Contains(p, in.ID)) {
			t.Fatalf("Parse(%q): id %q is not 64 lowercase hex digits of the path", p, in.ID)
		}
		if in.ID == "" && in.Runtime != "" {
			t.Fatalf("Parse(%q): runtime %q without a container", p, in.Runtime)
		}
		if !known[in.Runtime] {
			t.Fatalf("Parse(%q): unknown runtime %q", p, in.Runtime)
		}
		if in.PodUID != "" && (!uuidRE.MatchString(in.PodUID) ||
			!strings.Contains(p, in.PodUID) && !strings.Contains(p, strings.ReplaceAll(in.PodUID, "-", "_"))) {
			t.Fatalf("Parse(%q): pod uid %q is not a UUID of the path", p, in.PodUID)
		}
	})
}
