package events

import (
	"time"

	"golang.org/x/sys/unix"
)

func bootTime() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, err
	}
	return time.Duration(ts.Nano()), nil
}

// MaxTracked bounds how many live namespaces Lifetimes remembers.
const MaxTracked = 1 << 18

// nsKey is a namespace's (type, inum, ns_id), laid out without padding:
// a map hashes such a key in one call, and one with padding a field at a
// time.
type nsKey struct {
	id   uint64
	inum uint32
	typ  uint32 // an NsType
}

func nsKeyOf(ev *Event) nsKey { return nsKey{ev.NsID, ev.Inum, uint32(ev.Type)} }

// Lifetimes remembers when each namespace was created so that its destroy
// event can carry its lifetime. The key is (type, inum, ns_id): inode
// numbers are reused only after a namespace is freed, so (type, inum) is
// unique among the live ones, and ns_id tells a destroy that arrives after
// the inum's reuse (net cleanup runs late) from the new namespace's.
type Lifetimes struct {
	born map[nsKey]time.Time
	// Untracked counts creates not remembered because MaxTracked was reached.
	Untracked uint64
}

// NewLifetimes returns an empty tracker.
func NewLifetimes() *Lifetimes {
	return &Lifetimes{born: make(map[nsKey]time.Time)}
}

// Annotate records creates and fills the lifetime of destroys.
func (l *Lifetimes) Annotate(ev *Event) {
	k := nsKeyOf(ev)
	switch ev.Kind {
	case Create:
		if len(l.born) >= MaxTracked {
			l.Untracked++
			return
		}
		l.born[k] = ev.Time
	case Destroy:
		if t, ok := l.born[k]; ok {
			ev.Lifetime, ev.HasLifetime = ev.Time.Sub(t), true
			delete(l.born, k)
		}
	}
}

// Len is how many namespaces are being tracked.
func (l *Lifetimes) Len() int { return len(l.born) }
