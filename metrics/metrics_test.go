package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nstrace/nstrace/events"
)

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]string{
		"9464":         "127.0.0.1:9464",
		":9464":        "127.0.0.1:9464",
		"0.0.0.0:9464": "0.0.0.0:9464",
		"[::1]:9464":   "[::1]:9464",
		"node:0":       "node:0",
	} {
		if got, err := ParseAddr(in); err != nil || got != want {
			t.Errorf("ParseAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "1:99999", "host:", "host:port", "65536", "::1"} {
		if got, err := ParseAddr(in); err == nil {
			t.Errorf("ParseAddr(%q) = %q, want an error", in, got)
		}
	}
}

type fakeSource struct{}

func (fakeSource) LiveCounts() ([events.NumTypes]uint64, error) {
	return [events.NumTypes]uint64{events.Net: 3}, nil
}
func (fakeSource) RingBuffer() (int, int, int) { return 10, 20, 4096 }

func TestObserve(t *testing.T) {
	m := New(fakeSource{}, "tracepoint", Build{Version: "v1", Commit: "abc", GoVersion: "go1", BPFObject: "0123"})
	for _, ev := range []events.Event{
		{Kind: events.Create, Type: events.UTS},
		{Kind: events.Create, Type: events.UTS},
		{Kind: events.Destroy, Type: events.UTS, Lifetime: 2 * time.Millisecond, HasLifetime: true},
		{Kind: events.Destroy, Type: events.Net}, // its create was before the start
		{Kind: events.NsproxyFree},               // type 0 on the wire: none
		{Kind: events.Fail, Type: events.NoType, Errno: 1, Syscall: "unshare"},
		{Kind: events.Fail, Type: events.User, Errno: 28, Syscall: "clone"},
		{Kind: events.Lost, Count: 7},
		{Kind: events.Summary},
	} {
		m.Observe(&ev)
	}
	m.Lost(3)
	checks := map[string]float64{
		`create/uts`:   testutil.ToFloat64(m.byEvent[events.Create][events.UTS]),
		`destroy/uts`:  testutil.ToFloat64(m.byEvent[events.Destroy][events.UTS]),
		`destroy/net`:  testutil.ToFloat64(m.byEvent[events.Destroy][events.Net]),
		`nsproxy_free`: testutil.ToFloat64(m.byEvent[events.NsproxyFree][events.NumTypes]),
		`fail/`:        testutil.ToFloat64(m.byEvent[events.Fail][events.NumTypes]),
		`fail/user`:    testutil.ToFloat64(m.byEvent[events.Fail][events.User]),
		`EPERM`:        testutil.ToFloat64(m.failures.WithLabelValues("EPERM", "unshare")),
		`ENOSPC`:       testutil.ToFloat64(m.failures.WithLabelValues("ENOSPC", "clone")),
		`lost`:         testutil.ToFloat64(m.lost),
	}
	for k, want := range map[string]float64{"create/uts": 2, "destroy/uts": 1, "destroy/net": 1, "nsproxy_free": 1,
		"fail/": 1, "fail/user": 1, "EPERM": 1, "ENOSPC": 1, "lost": 10} {
		if checks[k] != want {
			t.Errorf("%s = %v, want %v", k, checks[k], want)
		}
	}
	if m.byEvent[events.NsproxyFree][events.Mnt] != nil || m.byEvent[events.Create][events.NumTypes] != nil {
		t.Errorf("series for impossible events: nsproxy_free with a type, or create without")
	}
	// The lifetime histogram and what a scrape reads from the source.
	err := testutil.GatherAndCompare(m.reg, strings.NewReader(`
# HELP nstrace_namespaces_alive Namespaces alive that nstrace knows of (found at start-up or created since), by type.
# TYPE nstrace_namespaces_alive gauge
nstrace_namespaces_alive{type="cgroup"} 0
nstrace_namespaces_alive{type="ipc"} 0
nstrace_namespaces_alive{type="mnt"} 0
nstrace_namespaces_alive{type="net"} 3
nstrace_namespaces_alive{type="pid"} 0
nstrace_namespaces_alive{type="time"} 0
nstrace_namespaces_alive{type="user"} 0
nstrace_namespaces_alive{type="uts"} 0
# HELP nstrace_ring_buffer_peak_used_bytes The most bytes that have waited in the ring buffer since nstrace started (seen as records were read).
# TYPE nstrace_ring_buffer_peak_used_bytes gauge
nstrace_ring_buffer_peak_used_bytes 20
`), "nstrace_namespaces_alive", "nstrace_ring_buffer_peak_used_bytes")
	if err != nil {
		t.Error(err)
	}
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var uts uint64 = 1 << 63
	for _, mf := range mfs {
		if mf.GetName() != "nstrace_namespace_lifetime_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			if s.GetLabel()[0].GetValue() == "uts" {
				uts = s.GetHistogram().GetSampleCount()
			}
		}
	}
	if uts != 1 {
		t.Errorf("uts lifetimes observed: %d, want 1 (the net destroy had none)", uts)
	}
}
