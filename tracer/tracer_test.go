package tracer

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/nstrace/nstrace/events"
)

// testBackend is the backend the environment says must work
// (NSTRACE_TEST_BACKEND; the VM suite sets it per run).
func testBackend() Backend {
	if b := os.Getenv("NSTRACE_TEST_BACKEND"); b != "" {
		return Backend(b)
	}
	return Auto
}

func needRoot(t *testing.T) {
	t.Helper()
	if err := checkPrivileges(); err != nil {
		if os.Getenv("NSTRACE_TEST_STRICT") != "" {
			t.Fatalf("NSTRACE_TEST_STRICT is set but: %v", err)
		}
		t.Skipf("SKIP (needs root): %v", err)
	}
}

// kernelRefuses reports whether err means the running kernel cannot do what
// backend b needs (as opposed to a bug in nstrace).
func kernelRefuses(b Backend, err error) bool {
	switch b {
	case Fentry:
		return errors.Is(err, os.ErrPermission) || errors.Is(err, ebpf.ErrNotSupported)
	case Kprobe:
		return haveKprobes() != nil
	}
	return false
}

// Every backend's programs must pass the verifier of the running kernel,
// even where they cannot be attached (kprobes on a kernel without them).
func TestProgramsLoad(t *testing.T) {
	needRoot(t)
	for _, b := range Backends[1:] {
		t.Run(string(b), func(t *testing.T) {
			spec, err := LoadSpec(b)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := setKnobs(spec, b); err != nil {
				t.Fatal(err)
			}
			coll, err := ebpf.NewCollection(spec)
			if err != nil {
				if b != testBackend() && b == Fentry && errors.Is(err, os.ErrPermission) {
					t.Skipf("SKIP: this kernel refuses fentry/fexit programs: %v", err)
				}
				t.Fatalf("load %s programs: %v", b, explainLoad(err))
			}
			defer coll.Close()
			if len(coll.Programs) < 3 {
				t.Fatalf("only %d programs loaded", len(coll.Programs))
			}
		})
	}
}

func TestOpenAuto(t *testing.T) {
	needRoot(t)
	tr, err := Open(Options{Backend: Auto})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	// The backend under test works here, so auto must not settle for one
	// that comes after it in the order it tries them.
	if want := testBackend(); want != Auto && rank(tr.Backend()) > rank(want) {
		t.Errorf("auto picked %s, but %s works on this kernel and comes first", tr.Backend(), want)
	}
}

func rank(b Backend) int {
	for i, x := range Backends {
		if x == b {
			return i
		}
	}
	return len(Backends)
}

func TestOpenExplicitBackends(t *testing.T) {
	needRoot(t)
	for _, b := range Backends[1:] {
		t.Run(string(b), func(t *testing.T) {
			tr, err := Open(Options{Backend: b})
			if err != nil {
				if b != testBackend() && kernelRefuses(b, err) {
					t.Skipf("SKIP: kernel cannot run backend %s: %v", b, err)
				}
				t.Fatal(err)
			}
			defer tr.Close()
			if tr.Backend() != b {
				t.Errorf("Backend() = %s, want %s", tr.Backend(), b)
			}
		})
	}
}

func TestParseBackend(t *testing.T) {
	for _, b := range Backends {
		if got, err := ParseBackend(string(b)); err != nil || got != b {
			t.Errorf("ParseBackend(%q) = %q, %v", b, got, err)
		}
	}
	_, err := ParseBackend("ebpf")
	if err == nil || !strings.Contains(err.Error(), "auto, fentry, kprobe, tracepoint") {
		t.Errorf("ParseBackend(ebpf) error = %v, want one listing the valid values", err)
	}
}

func TestKernelSymbols(t *testing.T) {
	needRoot(t)
	syms, err := kernelSymbols("free_user_ns", "no_such_symbol_in_any_kernel")
	if err != nil {
		t.Fatal(err)
	}
	if syms["free_user_ns"] == 0 {
		t.Error("free_user_ns not found in /proc/kallsyms")
	}
	if _, ok := syms["no_such_symbol_in_any_kernel"]; ok {
		t.Error("found a symbol that does not exist")
	}
}

// With a one-page ring buffer that nobody reads, events overflow it; every
// one of them must be either delivered or counted as lost.
func TestOverflowIsCounted(t *testing.T) {
	needRoot(t)
	b := testBackend()
	if b == Auto {
		b = ""
	}
	tr, err := openForTest(t, b, os.Getpagesize())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	// Each run creates a uts namespace, frees its nsproxy and destroys it:
	// three events per run, far more than one page holds.
	const runs = 40
	pids := map[uint32]bool{}
	for range runs {
		cmd := exec.Command("unshare", "--uts", "true")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("unshare: %v: %s", err, out)
		}
		pids[uint32(cmd.Process.Pid)] = true
	}
	time.Sleep(100 * time.Millisecond) // let kworkers and exits settle
	if err := tr.Detach(); err != nil {
		t.Fatal(err)
	}

	dec, err := events.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	var ours, lost uint64
	var rec ringbuf.Record
	for {
		err := tr.Read(&rec)
		if errors.Is(err, ringbuf.ErrFlushed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ev, l, err := dec.Decode(rec.RawSample)
		if err != nil {
			t.Fatal(err)
		}
		lost += uint64(l)
		if pids[ev.Pid] && ev.Type == events.UTS || pids[ev.Pid] && ev.Kind == events.NsproxyFree {
			ours++
		}
	}
	rest, err := tr.Lost()
	if err != nil {
		t.Fatal(err)
	}
	lost += rest
	t.Logf("%d runs: %d of our events delivered, %d events lost (counted)", runs, ours, lost)
	if lost == 0 {
		t.Fatalf("a %d-byte ring buffer took %d events without dropping any: the overflow test proves nothing", os.Getpagesize(), ours)
	}
	if ours+lost < 3*runs {
		t.Errorf("delivered %d + lost %d < %d generated: events vanished without being counted", ours, lost, 3*runs)
	}
	if again, _ := tr.Lost(); again != 0 {
		t.Errorf("Lost() did not reset: %d", again)
	}
}

// openForTest opens backend b (or auto when empty) with a given ring size.
func openForTest(t *testing.T, b Backend, ringSize int) (*Tracer, error) {
	t.Helper()
	if b == "" {
		b = Auto
	}
	return Open(Options{Backend: b, RingBufferSize: ringSize})
}
