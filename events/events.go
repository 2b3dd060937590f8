// Package events decodes the records nstrace's BPF programs write and
// formats them as text or JSON lines.
package events

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"
)

// Kind is what happened to a namespace.
type Kind uint8

// Values match enum event_kind in bpf/nstrace.bpf.c.
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
)

var kindNames = [...]string{Create: "create", Join: "join", NsproxyFree: "nsproxy_free", Destroy: "destroy", Lost: "lost", Exist: "exist"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// NsType is a namespace type; names are those of lsns and /proc/PID/ns.
type NsType uint8

// Values match enum ns_slot in bpf/nstrace.bpf.c.
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

func (t NsType) String() string {
	if t < numTypes {
		return typeNames[t]
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

var howNames = [...]string{1: "last_ref", 2: "freed", 3: Polled}

// Polled is the How of a destroy found by polling, in which no task acted.
const Polled = "polled"

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
	// Namespaces held by a freed nsproxy, indexed like SlotNames.
	Namespaces [len(SlotNames)]uint32
	// Count of lost events, for Kind Lost.
	Count uint64

	// For Kind Exist. Pid, Ppid, Uid and Comm are those of the process it
	// was found through (0 and "" if unknown); Tid is not used.
	HeldBy     string // process, bind_mount, fd or namespace
	Nprocs     uint32 // processes in it
	ParentInum uint32 // pid, user: the parent namespace; 0 if none or unknown
	OwnerInum  uint32 // all but user: the owning user namespace; 0 if unknown
	Mountpoint string // where it is bind-mounted, if it is

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

// RecordSize is the size of one raw record (nstrace.BpfEvent).
const RecordSize = 160

// Where Decode finds the fields of a record: the offsets of the fields of
// nstrace.BpfEvent (struct event in bpf/nstrace.bpf.c), which
// TestRecordLayout checks. Reading them directly is several times faster
// than binary.Decode, which goes through reflection.
const (
	offTsNs          = 0
	offLost          = 8
	offKind          = 12
	offNsType        = 13
	offSyscall       = 14
	offHow           = 15
	offFlags         = 16
	offNsID          = 24
	offCgroupID      = 32
	offExeID         = 40
	offOwnerCgroupID = 48
	offOwnerPid      = 56
	offPid           = 60
	offTid           = 64
	offPpid          = 68
	offUid           = 72
	offInum          = 76
	offOldInum       = 80
	offInums         = 84 // [9]uint32
	offForChildren   = 120
	offOwnerKnown    = 121
	offComm          = 124 // [commLen]byte
	offParentComm    = 140 // [commLen]byte

	commLen = 16 // TASK_COMM_LEN
)

// Decode decodes one record. lost is the number of events the same CPU
// dropped before this one.
func (d *Decoder) Decode(raw []byte) (ev Event, lost uint32, err error) {
	lost, err = d.DecodeInto(&ev, raw)
	return ev, lost, err
}

// DecodeInto is Decode into an Event of the caller's, which it overwrites:
// an Event is some 600 bytes, too many to copy per record.
func (d *Decoder) DecodeInto(ev *Event, raw []byte) (lost uint32, err error) {
	if len(raw) < RecordSize {
		*ev = Event{}
		return 0, fmt.Errorf("short record: %d bytes, want %d", len(raw), RecordSize)
	}
	// As an array, the reads at constant offsets below need no bounds checks.
	r := (*[RecordSize]byte)(raw)
	ne := binary.NativeEndian // BPF writes records in the host's byte order
	lost = ne.Uint32(r[offLost:])
	kind, typ := Kind(r[offKind]), NsType(r[offNsType])
	if kind < Create || kind > Destroy || typ >= numTypes {
		*ev = Event{}
		return lost, fmt.Errorf("corrupt record: kind %d, type %d", r[offKind], r[offNsType])
	}
	*ev = Event{
		Time:     time.Unix(0, int64(time.Duration(ne.Uint64(r[offTsNs:]))+d.bootToWall)),
		Kind:     kind,
		Type:     typ,
		Inum:     ne.Uint32(r[offInum:]),
		NsID:     ne.Uint64(r[offNsID:]),
		OldInum:  ne.Uint32(r[offOldInum:]),
		Pid:      ne.Uint32(r[offPid:]),
		Tid:      ne.Uint32(r[offTid:]),
		Ppid:     ne.Uint32(r[offPpid:]),
		Uid:      ne.Uint32(r[offUid:]),
		Comm:     d.comm(r[offComm : offComm+commLen]),
		Flags:    ne.Uint64(r[offFlags:]),
		Children: r[offForChildren] != 0,

		ParentComm:    d.comm(r[offParentComm : offParentComm+commLen]),
		cgroupID:      ne.Uint64(r[offCgroupID:]),
		exeID:         ne.Uint64(r[offExeID:]),
		ownerCgroupID: ne.Uint64(r[offOwnerCgroupID:]),
		ownerPid:      ne.Uint32(r[offOwnerPid:]),
		ownerKnown:    r[offOwnerKnown] != 0,
	}
	switch kind {
	case Create, Join:
		ev.Syscall = syscallNames[0]
		if s := r[offSyscall]; int(s) < len(syscallNames) {
			ev.Syscall = syscallNames[s]
		}
	case Destroy:
		if h := r[offHow]; int(h) < len(howNames) {
			ev.How = howNames[h]
		}
	case NsproxyFree:
		for i := range ev.Namespaces {
			ev.Namespaces[i] = ne.Uint32(r[offInums+4*i:])
		}
	}
	return lost, nil
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
