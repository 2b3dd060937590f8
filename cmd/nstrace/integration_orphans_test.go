package main

// --orphans: namespaces alive with no process in them, each held by what a
// user would find with ip netns, mount or ls -l /proc/*/fd, against the
// inode numbers the kernel gives for those holders.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() {
	eventKeys["orphan"] = []string{"time", "event", "type", "inum", "ns_id", "held_by", "orphaned_for_ns"}
	forbiddenKeys["orphan"] = []string{"pid", "tid", "comm", "old_inum", "syscall", "how", "lifetime_ns", "count"}
}

// orphanRecord is the part of an orphan (or destroy) event the harness's
// jsonEvent lacks.
type orphanRecord struct {
	HeldBy        string `json:"held_by"`
	Mountpoint    string `json:"mountpoint"`
	HolderPID     int    `json:"holder_pid"`
	HolderComm    string `json:"holder_comm"`
	HolderFD      *int   `json:"holder_fd"`
	OrphanedForNS *int64 `json:"orphaned_for_ns"`
}

func orphanOf(t *testing.T, e *jsonEvent) orphanRecord {
	t.Helper()
	var r orphanRecord
	if err := json.Unmarshal([]byte(e.line), &r); err != nil {
		t.Fatalf("%s: %v", e.line, err)
	}
	return r
}

func isOrphan(typ string, inum uint64) func(*jsonEvent) bool {
	return func(e *jsonEvent) bool { return e.Event == "orphan" && e.Type == typ && e.Inum == inum }
}

func isDestroyOf(typ string, inum uint64) func(*jsonEvent) bool {
	return func(e *jsonEvent) bool { return e.Event == "destroy" && e.Type == typ && e.Inum == inum }
}

func statIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

func TestOrphans(t *testing.T) {
	needTools(t, "ip", "unshare", "sh", "sleep", "mount", "umount")
	const after = 2 * time.Second
	want := wantRuntimeCaps(t)
	tr := startTracer(t, "json", "--orphans", after.String())
	started := time.Now()
	// What the walk needs of privilege, and no more: what the map reads
	// need, and CAP_SYS_PTRACE (other processes' /proc/PID/ns and fd; the
	// holders found below show the walk works with what was kept).
	const capSysPtrace = 19
	for tid, st := range threadStatus(t, tr.cmd.Process.Pid) {
		if st["CapEff"]&^(want|1<<capSysPtrace) != 0 || st["CapEff"]&want != want || st["NoNewPrivs"] != 1 {
			t.Errorf("thread %s of nstrace --orphans: CapEff %016x NoNewPrivs %d, want %016x plus at most CAP_SYS_PTRACE, and 1", tid, st["CapEff"], st["NoNewPrivs"], want)
		}
	}

	// 1. ip netns add: a network namespace no process is in, bind-mounted
	// on /run/netns/NAME.
	name := fmt.Sprintf("nstrace-orphan-%d", os.Getpid())
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	runProgram(t, "ip", "netns", "add", name)
	netInum := statIno(t, "/run/netns/"+name)

	// 2. An nsfs bind mount of a uts namespace, as unshare --uts=FILE
	// makes one, on a file of the test's.
	dir := t.TempDir()
	utsFile := filepath.Join(dir, "uts")
	if err := os.WriteFile(utsFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("umount", utsFile).Run() })
	runProgram(t, "unshare", "--uts="+utsFile, "true")
	utsInum := statIno(t, utsFile)

	// 3. An ipc namespace held by an open file of a sleeping process: its
	// only process exits once the holder has it open.
	inNs := exec.Command("unshare", "-i", "sleep", "60")
	if err := inNs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inNs.Process.Kill(); inNs.Wait() })
	ipcInum := waitNsChange(t, inNs.Process.Pid, "ipc")
	holder := exec.Command("sh", "-c", fmt.Sprintf("exec 7</proc/%d/ns/ipc; echo ready; exec sleep 60", inNs.Process.Pid))
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("the holder did not open the namespace: %q %v", buf, err)
	}
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/7", holder.Process.Pid))
	if err != nil || link != fmt.Sprintf("ipc:[%d]", ipcInum) {
		t.Fatalf("the holder's fd 7 is %q (%v), want ipc:[%d]", link, err, ipcInum)
	}
	inNs.Process.Kill()
	inNs.Wait()

	// 4. A namespace with a process in it all along: never an orphan.
	busy := exec.Command("unshare", "-u", "sleep", "60")
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Process.Kill(); busy.Wait() })
	busyInum := waitNsChange(t, busy.Process.Pid, "uts")

	evs := tr.await(3*after+eventTimeout()*2, func(e *jsonEvent) bool { return e.Event == "orphan" },
		wantEvent{desc: "orphan of the ip netns", match: isOrphan("net", netInum)},
		wantEvent{desc: "orphan of the uts bind mount", match: isOrphan("uts", utsInum)},
		wantEvent{desc: "orphan of the ipc namespace held by fd 7", match: isOrphan("ipc", ipcInum)})
	waited := time.Since(started)

	net, uts, ipc := orphanOf(t, evs[0]), orphanOf(t, evs[1]), orphanOf(t, evs[2])
	if net.HeldBy != "bind_mount" || net.Mountpoint != "/run/netns/"+name {
		t.Errorf("ip netns orphan: held_by %q mountpoint %q, want bind_mount /run/netns/%s", net.HeldBy, net.Mountpoint, name)
	}
	if uts.HeldBy != "bind_mount" || uts.Mountpoint != utsFile {
		t.Errorf("uts orphan: held_by %q mountpoint %q, want bind_mount %s", uts.HeldBy, uts.Mountpoint, utsFile)
	}
	if ipc.HeldBy != "fd" || ipc.HolderPID != holder.Process.Pid || ipc.HolderFD == nil || *ipc.HolderFD != 7 || ipc.HolderComm != "sleep" {
		t.Errorf("ipc orphan: held_by %q holder_pid %d holder_comm %q holder_fd %v, want fd, %d, sleep, 7", ipc.HeldBy, ipc.HolderPID, ipc.HolderComm, ipc.HolderFD, holder.Process.Pid)
	}
	for i, r := range []orphanRecord{net, uts, ipc} {
		if r.OrphanedForNS == nil || time.Duration(*r.OrphanedForNS) < after || time.Duration(*r.OrphanedForNS) > waited {
			t.Errorf("%s: orphaned_for_ns %v, want from %v to %v (the wait)", evs[i], r.OrphanedForNS, after, waited)
		}
		if evs[i].Owner == nil || evs[i].Owner.PID <= 0 {
			t.Errorf("%s: no owner (the namespace's creator)", evs[i])
		}
	}

	// 5. The netns orphans and dies: its destroy says for how long.
	runProgram(t, "ip", "netns", "del", name)
	d := tr.await(eventTimeout()*2, isDestroyOf("net", netInum), wantEvent{desc: "destroy of the ip netns", match: isDestroyOf("net", netInum)})[0]
	if r := orphanOf(t, d); r.OrphanedForNS == nil || *r.OrphanedForNS < *net.OrphanedForNS {
		t.Errorf("destroy %s: orphaned_for_ns %v, want at least the orphan event's %d", d, r.OrphanedForNS, *net.OrphanedForNS)
	}

	// Each once, and none for the namespace a process was in.
	time.Sleep(after)
	all := tr.stop(os.Interrupt)
	counts := map[string]int{}
	for _, e := range all {
		if e.Event == "orphan" {
			counts[e.Type+":"+strconv.FormatUint(e.Inum, 10)]++
		}
	}
	for _, k := range []string{"net:" + strconv.FormatUint(netInum, 10), "uts:" + strconv.FormatUint(utsInum, 10), "ipc:" + strconv.FormatUint(ipcInum, 10)} {
		if counts[k] != 1 {
			t.Errorf("orphan %s reported %d times, want once", k, counts[k])
		}
	}
	if n := counts["uts:"+strconv.FormatUint(busyInum, 10)]; n != 0 {
		t.Errorf("uts namespace %d, with a process in it all along, reported orphaned %d times", busyInum, n)
	}
}

// waitNsChange waits until process pid is in a namespace of typ other than
// ours, and returns its inode number.
func waitNsChange(t *testing.T, pid int, typ string) uint64 {
	t.Helper()
	ours, err := os.Readlink("/proc/self/ns/" + typ)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(procTimeout())
	for time.Now().Before(deadline) {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, typ))
		if err == nil && l != ours {
			inum, err := parseNSLink(typ, strings.TrimSpace(l))
			if err != nil {
				t.Fatal(err)
			}
			return inum
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("process %d did not enter a new %s namespace within %v", pid, typ, procTimeout())
	return 0
}

func TestOrphansUsage(t *testing.T) {
	backendIndependent(t)
	for _, args := range [][]string{{"--orphans", "500ms"}, {"--orphans", "-1s"}, {"--event", "orphan"}, {"--orphans", "soon"}} {
		code, _, stderr := runCLI(t, itCfg.bin, nil, args...)
		if code != exitUsage {
			t.Errorf("nstrace %v: exit %d, want %d; stderr %q", args, code, exitUsage, stderr)
		}
		expectOneLine(t, fmt.Sprintf("nstrace %v", args), stderr, "orphan")
	}
}
