package tracer

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// A kernel without BPF ring buffers (before 5.8) cannot be booted here (the
// VMs' are 6.1 and later): the check is given the answer such a kernel's
// feature probe gives, and must say what to do in one line.
func TestNoRingBuffer(t *testing.T) {
	saved := haveRingBuf
	t.Cleanup(func() { haveRingBuf = saved })
	haveRingBuf = func() error { return fmt.Errorf("ring buffer map: %w", ebpf.ErrNotSupported) }
	err := kernelProblem()
	if err == nil {
		t.Fatal("no error for a kernel without ring buffers")
	}
	msg := err.Error()
	for _, w := range []string{"ring buffer", "Linux 5.8"} {
		if !strings.Contains(msg, w) {
			t.Errorf("%q does not say %q", msg, w)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("%q is more than one line", msg)
	}
	// And with the kernel's own answer, nothing to say.
	haveRingBuf = saved
	if err := kernelProblem(); err != nil {
		t.Errorf("this kernel: %v", err)
	}
}

// A kernel that lacks what the current object uses (5.10: task storage,
// bpf_task_pt_regs) gets the compat object; one older than MinKernel is
// told so in one line, with what it lacks, where the load would say "map
// create: invalid argument". The probes and uname are given such kernels'
// answers; on this kernel they must find what it has.
func TestMissingFeaturesExplained(t *testing.T) {
	saved, savedRelease := kernelFeatures, kernelRelease
	t.Cleanup(func() { kernelFeatures, kernelRelease = saved, savedRelease })
	t.Setenv(objectEnv, "")
	if err := FeaturesProblem(); err != nil {
		t.Fatalf("this kernel: %v", err)
	}
	var major, minor int
	if _, err := fmt.Sscanf(kernelRelease(), "%d.%d", &major, &minor); err != nil {
		t.Fatalf("uname release %q: %v", kernelRelease(), err)
	}
	if modern := modernEnough(major, minor, 5, 15); needCompat() == modern {
		t.Errorf("Linux %s: needCompat() = %v", kernelRelease(), !modern)
	}

	kernelFeatures = append(kernelFeatures[:0:0], saved...)
	for _, i := range []int{0, len(saved) - 1} {
		kernelFeatures[i].have = func() error { return fmt.Errorf("probe: %w", ebpf.ErrNotSupported) }
	}
	if !needCompat() {
		t.Error("a kernel without task storage and bpf_task_pt_regs does not get the compat object")
	}
	if err := FeaturesProblem(); err != nil {
		t.Errorf("a kernel of this release that lacks some features: %v (the compat object is for it)", err)
	}
	kernelRelease = func() string { return "5.4.0-150-generic" }
	err := FeaturesProblem()
	if err == nil {
		t.Fatal("no error for Linux 5.4")
	}
	msg := err.Error()
	for _, w := range []string{"Linux 5.4.0-150-generic is older than Linux " + MinKernel, "BPF task storage (Linux 5.11)", "bpf_task_pt_regs helper (Linux 5.15)"} {
		if !strings.Contains(msg, w) {
			t.Errorf("%q does not say %q", msg, w)
		}
	}
	if (modernEnough(major, minor, 5, 13) && strings.Contains(msg, "bpf_for_each_map_elem")) || strings.Contains(msg, "\n") {
		t.Errorf("%q names a feature this kernel has, or is more than one line", msg)
	}
}

func modernEnough(major, minor, wantMajor, wantMinor int) bool {
	return major > wantMajor || (major == wantMajor && minor >= wantMinor)
}
