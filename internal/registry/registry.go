// Package registry attributes what the sensor sees to containers. The
// agent feeds it the lifecycle events of the discovery sources (the NRI
// plugin, the Docker listener, inuse-agent exec) and the sensor's events;
// it hands attributed observations to its Sink (the collector, or the
// agent's JSON output). It knows events only by their cgroup, so that it
// depends on nothing above it.
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

	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/logfields"
)

// Event is what the sensor reports, known here only by its cgroup.
type Event interface {
	Cgroup() uint64
}

// Sink receives attributed observations. Implementations must not block:
// they are called on the event path.
type Sink[E Event] interface {
	// ContainerStarted is called once per container when it is tracked
	// (c.Partial when it was already running).
	ContainerStarted(c lifecycle.Container)
	// Observe is called for each event of a tracked container.
	Observe(c lifecycle.Container, ev E)
	// ContainerStopped is called when the container is untracked.
	ContainerStopped(c lifecycle.Container)
}

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
type Registry[E Event] struct {
	log     *slog.Logger
	sink    Sink[E]
	sensor  Untracker
	cfg     Config
	mu      sync.Mutex
	known   map[uint64]lifecycle.Container
	gone    map[uint64]stoppedContainer // stopped, still known for Hold
	waiting map[uint64]*held[E]
	paths   map[string]uint64 // cgroup path -> id, of cgroups tracked at creation
	stats   Stats
	loss    func(cgroupID, n uint64) E
}

// RecordLosses sets how the registry makes the event that tells its sink
// that n events of a cgroup were dropped (over MaxHeld) before its
// container was known; the sink gets it once the container is, so that
// its image's profile says events were lost. Unset, drops are only
// counted. Call it before events flow.
func (r *Registry[E]) RecordLosses(loss func(cgroupID, n uint64) E) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loss = loss
}

type stoppedContainer struct {
	lifecycle.Container
	at time.Time
}

type held[E Event] struct {
	since   time.Time
	path    string // when tracked at creation
	events  []E
	dropped uint64 // over MaxHeld
}

// New returns a registry that feeds sink and untracks through s.
func New[E Event](log *slog.Logger, sink Sink[E], s Untracker, cfg Config) *Registry[E] {
	if cfg.Hold <= 0 {
		cfg.Hold = time.Minute
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = 10_000
	}
	return &Registry[E]{
		log: log.With(logfields.Component, "registry"), sink: sink, sensor: s, cfg: cfg,
		known: map[uint64]lifecycle.Container{}, gone: map[uint64]stoppedContainer{},
		waiting: map[uint64]*held[E]{}, paths: map[string]uint64{},
	}
}

// Handle applies a lifecycle event from a discovery source.
func (r *Registry[E]) Handle(ev lifecycle.Event) {
	switch ev.Kind {
	case lifecycle.Started:
		r.started(ev.Container)
	case lifecycle.Stopped:
		r.stopped(ev.Container)
	}
}

// resolve fills in the cgroup id of a container known only by its cgroup
// path (it exited before its runtime described it): from the cgroups
// tracked at creation, or, once it is known, by its id; r.mu is held.
func (r *Registry[E]) resolve(c *lifecycle.Container) bool {
	if c.CgroupID != 0 {
		return true
	}
	if id, ok := r.paths[c.CgroupPath]; ok {
		c.CgroupID = id
		return true
	}
	for id, k := range r.known {
		if k.ID == c.ID {
			c.CgroupID = id
			return true
		}
	}
	return false
}

func (r *Registry[E]) started(c lifecycle.Container) {
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
		if h.dropped > 0 && r.loss != nil {
			r.sink.Observe(c, r.loss(c.CgroupID, h.dropped))
		}
		delete(r.waiting, c.CgroupID)
	}
	r.log.Debug("container attributed", logfields.ContainerID, c.ID, logfields.Image, c.Image.Name, logfields.CgroupID, c.CgroupID)
}

func (r *Registry[E]) stopped(c lifecycle.Container) {
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
func (r *Registry[E]) Observe(ev E) {
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
	h := r.hold(id)
	if len(h.events) >= r.cfg.MaxHeld {
		r.stats.Dropped++
		h.dropped++
		return
	}
	h.events = append(h.events, ev)
}

// CgroupCreated records the path of a cgroup that the kernel tracked at
// creation (under an early prefix), so that a container described later
// by that path only (it exited before its runtime described it) is found.
func (r *Registry[E]) CgroupCreated(id uint64, path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.known[id]; ok {
		return
	}
	h := r.hold(id)
	h.path = path
	r.paths[path] = id
}

// hold returns the held events of an unknown cgroup; r.mu is held.
func (r *Registry[E]) hold(id uint64) *held[E] {
	h := r.waiting[id]
	if h == nil {
		h = &held[E]{since: time.Now()}
		r.waiting[id] = h
	}
	return h
}

// Expire untracks cgroups that stayed unknown for longer than Hold, and
// forgets containers stopped longer ago.
func (r *Registry[E]) Expire(now time.Time) {
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
func (r *Registry[E]) Container(cgroupID uint64) (lifecycle.Container, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.known[cgroupID]
	return c, ok
}

// Stats returns the registry's counters.
func (r *Registry[E]) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}
