package tracer

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/snapshot"
)

// CgroupHierarchy is the cgroup tree events are attributed in.
type CgroupHierarchy struct {
	// Name is a cgroup v1 controller ("memory") or "unified" (cgroup v2).
	Name string
	// Mount is where it is mounted here, "" if nowhere (paths still work;
	// the start-up walk of existing cgroups is skipped).
	Mount string
	// subsys is the controller's subsystem id; -1 for the unified one.
	subsys int
}

// DefaultV1Controllers are tried in order on a cgroup v1 host: container
// runtimes always make a cgroup for each container in these.
var DefaultV1Controllers = []string{"memory", "pids", "cpuset"}

// ChooseCgroupHierarchy picks the hierarchy: name if given ("unified" or
// a v1 controller), else the unified one on a cgroup v2 host and the first
// of DefaultV1Controllers mounted on a v1 (or hybrid) host.
func ChooseCgroupHierarchy(name string) (CgroupHierarchy, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return CgroupHierarchy{}, err
	}
	if name == "" {
		var st unix.Statfs_t
		if err := unix.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			name = "unified"
		} else {
			for _, c := range DefaultV1Controllers {
				if _, ok := mounts[c]; ok {
					name = c
					break
				}
			}
			if name == "" {
				name = "unified"
			}
		}
	}
	h := CgroupHierarchy{Name: name, Mount: mounts[name], subsys: -1}
	if name == "unified" {
		return h, nil
	}
	id, err := subsysID(name)
	if err != nil {
		return CgroupHierarchy{}, err
	}
	h.subsys = id
	return h, nil
}

// Of returns process pid's cgroup in h (from /proc/PID/cgroup) and its id
// (the inode number of its directory; 0 if h is not mounted here).
func (h CgroupHierarchy) Of(pid int) (path string, id uint64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-id:controller-list:path
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if (h.Name == "unified" && f[0] == "0" && f[1] == "") || (h.Name != "unified" && slices.Contains(strings.Split(f[1], ","), h.Name)) {
			path, ok = f[2], true
			break
		}
	}
	if ok && h.Mount != "" {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(h.Mount, path), &st) == nil {
			id = st.Ino
		}
	}
	return path, id, ok
}

// cgroupMounts maps "unified" and each mounted v1 controller to its mount
// point, from this process's mountinfo.
func cgroupMounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || pf[3] != "/" {
			continue
		}
		mp := snapshot.UnescapeMountPath(pf[4])
		switch qf[0] {
		case "cgroup2":
			if _, ok := m["unified"]; !ok {
				m["unified"] = mp
			}
		case "cgroup":
			for _, o := range strings.Split(qf[2], ",") {
				if _, ok := m[o]; !ok && o != "rw" && o != "ro" {
					m[o] = mp
				}
			}
		}
	}
	return m, sc.Err()
}

// subsysID is the kernel's id of cgroup controller name (enum
// cgroup_subsys_id), from its BTF: it depends on the kernel's config.
func subsysID(name string) (int, error) {
	spec, err := kernelTypes()
	if err != nil {
		return 0, fmt.Errorf("read kernel BTF: %w", err)
	}
	var e *btf.Enum
	if err := spec.TypeByName("cgroup_subsys_id", &e); err != nil {
		return 0, fmt.Errorf("kernel BTF has no enum cgroup_subsys_id: %w", err)
	}
	for _, v := range e.Values {
		if v.Name == name+"_cgrp_id" {
			return int(v.Value), nil
		}
	}
	return 0, fmt.Errorf("cgroup controller %q is not in this kernel", name)
}

// Filter selects events in the kernel, before they take ring-buffer space.
// The zero value selects everything.
type Filter struct {
	EventMask uint32 // 1 << kind (events.Kind); 0: all
	TypeMask  uint32 // 1 << type (events.NsType); 0: all
	Pids      []uint32
	Children  bool // also processes the Pids fork from now on
	Comms     []string
	Uids      []uint32
	// Cgroups are paths in the chosen hierarchy, "/a/b": those and below.
	Cgroups []string
	// ContainerPrefixes are container id prefixes (lowercase hex).
	ContainerPrefixes []string
	// Containers turns container filtering on even with no prefix: ids are
	// added while running (AddContainer).
	Containers bool
}

// Limits of Filter, as the BPF programs hold them.
const (
	MaxFilterValues  = 8
	MaxFilterCgroups = 4
	MaxCgroupPathLen = 255
)

// Filtered says whether the pid, comm, uid, cgroup or container filters
// select the events (by the task that acts or owns the namespace).
func (f *Filter) Filtered() bool {
	return len(f.Pids) > 0 || len(f.Comms) > 0 || len(f.Uids) > 0 || len(f.Cgroups) > 0 ||
		len(f.ContainerPrefixes) > 0 || f.Containers
}

func (f *Filter) validate() error {
	for what, n := range map[string]int{"comm": len(f.Comms), "uid": len(f.Uids), "container": len(f.ContainerPrefixes)} {
		if n > MaxFilterValues {
			return fmt.Errorf("at most %d %s values", MaxFilterValues, what)
		}
	}
	if len(f.Cgroups) > MaxFilterCgroups {
		return fmt.Errorf("at most %d cgroup values", MaxFilterCgroups)
	}
	for _, c := range f.Cgroups {
		if len(c) > MaxCgroupPathLen {
			return fmt.Errorf("cgroup path longer than %d bytes: %s", MaxCgroupPathLen, c)
		}
	}
	for _, p := range f.ContainerPrefixes {
		if len(p) == 0 || len(p) > 64 {
			return fmt.Errorf("container id prefix %q: 1 to 64 hex digits", p)
		}
	}
	return nil
}

// setFilter fills the BPF programs' filter constants.
func setFilter(spec *ebpf.CollectionSpec, f Filter, h CgroupHierarchy) error {
	if err := f.validate(); err != nil {
		return err
	}
	var comms [MaxFilterValues][2]uint64
	for i, c := range f.Comms {
		var b [16]byte
		copy(b[:15], c)
		comms[i][0] = binary.NativeEndian.Uint64(b[:8])
		comms[i][1] = binary.NativeEndian.Uint64(b[8:])
	}
	var uids [MaxFilterValues]uint32
	copy(uids[:], f.Uids)
	var cgLen [MaxFilterCgroups]uint32
	var cgPath [MaxFilterCgroups][256]byte
	for i, c := range f.Cgroups {
		cgLen[i] = uint32(len(c))
		copy(cgPath[i][:], c)
	}
	var pLen [MaxFilterValues]uint32
	var prefix [MaxFilterValues][64]byte
	for i, p := range f.ContainerPrefixes {
		pLen[i] = uint32(len(p))
		copy(prefix[i][:], p)
	}
	set := map[string]any{
		"filter_events":       f.EventMask,
		"filter_types":        f.TypeMask,
		"filter_actor":        f.Filtered(),
		"filter_by_pid":       len(f.Pids) > 0,
		"filter_children":     f.Children && len(f.Pids) > 0,
		"n_filter_comms":      uint32(len(f.Comms)),
		"filter_comms":        comms,
		"n_filter_uids":       uint32(len(f.Uids)),
		"filter_uids":         uids,
		"n_filter_cgroups":    uint32(len(f.Cgroups)),
		"filter_cgroup_len":   cgLen,
		"filter_cgroup_path":  cgPath,
		"filter_by_container": f.Containers || len(f.ContainerPrefixes) > 0,
		"n_filter_prefixes":   uint32(len(f.ContainerPrefixes)),
		"filter_prefix_len":   pLen,
		"filter_prefix":       prefix,
		"cgroup_subsys":       int32(h.subsys),
		"cgroups_walked":      h.Mount != "",
	}
	for name, v := range set {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	// It also deletes the compat object's task_states entries (kept by
	// thread id there, bpf/lib/maps.h).
	if len(f.Pids) == 0 && !useCompat() {
		delete(spec.Programs, "common_sched_process_free")
	}
	return nil
}

// AddContainer makes events of container id (64 hex digits) pass the
// container filter from now on.
func (t *Tracer) AddContainer(id string) error {
	if len(id) != 64 {
		return fmt.Errorf("container id %q: want 64 hex digits", id)
	}
	var key [64]byte
	copy(key[:], id)
	if err := t.coll.Maps["container_ids"].Update(key, uint8(1), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("add container %s to the filter: %w", id[:12], err)
	}
	return nil
}

// addPids puts the --pid processes in the filter.
func (t *Tracer) addPids(pids []uint32) error {
	m := t.coll.Maps["filter_pids"]
	for _, p := range pids {
		// Start time 0: whichever process has the pid now (it was checked).
		if err := m.Update(p, uint64(0), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("add pid %d to the filter: %w", p, err)
		}
	}
	return nil
}

// walkCgroups returns the path of every cgroup of hierarchy h that exists
// now, by cgroup id (the inode number of its directory): the BPF programs
// send a cgroup's path only the first time an event refers to it, and the
// start-up iterators take that userspace has those that exist at start.
func walkCgroups(h CgroupHierarchy) map[uint64]string {
	paths := map[uint64]string{}
	if h.Mount == "" {
		return paths
	}
	filepath.WalkDir(h.Mount, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			return nil
		}
		rel := strings.TrimPrefix(p, h.Mount)
		if rel == "" {
			rel = "/"
		}
		paths[st.Ino] = rel
		return nil
	})
	return paths
}

// exeIDsUser bounds the exe ids userspace assigns (BPF's start above).
const exeIDsUser = 1 << 32

type exeInfo struct {
	Sent      uint8
	Truncated uint8
	Len       uint16
	_         uint32
	Path      [256]byte
}

// learnExes tells the BPF programs the executable of every process that
// exists now (those that exec later, the exec hook learns), and returns the
// paths by exe id. A process's exe is readable only while it has one: kernel
// threads, zombies and processes that exited meanwhile are skipped.
func (t *Tracer) learnExes() map[uint64]string {
	dir, err := os.ReadDir("/proc")
	exes := map[uint64]string{}
	if err != nil {
		return exes
	}
	byPath := map[string]uint64{}
	procs, infos := t.coll.Maps["procs"], t.coll.Maps["exes"]
	var next uint64 = 1
	for _, d := range dir {
		pid, err := strconv.ParseUint(d.Name(), 10, 32)
		if err != nil {
			continue
		}
		path, err := os.Readlink("/proc/" + d.Name() + "/exe")
		if err != nil || path == "" {
			continue
		}
		id, ok := byPath[path]
		if !ok {
			if next >= exeIDsUser {
				break
			}
			id = next
			next++
			info := exeInfo{Sent: 1, Len: uint16(min(len(path), 255))}
			copy(info.Path[:255], path)
			if err := infos.Update(id, &info, ebpf.UpdateAny); err != nil {
				continue
			}
			byPath[path] = id
			exes[id] = path
		}
		// NoExist: an exec seen meanwhile knows better.
		procs.Update(uint32(pid), id, ebpf.UpdateNoExist)
	}
	return exes
}

// InitialStrings returns what the start-up walks found: cgroup paths by
// cgroup id and executables by exe id. Events refer to these without a
// string record of their own.
func (t *Tracer) InitialStrings() (cgroups, exes map[uint64]string) {
	return t.initialCgroups, t.initialExes
}

// Hierarchy returns the cgroup hierarchy events are attributed in.
func (t *Tracer) Hierarchy() CgroupHierarchy { return t.hierarchy }
