// Package events decodes the records nstrace's BPF programs write and
// formats them as text or JSON lines.
package events

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Kind is what happened to a namespace.
type Kind uint8

// Values match enum event_kind in bpf/lib/common.h.
const (
	Create Kind = iota + 1
	Join
	NsproxyFree
	Destroy
	// Lost is synthesized in userspace from the drop counters.
	Lost
	// Exist is a namespace alive at startup (--snapshot), found in
	// userspace by package snapshot.
	Exist
	// Fail is a clone, clone3, unshare or setns that asked for a
	// namespace and failed.
	Fail
	// Limit is a user crossing a share of a per-user namespace limit
	// (--warn-limit), found in userspace by LimitWatch from the creates.
	Limit
	// Summary is the counts of a run (--summary), made in userspace.
	Summary
	// Orphan is a namespace alive with no process in it for --orphans,
	// found in userspace by walking /proc and the live namespaces.
	Orphan
)

var kindNames = [...]string{Create: "create", Join: "join", NsproxyFree: "nsproxy_free", Destroy: "destroy", Lost: "lost", Exist: "exist",
	Fail: "fail", Limit: "limit", Summary: "summary", Orphan: "orphan"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// NsType is a namespace type; names are those of lsns and /proc/PID/ns.
type NsType uint8

// Values match enum ns_slot in bpf/lib/common.h.
const (
	Mnt NsType = iota
	UTS
	IPC
	PID
	Net
	User
	Cgroup
	Time
	numTypes
)

var typeNames = [...]string{"mnt", "uts", "ipc", "pid", "net", "user", "cgroup", "time"}

// NoType is the type of a fail whose cause names none.
const NoType NsType = 0xff

// NumTypes is how many namespace types there are.
const NumTypes = int(numTypes)

func (t NsType) String() string {
	if t < numTypes {
		return typeNames[t]
	}
	if t == NoType {
		return ""
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// ParseNsType returns the type named name (an lsns name).
func ParseNsType(name string) (NsType, bool) {
	for i, n := range typeNames {
		if n == name {
			return NsType(i), true
		}
	}
	return 0, false
}

// SlotNames names the namespaces an nsproxy holds, as the files in
// /proc/PID/ns do; indexed like Event.Namespaces (user is not in an
// nsproxy, so its slot is empty).
var SlotNames = [...]string{"mnt", "uts", "ipc", "pid_for_children", "net", "", "cgroup", "time_for_children", "time"}

var syscallNames = [...]string{"unknown", "clone", "clone3", "fork", "vfork", "unshare", "setns", "execve", "execveat"}

var howNames = [...]string{1: "last_ref", 2: "freed", 3: Polled, 4: Reused}

// Polled and Reused are the Hows of destroys nstrace found rather than saw
// happen, in which no task is known to have acted: by polling, and by its
// inode number going to a new namespace.
const (
	Polled = "polled"
	Reused = "reused"
)

// FoundGone says whether a destroy's how is one in which no task acted.
func FoundGone(how string) bool { return how == Polled || how == Reused }

// Event is one decoded namespace event.
type Event struct {
	Time time.Time
	Kind Kind
	Type NsType
	Inum uint32
	// NsID identifies the namespace for the boot, where Inum is reused at
	// once: the kernel's namespace id (Linux 6.18+), otherwise an id this
	// nstrace run assigned. 0 when unknown (nsproxy_free, lost).
	NsID     uint64
	OldInum  uint32
	Pid      uint32
	Tid      uint32
	Ppid     uint32
	Uid      uint32
	Comm     string
	Syscall  string
	Flags    uint64
	Children bool // pid/time namespace for the caller's future children
	How      string
	// Lifetime since the create, when it was seen (HasLifetime).
	Lifetime    time.Duration
	HasLifetime bool
	// Partial: not exact, as nstrace's table of live namespaces was full
	// (a create it could not keep, a destroy of one it may not have kept).
	Partial bool
	// Namespaces held by a freed nsproxy, indexed like SlotNames.
	Namespaces [len(SlotNames)]uint32
	// Count of lost events, for Kind Lost.
	Count uint64

	// Fail: the errno and, where the kernel's state says, why: Reason
	// "limit" (a per-user count was at its limit; Type and the usage
	// below say which) or "depth" (nesting as deep as it goes: UserCount
	// is the depth asked for, UserLimit the deepest allowed).
	Errno  uint16
	Reason string
	// Usage, for a create (and a limit event, and a fail for a limit):
	// UserCount namespaces of Type that user UserUid holds in user
	// namespace UserNs (inum) as the kernel counts them (ucounts), and
	// UserLimit, that user namespace's max_<type>_namespaces.
	UserCount, UserLimit, UserNs, UserUid uint32
	HasUsage                              bool
	// WarnPercent is the share of the limit a Limit event is about.
	WarnPercent uint32
	// Stats is what a Summary event reports.
	Stats *Stats
	// StackID is the kernel stack the record carries (--kernel-stack), as
	// the BPF side numbers it (0: none); KernelStack is its frames,
	// innermost first, as the tracer names them.
	StackID     uint32
	KernelStack []string

	// For Kind Exist. Pid, Ppid, Uid and Comm are those of the process it
	// was found through (0 and "" if unknown); Tid is not used.
	HeldBy     string // process, bind_mount, fd or namespace
	Nprocs     uint32 // processes in it
	ParentInum uint32 // pid, user: the parent namespace; 0 if none or unknown
	OwnerInum  uint32 // all but user: the owning user namespace; 0 if unknown
	Mountpoint string // where it is bind-mounted, if it is

	// For Kind Orphan (and HeldBy, Mountpoint): the process holding it
	// (the fd's, or one of the mount namespace with the bind mount; 0 if
	// none), HolderFD its open file (/proc/HolderPid/fd/N; -1 if none),
	// and how long it has had no process in it. A destroy of a namespace
	// reported orphaned says, in OrphanedFor too, how long it was.
	HolderPid      uint32
	HolderComm     string
	HolderFD       int32
	OrphanedFor    time.Duration
	HasOrphanedFor bool

	// Exe and ParentComm are those of the acting process ("" if unknown).
	Exe        string
	ParentComm string
	// Ctx is whose event it is: the acting task's cgroup, container and
	// pod; for a destroy the namespace owner's (see Owner).
	Ctx Context
	// Owner is whom the namespace belongs to (join, destroy), if known
	// (HasOwner). A value, not a pointer, so that annotating an event
	// allocates nothing.
	Owner    Owner
	HasOwner bool

	// What the BPF programs sent, for an Attributor to resolve.
	cgroupID, exeID, ownerCgroupID uint64
	ownerPid                       uint32
	ownerKnown                     bool
}

// Decoder turns raw records into Events. It is not safe for concurrent use.
type Decoder struct {
	// bootToWall converts CLOCK_BOOTTIME (what BPF stamps) to wall time.
	bootToWall time.Duration
	// comms interns command names: a few make up most events, and a
	// string of its own for each would be two allocations per event.
	comms memo[[commLen]byte, string]
}

// NewDecoder measures the offset between the boot clock and the wall clock
// now, as perf does, so event times are wall-clock times.
func NewDecoder() (*Decoder, error) {
	boot, err := bootTime()
	if err != nil {
		return nil, err
	}
	return &Decoder{bootToWall: time.Duration(time.Now().UnixNano()) - boot}, nil
}

// MaxPerRecord is the most events one record carries (MAX_ITEMS in
// bpf/lib/common.h: an unshare of every type that freed the old nsproxy
// and the namespaces only it held).
const MaxPerRecord = 17

// A namespace record is a header, nstrace.BpfNsRec (struct ns_rec in
// bpf/lib/common.h), and then its events, one item each: an
// nstrace.BpfNsItem (create, join, destroy) or an nstrace.BpfReleaseItem
// (nsproxy_free), the two of the same size and told apart by their first
// byte, the kind.
const (
	HeaderSize = 96
	ItemSize   = 56
)

// Where DecodeInto finds the fields: the offsets of the fields of the
// generated Go types, which TestRecordLayout checks. Reading them directly
// is several times faster than binary.Decode, which goes through
// reflection.
const (
	// The header: the time and the actor all the record's events share,
	// and the syscall and flags of its creates and joins.
	offTsNs       = 0
	offLost       = 8
	offKind       = 12
	offN          = 13
	offSyscall    = 14
	offFlags      = 16
	offCgroupID   = 24
	offExeID      = 32
	offPid        = 40
	offTid        = 44
	offPpid       = 48
	offUid        = 52
	offComm       = 56 // [commLen]byte
	offParentComm = 72 // [commLen]byte
	offStack      = 88

	// An item, from its start.
	itemKind          = 0
	itemNsType        = 1
	itemHow           = 2
	itemForChildren   = 3
	itemOwnerKnown    = 4
	itemReason        = 5
	itemError         = 6
	itemInum          = 8
	itemOldInum       = 12
	itemNsID          = 16
	itemOwnerCgroupID = 24
	itemOwnerPid      = 32
	itemUserCount     = 36
	itemUserLimit     = 40
	itemUserNs        = 44
	itemUserUid       = 48
	itemPartial       = 52
	itemInums         = 4 // release item: [len(SlotNames)]uint32

	commLen = 16 // TASK_COMM_LEN
)

// Decode is DecodeInto into a new slice, for tests and tools.
func (d *Decoder) Decode(raw []byte) (evs []Event, lost uint32, err error) {
	size := 0
	if len(raw) >= HeaderSize {
		size = min(int(raw[offN]), MaxPerRecord)
	}
	evs = make([]Event, size)
	n, lost, err := d.DecodeInto(evs, raw)
	if err != nil {
		return nil, lost, err
	}
	return evs[:n], lost, nil
}

// DecodeInto decodes one namespace record into evs[:n], overwriting them:
// events of the caller's, reused, as an Event is some 600 bytes and a
// record up to MaxPerRecord of them, too many to allocate per record. evs
// needs room for MaxPerRecord events (or at least the record's n). lost is
// the number of events the same CPU dropped before this record, returned
// even with an error if the header could be read. On an error n is 0 and
// evs is left as it was.
func (d *Decoder) DecodeInto(evs []Event, raw []byte) (n int, lost uint32, err error) {
	if len(raw) < HeaderSize {
		return 0, 0, fmt.Errorf("short record: %d bytes, want at least %d", len(raw), HeaderSize)
	}
	// As an array, the reads at constant offsets below need no bounds checks.
	h := (*[HeaderSize]byte)(raw)
	lost = binary.NativeEndian.Uint32(h[offLost:])
	if n, err = checkRecord(raw, len(evs)); err != nil {
		return 0, lost, err
	}
	var c common
	d.header(&c, h)
	items := raw[HeaderSize:]
	for i := range evs[:n] {
		// Copying the shared fields whole is quicker than setting them
		// one by one on a zeroed Event.
		evs[i] = c.shared
		c.decodeItem(&evs[i], (*[ItemSize]byte)(items[i*ItemSize:]))
	}
	return n, lost, nil
}

// checkRecord checks a namespace record before any of it is decoded, so
// that a bad one leaves the caller's events alone, and returns how many
// events it has. room is how many the caller can take.
func checkRecord(raw []byte, room int) (n int, err error) {
	if k := raw[offKind]; k != recNs {
		return 0, fmt.Errorf("not a namespace record: kind %d, want %d", k, recNs)
	}
	n = int(raw[offN])
	if n == 0 || n > MaxPerRecord {
		return 0, fmt.Errorf("corrupt record: %d events, want 1 to %d", n, MaxPerRecord)
	}
	if want := HeaderSize + n*ItemSize; len(raw) < want {
		return 0, fmt.Errorf("short record: %d bytes for %d events, want %d", len(raw), n, want)
	}
	for i := range n {
		it := raw[HeaderSize+i*ItemSize:]
		kind, typ := Kind(it[itemKind]), NsType(it[itemNsType])
		badKind := (kind < Create || kind > Destroy) && kind != Fail
		badType := typ >= numTypes && kind != NsproxyFree && !(kind == Fail && typ == NoType)
		if badKind || badType {
			return 0, fmt.Errorf("corrupt record: event %d of %d: kind %d, type %d", i+1, n, it[itemKind], it[itemNsType])
		}
	}
	if room < n {
		return 0, fmt.Errorf("room for %d events, the record has %d", room, n)
	}
	return n, nil
}

// common is what the events of a record share, decoded once for all.
type common struct {
	// shared has the time and the actor, and nothing else.
	shared Event
	// Those of the creates and joins.
	syscall string
	flags   uint64
}

func (d *Decoder) header(c *common, h *[HeaderSize]byte) {
	ne := binary.NativeEndian // BPF writes records in the host's byte order
	c.shared = Event{
		Time:       time.Unix(0, int64(time.Duration(ne.Uint64(h[offTsNs:]))+d.bootToWall)),
		Pid:        ne.Uint32(h[offPid:]),
		Tid:        ne.Uint32(h[offTid:]),
		Ppid:       ne.Uint32(h[offPpid:]),
		Uid:        ne.Uint32(h[offUid:]),
		Comm:       d.comm(h[offComm : offComm+commLen]),
		ParentComm: d.comm(h[offParentComm : offParentComm+commLen]),
		cgroupID:   ne.Uint64(h[offCgroupID:]),
		exeID:      ne.Uint64(h[offExeID:]),
		StackID:    ne.Uint32(h[offStack:]),
	}
	c.syscall, c.flags = syscallNames[0], ne.Uint64(h[offFlags:])
	if s := h[offSyscall]; int(s) < len(syscallNames) {
		c.syscall = syscallNames[s]
	}
}

// decodeItem decodes the item it, which checkRecord passed, into ev, which
// has the record's shared fields.
func (c *common) decodeItem(ev *Event, it *[ItemSize]byte) {
	ne := binary.NativeEndian
	ev.Kind = Kind(it[itemKind])
	if ev.Kind == NsproxyFree {
		for i := range ev.Namespaces {
			ev.Namespaces[i] = ne.Uint32(it[itemInums+4*i:])
		}
		return
	}
	ev.Type = NsType(it[itemNsType])
	ev.Inum = ne.Uint32(it[itemInum:])
	ev.NsID = ne.Uint64(it[itemNsID:])
	ev.OldInum = ne.Uint32(it[itemOldInum:])
	ev.Children = it[itemForChildren] != 0
	ev.ownerCgroupID = ne.Uint64(it[itemOwnerCgroupID:])
	ev.ownerPid = ne.Uint32(it[itemOwnerPid:])
	ev.ownerKnown = it[itemOwnerKnown] != 0
	ev.Partial = it[itemPartial] != 0
	switch ev.Kind {
	case Create, Join:
		// BPF leaves the header's syscall and flags 0 in a record
		// without a create or join; a destroy never had any.
		ev.Syscall, ev.Flags = c.syscall, c.flags
		if ev.Kind == Create {
			c.usage(ev, it)
		}
	case Fail:
		ev.Syscall, ev.Flags = c.syscall, c.flags
		ev.Errno = ne.Uint16(it[itemError:])
		if r := it[itemReason]; int(r) < len(reasonNames) && reasonNames[r] != "" {
			ev.Reason = reasonNames[r]
			c.usage(ev, it)
		}
	case Destroy:
		if h := it[itemHow]; int(h) < len(howNames) {
			ev.How = howNames[h]
		}
	}
}

// usage decodes a create's or a fail's count and limit. BPF leaves them
// all 0 where it could not read them; a user namespace's inum never is.
func (c *common) usage(ev *Event, it *[ItemSize]byte) {
	ne := binary.NativeEndian
	ev.UserLimit = ne.Uint32(it[itemUserLimit:])
	ev.UserCount = ne.Uint32(it[itemUserCount:])
	ev.UserNs = ne.Uint32(it[itemUserNs:])
	ev.UserUid = ne.Uint32(it[itemUserUid:])
	ev.HasUsage = ev.UserNs != 0
}

// Values match enum fail_reason in bpf/lib/common.h.
var reasonNames = [...]string{1: "limit", 2: "depth"}

// ErrnoName is the name of errno n ("ENOSPC"), or its number.
func ErrnoName(n uint16) string {
	if s := unix.ErrnoName(syscall.Errno(n)); s != "" {
		return s
	}
	return "errno " + strconv.Itoa(int(n))
}

// comm is the NUL-terminated name in c, interned.
func (d *Decoder) comm(c []byte) string {
	// What follows the NUL need not be zeros; the key ignores it.
	k := [commLen]byte(c)
	if i := bytes.IndexByte(k[:], 0); i >= 0 {
		clear(k[i:])
	}
	return d.comms.get(k, commString)
}

func commString(c [commLen]byte) string {
	n := bytes.IndexByte(c[:], 0)
	if n < 0 {
		n = len(c)
	}
	return string(c[:n])
}

// SetOwner gives an event made in userspace (an orphan) the owner nstrace's
// table of live namespaces has for it: the Attributor fills in Owner.
func (e *Event) SetOwner(pid uint32, cgroupID uint64) {
	e.ownerPid, e.ownerCgroupID, e.ownerKnown = pid, cgroupID, true
}
