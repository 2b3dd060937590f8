package tracer

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// scaled is d times NSTRACE_TEST_SLOW, which the VM suite sets where the
// kernel runs emulated (the command's tests scale their deadlines alike).
func scaled(d time.Duration) time.Duration {
	f, err := strconv.ParseFloat(os.Getenv("NSTRACE_TEST_SLOW"), 64)
	if err != nil || f < 1 {
		return d
	}
	return time.Duration(float64(d) * f)
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
			// Every filter on: the verifier must take their loops too.
			h, err := ChooseCgroupHierarchy("")
			if err != nil {
				t.Fatal(err)
			}
			all := Filter{EventMask: 0x1e, TypeMask: 0xff, Pids: []uint32{1}, Children: true, Comms: []string{"a", "b"},
				Uids: []uint32{0, 1}, Cgroups: []string{"/a", "/b/c"}, ContainerPrefixes: []string{"ab", "0123"}, Containers: true}
			if err := setFilter(spec, all, h); err != nil {
				t.Fatal(err)
			}
			coll, err := ebpf.NewCollection(spec)
			if err != nil {
				if b != testBackend() && b == Fentry && errors.Is(err, os.ErrPermission) {
					t.Skipf("SKIP: this kernel refuses fentry/fexit programs: %v", err)
				}
				var ve *ebpf.VerifierError
				if errors.As(err, &ve) {
					// The end of the verifier's log says what it refused.
					lines := ve.Log[max(0, len(ve.Log)-60):]
					t.Logf("verifier log, last %d lines:\n%s", len(lines), strings.Join(lines, "\n"))
				}
				t.Fatalf("load %s programs: %v", b, explainLoad(err))
			}
			defer coll.Close()
			if len(coll.Programs) < 3 {
				t.Fatalf("only %d programs loaded", len(coll.Programs))
			}
			if kernelHasFunc("bpf_rdonly_cast") != rdonlyCast(spec) {
				t.Fatalf("have_rdonly_cast = %v on a kernel where bpf_rdonly_cast exists: %v", rdonlyCast(spec), kernelHasFunc("bpf_rdonly_cast"))
			}
			if rdonlyCast(spec) {
				// What open falls back to where the kfunc may not be
				// called: the same loads through the trusted task.
				if err := spec.Variables["have_rdonly_cast"].Set(false); err != nil {
					t.Fatal(err)
				}
				plain, err := ebpf.NewCollection(spec)
				if err != nil {
					t.Fatalf("load %s programs without bpf_rdonly_cast: %v", b, explainLoad(err))
				}
				plain.Close()
			}
			// The verifier's work per program, for the record: how close
			// each is to the limits of older kernels.
			names := slices.Sorted(maps.Keys(coll.Programs))
			for _, n := range names {
				info, err := coll.Programs[n].Info()
				if err != nil {
					continue
				}
				if insns, ok := info.VerifiedInstructions(); ok {
					t.Logf("%-32s %6d verified instructions", n, insns)
				}
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
		if _, l, ok, err := events.DecodeString(rec.RawSample); ok {
			if err != nil {
				t.Fatal(err)
			}
			lost += uint64(l)
			continue
		}
		evs, l, err := dec.Decode(rec.RawSample)
		if err != nil {
			t.Fatal(err)
		}
		lost += uint64(l)
		for _, ev := range evs {
			if pids[ev.Pid] && ev.Type == events.UTS || pids[ev.Pid] && ev.Kind == events.NsproxyFree {
				ours++
			}
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

// Network namespaces that exist before Open, held by a process or only by
// a bind mount under /run/netns, are followed to their teardown too.
func TestPreexistingNetsFollowed(t *testing.T) {
	needRoot(t)
	for _, tool := range []string{"ip", "unshare", "sleep"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("NSTRACE_TEST_STRICT") != "" {
				t.Fatalf("NSTRACE_TEST_STRICT is set but %s is missing", tool)
			}
			t.Skipf("SKIP: %s not installed", tool)
		}
	}
	name := fmt.Sprintf("nstrace-tracer-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/"+name, &st); err != nil {
		t.Fatal(err)
	}
	bindMounted := uint32(st.Ino)

	holder := exec.Command("unshare", "--net", "sleep", "30")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Process.Kill()
	var held uint32
	for deadline := time.Now().Add(5 * time.Second); held == 0 || held == selfNetInum(t); {
		if time.Now().After(deadline) {
			t.Fatal("unshare --net did not move sleep into a new network namespace")
		}
		time.Sleep(20 * time.Millisecond)
		held = netInum(t, holder.Process.Pid)
	}

	tr, err := Open(Options{Backend: testBackend()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if slices.ContainsFunc(tr.BlindSpots, func(s string) bool { return strings.HasPrefix(s, "net ") }) {
		t.Skipf("SKIP: backend %s announces it cannot see net teardown here: %v", tr.Backend(), tr.BlindSpots)
	}

	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	holder.Process.Kill()
	holder.Wait()

	want := map[uint32]bool{bindMounted: true, held: true}
	dec, err := events.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			tr.Detach()
		}
	}()
	var rec ringbuf.Record
	for len(want) > 0 {
		if err := tr.Read(&rec); err != nil {
			t.Fatalf("no destroy for network namespaces %v (created before Open) within 10 s: %v", want, err)
		}
		evs, _, err := dec.Decode(rec.RawSample)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Kind == events.Destroy && ev.Type == events.Net && want[ev.Inum] {
				// Seen freed by cleanup_net where that is hooked; else
				// (the compat object) at the release of the last
				// reference an nsproxy held, or by the poll.
				ok := ev.How == "freed"
				if tr.Teardowns()[events.Net] == TeardownPolled {
					ok = ev.How == "last_ref" || ev.How == "polled"
				}
				if ev.HasLifetime || !ok {
					t.Errorf("destroy of a pre-existing net namespace (teardown %s): %+v", tr.Teardowns()[events.Net], ev)
				}
				delete(want, ev.Inum)
			}
		}
	}
}

func netInum(t *testing.T, pid int) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return 0
	}
	return uint32(st.Ino)
}

func selfNetInum(t *testing.T) uint32 { return netInum(t, os.Getpid()) }

// The namespaces one operation creates travel in one record (with the
// nsproxy it freed, where the same hook sees that), not a record each:
// every backend sees unshare(CLONE_NEWUTS|CLONE_NEWIPC) in one hook.
func TestOneRecordPerOperation(t *testing.T) {
	needRoot(t)
	tr, err := openForTest(t, testBackend(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	cmd := exec.Command("unshare", "--uts", "--ipc", "true")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unshare: %v: %s", err, out)
	}
	pid := uint32(cmd.Process.Pid)
	time.Sleep(100 * time.Millisecond)
	if err := tr.Detach(); err != nil {
		t.Fatal(err)
	}
	dec, err := events.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	var records [][]events.Event // those with a create by pid
	var rec ringbuf.Record
	for {
		err := tr.Read(&rec)
		if errors.Is(err, ringbuf.ErrFlushed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok, _ := events.DecodeString(rec.RawSample); ok {
			continue
		}
		evs, _, err := dec.Decode(rec.RawSample)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Pid != evs[0].Pid || ev.Tid != evs[0].Tid || !ev.Time.Equal(evs[0].Time) {
				t.Errorf("events of one record with different tasks or times: %+v and %+v", evs[0], ev)
			}
		}
		if evs[0].Pid == pid && slices.ContainsFunc(evs, func(ev events.Event) bool { return ev.Kind == events.Create }) {
			records = append(records, evs)
		}
	}
	if len(records) != 1 {
		t.Fatalf("the creates of one unshare came in %d records, want 1: %+v", len(records), records)
	}
	var types []events.NsType
	for _, ev := range records[0] {
		if ev.Kind == events.Create {
			types = append(types, ev.Type)
		}
	}
	slices.Sort(types)
	if want := []events.NsType{events.UTS, events.IPC}; !slices.Equal(types, slices.Sorted(slices.Values(want))) {
		t.Errorf("the unshare's record creates %v, want %v", types, want)
	}
	t.Logf("backend %s: the unshare's record: %d events (%v)", tr.Backend(), len(records[0]), types)
}
