package events

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/nstrace/nstrace"
	"github.com/nstrace/nstrace/container"
)

// Context says whose event it is: a cgroup, and the container and
// Kubernetes pod that cgroup belongs to.
type Context struct {
	CgroupID uint64
	Cgroup   string
	container.Info
	Names
}

// Names are what a container runtime tells of a container.
type Names struct {
	ContainerName string
	Image         string
	PodName       string
	PodNamespace  string
}

// Owner is whom a namespace belongs to: the process that created it (or,
// for one older than nstrace, the first process found in it) and its
// context then.
type Owner struct {
	Pid uint32
	Context
}

// NameSource looks container ids up in a runtime without blocking.
type NameSource interface {
	Lookup(id string) (Names, bool)
}

// Record kinds; values match enum rec_kind in bpf/lib/context.h.
const (
	recCgroup = 16 // string records
	recExe    = 17
	recNs     = 19 // namespace events (DecodeInto)
)

// kindOffset is where every record has its kind (struct ns_rec, str_rec).
const kindOffset = 12

// StringRecord is a path the BPF programs send once, before the first
// event that refers to it by key.
type StringRecord struct {
	Cgroup    bool // a cgroup path (key: cgroup id), else an executable (key: exe id)
	Key       uint64
	Value     string
	Truncated bool
}

// DecodeString decodes raw if it is a string record (ok), and returns the
// events dropped before it on its CPU.
func DecodeString(raw []byte) (rec StringRecord, lost uint32, ok bool, err error) {
	if len(raw) <= kindOffset || (raw[kindOffset] != recCgroup && raw[kindOffset] != recExe) {
		return rec, 0, false, nil
	}
	var r nstrace.BpfStrRec
	if len(raw) < binary.Size(r) {
		return rec, 0, true, fmt.Errorf("short string record: %d bytes", len(raw))
	}
	if _, err := binary.Decode(raw, binary.NativeEndian, &r); err != nil {
		return rec, 0, true, fmt.Errorf("decode string record: %w", err)
	}
	b := make([]byte, min(int(r.Len), len(r.Str)))
	for i := range b {
		b[i] = byte(r.Str[i])
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return StringRecord{Cgroup: r.Kind == recCgroup, Key: r.Key, Value: string(b), Truncated: r.Truncated != 0}, r.Lost, true, nil
}

// Attributor fills in the context of events from the strings the BPF
// programs sent and, if it has one, a runtime's names.
type Attributor struct {
	cgroups *bounded[uint64, cgroupInfo]
	exes    *bounded[uint64, string]
	names   NameSource
}

type cgroupInfo struct {
	path string
	info container.Info
}

// Userspace keeps more strings than the BPF programs remember having sent
// (16384 of each), so what they assume is here still is.
const maxStrings = 1 << 16

// NewAttributor starts with the cgroups and executables found at start
// (tracer.InitialStrings); names may be nil.
func NewAttributor(cgroups, exes map[uint64]string, names NameSource) *Attributor {
	a := &Attributor{cgroups: newBounded[uint64, cgroupInfo](maxStrings), exes: newBounded[uint64, string](maxStrings), names: names}
	for id, p := range cgroups {
		a.cgroups.put(id, cgroupInfo{p, container.Parse(p)})
	}
	for id, p := range exes {
		a.exes.put(id, p)
	}
	return a
}

// Learn keeps a string record.
func (a *Attributor) Learn(r StringRecord) {
	if r.Cgroup {
		a.cgroups.put(r.Key, cgroupInfo{r.Value, container.Parse(r.Value)})
	} else {
		a.exes.put(r.Key, r.Value)
	}
}

// ContextOf is the context of a task in cgroup path p (for processes read
// from /proc).
func (a *Attributor) ContextOf(id uint64, p string) Context {
	c := Context{CgroupID: id, Cgroup: p, Info: container.Parse(p)}
	a.name(&c)
	return c
}

func (a *Attributor) context(id uint64) Context {
	c := Context{CgroupID: id}
	if info, ok := a.cgroups.get(id); ok {
		c.Cgroup, c.Info = info.path, info.info
	}
	a.name(&c)
	return c
}

func (a *Attributor) name(c *Context) {
	if c.ID != "" && a.names != nil {
		if n, ok := a.names.Lookup(c.ID); ok {
			c.Names = n
		}
	}
}

// Annotate fills in ev's context from the ids the BPF programs put in it.
func (a *Attributor) Annotate(ev *Event) {
	if ev.exeID != 0 {
		ev.Exe, _ = a.exes.get(ev.exeID)
	}
	ev.Owner, ev.HasOwner = Owner{}, false
	if ev.ownerKnown && (ev.Kind == Join || ev.Kind == Destroy || ev.Kind == Orphan) {
		ev.Owner, ev.HasOwner = Owner{Pid: ev.ownerPid, Context: a.context(ev.ownerCgroupID)}, true
	}
	switch {
	case ev.Kind == Destroy || ev.Kind == Orphan:
		// A destroy belongs to the namespace's owner: a kworker often does
		// it; an orphan has no process but what made it.
		if ev.HasOwner {
			ev.Ctx = ev.Owner.Context
		}
	case ev.cgroupID != 0:
		ev.Ctx = a.context(ev.cgroupID)
	}
}

// bounded is a map that forgets its oldest entries beyond a size.
type bounded[K comparable, V any] struct {
	m     map[K]V
	order []K
	next  int
	max   int
}

func newBounded[K comparable, V any](max int) *bounded[K, V] {
	return &bounded[K, V]{m: map[K]V{}, max: max}
}

func (b *bounded[K, V]) get(k K) (V, bool) {
	v, ok := b.m[k]
	return v, ok
}

func (b *bounded[K, V]) put(k K, v V) {
	if _, ok := b.m[k]; ok {
		b.m[k] = v
		return
	}
	if len(b.order) < b.max {
		b.order = append(b.order, k)
	} else {
		delete(b.m, b.order[b.next])
		b.order[b.next] = k
		b.next = (b.next + 1) % b.max
	}
	b.m[k] = v
}
