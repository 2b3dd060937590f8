package events

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// hostileNames names every container with what a terminal would act on.
type hostileNames struct{}

func (hostileNames) Lookup(id string) (Names, bool) {
	return Names{ContainerName: "w\x1b[2J\n\"", Image: "i\\\xff", PodName: "p\u202eq\r", PodNamespace: "n\x00s"}, true
}

// FuzzRecord feeds the decoder what the ring buffer might hold, a string
// record and then an event record, through the pipeline nstrace runs
// (lifetimes, attribution, the limit watch) and both writers. Whatever the
// bytes: an error or events, never a panic; every JSON line one valid
// object; no text line with a byte a terminal acts on.
func FuzzRecord(f *testing.F) {
	str := [][]byte{
		strRec(f, recCgroup, testCgroupID, "/kubepods/besteffort/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/"+testID),
		strRec(f, recExe, testExeID, "/usr/bin/un\nshare\x1b[2J\xff"),
		strRec(f, recCgroup, testCgroupID, "/docker/\x1b]0;x\a"+testID),
	}
	for i, r := range append(records(), unshareRecord()) {
		f.Add(str[i%len(str)], encode(f, r))
	}
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, strRaw, raw []byte) {
		life := NewLifetimes()
		attr := NewAttributor(nil, nil, hostileNames{})
		limits := NewLimitWatch(80)
		if r, _, ok, err := DecodeString(strRaw); ok && err == nil {
			attr.Learn(r)
		}
		// A record that is a string record is not an event record.
		if _, _, ok, _ := DecodeString(raw); ok {
			return
		}
		evs := make([]Event, MaxPerRecord)
		n, _, err := testDecoder.DecodeInto(evs, raw)
		if err != nil {
			if n != 0 {
				t.Fatalf("DecodeInto: %d events and an error: %v", n, err)
			}
			return
		}
		var js, text bytes.Buffer
		jw, _ := NewWriter("json", &js)
		tw, _ := NewWriter("text", &text)
		var out []*Event
		for i := range evs[:n] {
			ev := &evs[i]
			life.Annotate(ev)
			attr.Annotate(ev)
			out = append(out, ev)
			if lim := limits.Check(ev); lim != nil {
				c := *lim
				out = append(out, &c)
			}
		}
		for _, ev := range out {
			if err := jw.Write(ev); err != nil {
				t.Fatal(err)
			}
			if err := tw.Write(ev); err != nil {
				t.Fatal(err)
			}
		}
		jw.Flush()
		tw.Flush()
		lines := strings.Split(strings.TrimSuffix(js.String(), "\n"), "\n")
		if len(lines) != len(out) {
			t.Fatalf("%d events made %d JSON lines:\n%s", len(out), len(lines), js.String())
		}
		for _, l := range lines {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil || !utf8.ValidString(l) {
				t.Fatalf("invalid JSON line (%v): %q", err, l)
			}
		}
		for _, l := range strings.Split(strings.TrimSuffix(text.String(), "\n"), "\n") {
			if !utf8.ValidString(l) || strings.IndexFunc(l, func(r rune) bool { return !strconv.IsPrint(r) }) >= 0 {
				t.Fatalf("text line with a control or format character or invalid UTF-8: %q", l)
			}
		}
	})
}
