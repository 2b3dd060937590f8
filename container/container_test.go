package container

import (
	"strings"
	"testing"
)

const (
	id1  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	id2  = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	uid  = "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"
	uid_ = "1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		path string
		want Info
	}{
		// Docker.
		{"docker cgroupfs", "/docker/" + id1, Info{id1, "docker", ""}},
		{"docker systemd", "/system.slice/docker-" + id1 + ".scope", Info{id1, "docker", ""}},
		{"docker-in-docker", "/docker/" + id1 + "/docker/" + id2, Info{id2, "docker", ""}},
		{"docker colon form", "/system.slice:docker:" + id1, Info{id1, "docker", ""}},

		// containerd under Kubernetes.
		{"containerd systemd burstable",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid_ + ".slice/cri-containerd-" + id1 + ".scope",
			Info{id1, "containerd", uid}},
		{"containerd systemd besteffort",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uid_ + ".slice/cri-containerd-" + id1 + ".scope",
			Info{id1, "containerd", uid}},
		{"containerd systemd guaranteed",
			"/kubepods.slice/kubepods-pod" + uid_ + ".slice/cri-containerd-" + id1 + ".scope",
			Info{id1, "containerd", uid}},
		{"systemd slice with '-' separators",
			"/kubepods.slice/kubepods-pod" + uid + ".slice/cri-containerd-" + id1 + ".scope",
			Info{id1, "containerd", uid}},
		{"containerd cgroupfs burstable", "/kubepods/burstable/pod" + uid + "/" + id1, Info{id1, "", uid}},
		{"containerd cgroupfs besteffort", "/kubepods/besteffort/pod" + uid + "/" + id1, Info{id1, "", uid}},
		{"containerd cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + id1, Info{id1, "", uid}},
		// The pod's slice stands before the first ':'.
		{"runc systemd cgroupsPath as plain path",
			"/kubepods-burstable-pod" + uid_ + ".slice:cri-containerd:" + id1,
			Info{id1, "containerd", uid}},
		{"containerd k8s.io namespace", "/k8s.io/" + id1, Info{id1, "containerd", ""}},
		{"kind node", "/docker/" + id2 + "/kubepods/besteffort/pod" + uid + "/" + id1, Info{id1, "", uid}},

		// CRI-O.
		{"crio scope",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid_ + ".slice/crio-" + id1 + ".scope",
			Info{id1, "cri-o", uid}},
		{"crio without scope", "/kubepods/burstable/pod" + uid + "/crio-" + id1, Info{id1, "cri-o", uid}},
		{"crio colon form", "/kubepods.slice:crio:" + id1, Info{id1, "cri-o", ""}},
		{"crio conmon",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid_ + ".slice/crio-conmon-" + id1 + ".scope",
			Info{"", "", uid}},

		// Podman.
		{"podman scope", "/machine.slice/libpod-" + id1 + ".scope", Info{id1, "podman", ""}},
		{"podman nested container", "/machine.slice/libpod-" + id1 + ".scope/container", Info{id1, "podman", ""}},
		{"podman payload", "/machine.slice/libpod-payload-" + id1, Info{id1, "podman", ""}},
		{"podman conmon", "/machine.slice/libpod-conmon-" + id1 + ".scope", Info{}},
		{"podman cgroupfs", "/libpod_parent/libpod-" + id1, Info{id1, "podman", ""}},
		{"podman cgroupfs bare id", "/libpod_parent/" + id1, Info{id1, "podman", ""}},
		{"podman colon form", "/machine.slice:libpod:" + id1, Info{id1, "podman", ""}},

		// nerdctl.
		{"nerdctl scope", "/system.slice/nerdctl-" + id1 + ".scope", Info{id1, "nerdctl", ""}},
		{"nerdctl colon form", "/system.slice:nerdctl:" + id1, Info{id1, "nerdctl", ""}},

		// An id the runtime of which the path does not name.
		{"unknown prefix", "/system.slice/foo-" + id1 + ".scope", Info{id1, "", ""}},
		{"unknown colon prefix", "/x:foo:" + id1, Info{id1, "", ""}},
		{"colon prefix without leading colon", "/cri-containerd:" + id1, Info{id1, "", ""}},
		{"bare id at root", "/" + id1, Info{id1, "", ""}},
		{"bare id, relative", id1, Info{id1, "", ""}},

		// Negative cases.
		{"empty", "", Info{}},
		{"root", "/", Info{}},
		{"user session", "/user.slice/user-1000.slice/session-3.scope", Info{}},
		{"docker service", "/system.slice/docker.service", Info{}},
		{"63 hex", "/docker/" + id1[1:], Info{}},
		{"65 hex", "/docker/a" + id1, Info{}},
		{"65 hex in scope", "/system.slice/docker-a" + id1 + ".scope", Info{}},
		{"uppercase hex", "/docker/" + strings.ToUpper(id1), Info{}},
		{"glued to a word", "/docker/abc" + id1, Info{}},
		{"double scope", "/system.slice/docker-" + id1 + ".scope.scope", Info{}},
		{"pod uid bad group length", "/kubepods/burstable/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6/" + id1, Info{id1, "", ""}},
		{"pod uid misplaced separator", "/kubepods/burstable/pod1a2b3c4d5-e6f-7a8b-9c0d-1e2f3a4b5c6d", Info{}},
		{"pod uid uppercase", "/kubepods/burstable/pod" + strings.ToUpper(uid), Info{}},
		{"pod uid with trailer", "/kubepods/burstable/pod" + uid + "x", Info{}},
		{"pod cgroupfs with '_'", "/kubepods/burstable/pod" + uid_, Info{}},
		{"pod slice bad group length",
			"/kubepods.slice/kubepods-burstable-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6.slice",
			Info{}},
		{"pod slice not under kubepods", "/foo.slice/foo-pod" + uid_ + ".slice", Info{}},
		{"pod slice without dash", "/kubepods.slice/kubepodspod" + uid_ + ".slice", Info{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Parse(tt.path); got != tt.want {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", tt.path, got, tt.want)
			}
		})
	}
}

func TestParseInnermostPod(t *testing.T) {
	const other = "99999999-8888-7777-6666-555555555555"
	p := "/kubepods/pod" + other + "/kubepods/pod" + uid + "/" + id1
	if got := Parse(p).PodUID; got != uid {
		t.Errorf("PodUID = %q, want %q", got, uid)
	}
}

func TestParseAllocs(t *testing.T) {
	paths := []string{
		"/system.slice/docker-" + id1 + ".scope",
		"/kubepods/burstable/pod" + uid + "/" + id1,
		"/user.slice/user-1000.slice/session-3.scope",
	}
	for _, p := range paths {
		if n := testing.AllocsPerRun(100, func() { Parse(p) }); n != 0 {
			t.Errorf("Parse(%q): %v allocations, want 0", p, n)
		}
	}
}

func TestShortID(t *testing.T) {
	tests := []struct{ id, want string }{
		{"", ""},
		{id1, "0123456789ab"},
		{"0123456789ab", "0123456789ab"},
		{"abc", "abc"},
	}
	for _, tt := range tests {
		if got := ShortID(tt.id); got != tt.want {
			t.Errorf("ShortID(%q) = %q, want %q", tt.id, got, tt.want)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	p := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid_ + ".slice/cri-containerd-" + id1 + ".scope"
	b.ReportAllocs()
	for b.Loop() {
		Parse(p)
	}
}
