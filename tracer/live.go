package tracer

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cilium/ebpf"
)

// NsTypes is how many namespace types there are (enum ns_slot, events.NsType).
const NsTypes = 8

// liveBatch is how many live_ns slots one batch lookup reads.
const liveBatch = 4096

// LiveCounts returns how many namespaces of each type (events.NsType order)
// are alive as far as nstrace knows: those the start-up walk found and those
// created since, less those destroyed. Namespaces nstrace had no room for
// are not in it (FullTables says so). It reads the whole table (2 MiB, a
// few milliseconds): for a scrape, not for every event.
func (t *Tracer) LiveCounts() ([NsTypes]uint64, error) {
	var n [NsTypes]uint64
	err := t.walkLive(func(_ uint32, info *nsInfo) {
		if info.Type < NsTypes {
			n[info.Type]++
		}
	})
	return n, err
}

// LiveNamespace is a namespace in nstrace's table of live ones.
type LiveNamespace struct {
	Type uint8 // events.NsType
	Inum uint32
	ID   uint64 // its ns_id
	// Owner is whom it is attributed to: its creator, or the process
	// through which it was first seen.
	Owner Owner
}

// LiveNamespaces lists the namespaces LiveCounts counts.
func (t *Tracer) LiveNamespaces() ([]LiveNamespace, error) {
	var out []LiveNamespace
	err := t.walkLive(func(inum uint32, info *nsInfo) {
		out = append(out, LiveNamespace{Type: uint8(info.Type), Inum: inum, ID: info.ID,
			Owner: Owner{Pid: info.OwnerPid, CgroupID: info.OwnerCgid, Pass: info.OwnerPass != 0}})
	})
	return out, err
}

// walkLive calls fn for every live entry of live_ns and live_ns_sparse,
// with its inode number.
func (t *Tracer) walkLive(fn func(inum uint32, info *nsInfo)) error {
	keys := make([]uint32, liveBatch)
	vals := make([]nsInfo, liveBatch)
	var cursor ebpf.MapBatchCursor
	for {
		got, err := t.coll.Maps["live_ns"].BatchLookup(&cursor, keys, vals, nil)
		for i := range vals[:got] {
			if vals[i].Live != 0 {
				fn(keys[i]+procDynamicFirst, &vals[i])
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("read live_ns: %w", err)
		}
	}
	var key uint32
	var info nsInfo
	it := t.coll.Maps["live_ns_sparse"].Iterate()
	for it.Next(&key, &info) {
		if info.Live != 0 {
			fn(key, &info)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read live_ns_sparse: %w", err)
	}
	return nil
}

// RingBuffer returns how many bytes of the ring buffer wait to be read now,
// the most that ever waited (seen as records are read), and its size.
func (t *Tracer) RingBuffer() (used, peak, size int) {
	if t.reader == nil {
		return 0, 0, 0
	}
	return t.reader.AvailableBytes(), int(t.ringPeak.Load()), t.reader.BufferSize()
}

// notePeak remembers backlog, the bytes left after a record was read, if it
// is the largest yet.
func notePeak(peak *atomic.Int64, backlog int) {
	if int64(backlog) > peak.Load() {
		peak.Store(int64(backlog))
	}
}
