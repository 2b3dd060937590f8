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

// A kernel that lacks what the programs use after the ring buffer (5.10:
// task storage, bpf_task_pt_regs) is told so in one line, with the kernel
// that has it all, where the load would say "map create: invalid
// argument". The probes are given such a kernel's answers; on this kernel
// they must find everything.
func TestMissingFeaturesExplained(t *testing.T) {
	saved := kernelFeatures
	t.Cleanup(func() { kernelFeatures = saved })
	if err := FeaturesProblem(); err != nil {
		t.Fatalf("this kernel: %v", err)
	}
	kernelFeatures = append(kernelFeatures[:0:0], saved...)
	for _, i := range []int{0, len(saved) - 1} {
		kernelFeatures[i].have = func() error { return fmt.Errorf("probe: %w", ebpf.ErrNotSupported) }
	}
	err := FeaturesProblem()
	if err == nil {
		t.Fatal("no error for a kernel without task storage and bpf_task_pt_regs")
	}
	msg := err.Error()
	for _, w := range []string{"BPF task storage (Linux 5.11)", "bpf_task_pt_regs helper (Linux 5.15)", "needs Linux " + MinKernel + " or newer"} {
		if !strings.Contains(msg, w) {
			t.Errorf("%q does not say %q", msg, w)
		}
	}
	if strings.Contains(msg, "bpf_for_each_map_elem") || strings.Contains(msg, "\n") {
		t.Errorf("%q names a feature this kernel has, or is more than one line", msg)
	}
}
