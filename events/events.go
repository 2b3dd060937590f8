// Package events decodes the records nstrace's BPF programs write and
// formats them as text or JSON lines.
package events

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/nstrace/nstrace"
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
	// Owner is whom the namespace belongs to (join, destroy), if known.
	Owner *Owner

	// What the BPF programs sent, for an Attributor to resolve.
	cgroupID, exeID, ownerCgroupID uint64
	ownerPid                       uint32
	ownerKnown                     bool
}

// Decoder turns raw records into Events.
type Decoder struct {
	// bootToWall converts CLOCK_BOOTTIME (what BPF stamps) to wall time.
	bootToWall time.Duration
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

// RecordSize is the size of one raw record.
var RecordSize = binary.Size(nstrace.BpfEvent{})

// Decode decodes one record. lost is the number of events the same CPU
// dropped before this one.
func (d *Decoder) Decode(raw []byte) (ev Event, lost uint32, err error) {
	var r nstrace.BpfEvent
	if len(raw) < RecordSize {
		return ev, 0, fmt.Errorf("short record: %d bytes, want %d", len(raw), RecordSize)
	}
	if _, err := binary.Decode(raw, binary.NativeEndian, &r); err != nil {
		return ev, 0, fmt.Errorf("decode record: %w", err)
	}
	kind := Kind(r.Kind)
	if kind < Create || kind > Destroy || NsType(r.NsType) >= numTypes {
		return ev, r.Lost, fmt.Errorf("corrupt record: kind %d, type %d", r.Kind, r.NsType)
	}
	ev = Event{
		Time:     time.Unix(0, int64(time.Duration(r.TsNs)+d.bootToWall)),
		Kind:     kind,
		Type:     NsType(r.NsType),
		Inum:     r.Inum,
		NsID:     r.NsId,
		OldInum:  r.OldInum,
		Pid:      r.Pid,
		Tid:      r.Tid,
		Ppid:     r.Ppid,
		Uid:      r.Uid,
		Comm:     commString(r.Comm[:]),
		Flags:    r.Flags,
		Children: r.ForChildren != 0,

		ParentComm:    commString(r.ParentComm[:]),
		cgroupID:      r.CgroupId,
		exeID:         r.ExeId,
		ownerCgroupID: r.OwnerCgroupId,
		ownerPid:      r.OwnerPid,
		ownerKnown:    r.OwnerKnown != 0,
	}
	if kind == Create || kind == Join {
		ev.Syscall = syscallNames[0]
		if int(r.Syscall) < len(syscallNames) {
			ev.Syscall = syscallNames[r.Syscall]
		}
	}
	if kind == Destroy && int(r.How) < len(howNames) {
		ev.How = howNames[r.How]
	}
	if kind == NsproxyFree {
		ev.Namespaces = r.Inums
	}
	return ev, r.Lost, nil
}

func commString(c []int8) string {
	b := make([]byte, len(c))
	for i, v := range c {
		b[i] = byte(v)
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
