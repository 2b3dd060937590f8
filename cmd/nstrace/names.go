package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/nstrace/nstrace/docker"
	"github.com/nstrace/nstrace/events"
	"github.com/nstrace/nstrace/tracer"
)

// dockerNames names containers through a Docker Engine, without blocking
// the event stream: what the daemon has not told yet stays unnamed.
type dockerNames struct{ w *docker.Watcher }

func (d dockerNames) Lookup(id string) (events.Names, bool) {
	c, ok := d.w.Lookup(id)
	if !ok {
		return events.Names{}, false
	}
	return events.Names{ContainerName: c.Name, Image: c.Image, PodName: c.PodName, PodNamespace: c.PodNamespace}, true
}

// containerMatcher adds to the kernel's container filter every container
// the runtime announces whose name (or id prefix) --container gave: at
// start those that exist, later each one as it is created, before it
// starts.
type containerMatcher struct {
	t     *tracer.Tracer
	names []string
	mu    sync.Mutex
	ids   map[string]bool
}

func (m *containerMatcher) learn(c docker.Container) {
	if !slices.ContainsFunc(m.names, func(n string) bool { return n == c.Name || strings.HasPrefix(c.ID, n) }) {
		return
	}
	m.mu.Lock()
	known := m.ids[c.ID]
	m.ids[c.ID] = true
	m.mu.Unlock()
	if known {
		return
	}
	if err := m.t.AddContainer(c.ID); err != nil {
		slog.Warn("container filter", "container", c.Name, "err", err)
		return
	}
	slog.Debug("container filter: matching", "name", c.Name, "id", c.ID)
}

func (m *containerMatcher) has(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ids[id]
}

// startNames connects to the Docker Engine at socket, if one answers. No
// daemon is no error unless the command line needs one: a socket given
// explicitly, or a --container value that only a runtime can resolve.
func startNames(ctx context.Context, socket string, explicit bool, sel *selection, t *tracer.Tracer) (events.NameSource, error) {
	needed := slices.ContainsFunc(sel.names, func(n string) bool { return !hexRE.MatchString(n) })
	if socket == "" {
		if needed {
			return nil, errors.New("--container names need a Docker daemon, and --docker-socket is empty")
		}
		return nil, nil
	}
	m := &containerMatcher{t: t, names: sel.names, ids: map[string]bool{}}
	sel.matcher = m
	w, err := docker.Watch(ctx, socket, m.learn)
	if err != nil {
		if explicit || needed {
			return nil, fmt.Errorf("docker daemon at %s: %w (container names need it)", socket, err)
		}
		slog.Debug("no container names: no Docker daemon answers", "socket", socket, "err", err)
		return nil, nil
	}
	context.AfterFunc(ctx, func() { w.Close() })
	slog.Debug("container names from the Docker daemon", "socket", socket)
	return dockerNames{w}, nil
}
