// Package registry attributes what the sensor sees to containers. Both
// discovery sources (the NRI plugin and the Docker listener) feed it; it
// hands attributed observations to the collector.
//
// A tracked cgroup may send events before its container is known: the NRI
// plugin tracks a cgroup before it enqueues the container, and cgroups
// under an early prefix are tracked by the kernel at creation, while
// Docker names the container only after it started. Such events are held
// (bounded) until the container is known, then replayed; a cgroup that
// stays unknown for the hold time is untracked and its events dropped.
//
// The other way round, a container that exits at once may be reported
// stopped while its last events are still in the sensor's ring buffer: a
// stopped container stays known for the hold time, so that they are still
// attributed.
package registry

import (
	"log/slog"
	"sync"
	"time"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/collector"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/logfields"
)

// Untracker stops the sensor observing a cgroup.
type Untracker interface {
	Untrack(cgroupID uint64) error
}

// Config tunes the registry.
type Config struct {
	// Hold is how long events of an unknown cgroup wait for its container.
	Hold time.Duration
	// MaxHeld bounds the events held per unknown cgroup; more are counted.
	MaxHeld int
}

// Stats count what the registry could not attribute.
type Stats struct {
	Expired    uint64 // unknown cgroups untracked after Hold
	Dropped    uint64 // events dropped: over MaxHeld, or of an expired cgroup
	Unresolved uint64 // containers whose cgroup was neither found nor tracked early
	NoDigest   uint64 // containers whose image digest is unknown: not profiled
}

// Registry maps tracked cgroups to containers.
type Registry struct {
	log     *slog.Logger
	sink    collector.Sink
	sensor  Untracker
	cfg     Config
	mu      sync.Mutex
	known   map[uint64]lifecycle.Container
	gone    map[uint64]stoppedContainer // stopped, still known for Hold
	waiting map[uint64]*held
	paths   map[string]uint64 // cgroup path -> id, of cgroups tracked at creation
	stats   Stats
}

type stoppedContainer struct {
	lifecycle.Container
	at time.Time
}

type held struct {
	since  time.Time
	path   string // when tracked at creation
	events []sensor.Event
}

// New returns a registry that feeds sink and untracks through s.
func New(log *slog.Logger, sink collector.Sink, s Untracker, cfg Config) *Registry {
	if cfg.Hold <= 0 {
		cfg.Hold = time.Minute
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = 10_000
	}
	return &Registry{
		log: log.With(logfields.Component, "registry"), sink: sink, sensor: s, cfg: cfg,
		known: map[uint64]lifecycle.Container{}, gone: map[uint64]stoppedContainer{},
		waiting: map[uint64]*held{}, paths: map[string]uint64{},
	}
}

// Handle applies a lifecycle event from a discovery source.
func (r *Registry) Handle(ev lifecycle.Event) {
	switch ev.Kind {
	case lifecycle.Started:
		r.started(ev.Container)
	case lifecycle.Stopped:
		r.stopped(ev.Container)
	}
}

// resolve fills in the cgroup id of a container known only by its cgroup
// path (it exited before its runtime described it); c.mu is held.
func (r *Registry) resolve(c *lifecycle.Container) bool {
	if c.CgroupID != 0 {
		return true
	}
	id, ok := r.paths[c.CgroupPath]
	c.CgroupID = id
	return ok
}

func (r *Registry) started(c lifecycle.Container) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.resolve(&c) {
		r.stats.Unresolved++
		r.log.Warn("container without a tracked cgroup", logfields.ContainerID, c.ID, logfields.CgroupPath, c.CgroupPath)
		return
	}
	delete(r.paths, c.CgroupPath)
	if c.Image.Digest == "" {
		// Profiles are keyed by digest: without one there is nowhere to
		// fold, and a guess could mix two images.
		r.stats.NoDigest++
		r.log.Warn("container image has no digest: not profiled", logfields.ContainerID, c.ID, logfields.Image, c.Image.Name)
		delete(r.waiting, c.CgroupID)
		if err := r.sensor.Untrack(c.CgroupID); err != nil {
			r.log.Warn("untracking a container without digest", logfields.ContainerID, c.ID, logfields.Error, err)
		}
		return
	}
	if _, ok := r.known[c.CgroupID]; ok {
		return // a resync repeats what is known
	}
	r.known[c.CgroupID] = c
	delete(r.gone, c.CgroupID)
	r.sink.ContainerStarted(c)
	if h := r.waiting[c.CgroupID]; h != nil {
		for _, e := range h.events {
			r.sink.Observe(c, e)
		}
		delete(r.waiting, c.CgroupID)
	}
	r.log.Debug("container attributed", logfields.ContainerID, c.ID, logfields.Image, c.Image.Name, logfields.CgroupID, c.CgroupID)
}

func (r *Registry) stopped(c lifecycle.Container) {
	r.mu.Lock()
	if !r.resolve(&c) {
		r.mu.Unlock()
		return
	}
	known, ok := r.known[c.CgroupID]
	delete(r.known, c.CgroupID)
	delete(r.waiting, c.CgroupID)
	if ok {
		r.gone[c.CgroupID] = stoppedContainer{known, time.Now()}
	}
	r.mu.Unlock()
	if ok {
		r.sink.ContainerStopped(known)
	}
	if err := r.sensor.Untrack(c.CgroupID); err != nil {
		r.log.Warn("untracking a stopped container", logfields.ContainerID, c.ID, logfields.Error, err)
	}
}

// Observe attributes one sensor event, or holds it until its container is
// known.
func (r *Registry) Observe(ev sensor.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := ev.Cgroup()
	if c, ok := r.known[id]; ok {
		r.sink.Observe(c, ev)
		return
	}
	if c, ok := r.gone[id]; ok {
		r.sink.Observe(c.Container, ev)
		return
	}
	h := r.waiting[id]
	if h == nil {
		h = &held{since: time.Now()}
		r.waiting[id] = h
	}
	if mk, ok := ev.(sensor.CgroupEvent); ok {
		h.path = mk.Path
		r.paths[mk.Path] = id
		return
	}
	if len(h.events) >= r.cfg.MaxHeld {
		r.stats.Dropped++
		return
	}
	h.events = append(h.events, ev)
}

// Expire untracks cgroups that stayed unknown for longer than Hold, and
// forgets containers stopped longer ago.
func (r *Registry) Expire(now time.Time) {
	r.mu.Lock()
	for id, c := range r.gone {
		if now.Sub(c.at) >= r.cfg.Hold {
			delete(r.gone, id)
		}
	}
	var expired []uint64
	for id, h := range r.waiting {
		if now.Sub(h.since) >= r.cfg.Hold {
			expired = append(expired, id)
			r.stats.Expired++
			r.stats.Dropped += uint64(len(h.events))
			delete(r.waiting, id)
			delete(r.paths, h.path)
		}
	}
	r.mu.Unlock()
	for _, id := range expired {
		if err := r.sensor.Untrack(id); err != nil {
			r.log.Warn("untracking an unattributed cgroup", logfields.CgroupID, id, logfields.Error, err)
		}
	}
}

// Container returns the container of a tracked cgroup.
func (r *Registry) Container(cgroupID uint64) (lifecycle.Container, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.known[cgroupID]
	return c, ok
}

// Stats returns the registry's counters.
func (r *Registry) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}
