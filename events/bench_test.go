package events

import (
	"io"
	"testing"

	"github.com/nstrace/nstrace"
)

// Exe ids of the unshare loop's processes (testExeID is /usr/bin/unshare).
const testTrueExeID = testExeID + 1

// unshareLoop is what `while :; do unshare -u true; done` in a pod makes
// the BPF side send: per round, unshare creates a uts namespace, execs
// true, and true's exit frees the nsproxy and with it the namespace. The
// kernel reuses the lowest free inum, so inums repeat; ns ids do not.
// Rounds are 3 ms apart, so the second changes every few hundred events.
func unshareLoop(tb testing.TB, rounds int) [][]byte {
	tb.Helper()
	var raws [][]byte
	for i := range rounds {
		ts := uint64(1_000_000_000 + i*3_000_000)
		inum, nsid := uint32(4026532200+i%8), uint64(5000+i)
		proc := func(r nstrace.BpfEvent, name string, exe uint64) nstrace.BpfEvent {
			r.Pid, r.Tid, r.Ppid, r.Uid = 4242+uint32(i), 4242+uint32(i), 4100, 0
			r.Comm, r.ParentComm, r.CgroupId, r.ExeId = comm(name), comm("bash"), testCgroupID, exe
			return r
		}
		create := proc(nstrace.BpfEvent{TsNs: ts, Kind: 1, NsType: 1, Inum: inum, NsId: nsid, OldInum: 4026531838, Syscall: 5, Flags: 0x04000000}, "unshare", testExeID)
		free := proc(nstrace.BpfEvent{TsNs: ts + 1_000_000, Kind: 3,
			Inums: [9]uint32{4026531841, inum, 4026531839, 4026531836, 4026531840, 0, 4026531835, 4026531834, 4026531834}}, "true", testTrueExeID)
		destroy := proc(nstrace.BpfEvent{TsNs: ts + 1_000_100, Kind: 4, NsType: 1, Inum: inum, NsId: nsid, How: 1}, "true", testTrueExeID)
		destroy.OwnerCgroupId, destroy.OwnerPid, destroy.OwnerKnown = testCgroupID, 4242+uint32(i), 1
		for _, r := range []nstrace.BpfEvent{create, free, destroy} {
			raws = append(raws, encode(tb, r))
		}
	}
	return raws
}

// benchAttributor knows the pod's cgroup and the loop's executables, as
// after their string records.
func benchAttributor(tb testing.TB) *Attributor {
	tb.Helper()
	attr := NewAttributor(nil, nil, testNames{})
	for _, raw := range [][]byte{
		strRec(tb, recCgroup, testCgroupID, "/kubepods/besteffort/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/"+testID),
		strRec(tb, recExe, testExeID, "/usr/bin/unshare"),
		strRec(tb, recExe, testTrueExeID, "/usr/bin/true"),
	} {
		r, _, _, err := DecodeString(raw)
		if err != nil {
			tb.Fatal(err)
		}
		attr.Learn(r)
	}
	return attr
}

const benchRounds = 1024

// benchEvents are the unshare loop's events, decoded and annotated.
func benchEvents(b *testing.B) []Event {
	dec := &Decoder{bootToWall: testDecoder.bootToWall}
	life, attr := NewLifetimes(), benchAttributor(b)
	var evs []Event
	for _, raw := range unshareLoop(b, benchRounds) {
		ev, _, err := dec.Decode(raw)
		if err != nil {
			b.Fatal(err)
		}
		life.Annotate(&ev)
		attr.Annotate(&ev)
		evs = append(evs, ev)
	}
	return evs
}

func BenchmarkDecode(b *testing.B) {
	raws := unshareLoop(b, benchRounds)
	dec := &Decoder{bootToWall: testDecoder.bootToWall}
	b.ReportAllocs()
	b.SetBytes(int64(RecordSize))
	i := 0
	for b.Loop() {
		if _, _, err := dec.Decode(raws[i%len(raws)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func benchmarkWriter(b *testing.B, format string) {
	evs := benchEvents(b)
	w, err := NewWriter(format, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := w.Write(&evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkJSON(b *testing.B) { benchmarkWriter(b, "json") }
func BenchmarkText(b *testing.B) { benchmarkWriter(b, "text") }

// pipeline is what the stream loop does with each event record.
type pipeline struct {
	dec  *Decoder
	life *Lifetimes
	attr *Attributor
	out  Writer
	// ev is reused, as in the stream loop: Writer.Write(&ev) would move a
	// new one to the heap for every event.
	ev Event
}

func newPipeline(tb testing.TB, format string, w io.Writer) *pipeline {
	out, err := NewWriter(format, w)
	if err != nil {
		tb.Fatal(err)
	}
	return &pipeline{dec: &Decoder{bootToWall: testDecoder.bootToWall}, life: NewLifetimes(), attr: benchAttributor(tb), out: out}
}

func (p *pipeline) event(raw []byte) error {
	var err error
	p.ev, _, err = p.dec.Decode(raw)
	if err != nil {
		return err
	}
	p.life.Annotate(&p.ev)
	p.attr.Annotate(&p.ev)
	return p.out.Write(&p.ev)
}

func benchmarkPipeline(b *testing.B, format string) {
	raws := unshareLoop(b, benchRounds)
	p := newPipeline(b, format, io.Discard)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := p.event(raws[i%len(raws)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := p.out.Flush(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPipeline is decode, annotate and JSON output of one event.
func BenchmarkPipeline(b *testing.B)     { benchmarkPipeline(b, "json") }
func BenchmarkPipelineText(b *testing.B) { benchmarkPipeline(b, "text") }
