package docker

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"

	"github.com/nstrace/nstrace/internal/dockertest"
)

// seen records the calls of onContainer.
type seen struct {
	mu     sync.Mutex
	cs     []Container
	at     []time.Time
	notify chan struct{}
}

func newSeen() *seen { return &seen{notify: make(chan struct{}, 1)} }

func (s *seen) onContainer(c Container) {
	s.mu.Lock()
	s.cs = append(s.cs, c)
	s.at = append(s.at, time.Now())
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// wait returns the first container recorded for which match is true, and
// when it was, waiting up to timeout.
func (s *seen) wait(t *testing.T, timeout time.Duration, what string, match func(Container) bool) (Container, time.Time) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		for i, c := range s.cs {
			if match(c) {
				at := s.at[i]
				s.mu.Unlock()
				return c, at
			}
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-deadline:
			t.Fatalf("onContainer not called for %s within %v", what, timeout)
		}
	}
}

func byName(name string) func(Container) bool {
	return func(c Container) bool { return c.Name == name }
}

// eventually polls cond every 20 ms until it is true or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func watch(t *testing.T, d *dockertest.Daemon, s *seen) *Watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t0 := time.Now()
	w, err := Watch(ctx, d.Socket, s.onContainer)
	if err != nil {
		cancel()
		t.Fatalf("Watch: %v", err)
	}
	t.Logf("Watch returned in %v, API %s", time.Since(t0).Round(time.Millisecond), w.cli.Load().ClientVersion())
	t.Cleanup(func() {
		cancel()
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return w
}

// forget drops id from w's cache, as if w had never heard of it.
func forget(w *Watcher, id string) {
	w.mu.Lock()
	delete(w.byID, id)
	w.mu.Unlock()
}

func checkContainer(t *testing.T, c Container, id, name, image string, labels map[string]string) {
	t.Helper()
	if c.ID != id || c.Name != name || c.Image != image {
		t.Errorf("got id %s name %q image %q, want %s %q %q", c.ID, c.Name, c.Image, id, name, image)
	}
	for k, v := range labels {
		if c.Labels[k] != v {
			t.Errorf("container %s: label %s = %q, want %q (labels %v)", name, k, c.Labels[k], v, c.Labels)
		}
	}
	if c.PodName != labels[labelPodName] || c.PodNamespace != labels[labelPodNamespace] ||
		c.K8sContainerName != labels[labelContainerName] {
		t.Errorf("container %s: pod %q/%q container %q, labels %v", name, c.PodNamespace, c.PodName, c.K8sContainerName, labels)
	}
}

func TestWatchMissingSocket(t *testing.T) {
	dir := t.TempDir()
	// Nothing there; a socket nobody listens on; a listener that never answers.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	mute := filepath.Join(dir, "mute.sock")
	ml, err := net.Listen("unix", mute)
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Close()
	var conns []net.Conn
	var cmu sync.Mutex
	go func() {
		for {
			c, err := ml.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
		}
	}()
	defer func() {
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
	}()
	for _, sock := range []string{filepath.Join(dir, "missing.sock"), stale, mute} {
		t0 := time.Now()
		w, err := Watch(context.Background(), sock, nil)
		took := time.Since(t0)
		if err == nil {
			w.Close()
			t.Errorf("Watch(%s): no error", sock)
			continue
		}
		t.Logf("Watch(%s): %v after %v", filepath.Base(sock), err, took.Round(time.Millisecond))
		if took > 3*time.Second {
			t.Errorf("Watch(%s) took %v", sock, took)
		}
	}
	// A nil Watcher, what a caller without a daemon has, knows nothing.
	var w *Watcher
	if _, ok := w.Lookup(strings.Repeat("a", 64)); ok {
		t.Errorf("nil Watcher: Lookup true")
	}
	w.Close()
}

func TestWatchContainers(t *testing.T) {
	d := dockertest.Start(t)
	img := d.Image(t)

	beforeLabels := map[string]string{
		labelPodName: "pod-a", labelPodNamespace: "ns-a", labelContainerName: "ctr-a", "x": "y",
	}
	args := []string{"create", "--network", "none", "--name", "before"}
	for k, v := range beforeLabels {
		args = append(args, "--label", k+"="+v)
	}
	before := d.Docker(t, append(args, img, "sleep", "100")...)

	s := newSeen()
	w := watch(t, d, s)

	// Known when Watch returns, from the list.
	c, ok := w.Lookup(before)
	if !ok {
		t.Fatalf("Lookup(%s) of a container created before Watch: false", before)
	}
	checkContainer(t, c, before, "before", img, beforeLabels)
	s.wait(t, time.Second, "before", byName("before"))

	// Created after: onContainer hears of it from the create event, before
	// it is started.
	afterLabels := map[string]string{labelPodName: "pod-b", "k": "v=w"}
	t0 := time.Now()
	after := d.Docker(t, "create", "--network", "none", "--name", "after",
		"--label", labelPodName+"=pod-b", "--label", "k=v=w", img, "sleep", "100")
	created := time.Now()
	c, at := s.wait(t, 2*time.Second, "after", byName("after"))
	t.Logf("docker create took %v; onContainer %v after it returned",
		created.Sub(t0).Round(time.Millisecond), at.Sub(created).Round(time.Millisecond))
	checkContainer(t, c, after, "after", img, afterLabels)
	if c, ok := w.Lookup(after); !ok || c.Name != "after" {
		t.Errorf("Lookup(after) = %+v, %v", c, ok)
	}
	d.Docker(t, "start", after)

	// docker run: create then start at once. onContainer must come before
	// the start is done (the daemon's StartedAt; same clock).
	run := d.Docker(t, "run", "-d", "--network", "none", "--name", "runner", img, "sleep", "100")
	_, at = s.wait(t, 2*time.Second, "runner", byName("runner"))
	started, err := time.Parse(time.RFC3339Nano, d.Docker(t, "inspect", "-f", "{{.State.StartedAt}}", run))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("runner: onContainer %v before its StartedAt", started.Sub(at).Round(time.Millisecond))
	if !at.Before(started) {
		t.Errorf("runner: onContainer at %v, not before StartedAt %v", at, started)
	}

	// Renamed: onContainer again, with the new name.
	d.Docker(t, "rename", "after", "renamed")
	c, _ = s.wait(t, 2*time.Second, "renamed", byName("renamed"))
	if c.ID != after || c.Labels["oldName"] != "" {
		t.Errorf("renamed: %+v", c)
	}
	checkContainer(t, c, after, "renamed", img, afterLabels)
	if c, ok := w.Lookup(after); !ok || c.Name != "renamed" {
		t.Errorf("Lookup(after) after rename = %+v, %v", c, ok)
	}
}

func TestLookupAsync(t *testing.T) {
	d := dockertest.Start(t)
	img := d.Image(t)
	s := newSeen()
	w := watch(t, d, s)

	id := d.Docker(t, "create", "--network", "none", "--name", "quiet", "--label", labelPodNamespace+"=ns", img, "true")
	s.wait(t, 2*time.Second, "quiet", byName("quiet"))
	forget(w, id)

	n := w.inspects.Load()
	if _, ok := w.Lookup(id); ok {
		t.Fatalf("Lookup of a forgotten id: true")
	}
	var c Container
	eventually(t, 5*time.Second, "Lookup after the inspect", func() bool {
		var ok bool
		c, ok = w.Lookup(id)
		return ok
	})
	checkContainer(t, c, id, "quiet", img, map[string]string{labelPodNamespace: "ns"})
	if got := w.inspects.Load() - n; got != 1 {
		t.Errorf("%d inspects for one unknown id, want 1", got)
	}

	// An id the daemon does not know: asked once, then remembered.
	gone := strings.Repeat("ab", 32)
	n = w.inspects.Load()
	for range 5 {
		if _, ok := w.Lookup(gone); ok {
			t.Fatalf("Lookup of an unknown id: true")
		}
	}
	eventually(t, 5*time.Second, "failed inspect remembered", func() bool {
		w.mu.RLock()
		defer w.mu.RUnlock()
		_, ok := w.failed[gone]
		return ok
	})
	for range 5 {
		w.Lookup(gone)
	}
	time.Sleep(100 * time.Millisecond)
	if got := w.inspects.Load() - n; got != 1 {
		t.Errorf("%d inspects for a gone id, want 1", got)
	}
	// Not ids: never asked.
	for _, bad := range []string{"", "quiet", id[:12], strings.ToUpper(id)} {
		if _, ok := w.Lookup(bad); ok {
			t.Errorf("Lookup(%q): true", bad)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if got := w.inspects.Load() - n; got != 1 {
		t.Errorf("Lookup of non-ids made %d inspects", got-1)
	}
}

func TestResolve(t *testing.T) {
	d := dockertest.Start(t)
	img := d.Image(t)
	s := newSeen()
	w := watch(t, d, s)
	ctx := context.Background()

	id := d.Docker(t, "create", "--network", "none", "--name", "web", img, "true")
	s.wait(t, 2*time.Second, "web", byName("web"))
	for _, ref := range []string{"web", "/web", id, id[:12], id[:5]} {
		got, ok, err := w.Resolve(ctx, ref)
		if err != nil || !ok || got != id {
			t.Errorf("Resolve(%q) = %q, %v, %v; want %s", ref, got, ok, err, id)
		}
	}
	// Not in the cache: the daemon is asked, and the answer cached.
	forget(w, id)
	for _, ref := range []string{"web", id[:12]} {
		forget(w, id)
		got, ok, err := w.Resolve(ctx, ref)
		if err != nil || !ok || got != id {
			t.Errorf("Resolve(%q) not cached = %q, %v, %v; want %s", ref, got, ok, err, id)
		}
		if c, ok := w.Lookup(id); !ok || c.Name != "web" {
			t.Errorf("Lookup after Resolve(%q) = %+v, %v", ref, c, ok)
		}
	}
	for _, ref := range []string{"nosuch", strings.Repeat("f", 64), ""} {
		if got, ok, err := w.Resolve(ctx, ref); ok || err != nil {
			t.Errorf("Resolve(%q) = %q, %v, %v; want not found", ref, got, ok, err)
		}
	}
}

func TestDestroyedGrace(t *testing.T) {
	d := dockertest.Start(t)
	img := d.Image(t)
	defer func(g, e time.Duration) { destroyedGrace, sweepEvery = g, e }(destroyedGrace, sweepEvery)
	destroyedGrace, sweepEvery = 2*time.Second, 100*time.Millisecond
	s := newSeen()
	w := watch(t, d, s)

	id := d.Docker(t, "create", "--network", "none", "--name", "brief", "--label", labelPodName+"=p", img, "true")
	s.wait(t, 2*time.Second, "brief", byName("brief"))
	d.Docker(t, "start", "-a", id)
	d.Docker(t, "rm", id)
	var destroyed time.Time
	eventually(t, 2*time.Second, "destroy event", func() bool {
		w.mu.RLock()
		defer w.mu.RUnlock()
		if e, ok := w.byID[id]; ok {
			destroyed = e.destroyed
		}
		return !destroyed.IsZero()
	})
	// Still there for late events of the container...
	for time.Since(destroyed) < w.grace-300*time.Millisecond {
		c, ok := w.Lookup(id)
		if !ok || c.Name != "brief" || c.PodName != "p" {
			t.Fatalf("Lookup %v after destroy = %+v, %v", time.Since(destroyed), c, ok)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// ...but no longer a name to resolve.
	if got, ok, err := w.Resolve(context.Background(), "brief"); ok || err != nil {
		t.Errorf("Resolve(brief) after destroy = %q, %v, %v", got, ok, err)
	}
	// Then dropped; the daemon, asked once, no longer knows it.
	eventually(t, 2*time.Second, "dropped after the grace", func() bool {
		w.mu.RLock()
		defer w.mu.RUnlock()
		_, ok := w.byID[id]
		return !ok
	})
	t.Logf("dropped %v after destroy", time.Since(destroyed).Round(time.Millisecond))
	if _, ok := w.Lookup(id); ok {
		t.Errorf("Lookup after the grace: true")
	}
	time.Sleep(200 * time.Millisecond)
	if _, ok := w.Lookup(id); ok {
		t.Errorf("Lookup after the grace and an inspect: true")
	}
}

func TestReconnect(t *testing.T) {
	d := dockertest.Start(t)
	img := d.Image(t)
	s := newSeen()
	w := watch(t, d, s)

	old := d.Docker(t, "create", "--network", "none", "--name", "old", img, "true")
	s.wait(t, 2*time.Second, "old", byName("old"))
	t0 := time.Now()
	d.Restart(t)
	t.Logf("daemon restarted in %v", time.Since(t0).Round(time.Millisecond))

	// Containers of the list after reconnecting are kept.
	if c, ok := w.Lookup(old); !ok || c.Name != "old" {
		t.Errorf("Lookup(old) after restart = %+v, %v", c, ok)
	}
	// New containers are seen again.
	t0 = time.Now()
	created := d.Docker(t, "create", "--network", "none", "--name", "new", img, "true")
	c, at := s.wait(t, 30*time.Second, "new after a daemon restart", byName("new"))
	t.Logf("new: onContainer %v after create", at.Sub(t0).Round(time.Millisecond))
	if c.ID != created {
		t.Errorf("new: %+v, want id %s", c, created)
	}
}

// A Watcher with no daemon, for the cache alone.
func bareWatcher(onContainer func(Container)) *Watcher {
	w := &Watcher{
		onContainer: onContainer,
		byID:        make(map[string]*entry),
		pending:     make(map[string]struct{}),
		failed:      make(map[string]time.Time),
	}
	w.setTunables()
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w
}

func hexID(i int) string {
	const digits = "0123456789abcdef"
	b := []byte(strings.Repeat("0", 64))
	for j := 63; i > 0; j-- {
		b[j] = digits[i%16]
		i /= 16
	}
	return string(b)
}

func TestCache(t *testing.T) {
	defer func(m int) { maxContainers = m }(maxContainers)
	maxContainers = 100
	calls := 0
	w := bareWatcher(func(Container) { calls++ })

	// Events: create, rename, destroy, as the daemon sends them.
	ev := &events.Message{Type: events.ContainerEventType, Action: events.ActionCreate}
	ev.Actor.ID = hexID(1)
	ev.Actor.Attributes = map[string]string{"name": "a", "image": "img:1", labelPodName: "p", "l": "v"}
	w.applyEvent(ev)
	c, ok := w.Lookup(hexID(1))
	checkContainer(t, c, hexID(1), "a", "img:1", map[string]string{labelPodName: "p", "l": "v"})
	if !ok || len(c.Labels) != 2 || calls != 1 {
		t.Errorf("after create: %+v %v, %d calls", c, ok, calls)
	}
	w.applyEvent(ev) // the same again: no call
	ev.Action = events.ActionRename
	ev.Actor.Attributes = map[string]string{"name": "b", "oldName": "/a", "image": "img:1", labelPodName: "p", "l": "v"}
	w.applyEvent(ev)
	if c, _ := w.Lookup(hexID(1)); c.Name != "b" || len(c.Labels) != 2 || calls != 2 {
		t.Errorf("after rename: %+v, %d calls", c, calls)
	}
	ev.Action = events.ActionDestroy
	ev.Actor.Attributes = map[string]string{"name": "b", "image": "img:1"}
	w.applyEvent(ev)
	if c, ok := w.Lookup(hexID(1)); !ok || c.Labels["l"] != "v" || w.byID[hexID(1)].destroyed.IsZero() || calls != 2 {
		t.Errorf("after destroy: %+v %v, %d calls", c, ok, calls)
	}

	// A re-list marks the containers it lacks destroyed.
	w.applyList([]Container{newContainer(hexID(2), "/two", "img", map[string]string{})})
	w.applyList([]Container{newContainer(hexID(3), "three", "img", map[string]string{})})
	if w.byID[hexID(2)].destroyed.IsZero() || !w.byID[hexID(3)].destroyed.IsZero() || w.byID[hexID(1)].destroyed.IsZero() {
		t.Errorf("re-list did not mark the missing container destroyed")
	}
	if c, _ := w.Lookup(hexID(2)); c.Name != "two" {
		t.Errorf("name %q", c.Name)
	}

	// Bounded, destroyed containers first out.
	for i := 10; i < 300; i++ {
		w.learn(newContainer(hexID(i), "c", "img", nil), time.Time{})
	}
	if n := len(w.byID); n > w.maxContainers {
		t.Errorf("%d containers in the cache, bound %d", n, w.maxContainers)
	}
	if _, ok := w.byID[hexID(299)]; !ok {
		t.Errorf("the last container learnt is not in the cache")
	}
	if _, ok := w.byID[hexID(2)]; ok {
		t.Errorf("a destroyed container outlived the eviction of live ones")
	}
	// Sweep drops destroyed containers after the grace.
	w.learn(newContainer(hexID(400), "x", "img", nil), time.Now().Add(-2*w.grace))
	w.sweep(time.Now())
	if _, ok := w.byID[hexID(400)]; ok {
		t.Errorf("sweep kept an expired destroyed container")
	}
}
