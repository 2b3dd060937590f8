package events

import (
	"io"
	"testing"
	"time"

	"github.com/nstrace/nstrace"
)

// unshareLoop is what a process in a pod calling unshare(CLONE_NEWUTS) in
// a loop (a sandbox giving each task a hostname of its own) makes the BPF
// side send: per call, one record of its create of a uts namespace, the
// free of the nsproxy it alone held, and the destroy of the uts namespace
// only that nsproxy held, which the previous call created. The kernel
// allocates the new inum before it frees the old one, so inums alternate;
// ns ids do not repeat. Calls are 3 ms apart, so the second changes every
// few hundred records.
func unshareLoop(tb testing.TB, rounds int) [][]byte {
	tb.Helper()
	var raws [][]byte
	inum := func(i int) uint32 { return 4026532200 + uint32(i&1) }
	for i := range rounds {
		hdr := nstrace.BpfNsRec{
			TsNs: uint64(1_000_000_000 + i*3_000_000), Syscall: 5, Flags: 0x04000000,
			CgroupId: testCgroupID, ExeId: testExeID, Pid: 4242, Tid: 4242, Ppid: 4100, Uid: 0,
			Comm: comm("unshare"), ParentComm: comm("bash"),
		}
		old, oldID := inum(i-1), uint64(5000+i-1)
		raws = append(raws, encode(tb, record{hdr, []any{
			nstrace.BpfNsItem{Kind: 1, NsType: 1, Inum: inum(i), NsId: uint64(5000 + i), OldInum: old},
			nstrace.BpfReleaseItem{Kind: 3, Inums: [9]uint32{4026531841, old, 4026531839, 4026531836, 4026531840, 0, 4026531835, 4026531834, 4026531834}},
			nstrace.BpfNsItem{Kind: 4, NsType: 1, Inum: old, NsId: oldID, How: 1, OwnerCgroupId: testCgroupID, OwnerPid: 4242, OwnerKnown: 1},
		}}))
	}
	return raws
}

// benchPerRecord is the number of events in each of unshareLoop's records.
const benchPerRecord = 3

// benchAttributor knows the pod's cgroup and the loop's executable, as
// after their string records.
func benchAttributor(tb testing.TB) *Attributor {
	tb.Helper()
	attr := NewAttributor(nil, nil, testNames{})
	for _, raw := range [][]byte{
		strRec(tb, recCgroup, testCgroupID, "/kubepods/besteffort/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/"+testID),
		strRec(tb, recExe, testExeID, "/usr/bin/unshare"),
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
		got, _, err := dec.Decode(raw)
		if err != nil || len(got) != benchPerRecord {
			b.Fatalf("%d events, %v", len(got), err)
		}
		for i := range got {
			life.Annotate(&got[i])
			attr.Annotate(&got[i])
		}
		evs = append(evs, got...)
	}
	return evs
}

// reportPerEvent adds the time per event to a benchmark whose operation
// is a record of the unshare loop.
func reportPerEvent(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchPerRecord), "ns/event")
}

// BenchmarkDecode is the decode of one record (ns/op) and so of its events
// (ns/event).
func BenchmarkDecode(b *testing.B) {
	raws := unshareLoop(b, benchRounds)
	dec := &Decoder{bootToWall: testDecoder.bootToWall}
	evs := make([]Event, MaxPerRecord)
	b.ReportAllocs()
	b.SetBytes(int64(len(raws[0])))
	i := 0
	for b.Loop() {
		if _, _, err := dec.DecodeInto(evs, raws[i%len(raws)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportPerEvent(b)
}

// benchmarkWriter is the output of one record's events.
func benchmarkWriter(b *testing.B, format string) {
	evs := benchEvents(b)
	w, err := NewWriter(format, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		for range benchPerRecord {
			if err := w.Write(&evs[i%len(evs)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	reportPerEvent(b)
}

func BenchmarkJSON(b *testing.B) { benchmarkWriter(b, "json") }
func BenchmarkText(b *testing.B) { benchmarkWriter(b, "text") }

// pipeline is what the stream loop does with each namespace record.
type pipeline struct {
	dec    *Decoder
	life   *Lifetimes
	attr   *Attributor
	limits *LimitWatch
	stats  *Stats
	out    Writer
	// evs is reused, as in the stream loop: a new one per record would
	// be some 10 KB to allocate (and Writer.Write(&ev) of a local would
	// move it to the heap).
	evs [MaxPerRecord]Event
}

func newPipeline(tb testing.TB, format string, w io.Writer) *pipeline {
	out, err := NewWriter(format, w)
	if err != nil {
		tb.Fatal(err)
	}
	return &pipeline{dec: &Decoder{bootToWall: testDecoder.bootToWall}, life: NewLifetimes(), attr: benchAttributor(tb), out: out,
		limits: NewLimitWatch(80), stats: NewStats(time.Time{})}
}

func (p *pipeline) record(raw []byte) error {
	n, _, err := p.dec.DecodeInto(p.evs[:], raw)
	if err != nil {
		return err
	}
	for i := range p.evs[:n] {
		ev := &p.evs[i]
		p.life.Annotate(ev)
		p.attr.Annotate(ev)
		if err := p.out.Write(ev); err != nil {
			return err
		}
		// As nstrace does by default (--warn-limit 80), and with --summary.
		p.stats.Add(ev)
		if lim := p.limits.Check(ev); lim != nil {
			if err := p.out.Write(lim); err != nil {
				return err
			}
		}
	}
	return nil
}

func benchmarkPipeline(b *testing.B, format string) {
	raws := unshareLoop(b, benchRounds)
	p := newPipeline(b, format, io.Discard)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := p.record(raws[i%len(raws)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := p.out.Flush(); err != nil {
		b.Fatal(err)
	}
	reportPerEvent(b)
}

// BenchmarkPipeline is decode, annotate and JSON output of one record and
// its events.
func BenchmarkPipeline(b *testing.B)     { benchmarkPipeline(b, "json") }
func BenchmarkPipelineText(b *testing.B) { benchmarkPipeline(b, "text") }
