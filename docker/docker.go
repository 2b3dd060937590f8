// Package docker names containers through a Docker Engine's API:
// container name, image and Kubernetes pod labels by container id.
//
// It asks the daemon through the moby client (github.com/moby/moby/client)
// over the daemon's unix socket, for daemons from API 1.40 (Docker 19.03) on,
// the version negotiated. Nothing it does is in the way of the caller: Lookup
// never blocks, and a daemon that goes away is waited for in the background.
package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
)

const DefaultSocket = "/var/run/docker.sock"

// Container is what the daemon tells of a container.
type Container struct {
	ID     string            // full 64-hex id
	Name   string            // without the leading '/'
	Image  string            // image name as the user gave it (Config.Image), else the image id
	Labels map[string]string // shared: do not modify
	// From the io.kubernetes.pod.name / io.kubernetes.pod.namespace / io.kubernetes.container.name labels, "" if absent.
	PodName, PodNamespace, K8sContainerName string
}

const (
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelContainerName = "io.kubernetes.container.name"
)

func newContainer(id, name, image string, labels map[string]string) Container {
	return Container{
		ID:               id,
		Name:             strings.TrimPrefix(name, "/"),
		Image:            image,
		Labels:           labels,
		PodName:          labels[labelPodName],
		PodNamespace:     labels[labelPodNamespace],
		K8sContainerName: labels[labelContainerName],
	}
}

func (c Container) equal(o Container) bool {
	if c.ID != o.ID || c.Name != o.Name || c.Image != o.Image || len(c.Labels) != len(o.Labels) {
		return false
	}
	for k, v := range c.Labels {
		if ov, ok := o.Labels[k]; !ok || ov != v {
			return false
		}
	}
	return true
}

// Tunables; variables so that tests can shorten them.
var (
	maxContainers  = 16384            // cache bound
	maxFailed      = 4096             // bound of the remembered failed inspects
	destroyedGrace = time.Minute      // a destroyed container is kept this long
	failedTTL      = 30 * time.Second // a failed inspect is not retried before
	sweepEvery     = 5 * time.Second  // how often expired entries are dropped

	pingTimeout    = 2 * time.Second
	listTimeout    = 30 * time.Second
	inspectTimeout = 5 * time.Second
	firstListWait  = 5 * time.Second // Watch waits this long for the first list
	inspectWorkers = 4
	inspectQueue   = 256
	backoffMin     = 250 * time.Millisecond
	backoffMax     = 15 * time.Second
)

// Watcher keeps an id -> Container cache from a daemon: a full list at
// start, then the daemon's events stream (create, rename, destroy).
type Watcher struct {
	socket      string
	cli         atomic.Pointer[client.Client] // replaced on reconnecting
	onContainer func(Container)
	ctx         context.Context
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	msgs        chan msg      // to the watcher's goroutine
	ready       chan struct{} // closed once the first list is in the cache
	inspectQ    chan string

	mu      sync.RWMutex
	byID    map[string]*entry
	pending map[string]struct{}  // ids queued for or being inspected
	failed  map[string]time.Time // id -> when its inspect failed

	// Copies of the tunables, taken by Watch.
	maxContainers    int
	grace, failedTTL time.Duration
	sweepEvery       time.Duration

	closeOnce sync.Once
	inspects  atomic.Int64 // inspects asked by Lookup, for tests
}

type entry struct {
	c         Container
	destroyed time.Time // zero while the container exists
}

// msg is what the watcher's goroutine processes, one at a time. Exactly one
// field is set.
type msg struct {
	list      []Container // a full list, after (re)connecting
	event     *events.Message
	inspected *inspectResult
	learn     *learnReq
}

type inspectResult struct {
	id  string
	c   Container
	err error
}

type learnReq struct {
	c    Container
	done chan struct{}
}

// Watch connects to the daemon at socket, lists every container (all=1) and
// follows its container events until ctx ends. onContainer, if not nil, is
// called (from the Watcher's goroutine) for each container learnt, at start and
// on each create/rename event, before it is visible to Lookup; it must not block.
// An error means no daemon answered (socket missing, refused, timeout ~2s, an
// API older than 1.40): the caller then runs without names.
//
// onContainer is also called for containers learnt through Lookup and Resolve,
// and again when a container changes (a rename), never twice in a row for the
// same unchanged container.
func Watch(ctx context.Context, socket string, onContainer func(Container)) (*Watcher, error) {
	if socket == "" {
		socket = DefaultSocket
	}
	cli, err := newClient(socket)
	if err == nil {
		if err = ping(ctx, cli); err != nil {
			cli.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("docker: no daemon at %s: %w", socket, err)
	}
	slog.Debug("docker: daemon answered", "socket", socket, "api", cli.ClientVersion())

	w := &Watcher{
		socket:      socket,
		onContainer: onContainer,
		msgs:        make(chan msg),
		ready:       make(chan struct{}),
		inspectQ:    make(chan string, inspectQueue),
		byID:        make(map[string]*entry),
		pending:     make(map[string]struct{}),
		failed:      make(map[string]time.Time),
	}
	w.cli.Store(cli)
	w.setTunables()
	w.ctx, w.cancel = context.WithCancel(ctx)
	w.wg.Add(2 + inspectWorkers)
	go w.run()
	go w.stream()
	for range inspectWorkers {
		go w.inspector()
	}
	// The first list, so that Lookup knows the containers when Watch
	// returns; a slow or failing daemon is not waited for more than 5 s.
	select {
	case <-w.ready:
	case <-time.After(firstListWait):
		slog.Debug("docker: first container list not there yet", "after", firstListWait)
	case <-w.ctx.Done():
	}
	return w, nil
}

func (w *Watcher) setTunables() {
	w.maxContainers, w.grace, w.failedTTL, w.sweepEvery = maxContainers, destroyedGrace, failedTTL, sweepEvery
}

// Lookup returns what is known of container id without blocking. An id not
// known yet schedules one asynchronous inspect (deduplicated, bounded
// concurrency, failures remembered for a while so a gone container is not
// asked again and again) and returns false; a later Lookup may then succeed.
//
// id must be a full 64-hex container id (as in cgroup paths); other strings
// are not asked about. A destroyed container is still returned for a minute.
// The Labels map returned is shared: do not modify it. A nil Watcher knows
// nothing.
func (w *Watcher) Lookup(id string) (Container, bool) {
	if w == nil {
		return Container{}, false
	}
	w.mu.RLock()
	e, ok := w.byID[id]
	w.mu.RUnlock()
	if ok {
		return e.c, true
	}
	if !isFullID(id) {
		return Container{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if e, ok := w.byID[id]; ok {
		return e.c, true
	}
	if _, ok := w.pending[id]; ok {
		return Container{}, false
	}
	if t, ok := w.failed[id]; ok && time.Since(t) < w.failedTTL {
		return Container{}, false
	}
	if w.ctx.Err() != nil {
		return Container{}, false
	}
	select {
	case w.inspectQ <- id:
		w.pending[id] = struct{}{}
	default:
		// Queue full: a later Lookup asks again.
	}
	return Container{}, false
}

// Resolve returns the full id of the container named name (or whose id starts
// with name), asking the daemon if the cache does not know it. Used once per
// --container value at start. It returns false and no error if the daemon
// knows no such container.
func (w *Watcher) Resolve(ctx context.Context, name string) (string, bool, error) {
	if w == nil {
		return "", false, errors.New("docker: no daemon")
	}
	name = strings.TrimPrefix(name, "/")
	// No name or id has a '/' (nor would it stay in the request path).
	if name == "" || strings.Contains(name, "/") {
		return "", false, nil
	}
	if id, ok := w.resolveCached(name); ok {
		return id, true, nil
	}
	c, err := inspect(ctx, w.cli.Load(), name)
	if cerrdefs.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	// Into the cache (and onContainer) before returning.
	done := make(chan struct{})
	select {
	case w.msgs <- msg{learn: &learnReq{c: c, done: done}}:
		select {
		case <-done:
		case <-w.ctx.Done():
		}
	case <-w.ctx.Done():
	case <-ctx.Done():
	}
	return c.ID, true, nil
}

// resolveCached looks name up in the cache like the daemon would: a full id,
// then a name, then a unique id prefix; containers not destroyed only.
func (w *Watcher) resolveCached(name string) (string, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if e, ok := w.byID[name]; ok && e.destroyed.IsZero() {
		return name, true
	}
	for id, e := range w.byID {
		if e.destroyed.IsZero() && e.c.Name == name {
			return id, true
		}
	}
	if !isHex(name) {
		return "", false
	}
	found := ""
	for id, e := range w.byID {
		if e.destroyed.IsZero() && strings.HasPrefix(id, name) {
			if found != "" {
				return "", false // ambiguous: the daemon will say
			}
			found = id
		}
	}
	return found, found != ""
}

// Close stops the Watcher and waits for its goroutines.
func (w *Watcher) Close() error {
	if w == nil {
		return nil
	}
	w.closeOnce.Do(func() {
		w.cancel()
		w.wg.Wait()
		w.cli.Load().Close()
	})
	return nil
}

// run is the watcher's goroutine: the only writer of the cache, and the
// caller of onContainer.
func (w *Watcher) run() {
	defer w.wg.Done()
	tick := time.NewTicker(w.sweepEvery)
	defer tick.Stop()
	first := true
	for {
		select {
		case <-w.ctx.Done():
			return
		case now := <-tick.C:
			w.sweep(now)
		case m := <-w.msgs:
			switch {
			case m.list != nil:
				w.applyList(m.list)
				if first {
					first = false
					close(w.ready)
				}
			case m.event != nil:
				w.applyEvent(m.event)
			case m.inspected != nil:
				r := m.inspected
				w.mu.Lock()
				delete(w.pending, r.id)
				if r.err != nil {
					if len(w.failed) >= maxFailed {
						w.dropFailed(time.Now())
					}
					w.failed[r.id] = time.Now()
				}
				w.mu.Unlock()
				if r.err == nil {
					w.learn(r.c, time.Time{})
				} else {
					slog.Debug("docker: inspect failed", "id", r.id, "err", r.err)
				}
			case m.learn != nil:
				w.learn(m.learn.c, time.Time{})
				close(m.learn.done)
			}
		}
	}
}

// learn calls onContainer if c is new or changed, then puts it in the cache.
// A zero destroyed marks a container that exists.
func (w *Watcher) learn(c Container, destroyed time.Time) {
	if c.ID == "" {
		return
	}
	w.mu.RLock()
	old, known := w.byID[c.ID]
	w.mu.RUnlock()
	if known && old.c.equal(c) && old.destroyed.Equal(destroyed) {
		return
	}
	if destroyed.IsZero() && w.onContainer != nil && (!known || !old.c.equal(c)) {
		w.onContainer(c)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !known && len(w.byID) >= w.maxContainers {
		w.evictOne()
	}
	w.byID[c.ID] = &entry{c: c, destroyed: destroyed}
	delete(w.failed, c.ID)
}

// evictOne drops a destroyed container if there is one, else any. w.mu held.
func (w *Watcher) evictOne() {
	victim := ""
	for id, e := range w.byID {
		if victim == "" {
			victim = id
		}
		if !e.destroyed.IsZero() {
			victim = id
			break
		}
	}
	delete(w.byID, victim)
}

func (w *Watcher) applyList(list []Container) {
	seen := make(map[string]struct{}, len(list))
	for _, c := range list {
		seen[c.ID] = struct{}{}
		w.learn(c, time.Time{})
	}
	// Destroyed while we were not listening.
	now := time.Now()
	w.mu.Lock()
	for id, e := range w.byID {
		if _, ok := seen[id]; !ok && e.destroyed.IsZero() {
			w.byID[id] = &entry{c: e.c, destroyed: now}
		}
	}
	w.mu.Unlock()
	slog.Debug("docker: listed containers", "n", len(list))
}

func (w *Watcher) applyEvent(ev *events.Message) {
	id := ev.Actor.ID
	if !isFullID(id) {
		return
	}
	switch ev.Action {
	case events.ActionCreate, events.ActionRename:
		w.learn(eventContainer(ev), time.Time{})
	case events.ActionDestroy:
		w.mu.RLock()
		e, ok := w.byID[id]
		w.mu.RUnlock()
		c := eventContainer(ev)
		if ok {
			c = e.c
		}
		w.learn(c, time.Now())
	}
}

// sweep drops destroyed containers past their grace and old failures.
func (w *Watcher) sweep(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, e := range w.byID {
		if !e.destroyed.IsZero() && now.Sub(e.destroyed) > w.grace {
			delete(w.byID, id)
		}
	}
	w.dropFailed(now)
}

// dropFailed forgets expired failures, and if that is not enough to stay in
// bounds, all of them. w.mu held.
func (w *Watcher) dropFailed(now time.Time) {
	for id, t := range w.failed {
		if now.Sub(t) >= w.failedTTL {
			delete(w.failed, id)
		}
	}
	if len(w.failed) >= maxFailed {
		clear(w.failed)
	}
}

// send hands m to the watcher's goroutine; false once the Watcher is closed.
func (w *Watcher) send(m msg) bool {
	select {
	case w.msgs <- m:
		return true
	case <-w.ctx.Done():
		return false
	}
}

// stream follows the daemon's events, reconnecting with backoff; after each
// (re)connection it lists the containers.
func (w *Watcher) stream() {
	defer w.wg.Done()
	backoff := backoffMin
	reconnect := false // Watch just pinged
	for w.ctx.Err() == nil {
		listed, err := w.session(reconnect)
		if w.ctx.Err() != nil {
			return
		}
		if listed {
			backoff = backoffMin
		}
		// The daemon may come back upgraded: a new client negotiates again.
		reconnect = true
		slog.Debug("docker: events stream ended", "err", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-w.ctx.Done():
			return
		}
		backoff = min(2*backoff, backoffMax)
	}
}

// session opens the events stream (with a new client, after a ping, if
// reconnect), lists the containers, then passes events on until the stream
// ends. listed tells whether the list was made.
func (w *Watcher) session(reconnect bool) (listed bool, err error) {
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	if reconnect {
		cli, err := newClient(w.socket)
		if err != nil {
			return false, err
		}
		if err := ping(ctx, cli); err != nil {
			cli.Close()
			return false, err
		}
		w.cli.Swap(cli).Close()
	}
	cli := w.cli.Load()
	// Events first, then the list: nothing happens unseen in between.
	// Events returns once the daemon sent the headers, at once; do not
	// wait for ever if not.
	t := time.AfterFunc(listTimeout, cancel)
	evs := cli.Events(ctx, client.EventsListOptions{
		Filters: make(client.Filters).Add("type", string(events.ContainerEventType)),
	})
	if !t.Stop() {
		return false, context.DeadlineExceeded
	}
	cs, err := list(ctx, cli)
	if err == nil {
		// An events request that failed has said so by now.
		select {
		case err = <-evs.Err:
		default:
		}
	}
	if err != nil {
		return false, err
	}
	if !w.send(msg{list: cs}) {
		return true, w.ctx.Err()
	}
	for {
		select {
		case err := <-evs.Err:
			return true, err
		case ev := <-evs.Messages:
			if ev.Type != "" && ev.Type != events.ContainerEventType {
				continue
			}
			if !w.send(msg{event: &ev}) {
				return true, w.ctx.Err()
			}
		}
	}
}

// inspector inspects the ids Lookup did not know, one at a time.
func (w *Watcher) inspector() {
	defer w.wg.Done()
	for {
		select {
		case <-w.ctx.Done():
			return
		case id := <-w.inspectQ:
			w.inspects.Add(1)
			c, err := inspect(w.ctx, w.cli.Load(), id)
			if err == nil && c.ID != id {
				err = fmt.Errorf("inspect %s answered %s", id, c.ID)
			}
			if !w.send(msg{inspected: &inspectResult{id: id, c: c, err: err}}) {
				return
			}
		}
	}
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func isFullID(s string) bool { return len(s) == 64 && isHex(s) }

// The Engine API client: the moby client, over the daemon's unix socket.

// newClient returns a client of the daemon at socket. It asks nothing yet:
// ping negotiates the API version.
func newClient(socket string) (*client.Client, error) {
	// API-version negotiation is the default of the moby client (its
	// WithAPIVersionNegotiation is a deprecated no-op); ping does it.
	return client.New(client.WithHost("unix://" + socket))
}

// ping checks that a daemon answers and negotiates the API version: the
// daemon's, at most the client's newest. Daemons older than API 1.40
// (Docker 19.03) are refused.
func ping(ctx context.Context, cli *client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	_, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
	return err
}

// list returns every container, running or not.
func list(ctx context.Context, cli *client.Client) ([]Container, error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	l, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return nil, err
	}
	cs := make([]Container, 0, len(l.Items))
	for _, x := range l.Items {
		if !isFullID(x.ID) {
			continue
		}
		// Names holds the name and, for legacy links, "/other/alias"
		// names: the one without an inner '/' is the container's.
		name := ""
		for _, n := range x.Names {
			n = strings.TrimPrefix(n, "/")
			if !strings.Contains(n, "/") {
				name = n
				break
			}
		}
		image := x.Image
		if image == "" {
			image = x.ImageID
		}
		cs = append(cs, newContainer(x.ID, name, image, nonNil(x.Labels)))
	}
	return cs, nil
}

// inspect asks about one container, by id, name or id prefix.
func inspect(ctx context.Context, cli *client.Client, ref string) (Container, error) {
	ctx, cancel := context.WithTimeout(ctx, inspectTimeout)
	defer cancel()
	r, err := cli.ContainerInspect(ctx, ref, client.ContainerInspectOptions{})
	if err != nil {
		return Container{}, err
	}
	x := r.Container
	if !isFullID(x.ID) {
		return Container{}, fmt.Errorf("inspect %s: bad id %q", ref, x.ID)
	}
	image, labels := x.Image, map[string]string(nil)
	if x.Config != nil {
		if x.Config.Image != "" {
			image = x.Config.Image
		}
		labels = x.Config.Labels
	}
	return newContainer(x.ID, x.Name, image, nonNil(labels)), nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// eventContainer is what a container event tells: its attributes are the
// container's labels plus name and image (and oldName for a rename, exitCode
// for a die...). A label itself called "name" or "image" is lost.
func eventContainer(ev *events.Message) Container {
	labels := make(map[string]string, len(ev.Actor.Attributes))
	for k, v := range ev.Actor.Attributes {
		labels[k] = v
	}
	name, image := labels["name"], labels["image"]
	delete(labels, "name")
	delete(labels, "image")
	if ev.Action == events.ActionRename {
		delete(labels, "oldName")
	}
	return newContainer(ev.Actor.ID, name, image, labels)
}
