package events

import (
	"strconv"
	"unicode/utf8"
)

// jsonWriter writes JSON lines, one object per event, appending them
// itself: encoding/json's reflection cost more than all else per event.
// The schema (README documents every field) is that of jsonEvent in
// reference_test.go, which encoded it with encoding/json before, and
// the output is the same to the byte.
type jsonWriter struct {
	out   output
	clock clock
	flags memo[uint64, string] // jsonCloneFlags
	// The members of the last context and actor (pid through its
	// context), each with a comma before it.
	ctx   last[Context]
	actor last[actorKey]
}

func (j *jsonWriter) Write(ev *Event) error {
	j.out.buf = append(j.appendEvent(j.out.buf, ev), '\n')
	return j.out.lineDone()
}

func (j *jsonWriter) Flush() error { return j.out.Flush() }

// appendEvent appends ev as a JSON object. Members come in one order for
// all kinds; each kind has some of them.
func (j *jsonWriter) appendEvent(b []byte, ev *Event) []byte {
	k := ev.Kind
	o := object{b: append(b, '{')}
	o.key("time")
	o.b = append(j.clock.append(append(o.b, '"'), ev.Time), '"') // nothing in it to escape
	o.string("event", k.String())

	if k == Summary {
		return j.appendSummary(o, ev)
	}
	if k == Create || k == Join || k == Destroy || k == Exist || k == Fail || k == Limit || k == Orphan {
		o.stringOmit("type", ev.Type.String())
		o.uintOmit("inum", uint64(ev.Inum))
		o.uintOmit("ns_id", ev.NsID)
	}
	// The acting process; for exist, the one it was found through. A
	// polled destroy has none, nor has a lost event.
	switch {
	case k != Exist && k != Lost && k != Orphan && !FoundGone(ev.How):
		o.members(j.actorOf(ev))
	case k == Exist && ev.Pid != 0:
		o.uint("pid", uint64(ev.Pid))
		j.actorRest(&o, ev)
	case k != Lost:
		o.stringOmit("exe", ev.Exe)
		o.members(j.contextOf(&ev.Ctx))
	}
	if k != Lost && k != Exist && ev.HasOwner {
		o.key("owner")
		owner := object{b: append(o.b, '{')}
		owner.uintOmit("pid", uint64(ev.Owner.Pid))
		owner.members(j.contextOf(&ev.Owner.Context))
		o.b = owner.end()
	}

	switch k {
	case Exist:
		o.stringOmit("held_by", ev.HeldBy)
		o.uint("nprocs", uint64(ev.Nprocs))
		o.uintOmit("parent_inum", uint64(ev.ParentInum))
		o.uintOmit("owner_user_inum", uint64(ev.OwnerInum))
		o.stringOmit("mountpoint", ev.Mountpoint)
	case Create, Join:
		o.uintOmit("old_inum", uint64(ev.OldInum))
		if ev.Children {
			o.key("for_children")
			o.b = append(o.b, "true"...)
		}
		o.stringOmit("syscall", ev.Syscall)
		o.key("clone_flags")
		o.b = append(o.b, j.flags.get(ev.Flags, jsonCloneFlags)...)
		o.uint("clone_flags_raw", ev.Flags)
		o.usage(ev)
	case Fail:
		o.stringOmit("syscall", ev.Syscall)
		o.key("clone_flags")
		o.b = append(o.b, j.flags.get(ev.Flags, jsonCloneFlags)...)
		o.uint("clone_flags_raw", ev.Flags)
		o.string("error", ErrnoName(ev.Errno))
		o.uint("errno", uint64(ev.Errno))
		o.stringOmit("reason", ev.Reason)
		if ev.Reason == "depth" {
			o.uint("depth", uint64(ev.UserCount))
			o.uint("max_depth", uint64(ev.UserLimit))
			o.uintOmit("user_ns", uint64(ev.UserNs))
		} else {
			o.usage(ev)
		}
	case Limit:
		o.usage(ev)
		o.uint("warn_percent", uint64(ev.WarnPercent))
	case Destroy:
		o.stringOmit("how", ev.How)
		if ev.HasLifetime {
			o.key("lifetime_ns")
			o.b = strconv.AppendInt(o.b, ev.Lifetime.Nanoseconds(), 10)
		}
		if ev.HasOrphanedFor {
			o.key("orphaned_for_ns")
			o.b = strconv.AppendInt(o.b, ev.OrphanedFor.Nanoseconds(), 10)
		}
	case Orphan:
		o.string("held_by", ev.HeldBy)
		o.stringOmit("mountpoint", ev.Mountpoint)
		if ev.HolderPid != 0 {
			o.uint("holder_pid", uint64(ev.HolderPid))
			o.stringOmit("holder_comm", ev.HolderComm)
		}
		if ev.HolderFD >= 0 {
			o.uint("holder_fd", uint64(ev.HolderFD))
		}
		o.key("orphaned_for_ns")
		o.b = strconv.AppendInt(o.b, ev.OrphanedFor.Nanoseconds(), 10)
	case NsproxyFree:
		n := &ev.Namespaces
		o.key("namespaces")
		ns := object{b: append(o.b, '{')}
		ns.uintOmit("mnt", uint64(n[Mnt]))
		ns.uintOmit("uts", uint64(n[UTS]))
		ns.uintOmit("ipc", uint64(n[IPC]))
		ns.uintOmit("net", uint64(n[Net]))
		ns.uintOmit("cgroup", uint64(n[Cgroup]))
		ns.uintOmit("time", uint64(n[8]))
		ns.uintOmit("time_for_children", uint64(n[Time]))
		ns.uintOmit("pid_for_children", uint64(n[PID]))
		o.b = ns.end()
	case Lost:
		o.uint("count", ev.Count)
	}
	if ev.Partial && (k == Create || k == Join || k == Destroy) {
		o.key("partial")
		o.b = append(o.b, "true"...)
	}
	if len(ev.KernelStack) > 0 {
		o.key("kernel_stack")
		o.b = append(o.b, '[')
		for i, f := range ev.KernelStack {
			if i > 0 {
				o.b = append(o.b, ',')
			}
			o.b = appendJSONString(o.b, f)
		}
		o.b = append(o.b, ']')
	}
	return o.end()
}

// usage appends a create's (or limit's) per-user count and limit.
func (o *object) usage(ev *Event) {
	if !ev.HasUsage {
		return
	}
	o.uint("user_count", uint64(ev.UserCount))
	o.uint("user_limit", uint64(ev.UserLimit))
	o.uint("user_ns", uint64(ev.UserNs))
	o.uint("user_uid", uint64(ev.UserUid))
}

// jsonCloneFlags is CloneFlagNames as a JSON array.
func jsonCloneFlags(flags uint64) string {
	b := []byte{'['}
	for i, name := range CloneFlagNames(flags) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, name)
	}
	return string(append(b, ']'))
}

// contextOf returns the members of c.
func (j *jsonWriter) contextOf(c *Context) []byte {
	b, ok := j.ctx.get(c)
	if ok {
		return b
	}
	o := object{b: b, some: true} // a comma before the first, too
	o.context(c)
	return j.ctx.set(c, o.b)
}

// actorKey is what an actor's members are made of.
type actorKey struct {
	pid, tid, ppid, uid   uint32
	comm, parentComm, exe string
	ctx                   Context
}

// actorOf returns the members of ev's actor, pid through its context.
func (j *jsonWriter) actorOf(ev *Event) []byte {
	k := actorKey{ev.Pid, ev.Tid, ev.Ppid, ev.Uid, ev.Comm, ev.ParentComm, ev.Exe, ev.Ctx}
	b, ok := j.actor.get(&k)
	if ok {
		return b
	}
	o := object{b: b, some: true}
	o.uint("pid", uint64(ev.Pid))
	o.uint("tid", uint64(ev.Tid))
	j.actorRest(&o, ev)
	return j.actor.set(&k, o.b)
}

// actorRest appends what follows an actor's pid (and tid): ppid through
// its context.
func (j *jsonWriter) actorRest(o *object, ev *Event) {
	o.uint("ppid", uint64(ev.Ppid))
	o.uint("uid", uint64(ev.Uid))
	o.string("comm", ev.Comm)
	o.stringOmit("parent_comm", ev.ParentComm)
	o.stringOmit("exe", ev.Exe)
	o.members(j.contextOf(&ev.Ctx))
}

// object appends the members of a JSON object after its "{", with the
// commas between them. The ...Omit methods leave out zero values, as
// encoding/json's omitempty does.
type object struct {
	b    []byte
	some bool // a member was appended
}

// key appends the name of a member; its value must follow.
func (o *object) key(k string) {
	if o.some {
		o.b = append(o.b, ',', '"')
	} else {
		o.b = append(o.b, '"')
	}
	o.b = append(o.b, k...) // names are plain ASCII: nothing to escape
	o.b = append(o.b, '"', ':')
	o.some = true
}

// members appends members encoded before, each with a comma before it.
func (o *object) members(m []byte) {
	if len(m) == 0 {
		return
	}
	if !o.some {
		m = m[1:]
	}
	o.b = append(o.b, m...)
	o.some = true
}

// end closes the object and returns the buffer.
func (o *object) end() []byte { return append(o.b, '}') }

func (o *object) string(k, v string) {
	o.key(k)
	o.b = appendJSONString(o.b, v)
}

func (o *object) stringOmit(k, v string) {
	if v != "" {
		o.string(k, v)
	}
}

func (o *object) uint(k string, v uint64) {
	o.key(k)
	o.b = strconv.AppendUint(o.b, v, 10)
}

func (o *object) uintOmit(k string, v uint64) {
	if v != 0 {
		o.uint(k, v)
	}
}

// context appends the members of a Context (all omitempty).
func (o *object) context(c *Context) {
	o.stringOmit("cgroup", c.Cgroup)
	o.uintOmit("cgroup_id", c.CgroupID)
	o.stringOmit("container_id", c.ID)
	o.stringOmit("container_name", c.ContainerName)
	o.stringOmit("image", c.Image)
	o.stringOmit("runtime", c.Runtime)
	o.stringOmit("pod_uid", c.PodUID)
	o.stringOmit("pod_name", c.PodName)
	o.stringOmit("pod_namespace", c.PodNamespace)
}

// jsonSafe is the ASCII bytes encoding/json writes as they are (with its
// default HTML escaping): not control characters, quote, backslash, nor
// <, > and &.
var jsonSafe = func() (safe [utf8.RuneSelf]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		safe[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return safe
}()

// Word-at-a-time tests, for the bytes of a uint64 (Hacker's Delight 6-1):
// each mask has the high bit of a byte set if the test holds for it. They
// can be wrong above the lowest byte that passes, so only "any byte" is
// exact, which is all jsonSafe8 asks.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// lessMask flags the bytes of x < n, for n <= 0x80.
func lessMask(x uint64, n byte) uint64 { return (x - ones*uint64(n)) &^ x }

// isMask flags the bytes of x that are c.
func isMask(x uint64, c byte) uint64 { return lessMask(x^(ones*uint64(c)), 1) }

// jsonSafe8 reports whether all 8 bytes of x are jsonSafe. It has no
// branches, so no mispredicted ones.
func jsonSafe8(x uint64) bool {
	m := x | lessMask(x, ' ') | isMask(x, '"') | isMask(x, '\\') | isMask(x, '<') | isMask(x, '>') | isMask(x, '&')
	return m&highs == 0
}

// load64 is the 8 bytes of s from i as a little-endian uint64 (the
// compiler makes it one load).
func load64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string exactly as encoding/json
// (json.Marshal, a json.Encoder by default) does: with <, > and & escaped
// as \u003c etc., invalid UTF-8 replaced by \ufffd, and U+2028 and U+2029
// escaped. TestJSONStringMatchesEncodingJSON holds it to that.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0 // of what is yet to be appended as it is
	for i := 0; i < len(s); {
		// Most strings are long runs of plain ASCII (paths, ids):
		// skipping them 8 bytes at a time makes this several times faster.
		for i+8 <= len(s) && jsonSafe8(load64(s, i)) {
			i += 8
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			// Valid JSON, but not JavaScript (JSONP): encoding/json escapes them.
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
