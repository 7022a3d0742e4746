// Package collector folds what the sensor sees into per-image runtime
// profiles in Redis: attributed events become per-image deltas in memory,
// written every flush interval as one atomic script per image.
package collector

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/registry"
	"github.com/inuse-dev/inuse/internal/store"
)

// Config tunes a collector.
type Config struct {
	// Node names this agent in the profiles it writes.
	Node string
	// FlushInterval is how often deltas are written. Zero means one second.
	FlushInterval time.Duration
	// MaxPending bounds the members held in memory while Redis is slow or
	// away; what overflows is dropped, counted and recorded as lost.
	// Zero means 1,000,000.
	MaxPending int
	// MaxPendingBytes bounds the estimated memory of those members in
	// all (a path may be 4 KiB: members alone do not bound memory), and
	// MaxImagePendingBytes that of one image's, so that one image
	// flooding long paths cannot crowd the others out. What overflows is
	// dropped, counted and recorded as lost in its image's profile. Zero
	// means DefaultMaxPendingBytes and DefaultMaxImagePendingBytes.
	MaxPendingBytes, MaxImagePendingBytes int64
	// Learning sets when a profile is done.
	Learning store.LearningConfig
	// Guard, when its budgets are set, pauses profiling while the agent
	// uses too much CPU or memory.
	Guard GuardConfig
}

// Defaults of the byte bounds of pending members.
const (
	DefaultMaxPendingBytes      = 128 << 20
	DefaultMaxImagePendingBytes = 32 << 20
)

// memberOverhead is what a pending member costs beside its bytes: the
// map entry, the string header and the first-seen time.
const memberOverhead = 64

// memberCost estimates the memory of a pending member.
func memberCost(value string) int64 { return int64(len(value)) + memberOverhead }

// Writer is the part of the store the collector writes through.
type Writer interface {
	Apply(ctx context.Context, deltas map[string]*store.Delta, now time.Time, lc store.LearningConfig) (map[string]store.Meta, error)
}

// Stats are the collector's counters since it started.
type Stats struct {
	Events    uint64 // observations folded
	Overflow  uint64 // members dropped because MaxPending was reached
	Paused    uint64 // observations ignored while the guard paused profiling
	Pauses    int64  // times the guard paused profiling
	Flushes   uint64 // successful flushes
	Failures  uint64 // failed flushes (deltas kept for the next)
	LastFlush time.Duration
}

// Collector folds observations of containers into per-image deltas and
// flushes them to the store. Its registry.Sink methods never block on Redis.
type Collector struct {
	log   *slog.Logger
	store Writer
	cfg   Config
	now   func() time.Time
	guard *guard

	mu      sync.Mutex
	pending map[string]*store.Delta // by image digest
	size    int
	bytes   int64            // estimated memory of the pending members
	byImage map[string]int64 // the same by image digest
	stats   Stats
	running map[string]int // image digest -> containers running
	down    bool           // last flush failed
}

var _ registry.Sink[sensor.Event] = (*Collector)(nil)

// New returns a collector writing to w.
func New(log *slog.Logger, w Writer, cfg Config) *Collector {
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1_000_000
	}
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if cfg.MaxImagePendingBytes <= 0 {
		cfg.MaxImagePendingBytes = DefaultMaxImagePendingBytes
	}
	if cfg.Learning == (store.LearningConfig{}) {
		cfg.Learning = store.DefaultLearning
	}
	c := &Collector{
		log:     log.With(logfields.Component, "collector"),
		store:   w,
		cfg:     cfg,
		now:     time.Now,
		pending: map[string]*store.Delta{},
		byImage: map[string]int64{},
		running: map[string]int{},
	}
	c.guard = newGuard(cfg.Guard, c.recordPause)
	return c
}

// delta returns the pending delta of an image; c.mu is held.
func (c *Collector) delta(digest string) *store.Delta {
	d := c.pending[digest]
	if d == nil {
		d = store.NewDelta()
		c.pending[digest] = d
	}
	return d
}

// ContainerStarted implements registry.Sink.
func (c *Collector) ContainerStarted(ctr lifecycle.Container) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.delta(ctr.Image.Digest)
	before := d.Size()
	if ctr.Image.Name != "" {
		d.AddTo(store.Names, ctr.Image.Name)
	}
	d.AddTo(store.Containers, ctr.ID)
	d.AddTo(store.Nodes, c.cfg.Node)
	d.AddTo(store.Workloads, store.Workload{
		Namespace: ctr.Pod.Namespace, Kind: ctr.Workload.Kind, Name: ctr.Workload.Name, Container: ctr.Name,
	}.Member())
	if ctr.Partial {
		d.PartialContainers++
	}
	c.size += d.Size() - before
	c.running[ctr.Image.Digest]++
}

// ContainerStopped implements registry.Sink.
func (c *Collector) ContainerStopped(ctr lifecycle.Container) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running[ctr.Image.Digest]--; c.running[ctr.Image.Digest] <= 0 {
		delete(c.running, ctr.Image.Digest)
	}
}

// Observe implements registry.Sink: it folds one sensor event into the image's delta.
func (c *Collector) Observe(ctr lifecycle.Container, ev sensor.Event) {
	if c.guard.paused() {
		c.mu.Lock()
		c.stats.Paused++
		c.mu.Unlock()
		return
	}
	ms := c.now().UnixMilli()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Events++
	d := c.delta(ctr.Image.Digest)
	d.Events++
	if loss, ok := ev.(sensor.LossEvent); ok {
		d.Losses += int64(loss.Lost)
		return
	}
	seeded, session := sensor.Seeded(ev), sensor.ExecSession(ev)
	for _, m := range members(ev) {
		// What bounded sections hold is no evidence, and Seeded and
		// ExecSessions are not bounded.
		if session && !m.section.Bounded() {
			// The section keeps what the workload did.
			c.add(ctr.Image.Digest, d, member{store.ExecSessions, store.SectionMember(m.section, m.value)}, ms)
			continue
		}
		// Evidence says which loaded files were read from /proc.
		if c.add(ctr.Image.Digest, d, m, ms) && seeded && !m.section.Bounded() {
			c.add(ctr.Image.Digest, d, member{store.Seeded, store.SectionMember(m.section, m.value)}, ms)
		}
	}
}

// add adds m to d (digest's delta) unless a bound on pending members is
// reached: MaxPending, MaxPendingBytes or digest's MaxImagePendingBytes;
// c.mu is held. It reports whether m is in d.
func (c *Collector) add(digest string, d *store.Delta, m member, ms int64) bool {
	cost := memberCost(m.value)
	if c.size >= c.cfg.MaxPending || c.bytes+cost > c.cfg.MaxPendingBytes || c.byImage[digest]+cost > c.cfg.MaxImagePendingBytes {
		if _, ok := d.Sections[m.section][m.value]; !ok {
			c.stats.Overflow++
			d.Losses++
			return false
		}
	}
	if d.Add(m.section, m.value, ms) {
		c.size++
		c.bytes += cost
		c.byImage[digest] += cost
	}
	return true
}

// deltaBytes estimates the memory of a delta's section members.
func deltaBytes(d *store.Delta) int64 {
	var n int64
	for _, m := range d.Sections {
		for v := range m {
			n += memberCost(v)
		}
	}
	return n
}

// Stats returns the collector's counters.
func (c *Collector) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stats
	st.Pauses = c.guard.pauses.Load()
	return st
}

// Gauges are the collector's current levels, for monitoring.
type Gauges struct {
	PendingMembers    int   // profile members waiting for the next flush (bounded by MaxPending)
	PendingBytes      int64 // their estimated memory (bounded by MaxPendingBytes)
	PendingImages     int   // images with a pending delta
	RunningImages     int   // images with running containers
	RunningContainers int   // containers started and not stopped
}

// Gauges returns the collector's current levels; it only reads.
func (c *Collector) Gauges() Gauges {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := Gauges{PendingMembers: c.size, PendingBytes: c.bytes, PendingImages: len(c.pending), RunningImages: len(c.running)}
	for _, n := range c.running {
		g.RunningContainers += n
	}
	return g
}

// Run flushes every FlushInterval until ctx ends, then flushes what is
// left (within a short grace period) and returns.
func (c *Collector) Run(ctx context.Context) error {
	stopGuard := c.guard.start(ctx)
	defer stopGuard()
	t := time.NewTicker(c.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = c.Flush(ctx)
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := c.Flush(final); err != nil {
				return fmt.Errorf("final flush: %w", err)
			}
			return nil
		}
	}
}

// Flush writes the pending deltas, plus an empty one for every image with
// running containers so that its last-seen time and state move on. On
// failure the deltas stay pending and are merged with what comes next.
func (c *Collector) Flush(ctx context.Context) error {
	c.mu.Lock()
	batch := c.pending
	c.pending = map[string]*store.Delta{}
	c.size, c.bytes, c.byImage = 0, 0, map[string]int64{}
	for digest := range c.running {
		if batch[digest] == nil {
			batch[digest] = store.NewDelta()
		}
	}
	c.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}

	start := time.Now()
	_, err := c.store.Apply(ctx, batch, c.now(), c.cfg.Learning)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.stats.Failures++
		for digest, d := range batch {
			d.Merge(c.pending[digest])
			c.pending[digest] = d
		}
		c.size, c.bytes, c.byImage = 0, 0, map[string]int64{}
		for digest, d := range c.pending {
			c.size += d.Size()
			b := deltaBytes(d)
			c.bytes += b
			c.byImage[digest] = b
		}
		if !c.down {
			c.log.Warn("redis unavailable: keeping profile updates in memory", logfields.Error, err, logfields.Count, c.size)
		}
		c.down = true
		return err
	}
	if c.down {
		c.log.Info("redis is back: profile updates flushed")
	}
	c.down = false
	c.stats.Flushes++
	c.stats.LastFlush = time.Since(start)
	return nil
}

// recordPause marks a guard pause in every image being profiled.
func (c *Collector) recordPause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for digest := range c.running {
		c.delta(digest).GuardPauses++
	}
	for _, d := range c.pending {
		if d.GuardPauses == 0 {
			d.GuardPauses++
		}
	}
}

type member struct {
	section store.Section
	value   string
}

// members maps an event to the profile members it adds. Files that did
// not come with the image go to the bounded runtime sections, and those
// executed or mapped to Drift: only image files can put a package in use.
func members(ev sensor.Event) []member {
	switch e := ev.(type) {
	case sensor.FileEvent:
		var out []member
		fromImage := e.Origin.FromImage()
		read, written := fileSections(e.Dir, fromImage)
		if e.Access&sensor.AccessRead != 0 {
			out = append(out, member{read, e.Path})
		}
		if e.Access&(sensor.AccessWrite|sensor.AccessCreate) != 0 {
			out = append(out, member{written, e.Path})
		}
		if e.Access&sensor.AccessMapped != 0 {
			out = append(out, loaded(store.Mapped, e.Origin, e.Path))
		}
		return out
	case sensor.ExecEvent:
		return []member{loaded(store.Exec, e.Origin, e.Path)}
	case sensor.NetEvent:
		sec, ok := portSections[portUse{e.Protocol, e.Direction}]
		if !ok {
			return nil
		}
		return []member{{sec, strconv.Itoa(int(e.Port))}}
	case sensor.SyscallEvent:
		out := make([]member, 0, len(e.Names))
		for _, n := range e.Names {
			out = append(out, member{store.Syscalls, n})
		}
		return out
	}
	return functionMembers(ev)
}

// fileSections are where a file or directory read and written goes.
func fileSections(dir, fromImage bool) (read, written store.Section) {
	switch {
	case dir && fromImage:
		return store.DirsRead, store.DirsWritten
	case dir:
		return store.RuntimeDirsRead, store.RuntimeDirsWritten
	case fromImage:
		return store.FilesRead, store.FilesWritten
	}
	return store.RuntimeFilesRead, store.RuntimeFilesWritten
}

// loaded is the member of a file executed or mapped: in sec for an image
// file, in Drift for one the image did not bring.
func loaded(sec store.Section, origin sensor.Origin, path string) member {
	if origin.FromImage() {
		return member{sec, path}
	}
	return member{store.Drift, store.DriftMember(string(sec), origin.String(), path)}
}

type portUse struct {
	protocol  sensor.Protocol
	direction sensor.Direction
}

var portSections = map[portUse]store.Section{
	{sensor.TCP, sensor.Inbound}: store.TCPIn, {sensor.TCP, sensor.Outbound}: store.TCPOut,
	{sensor.UDP, sensor.Inbound}: store.UDPIn, {sensor.UDP, sensor.Outbound}: store.UDPOut,
}
