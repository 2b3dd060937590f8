package events

import (
	"math/bits"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Stats counts, per namespace type, the events of a run or of one
// interval of it (--summary, --interval): as printed, so that the counts
// are those of the events a reader saw.
type Stats struct {
	// Since is when the counting began: the start, or the last interval.
	Since time.Time
	Types [numTypes]TypeStats
}

// TypeStats are one type's counts. Alive and PeakAlive are about the
// namespaces created while nstrace ran (those whose lifetime it can tell):
// how many are alive now, and the most that were at once in the interval.
type TypeStats struct {
	Created, Destroyed, Joined, Failed uint64
	Alive, PeakAlive                   uint64
	// Lifetimes of the destroyed ones whose create was seen, in whole
	// microseconds as BCC's tools count: bucket i counts those of 2^i to
	// 2^(i+1)-1 µs (bucket 0: 0 and 1).
	Lifetimes [64]uint64
}

// NewStats starts counting at since.
func NewStats(since time.Time) *Stats { return &Stats{Since: since} }

// Add counts ev, a printed event. A fail counts for its type, if it names
// one, else for each type its flags asked for.
func (s *Stats) Add(ev *Event) {
	switch ev.Kind {
	case Create:
		if t := s.of(ev.Type); t != nil {
			t.Created++
			t.Alive++
			t.PeakAlive = max(t.PeakAlive, t.Alive)
		}
	case Join:
		if t := s.of(ev.Type); t != nil {
			t.Joined++
		}
	case Destroy:
		if t := s.of(ev.Type); t != nil {
			t.Destroyed++
			if ev.HasLifetime {
				if t.Alive > 0 {
					t.Alive--
				}
				t.Lifetimes[lifetimeBucket(ev.Lifetime)]++
			}
		}
	case Fail:
		if t := s.of(ev.Type); t != nil {
			t.Failed++
			return
		}
		for typ, flag := range typeFlags {
			if ev.Flags&flag != 0 {
				s.Types[typ].Failed++
			}
		}
	}
}

func (s *Stats) of(t NsType) *TypeStats {
	if t < numTypes {
		return &s.Types[t]
	}
	return nil
}

// Next starts the next interval at now: the counts start again, the
// namespaces alive stay (and are the new interval's peak so far).
func (s *Stats) Next(now time.Time) {
	s.Since = now
	for i := range s.Types {
		t := &s.Types[i]
		*t = TypeStats{Alive: t.Alive, PeakAlive: t.Alive}
	}
}

// active reports whether type t has anything to show.
func (t *TypeStats) active() bool {
	return t.Created != 0 || t.Destroyed != 0 || t.Joined != 0 || t.Failed != 0 || t.Alive != 0
}

func lifetimeBucket(d time.Duration) int {
	us := d.Microseconds()
	if us <= 1 {
		return 0
	}
	return bits.Len64(uint64(us)) - 1
}

// typeFlags are the CLONE_NEW* flags of each type.
var typeFlags = [numTypes]uint64{
	Mnt: unix.CLONE_NEWNS, UTS: unix.CLONE_NEWUTS, IPC: unix.CLONE_NEWIPC, PID: unix.CLONE_NEWPID,
	Net: unix.CLONE_NEWNET, User: unix.CLONE_NEWUSER, Cgroup: unix.CLONE_NEWCGROUP, Time: unix.CLONE_NEWTIME,
}

// appendSummary appends the rest of a summary's JSON object: the interval and,
// for each type with something to show, its counts and the lifetime
// histogram's non-empty buckets.
func (j *jsonWriter) appendSummary(o object, ev *Event) []byte {
	s := ev.Stats
	o.key("since")
	o.b = append(j.clock.append(append(o.b, '"'), s.Since), '"')
	o.key("interval_ns")
	o.b = strconv.AppendInt(o.b, ev.Time.Sub(s.Since).Nanoseconds(), 10)
	o.key("types")
	types := object{b: append(o.b, '{')}
	for i := range s.Types {
		t := &s.Types[i]
		if !t.active() {
			continue
		}
		types.key(typeNames[i])
		c := object{b: append(types.b, '{')}
		c.uint("created", t.Created)
		c.uint("destroyed", t.Destroyed)
		c.uint("joined", t.Joined)
		c.uint("failed", t.Failed)
		c.uint("alive", t.Alive)
		c.uint("peak_alive", t.PeakAlive)
		c.key("lifetime_us")
		c.b = append(c.b, '[')
		first := true
		for b, n := range t.Lifetimes {
			if n == 0 {
				continue
			}
			if !first {
				c.b = append(c.b, ',')
			}
			first = false
			lo, hi := bucketRange(b)
			h := object{b: append(c.b, '{')}
			h.uint("from", lo)
			h.uint("to", hi)
			h.uint("count", n)
			c.b = h.end()
		}
		c.b = append(c.b, ']')
		types.b = c.end()
	}
	o.b = types.end()
	return o.end()
}

// bucketRange is the lifetimes bucket b counts, in µs, both ends included.
func bucketRange(b int) (lo, hi uint64) {
	if b == 0 {
		return 0, 1
	}
	return 1 << b, 1<<(b+1) - 1
}

// appendSummaryText appends a summary as BCC's tools print histograms: a
// line of counts per type, then its lifetimes, in microseconds, in log2
// buckets with a bar.
func appendSummaryText(b []byte, ev *Event) []byte {
	s := ev.Stats
	b = append(b, "\nSummary, "...)
	b = append(b, ev.Time.Sub(s.Since).Round(time.Millisecond).String()...)
	b = append(b, ":\n"...)
	any := false
	for i := range s.Types {
		t := &s.Types[i]
		if !t.active() {
			continue
		}
		any = true
		b = append(b, "  "...)
		b = stringColumn(b, typeNames[i], widthType)
		b = appendKeyUint(b, "created=", t.Created)
		b = appendKeyUint(b, " destroyed=", t.Destroyed)
		b = appendKeyUint(b, " joined=", t.Joined)
		b = appendKeyUint(b, " failed=", t.Failed)
		b = appendKeyUint(b, " alive=", t.Alive)
		b = appendKeyUint(b, " peak_alive=", t.PeakAlive)
		b = append(b, '\n')
		b = appendHistogram(b, &t.Lifetimes)
	}
	if !any {
		b = append(b, "  no namespace events\n"...)
	}
	return b
}

// appendHistogram prints the lifetime buckets from the first to the last
// non-empty one, in microseconds, with a bar of up to 40 stars.
func appendHistogram(b []byte, h *[64]uint64) []byte {
	first, last := -1, -1
	var most uint64
	for i, n := range h {
		if n == 0 {
			continue
		}
		if first < 0 {
			first = i
		}
		last = i
		most = max(most, n)
	}
	if first < 0 {
		return b
	}
	b = append(b, "     lifetime (us)          : count     distribution\n"...)
	for i := first; i <= last; i++ {
		lo, hi := bucketRange(i)
		start := len(b)
		b = append(b, "     "...)
		b = strconv.AppendUint(b, lo, 10)
		b = append(b, " -> "...)
		b = strconv.AppendUint(b, hi, 10)
		b = column(b, start, 27)
		b = append(b, ": "...)
		start = len(b)
		b = strconv.AppendUint(b, h[i], 10)
		b = column(b, start, 9)
		b = append(b, '|')
		stars := int(h[i] * 40 / most)
		for k := range 40 {
			if k < stars {
				b = append(b, '*')
			} else {
				b = append(b, ' ')
			}
		}
		b = append(b, "|\n"...)
	}
	return b
}
