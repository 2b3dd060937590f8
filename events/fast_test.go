package events

// Tests that the allocation-free decoder and writers do what the
// reflection and fmt based ones in reference_test.go did, to the byte.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the zones below, whatever the machine has
	"unicode/utf8"
	"unsafe"

	"github.com/nstrace/nstrace"
)

// field is where a field of a generated record type is, and where
// DecodeInto reads it and how wide.
type field struct {
	name         string
	offset, size uintptr // in the Go type
	off, width   int     // what DecodeInto uses
}

// checkLayout checks that fields are at the offsets DecodeInto reads, and
// that they are all the named fields of T, which is size bytes.
func checkLayout[T any](t *testing.T, size int, fields []field) {
	t.Helper()
	var r T
	typ := reflect.TypeFor[T]()
	if binary.Size(r) != size || unsafe.Sizeof(r) != uintptr(size) {
		t.Errorf("%v is %d bytes (binary.Size %d), DecodeInto takes %d", typ, unsafe.Sizeof(r), binary.Size(r), size)
	}
	known := map[string]bool{}
	for _, f := range fields {
		known[f.name] = true
		if f.offset != uintptr(f.off) || f.size != uintptr(f.width) {
			t.Errorf("%v.%s is at %d, %d bytes; DecodeInto reads %d bytes at %d", typ, f.name, f.offset, f.size, f.width, f.off)
		}
		if sf, ok := typ.FieldByName(f.name); !ok || sf.Offset != f.offset || sf.Type.Size() != f.size {
			t.Errorf("%v.%s: not found by reflection at %d, %d bytes", typ, f.name, f.offset, f.size)
		}
	}
	for f := range typ.Fields() {
		if f.Name != "_" && !known[f.Name] {
			t.Errorf("%v.%s is new to this test: where does DecodeInto find it?", typ, f.Name)
		}
	}
}

func TestRecordLayout(t *testing.T) {
	var h nstrace.BpfNsRec
	checkLayout[nstrace.BpfNsRec](t, HeaderSize, []field{
		{"TsNs", unsafe.Offsetof(h.TsNs), unsafe.Sizeof(h.TsNs), offTsNs, 8},
		{"Lost", unsafe.Offsetof(h.Lost), unsafe.Sizeof(h.Lost), offLost, 4},
		{"Kind", unsafe.Offsetof(h.Kind), unsafe.Sizeof(h.Kind), offKind, 1},
		{"N", unsafe.Offsetof(h.N), unsafe.Sizeof(h.N), offN, 1},
		{"Syscall", unsafe.Offsetof(h.Syscall), unsafe.Sizeof(h.Syscall), offSyscall, 1},
		{"Pad", unsafe.Offsetof(h.Pad), unsafe.Sizeof(h.Pad), int(unsafe.Offsetof(h.Pad)), 1}, // not read
		{"Flags", unsafe.Offsetof(h.Flags), unsafe.Sizeof(h.Flags), offFlags, 8},
		{"CgroupId", unsafe.Offsetof(h.CgroupId), unsafe.Sizeof(h.CgroupId), offCgroupID, 8},
		{"ExeId", unsafe.Offsetof(h.ExeId), unsafe.Sizeof(h.ExeId), offExeID, 8},
		{"Pid", unsafe.Offsetof(h.Pid), unsafe.Sizeof(h.Pid), offPid, 4},
		{"Tid", unsafe.Offsetof(h.Tid), unsafe.Sizeof(h.Tid), offTid, 4},
		{"Ppid", unsafe.Offsetof(h.Ppid), unsafe.Sizeof(h.Ppid), offPpid, 4},
		{"Uid", unsafe.Offsetof(h.Uid), unsafe.Sizeof(h.Uid), offUid, 4},
		{"Comm", unsafe.Offsetof(h.Comm), unsafe.Sizeof(h.Comm), offComm, commLen},
		{"ParentComm", unsafe.Offsetof(h.ParentComm), unsafe.Sizeof(h.ParentComm), offParentComm, commLen},
		{"Stack", unsafe.Offsetof(h.Stack), unsafe.Sizeof(h.Stack), offStack, 4},
		{"Pad2", unsafe.Offsetof(h.Pad2), unsafe.Sizeof(h.Pad2), int(unsafe.Offsetof(h.Pad2)), 4}, // not read
	})
	if offKind != kindOffset {
		t.Errorf("a namespace record has its kind at %d, DecodeString looks at %d", offKind, kindOffset)
	}
	var it nstrace.BpfNsItem
	checkLayout[nstrace.BpfNsItem](t, ItemSize, []field{
		{"Kind", unsafe.Offsetof(it.Kind), unsafe.Sizeof(it.Kind), itemKind, 1},
		{"NsType", unsafe.Offsetof(it.NsType), unsafe.Sizeof(it.NsType), itemNsType, 1},
		{"How", unsafe.Offsetof(it.How), unsafe.Sizeof(it.How), itemHow, 1},
		{"ForChildren", unsafe.Offsetof(it.ForChildren), unsafe.Sizeof(it.ForChildren), itemForChildren, 1},
		{"OwnerKnown", unsafe.Offsetof(it.OwnerKnown), unsafe.Sizeof(it.OwnerKnown), itemOwnerKnown, 1},
		{"Reason", unsafe.Offsetof(it.Reason), unsafe.Sizeof(it.Reason), itemReason, 1},
		{"Error", unsafe.Offsetof(it.Error), unsafe.Sizeof(it.Error), itemError, 2},
		{"Inum", unsafe.Offsetof(it.Inum), unsafe.Sizeof(it.Inum), itemInum, 4},
		{"OldInum", unsafe.Offsetof(it.OldInum), unsafe.Sizeof(it.OldInum), itemOldInum, 4},
		{"NsId", unsafe.Offsetof(it.NsId), unsafe.Sizeof(it.NsId), itemNsID, 8},
		{"OwnerCgroupId", unsafe.Offsetof(it.OwnerCgroupId), unsafe.Sizeof(it.OwnerCgroupId), itemOwnerCgroupID, 8},
		{"OwnerPid", unsafe.Offsetof(it.OwnerPid), unsafe.Sizeof(it.OwnerPid), itemOwnerPid, 4},
		{"UserCount", unsafe.Offsetof(it.UserCount), unsafe.Sizeof(it.UserCount), itemUserCount, 4},
		{"UserLimit", unsafe.Offsetof(it.UserLimit), unsafe.Sizeof(it.UserLimit), itemUserLimit, 4},
		{"UserNs", unsafe.Offsetof(it.UserNs), unsafe.Sizeof(it.UserNs), itemUserNs, 4},
		{"UserUid", unsafe.Offsetof(it.UserUid), unsafe.Sizeof(it.UserUid), itemUserUid, 4},
		{"Partial", unsafe.Offsetof(it.Partial), unsafe.Sizeof(it.Partial), itemPartial, 1},
		{"Pad2", unsafe.Offsetof(it.Pad2), unsafe.Sizeof(it.Pad2), int(unsafe.Offsetof(it.Pad2)), 3}, // not read
	})
	var rel nstrace.BpfReleaseItem
	checkLayout[nstrace.BpfReleaseItem](t, ItemSize, []field{
		// The kind where an ns_item has it tells the two apart.
		{"Kind", unsafe.Offsetof(rel.Kind), unsafe.Sizeof(rel.Kind), itemKind, 1},
		{"Pad", unsafe.Offsetof(rel.Pad), unsafe.Sizeof(rel.Pad), int(unsafe.Offsetof(rel.Pad)), 3}, // not read
		{"Inums", unsafe.Offsetof(rel.Inums), unsafe.Sizeof(rel.Inums), itemInums, 4 * len(Event{}.Namespaces)},
		{"Pad2", unsafe.Offsetof(rel.Pad2), unsafe.Sizeof(rel.Pad2), int(unsafe.Offsetof(rel.Pad2)), 16}, // not read
	})
}

// commNames are names of every length, for random records.
var commNames = []string{"unshare", "containerd-shim", "", "exactly16bytes!!", "x"}

// randomRecord is a valid namespace record with random fields: random
// bytes, but for the kinds, the count and the types, and sometimes with
// bytes after its items.
func randomRecord(r *rand.Rand) []byte {
	n := 1 + r.IntN(MaxPerRecord)
	raw := make([]byte, HeaderSize+n*ItemSize+8*r.IntN(2))
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	raw[offKind], raw[offN] = recNs, byte(n)
	raw[offSyscall] = byte(r.IntN(len(syscallNames) + 2))
	// Names with or without junk after the NUL.
	for _, off := range []int{offComm, offParentComm} {
		c := raw[off : off+commLen]
		if r.IntN(4) > 0 {
			clear(c)
			copy(c, commNames[r.IntN(len(commNames))])
		}
	}
	for i := range n {
		it := raw[HeaderSize+i*ItemSize:]
		it[itemKind] = byte(Create) + byte(r.IntN(int(Destroy)+1))
		if it[itemKind] > byte(Destroy) {
			it[itemKind] = byte(Fail)
		}
		if Kind(it[itemKind]) != NsproxyFree {
			it[itemNsType] = byte(r.IntN(int(numTypes)))
			it[itemHow] = byte(r.IntN(len(howNames) + 2))
			it[itemReason] = byte(r.IntN(len(reasonNames) + 1))
		}
		if Kind(it[itemKind]) == Fail && r.IntN(2) == 0 {
			it[itemNsType] = byte(NoType)
		}
	}
	return raw
}

func TestDecodeMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	dec := &Decoder{bootToWall: testDecoder.bootToWall}
	var evs [MaxPerRecord]Event
	for range 20000 {
		raw := randomRecord(r)
		n, lost, err := dec.DecodeInto(evs[:], raw)
		if err != nil {
			t.Fatal(err)
		}
		if want := refDecode(dec, raw); !reflect.DeepEqual(evs[:n], want) {
			t.Fatalf("record % x\ndecoded as %+v\nwant       %+v", raw, evs[:n], want)
		}
		if want := binary.NativeEndian.Uint32(raw[offLost:]); lost != want {
			t.Fatalf("lost %d, want %d", lost, want)
		}
	}
	// Beyond the memo's size: it forgets, and names stay right.
	for i := range 3 * memoSize {
		raw := randomRecord(r)
		name := strings.Repeat(string(rune('a'+i%26)), 1+i%15) + string(rune('A'+i/26%26))
		clear(raw[offComm : offComm+commLen])
		copy(raw[offComm:], name)
		n, _, err := dec.DecodeInto(evs[:], raw)
		if err != nil || evs[0].Comm != name || evs[n-1].Comm != name {
			t.Fatalf("comm %q, %v; want %q", evs[0].Comm, err, name)
		}
	}
	if n := len(dec.comms.m); n > memoSize {
		t.Errorf("%d names interned, more than %d", n, memoSize)
	}
}

func TestDecodeAllocs(t *testing.T) {
	raws := unshareLoop(t, benchRounds)
	dec := &Decoder{bootToWall: testDecoder.bootToWall}
	evs := make([]Event, MaxPerRecord)
	i := 0
	allocs := testing.AllocsPerRun(len(raws), func() {
		if _, _, err := dec.DecodeInto(evs, raws[i%len(raws)]); err != nil {
			t.Fatal(err)
		}
		i++
	})
	if allocs != 0 {
		t.Errorf("%v allocations per record, want none", allocs)
	}
}

// FuzzDecode feeds DecodeInto any bytes: it must not panic, must not
// return more events than a record holds or any with an error, and what
// it accepts must decode as the reference decoder has it.
func FuzzDecode(f *testing.F) {
	for _, r := range append(records(), unshareRecord()) {
		f.Add(encode(f, r))
	}
	for _, raw := range unshareLoop(f, 2) {
		f.Add(raw)
	}
	f.Add(randomRecord(rand.New(rand.NewPCG(10, 11))))
	f.Add([]byte{})
	dec := &Decoder{bootToWall: testDecoder.bootToWall}
	var evs [MaxPerRecord]Event
	f.Fuzz(func(t *testing.T, raw []byte) {
		n, lost, err := dec.DecodeInto(evs[:], raw)
		if n < 0 || n > MaxPerRecord || err != nil && n != 0 || err == nil && n == 0 {
			t.Fatalf("%d events, %v", n, err)
		}
		if len(raw) >= HeaderSize && lost != binary.NativeEndian.Uint32(raw[offLost:]) {
			t.Fatalf("lost %d, not the header's", lost)
		}
		if err != nil {
			return
		}
		if want := refDecode(dec, raw); !reflect.DeepEqual(evs[:n], want) {
			t.Fatalf("decoded as %+v\nwant %+v", evs[:n], want)
		}
	})
}

// jsonStringPieces are what random strings are made of: all that
// encoding/json escapes, UTF-8 valid and not, and plain text.
var jsonStringPieces = []string{
	"a", "/usr/bin/", "kubepods", " ", "0123456789", "-_.:", "\"", "\\", "<", ">", "&", "/",
	"\x00", "\x01", "\b", "\f", "\n", "\r", "\t", "\x1f", "\x7f",
	"é", "日本", "\U0001F600", "\u2028", "\u2029", "\u2027", "\u202a", "\ufffd",
	"\xff", "\xc3", "\xe2\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80",
}

func randomString(r *rand.Rand, maxPieces int) string {
	var b strings.Builder
	for range r.IntN(maxPieces + 1) {
		if r.IntN(8) == 0 {
			b.WriteByte(byte(r.Uint32())) // any byte at all
		} else {
			b.WriteString(jsonStringPieces[r.IntN(len(jsonStringPieces))])
		}
	}
	return b.String()
}

func checkJSONString(t *testing.T, s string) {
	t.Helper()
	want, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
		t.Fatalf("appendJSONString(%q) = %s, encoding/json: %s", s, got, want)
	}
}

func TestJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range jsonStringPieces {
		checkJSONString(t, s)
		// At every position relative to the 8-byte words.
		for pad := range 17 {
			checkJSONString(t, strings.Repeat("x", pad)+s)
			checkJSONString(t, strings.Repeat("x", pad)+s+strings.Repeat("y", 17-pad))
		}
	}
	for c := range 256 {
		checkJSONString(t, string([]byte{byte(c)}))
		checkJSONString(t, "abcdefgh"+string([]byte{byte(c)})+"ijklmnopq")
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 50000 {
		checkJSONString(t, randomString(r, 20))
	}
}

func FuzzJSONString(f *testing.F) {
	for _, s := range jsonStringPieces {
		f.Add(s)
	}
	f.Add("/kubepods/besteffort/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/" + testID)
	f.Fuzz(func(t *testing.T, s string) { checkJSONString(t, s) })
}

func TestJSONCloneFlags(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, f := range append([]uint64{0, 0x4e020000, 0x400000001, ^uint64(0)}, r.Uint64(), r.Uint64()&0xfffffff80) {
		want, _ := json.Marshal(CloneFlagNames(f))
		if got := jsonCloneFlags(f); got != string(want) {
			t.Errorf("jsonCloneFlags(%#x) = %s, want %s", f, got, want)
		}
	}
}

func loadLocation(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// testLocations have summer time (New York), half-hour summer time (Lord
// Howe), an offset of minutes (Kathmandu) or of seconds (which RFC 3339
// does not show).
func testLocations(t *testing.T) []*time.Location {
	return []*time.Location{
		time.UTC, time.Local, loadLocation(t, "America/New_York"), loadLocation(t, "Australia/Lord_Howe"),
		loadLocation(t, "Asia/Kathmandu"), time.FixedZone("odd", -(3*3600 + 30*60 + 7)),
	}
}

func TestClockMatchesFormat(t *testing.T) {
	json := clock{head: "2006-01-02T15:04:05", digits: 9, tail: "Z07:00"}
	text := clock{head: "15:04:05", digits: 6}
	check := func(tm time.Time) {
		t.Helper()
		if got, want := string(json.append(nil, tm)), tm.Format(TimeFormat); got != want {
			t.Fatalf("JSON time of %v: %s, want %s", tm, got, want)
		}
		if got, want := string(text.append(nil, tm)), tm.Format("15:04:05.000000"); got != want {
			t.Fatalf("text time of %v: %s, want %s", tm, got, want)
		}
	}
	ny := loadLocation(t, "America/New_York")
	// Across the summer time changes of 2026 in New York (and so across
	// changes of the zone on the same second of UTC), step by step.
	for _, change := range []time.Time{
		time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 6, 0, 0, 0, time.UTC),
	} {
		for d := -3 * time.Second; d <= 3*time.Second; d += 250*time.Millisecond + 1 {
			at := change.Add(d)
			check(at.In(ny))
			check(at.In(time.UTC))
			check(at.In(ny))
		}
	}
	r := rand.New(rand.NewPCG(7, 8))
	locs := testLocations(t)
	at := time.Date(2026, 3, 8, 1, 59, 0, 0, ny)
	for range 100000 {
		switch r.IntN(100) {
		case 0: // anywhere from year 0 to 5000
			at = time.Unix(r.Int64N(1e11)-62e9, r.Int64N(1e9))
		case 1:
			at = at.In(locs[r.IntN(len(locs))])
		default: // on, as events do
			at = at.Add(time.Duration(r.Int64N(int64(3 * time.Second))))
		}
		check(at)
	}
	for _, tm := range []time.Time{
		{}, time.Unix(0, 0), time.Unix(-1, 999999999), time.Date(-1, 12, 31, 23, 59, 59, 1, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 123, time.UTC), time.Unix(0, 1700000000123456789).In(time.Local),
	} {
		check(tm)
	}
}

// eventPool is what random events are made of: a few contexts, so that
// they repeat, and random strings.
type eventPool struct {
	r        *rand.Rand
	contexts []Context
	at       time.Time
	locs     []*time.Location
}

func newEventPool(t *testing.T, seed uint64) *eventPool {
	r := rand.New(rand.NewPCG(seed, seed))
	p := &eventPool{r: r, locs: testLocations(t), at: time.Date(2026, 11, 1, 1, 59, 50, 0, loadLocation(t, "America/New_York"))}
	attr := NewAttributor(nil, nil, testNames{})
	p.contexts = []Context{
		{},
		attr.ContextOf(testCgroupID, "/kubepods/besteffort/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/"+testID),
		attr.ContextOf(1, "/user.slice/user-0.slice/session-1.scope"),
		attr.ContextOf(2, "/system.slice/docker-"+strings.Repeat("ab", 32)+".scope"),
	}
	for range 4 {
		p.contexts = append(p.contexts, p.randomContext())
	}
	return p
}

func (p *eventPool) str() string {
	if p.r.IntN(3) == 0 {
		return ""
	}
	return randomString(p.r, 6)
}

func (p *eventPool) u32() uint32 {
	if p.r.IntN(3) == 0 {
		return 0
	}
	return p.r.Uint32() >> p.r.IntN(32)
}

func (p *eventPool) u64() uint64 {
	if p.r.IntN(3) == 0 {
		return 0
	}
	return p.r.Uint64() >> p.r.IntN(64)
}

func (p *eventPool) randomContext() Context {
	c := Context{CgroupID: p.u64(), Cgroup: p.str(), Names: Names{ContainerName: p.str(), Image: p.str(), PodName: p.str(), PodNamespace: p.str()}}
	c.ID, c.Runtime, c.PodUID = p.str(), p.str(), p.str()
	return c
}

func (p *eventPool) context() Context {
	if p.r.IntN(10) == 0 {
		return p.randomContext()
	}
	return p.contexts[p.r.IntN(len(p.contexts))]
}

func (p *eventPool) event() Event {
	r := p.r
	switch r.IntN(50) {
	case 0:
		p.at = p.at.In(p.locs[r.IntN(len(p.locs))])
	case 1:
		p.at = time.Unix(r.Int64N(4e9), 0)
	}
	p.at = p.at.Add(time.Duration(r.Int64N(int64(time.Second))))
	kinds := []Kind{0, Create, Join, NsproxyFree, Destroy, Lost, Exist, 99}
	hows := []string{"", "last_ref", "freed", Polled, Polled, Reused, p.str()}
	flags := []uint64{0, 0x04000000, 0x4e020000, 0x20000000, 0x400000001, p.u64()}
	ev := Event{
		Time: p.at, Kind: kinds[r.IntN(len(kinds))], Type: NsType(r.IntN(int(numTypes) + 2)),
		Inum: p.u32(), NsID: p.u64(), OldInum: p.u32(), Pid: p.u32(), Tid: p.u32(), Ppid: p.u32(), Uid: p.u32(),
		Comm: p.str(), Syscall: syscallNames[r.IntN(len(syscallNames))], Flags: flags[r.IntN(len(flags))],
		Children: r.IntN(2) == 0, How: hows[r.IntN(len(hows))],
		Lifetime: time.Duration(r.Int64() >> r.IntN(64)), HasLifetime: r.IntN(2) == 0, Partial: r.IntN(4) == 0,
		Count: p.u64(), HeldBy: p.str(), Nprocs: p.u32(), ParentInum: p.u32(), OwnerInum: p.u32(), Mountpoint: p.str(),
		Exe: p.str(), ParentComm: p.str(), Ctx: p.context(),
		Owner: Owner{Pid: p.u32(), Context: p.context()}, HasOwner: r.IntN(2) == 0,
	}
	if r.IntN(4) == 0 {
		ev.Syscall = p.str()
	}
	if r.IntN(4) == 0 {
		ev.Lifetime = -ev.Lifetime
	}
	for i := range ev.Namespaces {
		ev.Namespaces[i] = p.u32()
	}
	return ev
}

func TestWritersMatchReference(t *testing.T) {
	for _, format := range Formats {
		t.Run(format, func(t *testing.T) {
			p := newEventPool(t, 9)
			var evs []Event
			for range 30000 {
				evs = append(evs, p.event())
			}
			evs = append(evs, existEvents()...)
			evs = append(evs, decodeAll(t)...)
			var got, want bytes.Buffer
			w, err := NewWriter(format, &got)
			if err != nil {
				t.Fatal(err)
			}
			ref := newRefWriter(format, &want)
			for i := range evs {
				if err := w.Write(&evs[i]); err != nil {
					t.Fatal(err)
				}
				if err := ref.Write(&evs[i]); err != nil {
					t.Fatal(err)
				}
			}
			if err := errors.Join(w.Flush(), ref.Flush()); err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(got.Bytes(), want.Bytes()) {
				return
			}
			gl, wl := strings.Split(got.String(), "\n"), strings.Split(want.String(), "\n")
			skip := 0
			if format == "text" {
				skip = 1 // the header
			}
			for i := range min(len(gl), len(wl)) {
				if gl[i] != wl[i] {
					var ev any = "header"
					if i >= skip {
						ev = evs[i-skip]
					}
					t.Fatalf("line %d differs:\ngot  %s\nwant %s\nevent %+v", i, gl[i], wl[i], ev)
				}
			}
			t.Fatalf("%d lines, want %d", len(gl), len(wl))
		})
	}
}

func TestColumnPadsLikeFmt(t *testing.T) {
	for _, s := range []string{"", "-", "unshare", "exactly16bytes!!", "longer than sixteen", "日本語", "\xff\xfe", "é\U0001F600", "a\nb\x1b[2J\\\u202e"} {
		got := string(stringColumn(nil, s, widthComm))
		want := strings.TrimSuffix(fmtColumn(refEscape(s)), "|") + " "
		if got != want {
			t.Errorf("column %q = %q, want %q", s, got, want)
		}
		if utf8.ValidString(s) && utf8.RuneCountInString(got) < widthComm+1 {
			t.Errorf("column %q = %q, narrower than %d", s, got, widthComm)
		}
	}
}

// countingWriter records the size of each write.
type countingWriter struct {
	writes []int
	err    error
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.writes = append(c.writes, len(b))
	if c.err != nil {
		return 0, c.err
	}
	return len(b), nil
}

func TestOutputIsBuffered(t *testing.T) {
	for _, format := range Formats {
		var cw countingWriter
		w, _ := NewWriter(format, &cw)
		evs := decodeAll(t)
		for i := range 1000 {
			if err := w.Write(&evs[i%len(evs)]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if len(cw.writes) < 2 {
			t.Fatalf("%s: %d writes for 1000 events", format, len(cw.writes))
		}
		for i, n := range cw.writes[:len(cw.writes)-1] {
			if n < flushAt {
				t.Errorf("%s: write %d of %d is %d bytes, less than %d", format, i, len(cw.writes), n, flushAt)
			}
		}
		w.Flush()
		if n := len(cw.writes); cw.writes[n-1] == 0 {
			t.Errorf("%s: Flush with nothing buffered wrote 0 bytes", format)
		}
		// A write error is returned, then again for every write.
		cw.err = errors.New("disk full")
		for i := 0; ; i++ {
			err := w.Write(&evs[0])
			if i > 2*flushAt && err == nil {
				t.Fatalf("%s: no error after %d writes", format, i)
			}
			if err != nil {
				if w.Write(&evs[0]) != cw.err || w.Flush() != cw.err {
					t.Errorf("%s: error not kept", format)
				}
				break
			}
		}
	}
}

func TestWriteAllocs(t *testing.T) {
	evs := decodeAll(t)
	for _, format := range Formats {
		w, _ := NewWriter(format, io.Discard)
		i := 0
		allocs := testing.AllocsPerRun(10000, func() {
			w.Write(&evs[i%len(evs)])
			i++
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per event, want none", format, allocs)
		}
	}
}

// The stream loop's work for one record allocates at most once (it does
// not at all now, but for a rare map growth), once its caches are warm.
func TestPipelineAllocs(t *testing.T) {
	raws := unshareLoop(t, benchRounds)
	for _, format := range Formats {
		p := newPipeline(t, format, io.Discard)
		for _, raw := range raws {
			if err := p.record(raw); err != nil {
				t.Fatal(err)
			}
		}
		i := 0
		allocs := testing.AllocsPerRun(len(raws), func() {
			p.record(raws[i%len(raws)])
			i++
		})
		if allocs > 1 {
			t.Errorf("%s: %v allocations per record, want at most 1", format, allocs)
		}
	}
}
