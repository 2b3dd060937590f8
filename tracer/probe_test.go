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
