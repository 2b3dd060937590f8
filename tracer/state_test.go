package tracer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// cycles is how many namespace lifecycles the state test drives:
// NSTRACE_TEST_CYCLES, or 100k.
func cycles(t *testing.T) int {
	if s := os.Getenv("NSTRACE_TEST_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("NSTRACE_TEST_CYCLES: %v", err)
		}
		return n
	}
	return 100_000
}

// churn creates and drops n namespaces of one type on a thread of its own,
// and returns their inode numbers. Each unshare(2) frees the previous one;
// the last goes when the thread joins back the namespace it started in.
func churn(n int, flag int, nsFile string) ([]uint32, error) {
	type result struct {
		inums []uint32
		err   error
	}
	done := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is not reused
		var r result
		orig, err := os.Open("/proc/thread-self/ns/" + nsFile)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer orig.Close()
		defer func() {
			if err := unix.Setns(int(orig.Fd()), flag); err != nil && r.err == nil {
				r.err = fmt.Errorf("setns back: %w", err)
			}
			done <- r
		}()
		for range n {
			if r.err = unix.Unshare(flag); r.err != nil {
				break
			}
			var st unix.Stat_t
			if r.err = unix.Stat("/proc/thread-self/ns/"+nsFile, &st); r.err != nil {
				break
			}
			r.inums = append(r.inums, uint32(st.Ino))
		}
	}()
	r := <-done
	return r.inums, r.err
}

// trackedInums returns the inode numbers a tracking map holds: its keys
// (live_ns_sparse, watched), its values (live_nets, keyed by kernel
// pointer) or, for the array live_ns, procDynamicFirst + the index of each
// live slot.
func trackedInums(t *testing.T, m *ebpf.Map) map[uint32]bool {
	t.Helper()
	got := map[uint32]bool{}
	var k, v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		switch {
		case m.Type() == ebpf.Array:
			var info nsInfo
			if err := binary.Read(bytes.NewReader(v), binary.NativeEndian, &info); err != nil {
				t.Fatal(err)
			}
			if info.Live != 0 {
				got[procDynamicFirst+binary.NativeEndian.Uint32(k)] = true
			}
		case m.KeySize() == 4:
			got[binary.NativeEndian.Uint32(k)] = true
		default:
			got[binary.NativeEndian.Uint32(v)] = true
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// mapLen counts a map's entries; for an array, the live slots.
func mapLen(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	if m.Type() == ebpf.Array {
		return len(trackedInums(t, m))
	}
	n := 0
	var k, v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// After many create/destroy cycles, no map that tracks live objects keeps
// an entry for a namespace that died, and no per-call state is left over.
func TestStateBoundedAfterChurn(t *testing.T) {
	needRoot(t)
	b := testBackend()
	tr, err := Open(Options{Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	// Drain events meanwhile, so that the test measures state, not drops.
	drained := make(chan uint64)
	go func() {
		var n uint64
		var rec ringbuf.Record
		for tr.Read(&rec) == nil {
			n++
		}
		drained <- n
	}()

	n := cycles(t)
	start := time.Now()
	uts, err := churn(n, unix.CLONE_NEWUTS, "uts")
	if err != nil {
		t.Fatalf("uts churn: %v", err)
	}
	// Network namespaces are slow to make and are torn down in batches:
	// fewer of them exercise the same tracking.
	nets, err := churn(max(n/1000, 10), unix.CLONE_NEWNET, "net")
	if err != nil {
		t.Fatalf("net churn: %v", err)
	}
	t.Logf("%d uts and %d net namespace lifecycles in %v (backend %s)", len(uts), len(nets), time.Since(start), tr.Backend())

	// The threads exit, network namespaces are cleaned up asynchronously
	// (NSTRACE_TEST_SLOW: slower still where the VM is emulated).
	deadline := time.Now().Add(scaled(10 * time.Second))
	var leaked []string
	for {
		leaked = leaked[:0]
		for _, name := range []string{"live_ns", "live_ns_sparse", "live_nets", "watched"} {
			held := trackedInums(t, tr.coll.Maps[name])
			for _, list := range [][]uint32{uts, nets} {
				for _, inum := range list {
					if held[inum] {
						leaked = append(leaked, fmt.Sprintf("%s[%d]", name, inum))
					}
				}
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(leaked) > 0 {
		t.Errorf("%d tracking entries outlived their namespace, e.g. %v", len(leaked), leaked[:min(len(leaked), 5)])
	}
	// task_states is task storage, freed with each task (and not iterable).
	for _, name := range []string{"live_ns", "live_ns_sparse", "live_nets", "watched", "exit_releases", "kprobe_args"} {
		m := tr.coll.Maps[name]
		t.Logf("%s: %d entries of %d", name, mapLen(t, m), m.MaxEntries())
	}

	if err := tr.Detach(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events read", <-drained)
	if _, err := tr.Lost(); err != nil && !errors.Is(err, os.ErrClosed) {
		t.Fatal(err)
	}
}
