package events

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nstrace/nstrace"
)

var update = flag.Bool("update", false, "rewrite golden files")

func init() {
	// Golden output must not depend on the machine's time zone.
	time.Local = time.UTC
}

func TestCloneFlagNames(t *testing.T) {
	for _, tc := range []struct {
		flags uint64
		want  []string
	}{
		{0, []string{}},
		{0x4e020000, []string{"CLONE_NEWNS", "CLONE_NEWCGROUP", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWNET"}},
		{0x30000080, []string{"CLONE_NEWTIME", "CLONE_NEWUSER", "CLONE_NEWPID"}},
		{0x10000000 | 0x200000000, []string{"CLONE_NEWUSER", "CLONE_INTO_CGROUP"}},
		// unknown bits are kept, not dropped
		{0x40000000 | 0x1 | 0x400000000, []string{"CLONE_NEWNET", "0x400000001"}},
	} {
		if got := CloneFlagNames(tc.flags); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("CloneFlagNames(%#x) = %q, want %q", tc.flags, got, tc.want)
		}
	}
	if got := FormatCloneFlags(0); got != "0" {
		t.Errorf("FormatCloneFlags(0) = %q", got)
	}
	if got := FormatCloneFlags(0x44000000); got != "CLONE_NEWUTS|CLONE_NEWNET" {
		t.Errorf("FormatCloneFlags = %q", got)
	}
}

func comm(s string) (c [16]int8) {
	for i := range len(s) {
		c[i] = int8(s[i])
	}
	return c
}

func encode(t testing.TB, r nstrace.BpfEvent) []byte {
	t.Helper()
	b, err := binary.Append(nil, binary.NativeEndian, &r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testDecoder stamps boot time 0 at 2026-11-30T12:00:00Z.
var testDecoder = &Decoder{bootToWall: time.Duration(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixNano())}

// records is one of each kind of event, as the BPF side writes them.
func records() []nstrace.BpfEvent {
	proc := func(r nstrace.BpfEvent) nstrace.BpfEvent {
		r.Pid, r.Tid, r.Ppid, r.Uid, r.Comm = 4242, 4243, 1, 0, comm("unshare")
		r.ParentComm, r.CgroupId, r.ExeId = comm("containerd-shim"), testCgroupID, testExeID
		if r.Kind == 2 || r.Kind == 4 {
			r.OwnerCgroupId, r.OwnerPid, r.OwnerKnown = testCgroupID, 4200, 1
		}
		return r
	}
	return []nstrace.BpfEvent{
		proc(nstrace.BpfEvent{TsNs: 1_000_000_001, Kind: 1, NsType: 4, Inum: 4026532181, NsId: 4102, OldInum: 4026531833, Syscall: 5, Flags: 0x4e020000}),
		proc(nstrace.BpfEvent{TsNs: 1_000_000_002, Kind: 1, NsType: 3, Inum: 4026532178, NsId: 4103, OldInum: 4026531836, Syscall: 5, Flags: 0x20000000, ForChildren: 1}),
		proc(nstrace.BpfEvent{TsNs: 1_000_000_003, Kind: 2, NsType: 1, Inum: 4026532190, NsId: 4099, OldInum: 4026531838, Syscall: 6, Flags: 0}),
		proc(nstrace.BpfEvent{TsNs: 2_500_000_000, Kind: 3, Inums: [9]uint32{4026532177, 4026532178, 4026532179, 4026531836, 4026532181, 0, 4026532180, 4026531834, 4026531834}}),
		proc(nstrace.BpfEvent{TsNs: 2_500_000_100, Kind: 4, NsType: 4, Inum: 4026532181, NsId: 4102, How: 1}),
		proc(nstrace.BpfEvent{TsNs: 2_500_000_200, Kind: 4, NsType: 5, Inum: 4026532999, How: 2}),
		{TsNs: 2_600_000_000, Kind: 4, NsType: 1, Inum: 4026532190, NsId: 4099, How: 3},
	}
}

const (
	testCgroupID = 7001
	testExeID    = 1 << 32
	testID       = "4c1d2b3a4c1d2b3a4c1d2b3a4c1d2b3a4c1d2b3a4c1d2b3a4c1d2b3a4c1d2b3a"
)

// testNames is a runtime that knows one container.
type testNames struct{}

func (testNames) Lookup(id string) (Names, bool) {
	return Names{ContainerName: "web", Image: "busybox:test", PodName: "web-0", PodNamespace: "shop"}, id == testID
}

// strRec is a string record as the BPF side writes it.
func strRec(t testing.TB, kind uint8, key uint64, s string) []byte {
	r := nstrace.BpfStrRec{Kind: kind, Key: key, Len: uint16(len(s))}
	for i := range len(s) {
		r.Str[i] = int8(s[i])
	}
	b, err := binary.Append(nil, binary.NativeEndian, &r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeAll runs the records through Decode, Lifetimes and an Attributor
// that learnt the strings from string records, as nstrace does.
func decodeAll(t *testing.T) []Event {
	t.Helper()
	life := NewLifetimes()
	attr := NewAttributor(nil, nil, testNames{})
	for _, raw := range [][]byte{
		strRec(t, recCgroup, testCgroupID, "/kubepods/besteffort/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/"+testID),
		strRec(t, recExe, testExeID, "/usr/bin/unshare"),
	} {
		r, lost, ok, err := DecodeString(raw)
		if !ok || err != nil || lost != 0 {
			t.Fatalf("DecodeString: ok %v, %v (lost %d)", ok, err, lost)
		}
		attr.Learn(r)
	}
	var evs []Event
	for _, r := range records() {
		raw := encode(t, r)
		if _, _, ok, _ := DecodeString(raw); ok {
			t.Fatalf("an event record decodes as a string record: %+v", r)
		}
		ev, lost, err := testDecoder.Decode(raw)
		if err != nil || lost != 0 {
			t.Fatalf("Decode: %v (lost %d)", err, lost)
		}
		life.Annotate(&ev)
		attr.Annotate(&ev)
		evs = append(evs, ev)
	}
	return append(evs, Event{Kind: Lost, Time: evs[len(evs)-1].Time, Count: 7})
}

// existEvents are what --snapshot prints before the live stream: one of
// each holder, with and without parent, owner, mount point and process.
func existEvents() []Event {
	at := time.Date(2026, 11, 30, 11, 59, 59, 500, time.UTC)
	proc := func(ev Event) Event {
		ev.Kind, ev.Time = Exist, at
		ev.Pid, ev.Ppid, ev.Uid, ev.Comm = 4242, 1, 0, "unshare"
		return ev
	}
	return []Event{
		{Kind: Exist, Time: at, Type: User, Inum: 4026531837, NsID: 4097, HeldBy: "process", Nprocs: 80, Pid: 1, Comm: "systemd"},
		proc(Event{Type: PID, Inum: 4026532178, HeldBy: "process", Nprocs: 3, ParentInum: 4026531836, OwnerInum: 4026532177}),
		proc(Event{Type: Net, Inum: 4026532181, NsID: 4102, HeldBy: "bind_mount", OwnerInum: 4026531837, Mountpoint: "/run/netns/blue"}),
		proc(Event{Type: UTS, Inum: 4026532190, HeldBy: "bind_mount", OwnerInum: 4026531837, Mountpoint: "/tmp/a b"}),
		proc(Event{Type: IPC, Inum: 4026532191, HeldBy: "fd", OwnerInum: 4026531837}),
		// Every process it was found through exited meanwhile.
		{Kind: Exist, Time: at, Type: User, Inum: 4026532999, HeldBy: "namespace", ParentInum: 4026531837},
	}
}

func TestDecode(t *testing.T) {
	evs := decodeAll(t)
	create := evs[0]
	if create.Kind != Create || create.Type != Net || create.Inum != 4026532181 || create.OldInum != 4026531833 ||
		create.Syscall != "unshare" || create.Comm != "unshare" || create.Pid != 4242 || create.Tid != 4243 {
		t.Errorf("create decoded as %+v", create)
	}
	if want := time.Date(2026, 11, 30, 12, 0, 1, 1, time.UTC); !create.Time.Equal(want) {
		t.Errorf("time = %v, want %v", create.Time, want)
	}
	destroy := evs[4]
	if !destroy.HasLifetime || destroy.Lifetime != 1_500_000_099 || destroy.How != "last_ref" {
		t.Errorf("destroy decoded as %+v", destroy)
	}
	if evs[5].HasLifetime {
		t.Errorf("destroy of a namespace whose create was not seen has a lifetime: %+v", evs[5])
	}
}

func TestDecodeRejectsBadRecords(t *testing.T) {
	good := encode(t, records()[0])
	if _, _, err := testDecoder.Decode(good[:len(good)-1]); err == nil {
		t.Error("short record decoded without error")
	}
	bad := records()[0]
	bad.Kind = 99
	if _, _, err := testDecoder.Decode(encode(t, bad)); err == nil {
		t.Error("unknown kind decoded without error")
	}
	bad = records()[0]
	bad.NsType = 8
	if _, _, err := testDecoder.Decode(encode(t, bad)); err == nil {
		t.Error("unknown namespace type decoded without error")
	}
	lostRec := records()[0]
	lostRec.Lost = 3
	if _, lost, err := testDecoder.Decode(encode(t, lostRec)); err != nil || lost != 3 {
		t.Errorf("lost count = %d, %v; want 3", lost, err)
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./events -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden output:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func format(t *testing.T, name string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(name, &buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range append(existEvents(), decodeAll(t)...) {
		if err := w.Write(&ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestTextGolden(t *testing.T) {
	golden(t, "events.txt", format(t, "text"))
}

func TestJSONGolden(t *testing.T) {
	out := format(t, "json")
	golden(t, "events.jsonl", out)
	// Every line is one JSON object with the fields the README promises.
	for i, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		for _, k := range []string{"time", "event"} {
			if _, ok := m[k]; !ok {
				t.Errorf("line %d has no %q: %s", i, k, line)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
			t.Errorf("line %d: time: %v", i, err)
		}
	}
}

func TestExistJSON(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter("json", &buf)
	for _, ev := range existEvents() {
		w.Write(&ev)
	}
	w.Flush()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for i, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		for _, k := range []string{"type", "inum", "held_by", "nprocs"} {
			if _, ok := m[k]; !ok {
				t.Errorf("exist line %d has no %q: %s", i, k, line)
			}
		}
		for _, k := range []string{"tid", "old_inum", "syscall", "clone_flags", "how"} {
			if _, ok := m[k]; ok {
				t.Errorf("exist line %d has %q: %s", i, k, line)
			}
		}
		_, hasPid := m["pid"]
		if want := i != 5; hasPid != want {
			t.Errorf("exist line %d: pid present %v, want %v: %s", i, hasPid, want, line)
		}
	}
}

func TestParseNsType(t *testing.T) {
	for i, name := range typeNames {
		if typ, ok := ParseNsType(name); !ok || typ != NsType(i) || typ.String() != name {
			t.Errorf("ParseNsType(%q) = %v, %v", name, typ, ok)
		}
	}
	if _, ok := ParseNsType("pid_for_children"); ok {
		t.Error("ParseNsType accepts pid_for_children")
	}
}

func TestNewWriterRejectsUnknownFormat(t *testing.T) {
	_, err := NewWriter("xml", &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "text, json") {
		t.Errorf("NewWriter(xml) error = %v, want one naming the valid formats", err)
	}
}

func TestLifetimesBounded(t *testing.T) {
	l := NewLifetimes()
	now := time.Now()
	for i := range MaxTracked + 10 {
		l.Annotate(&Event{Kind: Create, Type: Net, Inum: uint32(i), Time: now})
	}
	if l.Len() != MaxTracked || l.Untracked != 10 {
		t.Fatalf("tracked %d, untracked %d", l.Len(), l.Untracked)
	}
	for i := range MaxTracked {
		l.Annotate(&Event{Kind: Destroy, Type: Net, Inum: uint32(i), Time: now})
	}
	if l.Len() != 0 {
		t.Fatalf("%d entries left after every namespace was destroyed", l.Len())
	}
}

// A late destroy (net cleanup) can arrive after the kernel reused the inum
// for a new namespace: ns_id keeps their lifetimes apart.
func TestLifetimesByNsID(t *testing.T) {
	l := NewLifetimes()
	t0 := time.Unix(100, 0)
	l.Annotate(&Event{Kind: Create, Type: Net, Inum: 5, NsID: 1, Time: t0})
	l.Annotate(&Event{Kind: Create, Type: Net, Inum: 5, NsID: 2, Time: t0.Add(time.Second)})
	old := Event{Kind: Destroy, Type: Net, Inum: 5, NsID: 1, Time: t0.Add(3 * time.Second)}
	l.Annotate(&old)
	if !old.HasLifetime || old.Lifetime != 3*time.Second {
		t.Fatalf("destroy of ns_id 1: lifetime %v (known %v), want 3s", old.Lifetime, old.HasLifetime)
	}
	cur := Event{Kind: Destroy, Type: Net, Inum: 5, NsID: 2, Time: t0.Add(4 * time.Second)}
	l.Annotate(&cur)
	if !cur.HasLifetime || cur.Lifetime != 3*time.Second {
		t.Fatalf("destroy of ns_id 2: lifetime %v (known %v), want 3s", cur.Lifetime, cur.HasLifetime)
	}
}
