package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nstrace/nstrace/events"
	"github.com/nstrace/nstrace/tracer"
)

// filterArgs are the filter flags as given on the command line.
type filterArgs struct {
	types, events, pids, comms, uids, containers, cgroups []string
	children                                              bool
}

// selection is what the filters select: the part the kernel applies, and
// the same again for the exist events userspace finds.
type selection struct {
	kernel    tracer.Filter
	types     map[events.NsType]bool // nil: all
	kinds     map[events.Kind]bool   // nil: all
	pids      map[uint32]bool
	comms     map[string]bool
	uids      map[uint32]bool
	cgroups   []string
	prefixes  []string
	names     []string // --container values resolved through the runtime
	matcher   *containerMatcher
	hierarchy tracer.CgroupHierarchy
}

// filterKinds are the valid --event values.
var filterKinds = []events.Kind{events.Create, events.Join, events.NsproxyFree, events.Destroy, events.Exist, events.Fail, events.Limit, events.Orphan}

var (
	hexRE           = regexp.MustCompile(`^[0-9a-f]{1,64}$`)
	containerNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
)

// parseSelection checks the filter flags; errors are for the user, in one
// line naming what is valid.
func parseSelection(a filterArgs, snapshot, orphans bool, h tracer.CgroupHierarchy) (*selection, error) {
	s := &selection{hierarchy: h}
	if len(a.types) > 0 {
		s.types = map[events.NsType]bool{}
		for _, v := range a.types {
			t, ok := events.ParseNsType(v)
			if !ok {
				return nil, fmt.Errorf("invalid --type %q (valid: mnt, uts, ipc, pid, net, user, cgroup, time)", v)
			}
			s.types[t] = true
			s.kernel.TypeMask |= 1 << t
		}
	}
	if len(a.events) > 0 {
		s.kinds = map[events.Kind]bool{}
		for _, v := range a.events {
			i := slices.IndexFunc(filterKinds, func(k events.Kind) bool { return k.String() == v })
			if i < 0 {
				return nil, fmt.Errorf("invalid --event %q (valid: create, join, nsproxy_free, destroy, exist, fail, limit, orphan)", v)
			}
			s.kinds[filterKinds[i]] = true
		}
		if s.kinds[events.Exist] && !snapshot {
			return nil, fmt.Errorf("--event exist needs --snapshot")
		}
		if s.kinds[events.Orphan] && !orphans {
			return nil, fmt.Errorf("--event orphan needs --orphans")
		}
	} else if s.types != nil {
		// An nsproxy_free has no type: --type leaves it out unless asked for.
		s.kinds = map[events.Kind]bool{events.Create: true, events.Join: true, events.Destroy: true, events.Exist: true,
			events.Fail: true, events.Limit: true, events.Orphan: true}
	}
	if s.kinds != nil {
		for k := range s.kinds {
			switch k {
			case events.Exist, events.Orphan: // userspace's own
			case events.Limit: // made from the creates
				s.kernel.EventMask |= 1 << events.Create
			default:
				s.kernel.EventMask |= 1 << k
			}
		}
		if s.kernel.EventMask == 0 {
			s.kernel.EventMask = 1 << 31 // none of the kernel's: exist only
		}
	}
	for _, v := range a.pids {
		p, err := strconv.ParseUint(v, 10, 32)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("invalid --pid %q (a process id: a number from 1)", v)
		}
		tgid, err := threadGroup(uint32(p))
		if err != nil {
			return nil, fmt.Errorf("invalid --pid %d: no such process", p)
		}
		if tgid != uint32(p) {
			return nil, fmt.Errorf("invalid --pid %d: a thread of process %d (--pid takes process ids)", p, tgid)
		}
		if s.pids == nil {
			s.pids = map[uint32]bool{}
		}
		s.pids[uint32(p)] = true
		s.kernel.Pids = append(s.kernel.Pids, uint32(p))
	}
	if a.children && len(a.pids) == 0 {
		return nil, fmt.Errorf("--children needs --pid")
	}
	s.kernel.Children = a.children
	for _, v := range a.comms {
		if v == "" {
			return nil, fmt.Errorf("invalid --comm \"\" (a task name, as in /proc/PID/comm)")
		}
		if len(v) > 15 {
			slog.Debug("task names are at most 15 bytes: --comm matches the first 15", "comm", v)
			v = v[:15]
		}
		if s.comms == nil {
			s.comms = map[string]bool{}
		}
		s.comms[v] = true
		s.kernel.Comms = append(s.kernel.Comms, v)
	}
	for _, v := range a.uids {
		uid, err := parseUID(v)
		if err != nil {
			return nil, err
		}
		if s.uids == nil {
			s.uids = map[uint32]bool{}
		}
		s.uids[uid] = true
		s.kernel.Uids = append(s.kernel.Uids, uid)
	}
	for _, v := range a.cgroups {
		p, err := cgroupArg(v, h)
		if err != nil {
			return nil, err
		}
		s.cgroups = append(s.cgroups, p)
	}
	s.kernel.Cgroups = s.cgroups
	for _, v := range a.containers {
		switch {
		case hexRE.MatchString(v):
			s.prefixes = append(s.prefixes, v)
			s.names = append(s.names, v) // a name may look like hex, too
		case strings.Trim(v, "0123456789abcdef") == "":
			return nil, fmt.Errorf("invalid --container %q: a container id has at most 64 hex digits", v)
		case containerNameRE.MatchString(v) && len(v) > 1:
			s.names = append(s.names, v)
		default:
			return nil, fmt.Errorf("invalid --container %q (a container id or its prefix, in lowercase hex, or a container name)", v)
		}
	}
	s.kernel.ContainerPrefixes = s.prefixes
	s.kernel.Containers = len(a.containers) > 0
	for what, n := range map[string]int{"--comm": len(a.comms), "--uid": len(a.uids), "--container": len(a.containers)} {
		if n > tracer.MaxFilterValues {
			return nil, fmt.Errorf("too many %s values: at most %d", what, tracer.MaxFilterValues)
		}
	}
	if len(a.cgroups) > tracer.MaxFilterCgroups {
		return nil, fmt.Errorf("too many --cgroup values: at most %d", tracer.MaxFilterCgroups)
	}
	return s, nil
}

// threadGroup is the process (thread group) that task id belongs to.
func threadGroup(id uint32) (uint32, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", id))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Tgid:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			return uint32(n), err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no Tgid", id)
}

func parseUID(v string) (uint32, error) {
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return uint32(n), nil
	}
	u, err := user.Lookup(v)
	if err != nil {
		return 0, fmt.Errorf("invalid --uid %q (a user id or a user name known here)", v)
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid --uid %q: user id %q", v, u.Uid)
	}
	return uint32(n), nil
}

// cgroupArg is a --cgroup value as a path in hierarchy h: "/a/b", or the
// same under h's mount point ("/sys/fs/cgroup/memory/a/b").
func cgroupArg(v string, h tracer.CgroupHierarchy) (string, error) {
	if !strings.HasPrefix(v, "/") {
		return "", fmt.Errorf("invalid --cgroup %q (a cgroup path from the root of the %s hierarchy, starting with /)", v, h.Name)
	}
	p := path.Clean(v)
	if h.Mount != "" && (p == h.Mount || strings.HasPrefix(p, h.Mount+"/")) {
		p = path.Clean("/" + strings.TrimPrefix(p, h.Mount))
	}
	if len(p) > tracer.MaxCgroupPathLen {
		return "", fmt.Errorf("invalid --cgroup %q: longer than %d bytes", v, tracer.MaxCgroupPathLen)
	}
	return p, nil
}

// actorPasses applies the pid, comm, uid, cgroup and container filters to a
// process found in userspace (exist events), as the kernel does to tasks.
func (s *selection) actorPasses(pid uint32, comm string, uid uint32, c *events.Context) bool {
	if s.pids != nil && !s.pids[pid] {
		return false
	}
	if s.comms != nil && !s.comms[comm] {
		return false
	}
	if s.uids != nil && !s.uids[uid] {
		return false
	}
	if s.cgroups != nil && !slices.ContainsFunc(s.cgroups, func(p string) bool { return underCgroup(c.Cgroup, p) }) {
		return false
	}
	if s.kernel.Containers {
		if c.ID == "" {
			return false
		}
		if (s.matcher == nil || !s.matcher.has(c.ID)) && !slices.ContainsFunc(s.prefixes, func(p string) bool { return strings.HasPrefix(c.ID, p) }) {
			return false
		}
	}
	return true
}

func underCgroup(p, root string) bool {
	return root == "/" || p == root || strings.HasPrefix(p, root+"/")
}

// kindPasses applies the event filter to what the kernel sends (which has
// passed it there, but for the creates a limit event needs).
func (s *selection) kindPasses(k events.Kind) bool {
	return s.kinds == nil || s.kinds[k]
}

// kindAndTypePass applies the event and type filters.
func (s *selection) kindAndTypePass(k events.Kind, t events.NsType) bool {
	return (s.kinds == nil || s.kinds[k]) && (s.types == nil || s.types[t])
}
