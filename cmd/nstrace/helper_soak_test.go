package main

// The soak's driver: namespace lifecycles of every type, made by unshare,
// clone and setns, short- and long-lived, each counted with the events the
// kernel's part in it must make nstrace print. It runs as a helper process
// (its pid is what nstrace filters on) and prints its counts as JSON.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// soakCounts is what the driver caused: events by kind, creates by type.
type soakCounts struct {
	Lifecycles int            `json:"lifecycles"`
	Events     map[string]int `json:"events"`
	Creates    map[string]int `json:"creates"`
}

func (c *soakCounts) add(kind string, n int) { c.Events[kind] += n }

func (c *soakCounts) created(typ string, n int) {
	c.Creates[typ] += n
	c.Lifecycles += n
	c.add("create", n)
}

var soakFlags = map[string]uintptr{
	"uts": unix.CLONE_NEWUTS, "ipc": unix.CLONE_NEWIPC, "mnt": unix.CLONE_NEWNS, "net": unix.CLONE_NEWNET,
	"cgroup": unix.CLONE_NEWCGROUP, "time": unix.CLONE_NEWTIME, "pid": unix.CLONE_NEWPID, "user": unix.CLONE_NEWUSER,
}

// onThread runs f on a thread of its own that ends with it: a thread is a
// task, with its own nsproxy once it unshares, freed when the thread exits
// (the goroutine ends locked).
func onThread(f func() error) error {
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		done <- f()
	}()
	return <-done
}

// unshareOnThread does k unshares of typ on one thread. The first replaces
// the nsproxy the thread shares with the process (no free); each further
// one frees the thread's own and the namespace only it held; the thread's
// exit frees the last: 3k events, k lifecycles.
func (c *soakCounts) unshareOnThread(typ string, k int) error {
	err := onThread(func() error {
		for range k {
			if err := unix.Unshare(int(soakFlags[typ])); err != nil {
				return fmt.Errorf("unshare %s: %w", typ, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.created(typ, k)
	c.add("nsproxy_free", k)
	c.add("destroy", k)
	return nil
}

// pinned is a namespace the driver holds by an open /proc/.../ns file: a
// long-lived one, destroyed when the file is closed.
type pinned struct {
	typ string
	f   *os.File
}

// pin makes a namespace of typ on a thread, keeps it open, and lets the
// thread go: create and the thread's nsproxy_free now, the destroy when
// the file is closed.
func (c *soakCounts) pin(typ string) (pinned, error) {
	var f *os.File
	err := onThread(func() error {
		if err := unix.Unshare(int(soakFlags[typ])); err != nil {
			return fmt.Errorf("unshare %s: %w", typ, err)
		}
		var err error
		f, err = os.Open(fmt.Sprintf("/proc/thread-self/ns/%s", typ))
		return err
	})
	if err != nil {
		return pinned{}, err
	}
	c.created(typ, 1)
	c.add("nsproxy_free", 1)
	return pinned{typ, f}, nil
}

func (c *soakCounts) unpin(p pinned) {
	p.f.Close()
	c.add("destroy", 1)
}

// join enters p's namespace on a thread: a join, and the thread's own
// nsproxy freed at its exit; the namespace stays (the file holds it).
func (c *soakCounts) join(p pinned) error {
	err := onThread(func() error {
		if err := unix.Setns(int(p.f.Fd()), int(soakFlags[p.typ])); err != nil {
			return fmt.Errorf("setns %s: %w", p.typ, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.add("join", 1)
	c.add("nsproxy_free", 1)
	return nil
}

// cloneUser starts /bin/true in new user and uts namespaces (clone with
// both flags, then exec) and reaps it: two creates, its nsproxy freed at
// exit, two destroys.
func (c *soakCounts) cloneUser() error {
	pid, err := syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{
		Sys: &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER | unix.CLONE_NEWUTS}})
	if err != nil {
		return fmt.Errorf("clone NEWUSER|NEWUTS: %w", err)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
		return fmt.Errorf("/bin/true in new namespaces: %v %v", ws, err)
	}
	c.created("user", 1)
	c.created("uts", 1)
	c.add("nsproxy_free", 1)
	c.add("destroy", 2)
	return nil
}

// soakRound is one round of the mix: 45 lifecycles (46 every 8th round),
// 2 joins.
func (c *soakCounts) soakRound(r int, pool *[]pinned, pinTypes []string) error {
	for _, typ := range []string{"uts", "ipc", "mnt", "cgroup", "time"} {
		if err := c.unshareOnThread(typ, 8); err != nil {
			return err
		}
	}
	if err := c.unshareOnThread("net", 2); err != nil {
		return err
	}
	// A second unshare of pid fails (the first one's namespace is for
	// children only): one per thread.
	for range 2 {
		if err := c.unshareOnThread("pid", 1); err != nil {
			return err
		}
	}
	// Long-lived: a pool of 16 held namespaces, the oldest let go as a
	// new one comes, each joined twice by then.
	p, err := c.pin(pinTypes[r%len(pinTypes)])
	if err != nil {
		return err
	}
	*pool = append(*pool, p)
	for i := range 2 {
		if err := c.join((*pool)[(r*7+i*5)%len(*pool)]); err != nil {
			return err
		}
	}
	if len(*pool) > 16 {
		c.unpin((*pool)[0])
		*pool = (*pool)[1:]
	}
	if r%8 == 0 {
		return c.cloneUser()
	}
	return nil
}

// soak runs rounds until n lifecycles, after a line on stdin ("go" and the
// types to hold long, comma-separated: those whose end nstrace sees when a
// file held them), and prints its counts. Its own pid comes first, so that
// nstrace can be started on it before it begins.
func soak(args []string) int {
	n, err := strconv.Atoi(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		return 2
	}
	fmt.Printf("pid %d\n", os.Getpid())
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	pinTypes := strings.Split(strings.TrimSpace(strings.TrimPrefix(line, "go ")), ",")
	c := &soakCounts{Events: map[string]int{}, Creates: map[string]int{}}
	var pool []pinned
	for r := 0; c.Lifecycles < n; r++ {
		if err := c.soakRound(r, &pool, pinTypes); err != nil {
			fmt.Fprintf(os.Stderr, "soak: round %d: %v\n", r, err)
			return 1
		}
	}
	for _, p := range pool {
		c.unpin(p)
	}
	if err := json.NewEncoder(os.Stdout).Encode(c); err != nil {
		return 1
	}
	return 0
}
