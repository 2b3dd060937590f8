// Package snapshot enumerates, from userspace, the namespaces alive now:
// those processes are in or hold for their children (/proc/PID/ns, as
// lsns(8) finds them), those bind-mounted (nsfs mounts in each mount
// namespace's mountinfo, as `ip netns add` makes), those held by open files
// (/proc/PID/fd), and the parent and owning namespaces of all of these.
//
// The walk reads procfs once: per process its ten /proc/PID/ns links and
// its open files; per mount namespace one mountinfo; per namespace found,
// one open of it and two ioctls (NS_GET_PARENT, NS_GET_USERNS). Processes
// that exit during the walk, and entries that cannot be read, are skipped.
package snapshot

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Holder says what keeps a namespace alive, as far as the snapshot found.
// When several do, a namespace is reported with the strongest: process >
// bind_mount > fd > namespace.
type Holder uint8

const (
	// HeldByNamespace: found only as the parent (pid, user) or owning user
	// namespace of another namespace found, which holds a reference to it.
	HeldByNamespace Holder = iota + 1
	// HeldByFD: an open file of a process (/proc/PID/fd/N).
	HeldByFD
	// HeldByBindMount: an nsfs mount (e.g. /run/netns/NAME).
	HeldByBindMount
	// HeldByProcess: a process is in it, or holds it for its children
	// (pid_for_children, time_for_children).
	HeldByProcess
)

var holderNames = [...]string{HeldByNamespace: "namespace", HeldByFD: "fd", HeldByBindMount: "bind_mount", HeldByProcess: "process"}

func (h Holder) String() string {
	if int(h) < len(holderNames) && holderNames[h] != "" {
		return holderNames[h]
	}
	return fmt.Sprintf("holder(%d)", uint8(h))
}

// Namespace is one namespace alive during the snapshot.
type Namespace struct {
	// Type is mnt, uts, ipc, pid, net, user, cgroup or time (lsns names).
	Type string
	// Inum is its inode number, as in /proc/PID/ns and lsns.
	Inum uint32
	// ID is the kernel's namespace id (NS_GET_ID, Linux 6.18+); 0 where
	// the kernel has none or the namespace could not be opened.
	ID uint64
	// Seen is a moment during the walk at which it was alive; the
	// namespaces come in the order they were first seen, every parent and
	// owner before the namespaces that name it.
	Seen time.Time
	// HeldBy is its strongest holder.
	HeldBy Holder
	// Nprocs counts the processes in it (whose /proc/PID/ns/TYPE it is;
	// for pid and time not the _for_children one), as lsns's NPROCS.
	Nprocs int
	// Pid is the lowest pid of the processes in it, as lsns's PID. With no
	// process in it (Nprocs 0) it is the process through which the
	// snapshot found it: the lowest pid holding it for its children, then
	// a process of the mount namespace that has the bind mount, then the
	// lowest pid holding an open file of it, then the process through which
	// the namespace it is the parent or owner of was found. 0 if every such
	// process exited before its details could be read.
	Pid int
	// Ppid, Uid (real, as seen from our user namespace) and Comm are
	// Pid's, read while the snapshot was taken.
	Ppid int
	Uid  int
	Comm string
	// Parent is, for pid and user namespaces, the parent namespace (NS_GET_PARENT);
	// 0 for a top-level one, or one whose parent is outside our reach.
	Parent uint32
	// Owner is, for all but user namespaces, the user namespace that owns
	// it (NS_GET_USERNS); 0 if outside our reach. (For a user namespace the
	// owner is its parent.)
	Owner uint32
	// Mountpoint is where it is bind-mounted (the first nsfs mount of it
	// found), as seen by a process of that mount namespace; "" if none.
	Mountpoint string
	// FD is, when Pid holds it by an open file (HeldBy fd and no process in
	// it), that file's number: /proc/Pid/fd/FD. -1 otherwise.
	FD int
}

// Options configure Take.
type Options struct {
	// Proc is where procfs is mounted; "" means /proc.
	Proc string
	// MaxFDs bounds how many open files of one process are examined;
	// 0 means DefaultMaxFDs.
	MaxFDs int
}

// DefaultMaxFDs is how many open files of one process Take examines.
const DefaultMaxFDs = 1 << 14

// Stats says how the walk went.
type Stats struct {
	Processes       int // processes walked
	Vanished        int // of these, how many exited before their namespaces were read
	Unreadable      int // processes some of whose namespace files or open files could not be read (permissions)
	FDLimited       int // processes with more than MaxFDs open files: the rest were not examined
	MountNamespaces int // mountinfo files read
	Duration        time.Duration
}

// nsFiles are the files of /proc/PID/ns, with the type of each and whether
// the process is in that namespace (not only holding it for its children).
var nsFiles = [...]struct {
	name string
	typ  uint8
	in   bool
}{
	{"mnt", typeMnt, true}, {"uts", typeUTS, true}, {"ipc", typeIPC, true},
	{"pid", typePid, true}, {"pid_for_children", typePid, false},
	{"net", typeNet, true}, {"user", typeUser, true}, {"cgroup", typeCgroup, true},
	{"time", typeTime, true}, {"time_for_children", typeTime, false},
}

// rank orders the ways a namespace is found, for choosing its Pid.
type rank uint8

const (
	rankNamespace rank = iota + 1
	rankFD
	rankBindMount
	rankForChildren
	rankIn
)

func (r rank) holder() Holder {
	switch r {
	case rankNamespace:
		return HeldByNamespace
	case rankFD:
		return HeldByFD
	case rankBindMount:
		return HeldByBindMount
	}
	return HeldByProcess
}

type key struct {
	typ  uint8
	inum uint32
}

type entry struct {
	ns       Namespace
	rank     rank // how Pid relates to it; 0 while Pid is unset
	seq      int  // order first seen, 0 until then
	triedRel int  // attempts at reading its parent and owner
	related  bool // parent and owner read
}

// procInfo is a process whose details are read when it first becomes the
// representative (Pid) of a namespace.
type procInfo struct {
	pid        int
	loaded, ok bool
	ppid, uid  int
	comm       string
}

type walker struct {
	proc     string
	maxFDs   int
	files    []int // indexes into nsFiles of the files this kernel has
	nsfsDev  uint64
	byKey    map[key]*entry
	seq      int
	mntPids  map[uint32][]int // mount namespace -> the first few pids in it
	mntOrder []uint32
	selfMnt  uint32 // our mount namespace
	buf      []byte
	dirBuf   []byte
	stats    Stats
}

// mntPidsKept is how many processes per mount namespace are remembered to
// read its mountinfo through (the first may exit meanwhile).
const mntPidsKept = 4

// maxRelTries bounds the attempts at opening one namespace to read its
// parent and owner (each holder that vanishes costs one).
const maxRelTries = 3

// Take walks procfs and returns every namespace found. It fails only if
// nothing can be read at all; what one process prevents (by exiting, or
// by permissions) is skipped and counted in Stats.
func Take(ctx context.Context, opts Options) ([]Namespace, Stats, error) {
	start := time.Now()
	w := &walker{
		proc:    opts.Proc,
		maxFDs:  opts.MaxFDs,
		byKey:   map[key]*entry{},
		mntPids: map[uint32][]int{},
		buf:     make([]byte, 256),
		dirBuf:  make([]byte, 16<<10),
	}
	if w.proc == "" {
		w.proc = "/proc"
	}
	if w.maxFDs <= 0 {
		w.maxFDs = DefaultMaxFDs
	}
	if err := w.init(); err != nil {
		return nil, w.stats, err
	}
	pids, err := w.pids()
	if err != nil {
		return nil, w.stats, err
	}
	for i, pid := range pids {
		if i%64 == 0 && ctx.Err() != nil {
			return nil, w.stats, ctx.Err()
		}
		w.process(pid)
	}
	if err := w.mounts(ctx); err != nil {
		return nil, w.stats, err
	}
	if len(w.byKey) == 0 {
		return nil, w.stats, fmt.Errorf("no namespace found in %s (of %d processes, %d unreadable)", w.proc, w.stats.Processes, w.stats.Unreadable)
	}
	out := make([]Namespace, 0, len(w.byKey))
	entries := make([]*entry, 0, len(w.byKey))
	for _, e := range w.byKey {
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b *entry) int { return a.seq - b.seq })
	for _, e := range entries {
		out = append(out, e.ns)
	}
	w.stats.Duration = time.Since(start)
	return out, w.stats, nil
}

// init learns which namespace files this kernel has and the device of
// nsfs, from our own /proc/self/ns.
func (w *walker) init() error {
	var firstErr error
	for i, f := range nsFiles {
		if _, err := unix.Readlink(w.proc+"/self/ns/"+f.name, w.buf); err != nil {
			if firstErr == nil && !errors.Is(err, unix.ENOENT) {
				firstErr = err
			}
			continue // e.g. time before Linux 5.6
		}
		w.files = append(w.files, i)
	}
	if len(w.files) == 0 {
		if firstErr == nil {
			firstErr = unix.ENOENT
		}
		return fmt.Errorf("read %s/self/ns: %w", w.proc, firstErr)
	}
	var st unix.Stat_t
	if err := unix.Stat(w.proc+"/self/ns/"+nsFiles[w.files[0]].name, &st); err != nil {
		return fmt.Errorf("stat %s/self/ns: %w", w.proc, err)
	}
	w.nsfsDev = st.Dev
	if n, err := unix.Readlink(w.proc+"/self/ns/mnt", w.buf); err == nil {
		if typ, inum, ok := parseNSLink(string(w.buf[:n])); ok && typ == typeMnt {
			w.selfMnt = inum
		}
	}
	return nil
}

// pids lists the processes (thread group leaders), lowest first.
func (w *walker) pids() ([]int, error) {
	d, err := os.Open(w.proc)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if n == "" || n[0] < '0' || n[0] > '9' {
			continue
		}
		if pid, err := strconv.Atoi(n); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids, nil
}

func vanished(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// process reads one process's namespaces and open files.
func (w *walker) process(pid int) {
	w.stats.Processes++
	p := &procInfo{pid: pid}
	base := w.proc + "/" + strconv.Itoa(pid)
	read, gone, denied := 0, 0, false
	for _, i := range w.files {
		f := nsFiles[i]
		path := base + "/ns/" + f.name
		n, err := unix.Readlink(path, w.buf)
		if err != nil {
			if vanished(err) {
				gone++
			} else {
				denied = true
			}
			continue
		}
		typ, inum, ok := parseNSLink(string(w.buf[:n]))
		if !ok || typ != f.typ {
			denied = true // not what the kernel writes there
			continue
		}
		read++
		r := rankForChildren
		if f.in {
			r = rankIn
		}
		w.see(key{typ, inum}, r, p, path, -1)
		if f.in && typ == typeMnt {
			w.noteMnt(pid, inum)
		}
	}
	if read == 0 && gone > 0 && !denied {
		w.stats.Vanished++
		return
	}
	if !w.fds(base, p) {
		denied = true
	}
	if denied {
		w.stats.Unreadable++
	}
}

// fds examines a process's open files for namespaces. It returns false if
// they could not be read for another reason than the process exiting.
func (w *walker) fds(base string, p *procInfo) bool {
	d, err := unix.Open(base+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return vanished(err)
	}
	defer unix.Close(d)
	examined := 0
	var names []string
	for {
		n, err := unix.ReadDirent(d, w.dirBuf)
		if err != nil {
			return vanished(err)
		}
		if n == 0 {
			return true
		}
		_, _, names = unix.ParseDirent(w.dirBuf[:n], -1, names[:0])
		for _, name := range names {
			if examined == w.maxFDs {
				w.stats.FDLimited++
				return true
			}
			examined++
			path := base + "/fd/" + name
			// An nsfs file is told by its device; stat, unlike readlink,
			// sees it also when it was opened through a bind mount (it
			// then reads as that path, or "/" once unmounted). No lookup
			// happens (the fd link jumps to the open file) and cached
			// attributes do (a hung network file system does not block).
			var stx unix.Statx_t
			if unix.Statx(unix.AT_FDCWD, path, unix.AT_STATX_DONT_SYNC, unix.STATX_INO, &stx) != nil ||
				unix.Mkdev(stx.Dev_major, stx.Dev_minor) != w.nsfsDev || stx.Ino == 0 || stx.Ino > 1<<32-1 {
				continue
			}
			if typ, ok := w.fdType(path, uint32(stx.Ino)); ok {
				w.see(key{typ, uint32(stx.Ino)}, rankFD, p, path, -1)
			}
		}
	}
}

// fdType returns the type of the namespace open as path (/proc/PID/fd/N).
func (w *walker) fdType(path string, inum uint32) (uint8, bool) {
	if n, err := unix.Readlink(path, w.buf); err == nil {
		if typ, got, ok := parseNSLink(string(w.buf[:n])); ok && got == inum {
			return typ, true // opened through /proc/PID/ns: "net:[N]"
		}
	}
	fd := w.open(path, key{inum: inum}, true)
	if fd < 0 {
		return 0, false
	}
	defer unix.Close(fd)
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return 0, false
	}
	typ, ok := cloneTypes[t]
	return typ, ok
}

// cloneTypes maps what NS_GET_NSTYPE returns to a type.
var cloneTypes = map[int]uint8{
	unix.CLONE_NEWNS: typeMnt, unix.CLONE_NEWUTS: typeUTS, unix.CLONE_NEWIPC: typeIPC, unix.CLONE_NEWPID: typePid,
	unix.CLONE_NEWNET: typeNet, unix.CLONE_NEWUSER: typeUser, unix.CLONE_NEWCGROUP: typeCgroup, unix.CLONE_NEWTIME: typeTime,
}

// mounts reads the mountinfo of each mount namespace found, through one of
// its processes (ourselves first: kernel threads, the lowest pids of the
// initial mount namespace, may have a root of their own), for nsfs bind
// mounts.
func (w *walker) mounts(ctx context.Context) error {
	for i, mnt := range w.mntOrder {
		if i%16 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		bases := w.mountBases(mnt)
		// The bind mounts' Pid is the mount namespace's lowest.
		rep := &procInfo{pid: w.mntPids[mnt][0]}
		for j, base := range bases {
			if w.mountinfo(base, bases[j:], rep) {
				w.stats.MountNamespaces++
				break
			}
		}
	}
	return nil
}

// noteMnt records that process pid is in mount namespace mnt.
func (w *walker) noteMnt(pid int, mnt uint32) {
	pids, known := w.mntPids[mnt]
	if !known {
		w.mntOrder = append(w.mntOrder, mnt)
	}
	if len(pids) < mntPidsKept {
		w.mntPids[mnt] = append(pids, pid)
	}
}

// mountBases lists the /proc/PID directories through which mount namespace
// mnt can be read: ourselves first if it is ours, then its processes.
func (w *walker) mountBases(mnt uint32) []string {
	var bases []string
	if mnt == w.selfMnt {
		bases = append(bases, w.proc+"/self")
	}
	for _, pid := range w.mntPids[mnt] {
		bases = append(bases, w.proc+"/"+strconv.Itoa(pid))
	}
	return bases
}

// mountinfo reads base/mountinfo; false if it could not. Each nsfs bind
// mount found is opened through the root of one of bases.
func (w *walker) mountinfo(base string, bases []string, rep *procInfo) bool {
	nsfs, ok := nsfsMounts(base)
	if !ok {
		return false
	}
	for _, m := range nsfs {
		typ, inum, ok := parseNSLink(m.root)
		if !ok {
			continue
		}
		// Through a process's root, the path resolves in its mount
		// namespace, where mountinfo says the namespace is mounted.
		var e *entry
		for _, b := range bases {
			e = w.see(key{typ, inum}, rankBindMount, rep, b+"/root"+m.mountpoint, -1)
			if e.related {
				break
			}
		}
		if e.ns.Mountpoint == "" {
			e.ns.Mountpoint = m.mountpoint
		}
	}
	return true
}

// see records namespace k, found with rank r through process p. The
// namespace can be opened by path, or is open as fd (path ""). The first
// time (and again, up to maxRelTries, while that fails) it opens the
// namespace and learns its parent and owner, which are thus seen first.
func (w *walker) see(k key, r rank, p *procInfo, path string, fd int) *entry {
	e := w.byKey[k]
	if e == nil {
		e = &entry{ns: Namespace{Type: typeNames[k.typ], Inum: k.inum, FD: -1}}
		w.byKey[k] = e
	}
	if !e.related && e.triedRel < maxRelTries {
		e.triedRel++
		if path != "" {
			fd = w.open(path, k, r == rankFD || r == rankBindMount)
			if fd >= 0 {
				defer unix.Close(fd)
			}
		}
		if fd >= 0 {
			w.relatives(e, k, fd, p)
		}
	}
	if e.seq == 0 {
		// While fd (if any) is open: it is alive now.
		w.seq++
		e.seq, e.ns.Seen = w.seq, time.Now()
	}
	if r == rankIn {
		e.ns.Nprocs++
	}
	if h := r.holder(); h > e.ns.HeldBy {
		e.ns.HeldBy = h
	}
	if r > e.rank && w.load(p) {
		e.rank = r
		e.ns.Pid, e.ns.Ppid, e.ns.Uid, e.ns.Comm = p.pid, p.ppid, p.uid, p.comm
		e.ns.FD = -1
		if r == rankFD {
			if n, err := strconv.Atoi(path[strings.LastIndexByte(path, '/')+1:]); err == nil {
				e.ns.FD = n
			}
		}
	}
	return e
}

// open opens namespace k by path and checks that it is k. Paths that may
// name something else by now (a reused fd number, a mount point) are first
// opened with O_PATH and checked, so nothing but a namespace file is ever
// really opened.
func (w *walker) open(path string, k key, check bool) int {
	flags := unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK
	if check {
		pfd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1
		}
		defer unix.Close(pfd)
		if !w.is(pfd, k) {
			return -1
		}
		path = w.proc + "/self/fd/" + strconv.Itoa(pfd)
	}
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		return -1
	}
	if !w.is(fd, k) {
		unix.Close(fd)
		return -1
	}
	return fd
}

// is reports whether fd is the nsfs file of namespace k.
func (w *walker) is(fd int, k key) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Dev == w.nsfsDev && st.Ino == uint64(k.inum)
}

// relatives learns e's parent (pid, user) and owning user namespace (all
// but user), and records them as held by e.
func (w *walker) relatives(e *entry, k key, fd int, p *procInfo) {
	e.related = true
	e.ns.ID = KernelID(fd)
	if k.typ == typePid || k.typ == typeUser {
		e.ns.Parent = w.relative(fd, unix.NS_GET_PARENT, k.typ, p)
	}
	if k.typ != typeUser {
		e.ns.Owner = w.relative(fd, unix.NS_GET_USERNS, typeUser, p)
	}
}

// KernelID is the id of the namespace open as fd, from NS_GET_ID (Linux
// 6.18+); 0 where the kernel has none.
func KernelID(fd int) uint64 {
	var id uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.NS_GET_ID, uintptr(unsafe.Pointer(&id))); e != 0 {
		return 0
	}
	return id
}

// relative runs one of the nsfs ioctls that return a file of a related
// namespace (EPERM: there is none, or it is outside our user namespace).
func (w *walker) relative(fd int, req uint, typ uint8, p *procInfo) uint32 {
	rfd, err := unix.IoctlRetInt(fd, req)
	if err != nil {
		return 0
	}
	defer unix.Close(rfd)
	var st unix.Stat_t
	if err := unix.Fstat(rfd, &st); err != nil || st.Ino == 0 || st.Ino > 1<<32-1 {
		return 0
	}
	w.see(key{typ, uint32(st.Ino)}, rankNamespace, p, "", rfd)
	return uint32(st.Ino)
}

// load reads p's details once; false if it has exited.
func (w *walker) load(p *procInfo) bool {
	if p.loaded {
		return p.ok
	}
	p.loaded = true
	base := w.proc + "/" + strconv.Itoa(p.pid)
	comm, err := os.ReadFile(base + "/comm")
	if err != nil {
		return false
	}
	status, err := os.ReadFile(base + "/status")
	if err != nil {
		return false
	}
	p.ppid, p.uid, p.ok = parseStatus(status)
	p.comm = strings.TrimSuffix(string(comm), "\n")
	return p.ok
}

// HoldBindMounts opens every namespace bind-mounted (nsfs) in any mount
// namespace, for as long as the caller keeps the returned descriptors: a
// BPF iterator over open files then finds namespaces that only a bind
// mount keeps alive. Mounts that vanish meanwhile, or cannot be reached,
// are skipped. proc is procfs ("" means /proc).
func HoldBindMounts(ctx context.Context, proc string) ([]int, error) {
	w := &walker{proc: proc, byKey: map[key]*entry{}, mntPids: map[uint32][]int{}, buf: make([]byte, 256)}
	if w.proc == "" {
		w.proc = "/proc"
	}
	if err := w.init(); err != nil {
		return nil, err
	}
	pids, err := w.pids()
	if err != nil {
		return nil, err
	}
	for i, pid := range pids {
		if i%64 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		n, err := unix.Readlink(w.proc+"/"+strconv.Itoa(pid)+"/ns/mnt", w.buf)
		if err != nil {
			continue
		}
		typ, mnt, ok := parseNSLink(string(w.buf[:n]))
		if ok && typ == typeMnt {
			w.noteMnt(pid, mnt)
		}
	}
	var fds []int
	for _, mnt := range w.mntOrder {
		for _, base := range w.mountBases(mnt) {
			mounts, ok := nsfsMounts(base)
			if !ok {
				continue
			}
			for _, m := range mounts {
				typ, inum, ok := parseNSLink(m.root)
				if !ok {
					continue
				}
				if fd := w.open(base+"/root"+m.mountpoint, key{typ, inum}, true); fd >= 0 {
					fds = append(fds, fd)
				}
			}
			break
		}
	}
	return fds, nil
}

// nsfsMount is an nsfs mount: root names the namespace ("net:[N]").
type nsfsMount struct{ root, mountpoint string }

// nsfsMounts lists the nsfs mounts in base/mountinfo; false if it cannot be
// read.
func nsfsMounts(base string) ([]nsfsMount, bool) {
	f, err := os.Open(base + "/mountinfo")
	if err != nil {
		return nil, false
	}
	defer f.Close()
	var out []nsfsMount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(" - nsfs ")) {
			continue
		}
		if root, mp, ok, err := mountinfoNsfs(line); err == nil && ok {
			out = append(out, nsfsMount{root, mp})
		}
	}
	return out, sc.Err() == nil
}
