package snapshot

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nsInum reads /proc/PID/ns/FILE as (type, inum); pid "self" is us.
func nsInum(t *testing.T, pid, file string) (string, uint32) {
	t.Helper()
	l, err := os.Readlink("/proc/" + pid + "/ns/" + file)
	if err != nil {
		t.Fatal(err)
	}
	typ, inum, ok := parseNSLink(l)
	if !ok {
		t.Fatalf("/proc/%s/ns/%s reads %q", pid, file, l)
	}
	return typeNames[typ], inum
}

func take(t *testing.T, opts Options) (map[key]Namespace, []Namespace, Stats) {
	t.Helper()
	start := time.Now()
	nss, st, err := Take(context.Background(), opts)
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	end := time.Now()
	t.Logf("%d namespaces, %+v", len(nss), st)
	byKey := map[key]Namespace{}
	pos := map[key]int{}
	for i, ns := range nss {
		typ, ok := typeIndex(ns.Type)
		if !ok {
			t.Fatalf("namespace of unknown type: %+v", ns)
		}
		k := key{typ, ns.Inum}
		if _, dup := byKey[k]; dup {
			t.Errorf("%s %d listed twice", ns.Type, ns.Inum)
		}
		byKey[k], pos[k] = ns, i
		if ns.Seen.Before(start) || ns.Seen.After(end) {
			t.Errorf("%s %d seen at %v, not during Take (%v to %v)", ns.Type, ns.Inum, ns.Seen, start, end)
		}
		if ns.HeldBy < HeldByNamespace || ns.HeldBy > HeldByProcess {
			t.Errorf("%s %d: held by %v", ns.Type, ns.Inum, ns.HeldBy)
		}
		if ns.HeldBy != HeldByProcess && ns.Nprocs != 0 {
			t.Errorf("%s %d: held by %v but has %d processes", ns.Type, ns.Inum, ns.HeldBy, ns.Nprocs)
		}
		if (ns.Type == "user" && ns.Owner != 0) || (ns.Type != "pid" && ns.Type != "user" && ns.Parent != 0) {
			t.Errorf("%s %d: parent %d, owner %d", ns.Type, ns.Inum, ns.Parent, ns.Owner)
		}
	}
	// Parents and owners come before the namespaces that name them.
	for i, ns := range nss {
		typ, _ := typeIndex(ns.Type)
		for _, rel := range []key{{typeUser, ns.Owner}, {typ, ns.Parent}} {
			if rel.inum == 0 {
				continue
			}
			if j, ok := pos[rel]; !ok || j >= i {
				t.Errorf("%s %d names %s %d, which is not listed before it (at %d, %v)", ns.Type, ns.Inum, typeNames[rel.typ], rel.inum, j, ok)
			}
		}
	}
	return byKey, nss, st
}

func lookup(t *testing.T, byKey map[key]Namespace, typ string, inum uint32) Namespace {
	t.Helper()
	i, _ := typeIndex(typ)
	ns, ok := byKey[key{i, inum}]
	if !ok {
		t.Fatalf("the snapshot lacks %s namespace %d", typ, inum)
	}
	return ns
}

// Our own namespaces are there, held by processes, and we or a lower pid
// stand for them. Needs no privilege.
func TestTakeFindsOurNamespaces(t *testing.T) {
	byKey, _, st := take(t, Options{})
	if st.Processes == 0 {
		t.Fatal("no process walked")
	}
	self := os.Getpid()
	for _, f := range nsFiles {
		if _, err := os.Readlink("/proc/self/ns/" + f.name); err != nil {
			continue // not on this kernel
		}
		typ, inum := nsInum(t, "self", f.name)
		ns := lookup(t, byKey, typ, inum)
		if ns.HeldBy != HeldByProcess || ns.Nprocs < 1 || ns.Pid <= 0 || ns.Pid > self {
			t.Errorf("our %s namespace: %+v; want held by process, nprocs >= 1, 0 < pid <= %d", f.name, ns, self)
		}
		if ns.Pid == self && ns.Comm != comm(t, "self") {
			t.Errorf("our %s namespace: comm %q, want %q", f.name, ns.Comm, comm(t, "self"))
		}
	}
}

func comm(t *testing.T, pid string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}

func TestTakeMaxFDs(t *testing.T) {
	_, _, st := take(t, Options{MaxFDs: 1})
	if st.FDLimited == 0 {
		t.Error("with MaxFDs 1, no process had open files left unexamined")
	}
}

func TestTakeNoProcfs(t *testing.T) {
	if _, _, err := Take(context.Background(), Options{Proc: t.TempDir()}); err == nil {
		t.Error("Take on an empty directory as procfs succeeded")
	}
}

func TestTakeCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Take(ctx, Options{}); err != context.Canceled {
		t.Errorf("Take with a canceled context: %v", err)
	}
}

// Namespaces no process is in: one held by an open file of ours (opened
// through /proc), one by an open file opened through a bind mount that is
// gone since (it reads as a path), one bind-mounted at a path that needs
// escaping in mountinfo, and the user namespace that owns them, held only
// by them.
func TestTakeHolders(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root (creates namespaces, bind mounts)")
	}
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skipf("SKIPPED: no sleep: %v", err)
	}
	child := exec.Command("sleep", "60")
	child.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC}
	if err := child.Start(); err != nil {
		t.Skipf("SKIPPED: cannot start a process in new namespaces: %v", err)
	}
	defer child.Process.Kill()
	cpid := fmt.Sprint(child.Process.Pid)
	_, userIn := nsInum(t, cpid, "user")
	_, netIn := nsInum(t, cpid, "net")
	_, utsIn := nsInum(t, cpid, "uts")
	_, ipcIn := nsInum(t, cpid, "ipc")
	_, ourUser := nsInum(t, "self", "user")
	// Ground truth for ID: NS_GET_ID on each, 0 on kernels before 6.18.
	ids := map[string]uint64{}
	for _, typ := range []string{"user", "net", "uts", "ipc"} {
		f, err := os.Open("/proc/" + cpid + "/ns/" + typ)
		if err != nil {
			t.Fatal(err)
		}
		ids[typ] = KernelID(int(f.Fd()))
		f.Close()
	}

	netFile, err := os.Open("/proc/" + cpid + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer netFile.Close()

	dir := t.TempDir()
	bind := func(file, target string) {
		t.Helper()
		if err := os.WriteFile(target, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("/proc/"+cpid+"/ns/"+file, target, "", unix.MS_BIND, ""); err != nil {
			t.Fatalf("bind mount of /proc/%s/ns/%s: %v", cpid, file, err)
		}
		t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	}
	utsPath := filepath.Join(dir, "u t\\s")
	bind("uts", utsPath)
	ipcPath := filepath.Join(dir, "ipc")
	bind("ipc", ipcPath)
	ipcFile, err := os.Open(ipcPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ipcFile.Close()
	if err := unix.Unmount(ipcPath, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}

	child.Process.Kill()
	child.Wait()

	byKey, _, _ := take(t, Options{})
	self := os.Getpid()
	check := func(typ string, inum uint32, want Namespace) {
		t.Helper()
		got := lookup(t, byKey, typ, inum)
		want.Type, want.Inum, want.Seen, want.ID = typ, inum, got.Seen, ids[typ]
		if got.Pid == self {
			want.Ppid, want.Uid, want.Comm = os.Getppid(), os.Getuid(), comm(t, "self")
		}
		if got != want {
			t.Errorf("%s namespace:\n got %+v\nwant %+v", typ, got, want)
		}
	}
	// Held by our open files: FD is the file's number in /proc/self/fd.
	check("net", netIn, Namespace{HeldBy: HeldByFD, Pid: self, Owner: userIn, FD: int(netFile.Fd())})
	check("ipc", ipcIn, Namespace{HeldBy: HeldByFD, Pid: self, Owner: userIn, FD: int(ipcFile.Fd())})
	// The bind mount's process is the lowest pid of our mount namespace.
	uts := lookup(t, byKey, "uts", utsIn)
	check("uts", utsIn, Namespace{HeldBy: HeldByBindMount, Pid: uts.Pid, Ppid: uts.Ppid, Uid: uts.Uid, Comm: uts.Comm, Owner: userIn, Mountpoint: utsPath, FD: -1})
	if uts.Pid <= 0 || uts.Pid > self {
		t.Errorf("bind-mounted uts namespace: pid %d, want one of our mount namespace, <= ours (%d)", uts.Pid, self)
	}
	// Found as the owner of the net namespace open in our files.
	check("user", userIn, Namespace{HeldBy: HeldByNamespace, Pid: self, Parent: ourUser, FD: -1})
}
