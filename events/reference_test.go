package events

// The writers as they were with encoding/json and fmt, and Decode as it
// was with binary.Decode: what the faster ones must match to the byte.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nstrace/nstrace"
)

func newRefWriter(format string, w io.Writer) Writer {
	bw := bufio.NewWriter(w)
	if format == "text" {
		return &refTextWriter{w: bw}
	}
	return &refJSONWriter{w: bw, enc: json.NewEncoder(bw)}
}

// jsonEvent is the JSON lines schema; README documents every field.
type jsonEvent struct {
	Time       string  `json:"time"`
	Event      string  `json:"event"`
	Type       string  `json:"type,omitempty"`
	Inum       uint32  `json:"inum,omitempty"`
	NsID       uint64  `json:"ns_id,omitempty"`
	Pid        *uint32 `json:"pid,omitempty"`
	Tid        *uint32 `json:"tid,omitempty"`
	Ppid       *uint32 `json:"ppid,omitempty"`
	Uid        *uint32 `json:"uid,omitempty"`
	Comm       *string `json:"comm,omitempty"`
	ParentComm string  `json:"parent_comm,omitempty"`
	Exe        string  `json:"exe,omitempty"`
	jsonContext
	Owner         *jsonOwner   `json:"owner,omitempty"`
	HeldBy        string       `json:"held_by,omitempty"`
	Nprocs        *uint32      `json:"nprocs,omitempty"`
	ParentInum    uint32       `json:"parent_inum,omitempty"`
	OwnerUserInum uint32       `json:"owner_user_inum,omitempty"`
	Mountpoint    string       `json:"mountpoint,omitempty"`
	OldInum       uint32       `json:"old_inum,omitempty"`
	ForChildren   bool         `json:"for_children,omitempty"`
	Syscall       string       `json:"syscall,omitempty"`
	CloneFlags    *[]string    `json:"clone_flags,omitempty"`
	CloneFlagsRaw *uint64      `json:"clone_flags_raw,omitempty"`
	Error         string       `json:"error,omitempty"`
	Errno         *uint16      `json:"errno,omitempty"`
	Reason        string       `json:"reason,omitempty"`
	Depth         *uint32      `json:"depth,omitempty"`
	MaxDepth      *uint32      `json:"max_depth,omitempty"`
	UserCount     *uint32      `json:"user_count,omitempty"`
	UserLimit     *uint32      `json:"user_limit,omitempty"`
	UserNs        uint32       `json:"user_ns,omitempty"`
	UserUid       *uint32      `json:"user_uid,omitempty"`
	WarnPercent   *uint32      `json:"warn_percent,omitempty"`
	How           string       `json:"how,omitempty"`
	LifetimeNs    *int64       `json:"lifetime_ns,omitempty"`
	Namespaces    *jsonNsproxy `json:"namespaces,omitempty"`
	Count         *uint64      `json:"count,omitempty"`
	Partial       bool         `json:"partial,omitempty"`
	KernelStack   []string     `json:"kernel_stack,omitempty"`
}

// jsonContext is whose event it is (events.Context).
type jsonContext struct {
	Cgroup        string `json:"cgroup,omitempty"`
	CgroupID      uint64 `json:"cgroup_id,omitempty"`
	ContainerID   string `json:"container_id,omitempty"`
	ContainerName string `json:"container_name,omitempty"`
	Image         string `json:"image,omitempty"`
	Runtime       string `json:"runtime,omitempty"`
	PodUID        string `json:"pod_uid,omitempty"`
	PodName       string `json:"pod_name,omitempty"`
	PodNamespace  string `json:"pod_namespace,omitempty"`
}

type jsonOwner struct {
	Pid uint32 `json:"pid,omitempty"`
	jsonContext
}

func toJSONContext(c *Context) jsonContext {
	return jsonContext{
		Cgroup: c.Cgroup, CgroupID: c.CgroupID,
		ContainerID: c.ID, ContainerName: c.ContainerName, Image: c.Image, Runtime: c.Runtime,
		PodUID: c.PodUID, PodName: c.PodName, PodNamespace: c.PodNamespace,
	}
}

type jsonNsproxy struct {
	Mnt             uint32 `json:"mnt,omitempty"`
	UTS             uint32 `json:"uts,omitempty"`
	IPC             uint32 `json:"ipc,omitempty"`
	Net             uint32 `json:"net,omitempty"`
	Cgroup          uint32 `json:"cgroup,omitempty"`
	Time            uint32 `json:"time,omitempty"`
	TimeForChildren uint32 `json:"time_for_children,omitempty"`
	PidForChildren  uint32 `json:"pid_for_children,omitempty"`
}

type refJSONWriter struct {
	w   *bufio.Writer
	enc *json.Encoder
}

func (j *refJSONWriter) Write(ev *Event) error {
	out := jsonEvent{
		Time:        ev.Time.Format(TimeFormat),
		Event:       ev.Kind.String(),
		jsonContext: toJSONContext(&ev.Ctx),
		Exe:         ev.Exe,
	}
	switch ev.Kind {
	case Lost:
		out = jsonEvent{Time: out.Time, Event: out.Event, Count: &ev.Count}
		return j.enc.Encode(&out)
	case Exist:
		// No thread did anything: pid is the process it was found
		// through, if it could be read.
		out.Type, out.Inum, out.NsID = ev.Type.String(), ev.Inum, ev.NsID
		if ev.Pid != 0 {
			out.Pid, out.Ppid, out.Uid, out.Comm = &ev.Pid, &ev.Ppid, &ev.Uid, &ev.Comm
			out.ParentComm = ev.ParentComm
		}
		out.HeldBy, out.Nprocs = ev.HeldBy, &ev.Nprocs
		out.ParentInum, out.OwnerUserInum, out.Mountpoint = ev.ParentInum, ev.OwnerInum, ev.Mountpoint
		return j.enc.Encode(&out)
	}
	out.KernelStack = ev.KernelStack
	if !FoundGone(ev.How) {
		out.Pid, out.Tid, out.Ppid, out.Uid, out.Comm = &ev.Pid, &ev.Tid, &ev.Ppid, &ev.Uid, &ev.Comm
		out.ParentComm = ev.ParentComm
	}
	if ev.HasOwner {
		out.Owner = &jsonOwner{Pid: ev.Owner.Pid, jsonContext: toJSONContext(&ev.Owner.Context)}
	}
	usage := func() {
		if ev.HasUsage {
			out.UserCount, out.UserLimit, out.UserNs, out.UserUid = &ev.UserCount, &ev.UserLimit, ev.UserNs, &ev.UserUid
		}
	}
	switch ev.Kind {
	case Create, Join:
		out.Type, out.Inum, out.NsID, out.OldInum = ev.Type.String(), ev.Inum, ev.NsID, ev.OldInum
		out.ForChildren = ev.Children
		out.Syscall = ev.Syscall
		names := CloneFlagNames(ev.Flags)
		out.CloneFlags = &names
		out.CloneFlagsRaw = &ev.Flags
		usage()
	case Fail:
		out.Type = ev.Type.String()
		out.Syscall = ev.Syscall
		names := CloneFlagNames(ev.Flags)
		out.CloneFlags = &names
		out.CloneFlagsRaw = &ev.Flags
		out.Error, out.Errno, out.Reason = ErrnoName(ev.Errno), &ev.Errno, ev.Reason
		if ev.Reason == "depth" {
			out.Depth, out.MaxDepth, out.UserNs = &ev.UserCount, &ev.UserLimit, ev.UserNs
		} else {
			usage()
		}
	case Limit:
		out.Type, out.Inum, out.NsID = ev.Type.String(), ev.Inum, ev.NsID
		usage()
		out.WarnPercent = &ev.WarnPercent
	case Destroy:
		out.Type, out.Inum, out.NsID, out.How = ev.Type.String(), ev.Inum, ev.NsID, ev.How
		if ev.HasLifetime {
			ns := ev.Lifetime.Nanoseconds()
			out.LifetimeNs = &ns
		}
	case NsproxyFree:
		n := ev.Namespaces
		out.Namespaces = &jsonNsproxy{
			Mnt: n[Mnt], UTS: n[UTS], IPC: n[IPC], Net: n[Net], Cgroup: n[Cgroup],
			Time: n[8], TimeForChildren: n[Time], PidForChildren: n[PID],
		}
	}
	out.Partial = ev.Partial && (ev.Kind == Create || ev.Kind == Join || ev.Kind == Destroy)
	return j.enc.Encode(&out)
}

func (j *refJSONWriter) Flush() error { return j.w.Flush() }

// Text columns, in the style of BCC tools.
const refTextHeader = "%-15s %-12s %-6s %-10s %-7s %-16s %-12s %s\n"

type refTextWriter struct {
	w          *bufio.Writer
	headerDone bool
}

func (t *refTextWriter) Write(ev *Event) error {
	if !t.headerDone {
		fmt.Fprintf(t.w, refTextHeader, "TIME", "EVENT", "TYPE", "INUM", "PID", "COMM", "CONTAINER", "DETAILS")
		t.headerDone = true
	}
	typ, inum, pid, comm := "-", "-", "-", "-"
	if ev.Kind != Lost && (ev.Kind != Exist || ev.Pid != 0) && !FoundGone(ev.How) {
		pid, comm = fmt.Sprint(ev.Pid), refEscape(ev.Comm)
	}
	if ev.Kind != Lost && ev.Kind != NsproxyFree && ev.Type != NoType {
		typ, inum = ev.Type.String(), fmt.Sprint(ev.Inum)
		if ev.Kind == Fail {
			inum = "-"
		}
	}
	_, err := fmt.Fprintf(t.w, refTextHeader, ev.Time.Format("15:04:05.000000"), ev.Kind, typ, inum, pid, comm, refEscape(containerColumn(&ev.Ctx)), refDetails(ev))
	for _, f := range ev.KernelStack {
		fmt.Fprintf(t.w, "        %s\n", f)
	}
	return err
}

func (t *refTextWriter) Flush() error { return t.w.Flush() }

// refContextDetails is the rest of the context, for DETAILS.
func refContextDetails(b *strings.Builder, ev *Event) {
	c := &ev.Ctx
	if c.Runtime != "" {
		fmt.Fprintf(b, " runtime=%s", refEscape(c.Runtime))
	}
	if c.PodName != "" {
		fmt.Fprintf(b, " pod=%s/%s", refEscape(c.PodNamespace), refEscape(c.PodName))
	} else if c.PodUID != "" {
		fmt.Fprintf(b, " pod_uid=%s", refEscape(c.PodUID))
	}
	if o := &ev.Owner; ev.HasOwner && ev.Kind == Join && o.ID != c.ID {
		fmt.Fprintf(b, " owner_container=%s", refEscape(containerColumn(&o.Context)))
	}
	if ev.Exe != "" {
		fmt.Fprintf(b, " exe=%s", refQuoteIfNeeded(ev.Exe))
	}
	if c.Cgroup != "" {
		fmt.Fprintf(b, " cgroup=%s", refQuoteIfNeeded(c.Cgroup))
	}
}

func refQuoteIfNeeded(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == '"' || r == '\\' || r >= 0x7f }) {
		return strconv.Quote(s)
	}
	return s
}

func refDetails(ev *Event) string {
	var b strings.Builder
	if ev.NsID != 0 {
		fmt.Fprintf(&b, "ns_id=%d ", ev.NsID)
	}
	switch ev.Kind {
	case Create, Join:
		fmt.Fprintf(&b, "syscall=%s flags=%s old=%d", ev.Syscall, FormatCloneFlags(ev.Flags), ev.OldInum)
		if ev.Children {
			b.WriteString(" for_children")
		}
		refUsage(&b, ev)
	case Fail:
		fmt.Fprintf(&b, "syscall=%s flags=%s error=%s", ev.Syscall, FormatCloneFlags(ev.Flags), ErrnoName(ev.Errno))
		if ev.Reason != "" {
			fmt.Fprintf(&b, " reason=%s", ev.Reason)
		}
		if ev.Reason == "depth" {
			fmt.Fprintf(&b, " depth=%d/%d", ev.UserCount, ev.UserLimit)
		} else {
			refUsage(&b, ev)
		}
	case Limit:
		fmt.Fprintf(&b, "warn_percent=%d", ev.WarnPercent)
		refUsage(&b, ev)
	case Destroy:
		fmt.Fprintf(&b, "how=%s", ev.How)
		if ev.HasLifetime {
			fmt.Fprintf(&b, " lifetime=%s", ev.Lifetime)
		}
	case NsproxyFree:
		sep := ""
		for i, name := range SlotNames {
			if name != "" && ev.Namespaces[i] != 0 {
				fmt.Fprintf(&b, "%s%s=%d", sep, name, ev.Namespaces[i])
				sep = " "
			}
		}
	case Lost:
		fmt.Fprintf(&b, "count=%d", ev.Count)
	case Exist:
		fmt.Fprintf(&b, "held_by=%s nprocs=%d", ev.HeldBy, ev.Nprocs)
		if ev.ParentInum != 0 {
			fmt.Fprintf(&b, " parent=%d", ev.ParentInum)
		}
		if ev.OwnerInum != 0 {
			fmt.Fprintf(&b, " owner=%d", ev.OwnerInum)
		}
		if mp := ev.Mountpoint; mp != "" {
			fmt.Fprintf(&b, " mountpoint=%s", refQuoteIfNeeded(mp))
		}
	}
	if ev.Partial && (ev.Kind == Create || ev.Kind == Join || ev.Kind == Destroy) {
		b.WriteString(" partial")
	}
	if ev.Kind != Lost {
		refContextDetails(&b, ev)
	}
	return strings.TrimPrefix(b.String(), " ")
}

func refUsage(b *strings.Builder, ev *Event) {
	if ev.HasUsage {
		fmt.Fprintf(b, " ucount=%d/%d user_ns=%d user_uid=%d", ev.UserCount, ev.UserLimit, ev.UserNs, ev.UserUid)
	}
}

// refDecode is Decoder.Decode with reflection, but for the validation:
// the header and then each item with binary.Decode.
func refDecode(d *Decoder, raw []byte) []Event {
	var h nstrace.BpfNsRec
	n, err := binary.Decode(raw, binary.NativeEndian, &h)
	if err != nil {
		panic(err)
	}
	raw = raw[n:]
	var evs []Event
	for range h.N {
		ev := Event{
			Time:       time.Unix(0, int64(time.Duration(h.TsNs)+d.bootToWall)),
			Kind:       Kind(raw[0]),
			Pid:        h.Pid,
			Tid:        h.Tid,
			Ppid:       h.Ppid,
			Uid:        h.Uid,
			Comm:       refCommString(h.Comm[:]),
			ParentComm: refCommString(h.ParentComm[:]),
			cgroupID:   h.CgroupId,
			exeID:      h.ExeId,
			StackID:    h.Stack,
		}
		if ev.Kind == NsproxyFree {
			var it nstrace.BpfReleaseItem
			n, err = binary.Decode(raw, binary.NativeEndian, &it)
			ev.Namespaces = it.Inums
		} else {
			var it nstrace.BpfNsItem
			n, err = binary.Decode(raw, binary.NativeEndian, &it)
			ev.Type, ev.Inum, ev.NsID, ev.OldInum = NsType(it.NsType), it.Inum, it.NsId, it.OldInum
			ev.Children = it.ForChildren != 0
			ev.ownerCgroupID, ev.ownerPid, ev.ownerKnown = it.OwnerCgroupId, it.OwnerPid, it.OwnerKnown != 0
			ev.Partial = it.Partial != 0
			if ev.Kind == Create || ev.Kind == Join || ev.Kind == Fail {
				ev.Syscall, ev.Flags = syscallNames[0], h.Flags
				if int(h.Syscall) < len(syscallNames) {
					ev.Syscall = syscallNames[h.Syscall]
				}
			}
			if ev.Kind == Fail {
				ev.Errno = it.Error
				if int(it.Reason) < len(reasonNames) {
					ev.Reason = reasonNames[it.Reason]
				}
			}
			if ev.Kind == Create || ev.Kind == Fail && ev.Reason != "" {
				ev.UserCount, ev.UserLimit, ev.UserNs, ev.UserUid = it.UserCount, it.UserLimit, it.UserNs, it.UserUid
				ev.HasUsage = it.UserNs != 0
			}
			if ev.Kind == Destroy && int(it.How) < len(howNames) {
				ev.How = howNames[it.How]
			}
		}
		if err != nil {
			panic(err)
		}
		raw = raw[n:]
		evs = append(evs, ev)
	}
	return evs
}

func refCommString(c []int8) string {
	b := make([]byte, len(c))
	for i, v := range c {
		b[i] = byte(v)
	}
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// refEscape is s as the text output shows a name: a backslash doubled,
// each byte of invalid UTF-8 as \xNN, and each rune Go does not call
// printable as strconv quotes it.
func refEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case strconv.IsPrint(r):
			b.WriteRune(r)
		default:
			b.WriteString(strings.Trim(strconv.QuoteRuneToASCII(r), "'"))
		}
		i += size
	}
	return b.String()
}

// fmtColumn is how refTextWriter pads a column, followed by "|".
func fmtColumn(s string) string { return fmt.Sprintf("%-16s|", s) }
