// Package container tells, from a cgroup path, which container and
// Kubernetes pod a process belongs to.
//
// The rules mirror, exactly, the ones the BPF program applies in the
// kernel, so that user space and kernel agree on every path; change them
// only together.
package container

import "strings"

const (
	idLen   = 64 // a container id is 64 lowercase hex characters
	uuidLen = 36 // 8-4-4-4-12
)

// Info is what a cgroup path says about its container. Zero values: unknown.
type Info struct {
	ID      string // full container id, 64 lowercase hex characters
	Runtime string // "docker", "containerd", "cri-o", "podman", "nerdctl", or "" if the path does not say
	PodUID  string // Kubernetes pod UID in its canonical form (8-4-4-4-12 with '-'), or ""
}

// prefixRuntimes maps the name a runtime puts before the id ("<name>-<id>"
// or "...:<name>:<id>") to the runtime.
var prefixRuntimes = map[string]string{
	"docker":         "docker",
	"cri-containerd": "containerd",
	"crio":           "cri-o",
	"libpod":         "podman",
	"libpod-payload": "podman",
	"nerdctl":        "nerdctl",
}

// parentRuntimes maps the parent of a bare-id component to the runtime:
// with the cgroupfs driver the runtime names the directory, not the leaf.
var parentRuntimes = map[string]string{
	"docker":        "docker",
	"k8s.io":        "containerd",
	"libpod_parent": "podman",
}

// Parse reads the container and pod of cgroup path p.
func Parse(p string) Info {
	id, runtime := containerOf(p)
	return Info{ID: id, Runtime: runtime, PodUID: podOf(p)}
}

// ShortID is the first 12 characters of a container id (docker ps style); "" for "".
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// cutLast splits p at its last '/'. more is false when last was the
// shallowest component, so that walking up a path needs no allocation.
func cutLast(p string) (rest, last string, more bool) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p, false
	}
	return p[:i], p[i+1:], true
}

// containerOf walks from the deepest component up, so that for nested
// containers (docker-in-docker, kind) the innermost one wins.
func containerOf(p string) (id, runtime string) {
	for rest, more := p, true; more; {
		var c string
		rest, c, more = cutLast(rest)
		prefix, id, ok := splitID(c)
		if !ok {
			continue
		}
		if prefix != "" {
			return id, prefixRuntime(prefix)
		}
		var parent string
		if more {
			_, parent, _ = cutLast(rest)
		}
		return id, parentRuntimes[parent]
	}
	return "", ""
}

// splitID reports whether component c carries a container id, and
// returns the id and what precedes it (separator included).
func splitID(c string) (prefix, id string, ok bool) {
	// conmon monitors the container from a sibling cgroup named after it;
	// it is not the container.
	if strings.HasPrefix(c, "crio-conmon-") || strings.HasPrefix(c, "libpod-conmon-") {
		return "", "", false
	}
	s := strings.TrimSuffix(c, ".scope")
	if len(s) < idLen {
		return "", "", false
	}
	prefix, id = s[:len(s)-idLen], s[len(s)-idLen:]
	if !isHex(id) {
		return "", "", false
	}
	// The separator check also rejects longer hex runs and ids glued to
	// a word.
	if prefix != "" {
		if sep := prefix[len(prefix)-1]; sep != '-' && sep != ':' {
			return "", "", false
		}
	}
	return prefix, id, true
}

// prefixRuntime names the runtime from "<name>-" or "...:<name>:"; the
// colon form is runc's systemd-style "slice:prefix:name" cgroupsPath used
// as a plain path.
func prefixRuntime(prefix string) string {
	name := prefix[:len(prefix)-1]
	if prefix[len(prefix)-1] == ':' {
		i := strings.LastIndexByte(name, ':')
		if i < 0 {
			return ""
		}
		name = name[i+1:]
	}
	return prefixRuntimes[name]
}

// podOf walks from the deepest component up, like containerOf, so both
// answer about the same (innermost) pod.
func podOf(p string) string {
	for rest, more := p, true; more; {
		var c string
		rest, c, more = cutLast(rest)
		if uid, ok := podUID(c); ok {
			return uid
		}
	}
	return ""
}

// podUID reads a pod UID from the cgroupfs form "pod<uuid>" or the
// systemd form "kubepods[-<qos>]-pod<uuid>.slice", where systemd has
// escaped the UUID's '-' as '_'.
func podUID(c string) (string, bool) {
	// runc's systemd-style cgroupsPath "slice:prefix:name", used as a
	// plain path, keeps the pod's slice before the first ':'.
	if i := strings.IndexByte(c, ':'); i >= 0 {
		c = c[:i]
	}
	if u, ok := strings.CutPrefix(c, "pod"); ok && isUUID(u, false) {
		return u, true
	}
	s, ok := strings.CutSuffix(c, ".slice")
	if !ok || !strings.HasPrefix(s, "kubepods") || len(s) < len("kubepods")+len("-pod")+uuidLen {
		return "", false
	}
	head, u := s[:len(s)-uuidLen], s[len(s)-uuidLen:]
	if !strings.HasSuffix(head, "-pod") || !isUUID(u, true) {
		return "", false
	}
	// Only the escaped form needs a copy.
	return strings.ReplaceAll(u, "_", "-"), true
}

// isUUID reports whether u is 8-4-4-4-12 lowercase hex groups separated
// by '-' (or also '_', when escaped is set).
func isUUID(u string, escaped bool) bool {
	if len(u) != uuidLen {
		return false
	}
	for i := 0; i < len(u); i++ {
		switch i {
		case 8, 13, 18, 23:
			if u[i] != '-' && !(escaped && u[i] == '_') {
				return false
			}
		default:
			if !isHexByte(u[i]) {
				return false
			}
		}
	}
	return true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHexByte(s[i]) {
			return false
		}
	}
	return true
}

// isHexByte accepts lowercase only: runtimes write ids and UIDs in
// lowercase, and the kernel-side rule does the same.
func isHexByte(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f'
}
