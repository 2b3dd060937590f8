package events

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Writer prints events in one output format.
type Writer interface {
	Write(ev *Event) error
	// Flush pushes buffered output to the underlying writer.
	Flush() error
}

// Formats lists the valid -o values.
var Formats = []string{"text", "json"}

// NewWriter returns the Writer for format ("text" or "json").
func NewWriter(format string, w io.Writer) (Writer, error) {
	out := output{w: w, buf: make([]byte, 0, flushAt+flushAt/4)}
	switch format {
	case "text":
		return &textWriter{out: out, clock: clock{head: "15:04:05", digits: 6}}, nil
	case "json":
		return &jsonWriter{out: out, clock: clock{head: "2006-01-02T15:04:05", digits: 9, tail: "Z07:00"}}, nil
	}
	return nil, fmt.Errorf("invalid output format %q (valid: %s)", format, strings.Join(Formats, ", "))
}

// TimeFormat is RFC 3339 with a fixed nine-digit fraction.
const TimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// flushAt is how much output is written at once: one write per event would
// cost more than formatting it.
const flushAt = 64 << 10

// output is the lines a Writer appended to buf and not yet written to w.
type output struct {
	w   io.Writer
	buf []byte
	err error // the first write error; no more is written after one
}

// lineDone is called after each line: it writes the buffer out once it
// holds flushAt bytes.
func (o *output) lineDone() error {
	if len(o.buf) < flushAt {
		return o.err
	}
	return o.Flush()
}

func (o *output) Flush() error {
	if o.err != nil {
		o.buf = o.buf[:0] // what can no longer be written
		return o.err
	}
	if len(o.buf) == 0 {
		return nil
	}
	n, err := o.w.Write(o.buf)
	if err == nil && n < len(o.buf) {
		err = io.ErrShortWrite
	}
	o.buf, o.err = o.buf[:0], err
	return err
}

// clock formats times as the layout head + "." + digits of fraction +
// tail, exactly as time.Time.Format would. Formatting the seconds and the
// zone is most of the work, and events come in time order: it does that
// only when the second (or location) changes. Zone offsets change on
// whole seconds, so the cached part is right for the whole second.
type clock struct {
	head, tail string // layouts before and after the fraction
	digits     int    // of the fraction, at most 9; truncated, as Format does

	sec   int64
	loc   *time.Location
	valid bool
	// The formatted head and tail of sec in loc.
	headText, tailText []byte
}

func (c *clock) append(b []byte, t time.Time) []byte {
	sec, loc := t.Unix(), t.Location()
	if !c.valid || sec != c.sec || loc != c.loc {
		c.headText = t.AppendFormat(c.headText[:0], c.head)
		c.tailText = t.AppendFormat(c.tailText[:0], c.tail)
		c.sec, c.loc, c.valid = sec, loc, true
	}
	b = append(b, c.headText...)
	b = append(b, '.')
	b = appendFraction(b, t.Nanosecond(), c.digits)
	return append(b, c.tailText...)
}

// appendFraction appends the first digits digits of the nine of ns.
func appendFraction(b []byte, ns, digits int) []byte {
	var d [9]byte
	for i := len(d) - 1; i >= 0; i-- {
		d[i] = byte('0' + ns%10)
		ns /= 10
	}
	return append(b, d[:digits]...)
}

// Text columns, in the style of BCC tools: each padded to a width (as
// fmt's %-Ns pads: to a number of runes, never truncating) and followed by
// a space; DETAILS, last, is not padded.
const (
	widthTime      = 15
	widthEvent     = 12
	widthType      = 6
	widthInum      = 10
	widthPid       = 7
	widthComm      = 16
	widthContainer = 12
)

// textHeader is the first line of text output.
var textHeader = func() string {
	var b []byte
	for _, c := range []struct {
		name  string
		width int
	}{
		{"TIME", widthTime}, {"EVENT", widthEvent}, {"TYPE", widthType}, {"INUM", widthInum},
		{"PID", widthPid}, {"COMM", widthComm}, {"CONTAINER", widthContainer},
	} {
		b = stringColumn(b, c.name, c.width)
	}
	return string(append(b, "DETAILS\n"...))
}()

// column pads the column that starts at b[start:] to width runes and ends
// it with the space before the next one.
func column(b []byte, start, width int) []byte {
	for n := utf8.RuneCount(b[start:]); n < width; n++ {
		b = append(b, ' ')
	}
	return append(b, ' ')
}

// asciiPad is column for a column of printable ASCII (a time, a number,
// a name of nstrace's): its runes are its bytes, with no need to count.
func asciiPad(b []byte, start, width int) []byte {
	for n := len(b) - start; n < width; n++ {
		b = append(b, ' ')
	}
	return append(b, ' ')
}

// asciiColumn appends s, printable ASCII, as a column: as stringColumn
// would, with nothing to escape.
func asciiColumn(b []byte, s string, width int) []byte {
	start := len(b)
	return asciiPad(append(b, s...), start, width)
}

// stringColumn appends s, escaped, as a column.
func stringColumn(b []byte, s string, width int) []byte {
	start := len(b)
	return column(appendEscaped(b, s), start, width)
}

// appendEscaped appends s with what a terminal would act on escaped as Go
// escapes it (\n, \x1b, \u202e), and invalid UTF-8 as \xNN: a process
// or a container names itself, and a name must not move the cursor, start
// a line that looks like an event or turn text around. A backslash is
// doubled, so that an escape in the output always stands for a byte.
func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= ' ' && c < utf8.RuneSelf && c != '\\' && c != 0x7f {
			b = append(b, c)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
		case r == '\\':
			b = append(b, '\\', '\\')
		case strconv.IsPrint(r):
			b = append(b, s[i:i+size]...)
		default:
			q := strconv.QuoteRuneToASCII(r) // '\x1b', '\n', '\u202e'
			b = append(b, q[1:len(q)-1]...)
		}
		i += size
	}
	return b
}

// uintColumn appends v as a column, or "-" if !ok.
func uintColumn(b []byte, v uint64, ok bool, width int) []byte {
	if !ok {
		return stringColumn(b, "-", width)
	}
	start := len(b)
	return asciiPad(strconv.AppendUint(b, v, 10), start, width)
}

type textWriter struct {
	out        output
	headerDone bool
	clock      clock
	flags      memo[uint64, string] // FormatCloneFlags
	// The columns PID through CONTAINER of the last actor, and the pairs
	// of the last context in DETAILS: escaping and padding the names and
	// quoting the paths were half the cost of a line.
	actor last[textActor]
	ctx   last[textContext]
}

// textActor is what the columns PID through CONTAINER are made of.
type textActor struct {
	pid             uint32
	proc            bool // else PID and COMM are "-"
	comm, container string
}

// textContext is what the context's pairs in DETAILS are made of.
type textContext struct {
	ctx   Context
	owner string // the owner_container, if the event has one
	exe   string
}

func (t *textWriter) Write(ev *Event) error {
	b := t.out.buf
	if ev.Kind == Summary {
		t.out.buf = appendSummaryText(b, ev)
		return t.out.lineDone()
	}
	if !t.headerDone {
		b = append(b, textHeader...)
		t.headerDone = true
	}
	hasProc := ev.Kind != Lost && ev.Kind != Orphan && (ev.Kind != Exist || ev.Pid != 0) && !FoundGone(ev.How)
	hasNs := ev.Kind != Lost && ev.Kind != NsproxyFree && ev.Type != NoType
	hasInum := hasNs && ev.Kind != Fail
	typ, comm := "-", "-"
	if hasProc {
		comm = ev.Comm
	}
	if hasNs {
		typ = ev.Type.String()
	}
	start := len(b)
	b = asciiPad(t.clock.append(b, ev.Time), start, widthTime)
	b = asciiColumn(b, ev.Kind.String(), widthEvent)
	b = asciiColumn(b, typ, widthType)
	b = uintColumn(b, uint64(ev.Inum), hasInum, widthInum)
	actor := textActor{ev.Pid, hasProc, comm, containerColumn(&ev.Ctx)}
	b = append(b, t.actorColumns(&actor)...)
	b = t.appendDetails(b, ev)
	b = append(b, '\n')
	// The kernel stack as perf script prints one: a frame a line, indented.
	for _, f := range ev.KernelStack {
		b = append(append(b, "        "...), f...)
		b = append(b, '\n')
	}
	t.out.buf = b
	return t.out.lineDone()
}

func (t *textWriter) Flush() error { return t.out.Flush() }

// appendUsage appends a per-user count against its limit, and whose it is:
// " ucount=3/1000 user_ns=4026531837 user_uid=0".
func appendUsage(b []byte, ev *Event) []byte {
	if !ev.HasUsage {
		return b
	}
	b = appendKeyUint(b, " ucount=", uint64(ev.UserCount))
	b = appendKeyUint(b, "/", uint64(ev.UserLimit))
	b = appendKeyUint(b, " user_ns=", uint64(ev.UserNs))
	return appendKeyUint(b, " user_uid=", uint64(ev.UserUid))
}

// containerColumn is the container's name, else its short id, else "-".
func containerColumn(c *Context) string {
	switch {
	case c.ContainerName != "":
		return c.ContainerName
	case c.ID != "":
		return c.ID[:min(12, len(c.ID))]
	}
	return "-"
}

// appendDetails appends the DETAILS column: space-separated key=value
// pairs, those the kind has, then the context's.
func (t *textWriter) appendDetails(b []byte, ev *Event) []byte {
	start := len(b)
	if ev.NsID != 0 {
		b = appendKeyUint(b, "ns_id=", ev.NsID)
		b = append(b, ' ')
	}
	switch ev.Kind {
	case Create, Join:
		b = append(b, "syscall="...)
		b = append(b, ev.Syscall...)
		b = append(b, " flags="...)
		b = append(b, t.flags.get(ev.Flags, FormatCloneFlags)...)
		b = appendKeyUint(b, " old=", uint64(ev.OldInum))
		if ev.Children {
			b = append(b, " for_children"...)
		}
		b = appendUsage(b, ev)
	case Fail:
		b = append(b, "syscall="...)
		b = append(b, ev.Syscall...)
		b = append(b, " flags="...)
		b = append(b, t.flags.get(ev.Flags, FormatCloneFlags)...)
		b = append(b, " error="...)
		b = append(b, ErrnoName(ev.Errno)...)
		if ev.Reason != "" {
			b = append(b, " reason="...)
			b = append(b, ev.Reason...)
		}
		if ev.Reason == "depth" {
			b = appendKeyUint(b, " depth=", uint64(ev.UserCount))
			b = appendKeyUint(b, "/", uint64(ev.UserLimit))
		} else {
			b = appendUsage(b, ev)
		}
	case Limit:
		b = appendKeyUint(b, "warn_percent=", uint64(ev.WarnPercent))
		b = appendUsage(b, ev)
	case Destroy:
		b = append(b, "how="...)
		b = append(b, ev.How...)
		if ev.HasLifetime {
			b = append(b, " lifetime="...)
			b = append(b, ev.Lifetime.String()...) // inlined: no allocation
		}
		if ev.HasOrphanedFor {
			b = append(b, " orphaned_for="...)
			b = append(b, ev.OrphanedFor.Round(time.Millisecond).String()...)
		}
	case Orphan:
		b = append(b, "held_by="...)
		b = append(b, ev.HeldBy...)
		if mp := ev.Mountpoint; mp != "" {
			b = appendQuoteIfNeeded(append(b, " mountpoint="...), mp)
		}
		if ev.HolderPid != 0 {
			b = appendKeyUint(b, " holder_pid=", uint64(ev.HolderPid))
			if ev.HolderComm != "" {
				b = appendQuoteIfNeeded(append(b, " holder_comm="...), ev.HolderComm)
			}
		}
		if ev.HolderFD >= 0 {
			b = appendKeyUint(b, " holder_fd=", uint64(ev.HolderFD))
		}
		b = append(b, " orphaned_for="...)
		b = append(b, ev.OrphanedFor.Round(time.Millisecond).String()...)
	case NsproxyFree:
		sep := ""
		for i, name := range SlotNames {
			if name != "" && ev.Namespaces[i] != 0 {
				b = append(b, sep...)
				b = append(b, name...)
				b = appendKeyUint(b, "=", uint64(ev.Namespaces[i]))
				sep = " "
			}
		}
	case Lost:
		b = appendKeyUint(b, "count=", ev.Count)
	case Exist:
		b = append(b, "held_by="...)
		b = append(b, ev.HeldBy...)
		b = appendKeyUint(b, " nprocs=", uint64(ev.Nprocs))
		if ev.ParentInum != 0 {
			b = appendKeyUint(b, " parent=", uint64(ev.ParentInum))
		}
		if ev.OwnerInum != 0 {
			b = appendKeyUint(b, " owner=", uint64(ev.OwnerInum))
		}
		if mp := ev.Mountpoint; mp != "" {
			b = appendQuoteIfNeeded(append(b, " mountpoint="...), mp)
		}
	}
	if ev.Partial && (ev.Kind == Create || ev.Kind == Join || ev.Kind == Destroy) {
		b = append(b, " partial"...)
	}
	if ev.Kind != Lost {
		b = append(b, t.contextDetails(ev)...)
	}
	// Each pair but the first of a kind has a space before it.
	if len(b) > start && b[start] == ' ' {
		b = append(b[:start], b[start+1:]...)
	}
	return b
}

func appendKeyUint(b []byte, key string, v uint64) []byte {
	return strconv.AppendUint(append(b, key...), v, 10)
}

// contextDetails returns the rest of ev's context, for DETAILS.
func (t *textWriter) contextDetails(ev *Event) []byte {
	k := textContext{ctx: ev.Ctx, exe: ev.Exe}
	if o := &ev.Owner; ev.HasOwner && ev.Kind == Join && o.ID != ev.Ctx.ID {
		k.owner = containerColumn(&o.Context) // never "": "-" at least
	}
	b, ok := t.ctx.get(&k)
	if ok {
		return b
	}
	return t.ctx.set(&k, appendContextDetails(b, &k))
}

// actorColumns returns the columns PID through CONTAINER of a.
func (t *textWriter) actorColumns(a *textActor) []byte {
	b, ok := t.actor.get(a)
	if ok {
		return b
	}
	b = uintColumn(b, uint64(a.pid), a.proc, widthPid)
	b = stringColumn(b, a.comm, widthComm)
	return t.actor.set(a, stringColumn(b, a.container, widthContainer))
}

// appendContextDetails appends the pairs of k, for DETAILS.
func appendContextDetails(b []byte, k *textContext) []byte {
	c := &k.ctx
	// The pod's and the container's names come from the runtime's labels,
	// which whoever starts a container sets; the rest from cgroup paths.
	if c.Runtime != "" {
		b = append(b, " runtime="...)
		b = appendEscaped(b, c.Runtime)
	}
	if c.PodName != "" {
		b = append(b, " pod="...)
		b = appendEscaped(b, c.PodNamespace)
		b = append(b, '/')
		b = appendEscaped(b, c.PodName)
	} else if c.PodUID != "" {
		b = append(b, " pod_uid="...)
		b = appendEscaped(b, c.PodUID)
	}
	if k.owner != "" {
		b = append(b, " owner_container="...)
		b = appendEscaped(b, k.owner)
	}
	if k.exe != "" {
		b = appendQuoteIfNeeded(append(b, " exe="...), k.exe)
	}
	if c.Cgroup != "" {
		b = appendQuoteIfNeeded(append(b, " cgroup="...), c.Cgroup)
	}
	return b
}

// appendQuoteIfNeeded appends s, Go-quoted if it has spaces, quotes,
// backslashes, control characters or anything but ASCII.
func appendQuoteIfNeeded(b []byte, s string) []byte {
	for i := range len(s) {
		// Bytes suffice: every rune from 0x7f up starts with a byte from 0x7f up.
		if c := s[i]; c <= ' ' || c == '"' || c == '\\' || c >= 0x7f {
			return strconv.AppendQuote(b, s)
		}
	}
	return append(b, s...)
}
