// Package dockerplugin follows dockerd, a discovery source of the agent:
// it lists the running containers, then follows start, die and destroy
// events, and hands each container (cgroup, image, Compose service) to the
// agent's lifecycle.Tracker.
//
// dockerd reports a start after the container's process runs, so a
// container is observed from its first instruction by the sensor's early
// tracking instead: its cgroup (/docker/<id>, or system.slice/docker-<id>.scope
// with the systemd driver) is tracked in the kernel at creation and its
// events are held by the registry until this listener names it.
package dockerplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/logfields"
)

// EarlyPrefixes are the cgroup paths under which dockerd's containers are
// created, for the sensor's early tracking.
var EarlyPrefixes = []string{"/docker/", "/system.slice/docker-"}

// Stats count the listener's work.
type Stats struct {
	Started     atomic.Uint64
	Failures    atomic.Uint64 // containers that could not be described
	Dropped     atomic.Uint64 // lifecycle events dropped: queue full
	Connections atomic.Uint64
}

// Listener follows one dockerd.
type Listener struct {
	log     *slog.Logger
	cli     *client.Client
	h       cgroups.Hierarchy
	tracker lifecycle.Tracker
	Stats   Stats

	mu      sync.Mutex
	running map[string]lifecycle.Container // by container id
}

// New connects to dockerd the way the docker CLI does (DOCKER_HOST, else
// the default socket), negotiating the API version.
func New(log *slog.Logger, h cgroups.Hierarchy, t lifecycle.Tracker) (*Listener, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("creating docker client: %w", err)
	}
	return &Listener{log: log.With(logfields.Component, "docker"), cli: cli, h: h, tracker: t,
		running: map[string]lifecycle.Container{}}, nil
}

// Close closes the client.
func (l *Listener) Close() error { return l.cli.Close() }

// Ping reports whether dockerd answers.
func (l *Listener) Ping(ctx context.Context) error {
	_, err := l.cli.Ping(ctx)
	return err
}

// Run follows dockerd until ctx ends, reconnecting when it goes away.
func (l *Listener) Run(ctx context.Context) error {
	return lifecycle.Reconnect(ctx, l.log, time.Second, l.follow)
}

func (l *Listener) follow(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Subscribe before listing, so that nothing falls between the two.
	msgs, errs := l.cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)))})
	list, err := l.cli.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing containers: %w", err)
	}
	l.Stats.Connections.Add(1)
	for _, c := range list {
		l.started(ctx, c.ID, true)
	}
	for {
		select {
		case m := <-msgs:
			switch m.Action {
			case events.ActionStart:
				l.started(ctx, m.Actor.ID, false)
			case events.ActionDie, events.ActionDestroy:
				l.stopped(m.Actor.ID)
			}
		case err := <-errs:
			return err
		}
	}
}

func (l *Listener) started(ctx context.Context, id string, partial bool) {
	c, err := l.describe(ctx, id)
	if err != nil {
		l.Stats.Failures.Add(1)
		l.log.Warn("cannot describe container", logfields.ContainerID, id, logfields.Error, err)
		return
	}
	c.Partial = partial
	c.Running = true // a start event follows the start
	err = l.tracker.Started(c)
	if err != nil && !errors.Is(err, lifecycle.ErrQueueFull) {
		l.Stats.Failures.Add(1)
		l.log.Warn("cannot track container", logfields.ContainerID, id, logfields.Error, err)
		return
	}
	l.mu.Lock()
	l.running[id] = c
	l.mu.Unlock()
	l.Stats.Started.Add(1)
	if err != nil {
		l.Stats.Dropped.Add(1)
	}
}

func (l *Listener) stopped(id string) {
	l.mu.Lock()
	c, ok := l.running[id]
	delete(l.running, id)
	l.mu.Unlock()
	if ok && errors.Is(l.tracker.Stopped(c), lifecycle.ErrQueueFull) {
		l.Stats.Dropped.Add(1)
	}
}

// describe builds a container's identity. Its cgroup id is read from the
// cgroup directory while it exists; a container that exited before its
// start event arrived has only its path, which the registry matches
// against the cgroups it tracked early.
func (l *Listener) describe(ctx context.Context, id string) (lifecycle.Container, error) {
	info, err := l.cli.ContainerInspect(ctx, id)
	if err != nil {
		return lifecycle.Container{}, fmt.Errorf("inspecting container: %w", err)
	}
	c := lifecycle.Container{
		ID: info.ID, Name: strings.TrimPrefix(info.Name, "/"), Runtime: lifecycle.RuntimeDocker,
		Image: lifecycle.Image{Name: info.Config.Image, ID: info.Image, Digest: info.Image},
	}
	if img, err := l.cli.ImageInspect(ctx, info.Image); err == nil {
		if d := repoDigest(img.RepoDigests); d != "" {
			c.Image.Digest = d
		}
	}
	labels := info.Config.Labels
	if project := labels["com.docker.compose.project"]; project != "" {
		c.Workload = lifecycle.Workload{Kind: "ComposeService", Name: project + "/" + labels["com.docker.compose.service"]}
	}
	if c.CgroupPath, err = l.cgroupPath(ctx, info); err != nil {
		return lifecycle.Container{}, err
	}
	if dir := l.h.Path(c.CgroupPath); dir != "" {
		if cid, err := cgroups.ID(dir); err == nil {
			c.CgroupID = cid
		}
	}
	return c, nil
}

// cgroupPath finds the container's cgroup: from its process while it
// runs, else from the daemon's cgroup driver.
func (l *Listener) cgroupPath(ctx context.Context, info container.InspectResponse) (string, error) {
	if info.State != nil && info.State.Pid > 0 {
		if p, err := l.h.OfProcess(info.State.Pid); err == nil && p != "/" {
			return p, nil
		}
	}
	sys, err := l.cli.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("reading docker's cgroup driver: %w", err)
	}
	parent := ""
	if info.HostConfig != nil {
		parent = info.HostConfig.CgroupParent
	}
	if sys.CgroupDriver == "systemd" {
		return path.Join("/", "system.slice", "docker-"+info.ID+".scope"), nil
	}
	if parent == "" {
		parent = "/docker"
	}
	return path.Join("/", parent, info.ID), nil
}

// repoDigest picks the manifest digest out of "name@sha256:..." entries.
func repoDigest(repoDigests []string) string {
	for _, rd := range repoDigests {
		if _, d, ok := strings.Cut(rd, "@"); ok {
			return d
		}
	}
	return ""
}
