package agent

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/logfields"
)

// queueSize bounds the lifecycle events waiting for the registry: a
// resync of a full node fits, and a runtime callback never waits.
const queueSize = 4096

// cgroupSensor is the part of the sensor that tracks cgroups.
type cgroupSensor interface {
	Track(cgroupID uint64) error
	TrackRunning(cgroupID uint64) error
	Untrack(cgroupID uint64) error
}

// tracker is the one place where the agent starts and stops observing a
// cgroup. Discovery sources hand it containers (lifecycle.Tracker), the
// kernel's early tracking hands it new cgroups (adopt), and the registry
// untracks through it once a container is gone or never named.
type tracker struct {
	log    *slog.Logger
	sensor cgroupSensor
	queue  chan lifecycle.Event
}

var _ lifecycle.Tracker = (*tracker)(nil)

func newTracker(log *slog.Logger, s cgroupSensor) *tracker {
	return &tracker{log: log.With(logfields.Component, "tracker"), sensor: s, queue: make(chan lifecycle.Event, queueSize)}
}

// Started implements lifecycle.Tracker.
func (t *tracker) Started(c lifecycle.Container) error {
	if c.CgroupID != 0 {
		track := t.sensor.Track
		if c.Partial || c.Running {
			track = t.sensor.TrackRunning
		}
		if err := track(c.CgroupID); err != nil {
			return fmt.Errorf("tracking cgroup %d: %w", c.CgroupID, err)
		}
	}
	return t.send(lifecycle.Event{Kind: lifecycle.Started, Container: c})
}

// Stopped implements lifecycle.Tracker.
func (t *tracker) Stopped(c lifecycle.Container) error {
	return t.send(lifecycle.Event{Kind: lifecycle.Stopped, Container: c})
}

func (t *tracker) send(ev lifecycle.Event) error {
	select {
	case t.queue <- ev:
		return nil
	default:
		return lifecycle.ErrQueueFull
	}
}

// adopt holds a cgroup that the kernel tracked at creation, so that it is
// polled and untracked like any other.
func (t *tracker) adopt(cgroupID uint64) {
	if err := t.sensor.Track(cgroupID); err != nil {
		t.log.Warn("adopting an early-tracked cgroup", logfields.CgroupID, cgroupID, logfields.Error, err)
	}
}

// Untrack stops observing a cgroup: the registry calls it.
func (t *tracker) Untrack(cgroupID uint64) error { return t.sensor.Untrack(cgroupID) }

// pump applies queued lifecycle events until ctx ends.
func (t *tracker) pump(ctx context.Context, apply func(lifecycle.Event)) {
	for {
		select {
		case ev := <-t.queue:
			apply(ev)
		case <-ctx.Done():
			return
		}
	}
}

// drain applies what is still queued, without waiting for more.
func (t *tracker) drain(apply func(lifecycle.Event)) {
	for {
		select {
		case ev := <-t.queue:
			apply(ev)
		default:
			return
		}
	}
}
