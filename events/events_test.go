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

// record is a namespace record as the BPF side writes it: a header and its
// items, each an nstrace.BpfNsItem or an nstrace.BpfReleaseItem.
type record struct {
	hdr   nstrace.BpfNsRec
	items []any
}

// encode is r's bytes, with the kind and item count the header has then.
func encode(t testing.TB, r record) []byte {
	t.Helper()
	r.hdr.Kind, r.hdr.N = recNs, uint8(len(r.items))
	b, err := binary.Append(nil, binary.NativeEndian, &r.hdr)
	for _, it := range r.items {
		if err == nil {
			b, err = binary.Append(b, binary.NativeEndian, it)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testDecoder stamps boot time 0 at 2026-11-30T12:00:00Z.
var testDecoder = &Decoder{bootToWall: time.Duration(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixNano())}

// unshareProc is the header of a record of events by the unshare process
// of the golden files, at ts.
func unshareProc(ts uint64, syscall uint8, flags uint64) nstrace.BpfNsRec {
	return nstrace.BpfNsRec{
		TsNs: ts, Syscall: syscall, Flags: flags, CgroupId: testCgroupID, ExeId: testExeID,
		Pid: 4242, Tid: 4243, Ppid: 1, Uid: 0, Comm: comm("unshare"), ParentComm: comm("containerd-shim"),
	}
}

// owned is it with the owner BPF found for a join or destroy.
func owned(it nstrace.BpfNsItem) nstrace.BpfNsItem {
	it.OwnerCgroupId, it.OwnerPid, it.OwnerKnown = testCgroupID, 4200, 1
	return it
}

// records is one of each kind of event, as the BPF side writes them. Each
// is a record of its own: the golden files give every event its own time,
// and the events of one record share theirs (records of several events
// are in TestDecodeRecord and the benchmarks).
func records() []record {
	one := func(hdr nstrace.BpfNsRec, it any) record { return record{hdr, []any{it}} }
	return []record{
		one(unshareProc(1_000_000_001, 5, 0x4e020000), nstrace.BpfNsItem{Kind: 1, NsType: 4, Inum: 4026532181, NsId: 4102, OldInum: 4026531833}),
		one(unshareProc(1_000_000_002, 5, 0x20000000), nstrace.BpfNsItem{Kind: 1, NsType: 3, Inum: 4026532178, NsId: 4103, OldInum: 4026531836, ForChildren: 1}),
		one(unshareProc(1_000_000_003, 6, 0), owned(nstrace.BpfNsItem{Kind: 2, NsType: 1, Inum: 4026532190, NsId: 4099, OldInum: 4026531838})),
		one(unshareProc(2_500_000_000, 0, 0), nstrace.BpfReleaseItem{Kind: 3, Inums: [9]uint32{4026532177, 4026532178, 4026532179, 4026531836, 4026532181, 0, 4026532180, 4026531834, 4026531834}}),
		one(unshareProc(2_500_000_100, 0, 0), owned(nstrace.BpfNsItem{Kind: 4, NsType: 4, Inum: 4026532181, NsId: 4102, How: 1})),
		one(unshareProc(2_500_000_200, 0, 0), owned(nstrace.BpfNsItem{Kind: 4, NsType: 5, Inum: 4026532999, How: 2})),
		// A poll: no task acted.
		one(nstrace.BpfNsRec{TsNs: 2_600_000_000}, nstrace.BpfNsItem{Kind: 4, NsType: 1, Inum: 4026532190, NsId: 4099, How: 3}),
		// A create with its user's count (90% of the limit: a limit event
		// at the default 80%), the failure at the limit, one for depth and
		// one the kernel's state does not explain.
		one(unshareProc(2_700_000_000, 5, 0x04000000), nstrace.BpfNsItem{Kind: 1, NsType: 1, Inum: 4026532200, NsId: 4104, OldInum: 4026531838,
			UserCount: 9, UserLimit: 10, UserNs: 4026531837}),
		one(unshareProc(2_700_000_100, 5, 0x04000000), nstrace.BpfNsItem{Kind: 7, NsType: 1, Error: 28, Reason: 1,
			UserCount: 10, UserLimit: 10, UserNs: 4026531837}),
		one(unshareProc(2_700_000_200, 5, 0x10000000), nstrace.BpfNsItem{Kind: 7, NsType: 5, Error: 28, Reason: 2,
			UserCount: 34, UserLimit: 33, UserNs: 4026532999}),
		one(unshareProc(2_700_000_300, 1, 0x40000000), nstrace.BpfNsItem{Kind: 7, NsType: 0xff, Error: 1}),
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
	limits := NewLimitWatch(80)
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
		got, lost, err := testDecoder.Decode(raw)
		if err != nil || lost != 0 || len(got) != len(r.items) {
			t.Fatalf("Decode: %d events of %d, %v (lost %d)", len(got), len(r.items), err, lost)
		}
		for i := range got {
			life.Annotate(&got[i])
			attr.Annotate(&got[i])
			if got[i].Kind == Fail && got[i].Reason == "limit" {
				// What the tracer names the stack of the record's hook.
				got[i].KernelStack = []string{"bpf_prog_6deef7357e7b4530_fexit_sys_unshare+0x1a4", "bpf_trampoline_6442509812+0x6b", "__x64_sys_unshare+0x9", "do_syscall_64+0x82", "entry_SYSCALL_64_after_hwframe+0x76"}
			}
			evs = append(evs, got[i])
			if lim := limits.Check(&got[i]); lim != nil {
				evs = append(evs, *lim)
			}
		}
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

// unshareRecord is what `unshare -n -p` run by a process that alone held
// its nsproxy makes the BPF side send, in one record: the net and pid
// namespaces created, the old nsproxy freed, and the net namespace only it
// held destroyed.
func unshareRecord() record {
	return record{unshareProc(3_000_000_000, 5, 0x60000000), []any{
		nstrace.BpfNsItem{Kind: 1, NsType: 4, Inum: 4026532300, NsId: 4200, OldInum: 4026532181},
		nstrace.BpfNsItem{Kind: 1, NsType: 3, Inum: 4026532301, NsId: 4201, OldInum: 4026531836, ForChildren: 1},
		nstrace.BpfReleaseItem{Kind: 3, Inums: [9]uint32{4026531841, 4026531838, 4026531839, 4026531836, 4026532181, 0, 4026531835, 4026531834, 4026531834}},
		owned(nstrace.BpfNsItem{Kind: 4, NsType: 4, Inum: 4026532181, NsId: 4102, How: 1}),
	}}
}

func TestDecodeRecord(t *testing.T) {
	r := unshareRecord()
	r.hdr.Lost = 2
	evs, lost, err := testDecoder.Decode(encode(t, r))
	if err != nil || lost != 2 || len(evs) != 4 {
		t.Fatalf("Decode: %d events, lost %d, %v; want 4, 2, nil", len(evs), lost, err)
	}
	at := time.Date(2026, 11, 30, 12, 0, 3, 0, time.UTC)
	for i, ev := range evs {
		// The actor and the time are the record's.
		if !ev.Time.Equal(at) || ev.Pid != 4242 || ev.Tid != 4243 || ev.Ppid != 1 || ev.Comm != "unshare" ||
			ev.ParentComm != "containerd-shim" || ev.cgroupID != testCgroupID || ev.exeID != testExeID {
			t.Errorf("event %d: actor or time not the record's: %+v", i, ev)
		}
		// Syscall and flags are those of creates and joins only.
		if create := ev.Kind == Create; create != (ev.Syscall == "unshare") || create != (ev.Flags == 0x60000000) {
			t.Errorf("event %d (%v): syscall %q, flags %#x", i, ev.Kind, ev.Syscall, ev.Flags)
		}
	}
	net, pid, free, destroy := evs[0], evs[1], evs[2], evs[3]
	if net.Kind != Create || net.Type != Net || net.Inum != 4026532300 || net.NsID != 4200 || net.OldInum != 4026532181 || net.Children {
		t.Errorf("net create decoded as %+v", net)
	}
	if pid.Kind != Create || pid.Type != PID || pid.Inum != 4026532301 || !pid.Children {
		t.Errorf("pid create decoded as %+v", pid)
	}
	if free.Kind != NsproxyFree || free.Namespaces[Net] != 4026532181 || free.Namespaces[8] != 4026531834 || free.Inum != 0 || free.Type != 0 {
		t.Errorf("nsproxy_free decoded as %+v", free)
	}
	if destroy.Kind != Destroy || destroy.Type != Net || destroy.Inum != 4026532181 || destroy.How != "last_ref" ||
		!destroy.ownerKnown || destroy.ownerPid != 4200 || destroy.ownerCgroupID != testCgroupID {
		t.Errorf("destroy decoded as %+v", destroy)
	}
}

// TestDecodeMaxRecord round-trips a record of the most events there can
// be: an unshare of every type that freed the nsproxy holding the 8
// namespaces only it held.
func TestDecodeMaxRecord(t *testing.T) {
	r := record{hdr: unshareProc(4_000_000_000, 5, 0x7e020080)}
	var want []Event
	// As Decode makes it: in time.Local.
	base := Event{Time: time.Unix(0, int64(4*time.Second+testDecoder.bootToWall)), Pid: 4242, Tid: 4243, Ppid: 1,
		Comm: "unshare", ParentComm: "containerd-shim", cgroupID: testCgroupID, exeID: testExeID}
	for typ := range numTypes {
		r.items = append(r.items, nstrace.BpfNsItem{Kind: 1, NsType: uint8(typ), Inum: 4026533000 + uint32(typ),
			NsId: 6000 + uint64(typ), OldInum: 4026532000 + uint32(typ), ForChildren: b2u(typ == PID || typ == Time)})
		ev := base
		ev.Kind, ev.Type, ev.Inum, ev.NsID, ev.OldInum = Create, typ, 4026533000+uint32(typ), 6000+uint64(typ), 4026532000+uint32(typ)
		ev.Children, ev.Syscall, ev.Flags = typ == PID || typ == Time, "unshare", 0x7e020080
		want = append(want, ev)
	}
	free := nstrace.BpfReleaseItem{Kind: 3}
	for i := range free.Inums {
		free.Inums[i] = 4026532000 + uint32(i)
	}
	free.Inums[User] = 0
	r.items = append(r.items, free)
	ev := base
	ev.Kind, ev.Namespaces = NsproxyFree, free.Inums
	want = append(want, ev)
	for typ := range numTypes {
		r.items = append(r.items, owned(nstrace.BpfNsItem{Kind: 4, NsType: uint8(typ), Inum: 4026532000 + uint32(typ), How: 1, NsId: 5000 + uint64(typ)}))
		ev := base
		ev.Kind, ev.Type, ev.Inum, ev.NsID, ev.How = Destroy, typ, 4026532000+uint32(typ), 5000+uint64(typ), "last_ref"
		ev.ownerCgroupID, ev.ownerPid, ev.ownerKnown = testCgroupID, 4200, true
		want = append(want, ev)
	}
	if len(r.items) != MaxPerRecord {
		t.Fatalf("%d items, want MaxPerRecord (%d)", len(r.items), MaxPerRecord)
	}
	raw := encode(t, r)
	if len(raw) != HeaderSize+MaxPerRecord*ItemSize {
		t.Fatalf("record of %d bytes", len(raw))
	}
	var evs [MaxPerRecord]Event
	n, _, err := testDecoder.DecodeInto(evs[:], raw)
	if err != nil || n != MaxPerRecord {
		t.Fatalf("DecodeInto: %d events, %v", n, err)
	}
	for i := range want {
		if !reflect.DeepEqual(evs[i], want[i]) {
			t.Errorf("event %d decoded as %+v\nwant %+v", i, evs[i], want[i])
		}
	}
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func TestDecodeRejectsBadRecords(t *testing.T) {
	good := unshareRecord()
	good.hdr.Lost = 3
	raw := encode(t, good)
	with := func(off int, v byte) []byte {
		b := bytes.Clone(raw)
		b[off] = v
		return b
	}
	item := func(i, off int) int { return HeaderSize + i*ItemSize + off }
	for _, tc := range []struct {
		name string
		raw  []byte
		lost uint32 // 0 when the header cannot be read
		err  string
	}{
		{"empty", nil, 0, "short record: 0 bytes"},
		{"short header", raw[:HeaderSize-1], 0, "short record: 95 bytes, want at least 96"},
		{"string record", with(offKind, recCgroup), 3, "not a namespace record: kind 16"},
		{"unknown kind", with(offKind, 99), 3, "not a namespace record: kind 99"},
		{"no events", with(offN, 0), 3, "corrupt record: 0 events"},
		{"too many events", with(offN, MaxPerRecord+1), 3, "corrupt record: 18 events"},
		{"header only", raw[:HeaderSize], 3, "short record: 96 bytes for 4 events, want 320"},
		{"truncated item", raw[:len(raw)-1], 3, "short record: 319 bytes for 4 events"},
		{"more items than sent", with(offN, 5), 3, "short record: 320 bytes for 5 events, want 376"},
		{"item kind 0", with(item(1, itemKind), 0), 3, "event 2 of 4: kind 0"},
		{"item kind lost", with(item(3, itemKind), byte(Lost)), 3, "event 4 of 4: kind 5"},
		{"item kind 255", with(item(0, itemKind), 255), 3, "event 1 of 4: kind 255"},
		{"item type 8", with(item(3, itemNsType), byte(numTypes)), 3, "event 4 of 4: kind 4, type 8"},
		{"item type 255", with(item(0, itemNsType), 255), 3, "event 1 of 4: kind 1, type 255"},
		{"item kind limit", with(item(0, itemKind), byte(Limit)), 3, "event 1 of 4: kind 8"},
	} {
		evs := make([]Event, MaxPerRecord)
		evs[0].Comm = "untouched"
		n, lost, err := testDecoder.DecodeInto(evs, tc.raw)
		if err == nil || !strings.Contains(err.Error(), tc.err) || n != 0 || lost != tc.lost {
			t.Errorf("%s: %d events, lost %d, %v; want 0 events, lost %d, an error with %q", tc.name, n, lost, err, tc.lost, tc.err)
		}
		if evs[0].Comm != "untouched" {
			t.Errorf("%s: a bad record overwrote the events", tc.name)
		}
		if evs, lost2, err2 := testDecoder.Decode(tc.raw); evs != nil || lost2 != lost || err2 == nil || err2.Error() != err.Error() {
			t.Errorf("%s: Decode: %v, lost %d, %v; DecodeInto: lost %d, %v", tc.name, evs, lost2, err2, lost, err)
		}
	}
	// A release item's second byte is padding, not a type.
	if _, _, err := testDecoder.Decode(with(item(2, itemNsType), 200)); err != nil {
		t.Errorf("release item with padding set: %v", err)
	}
	// Too little room is the caller's mistake, but still no panic.
	if n, lost, err := testDecoder.DecodeInto(make([]Event, 3), raw); err == nil || n != 0 || lost != 3 {
		t.Errorf("room for 3 of 4 events: %d events, lost %d, %v", n, lost, err)
	}
	// Bytes after the items are ignored.
	if evs, lost, err := testDecoder.Decode(append(bytes.Clone(raw), make([]byte, 8)...)); err != nil || len(evs) != 4 || lost != 3 {
		t.Errorf("record with trailing bytes: %d events, lost %d, %v", len(evs), lost, err)
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
