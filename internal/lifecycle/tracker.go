package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/inuse-dev/inuse/internal/logfields"
)

// ErrQueueFull is returned by a Tracker whose queue of lifecycle events is
// full: the event is dropped, and the source counts it.
var ErrQueueFull = errors.New("lifecycle: event queue full")

// Tracker is where every discovery source hands what it finds: the one
// place where observing a container starts and stops. Its methods never
// block, so that a runtime's callback never waits on the agent.
type Tracker interface {
	// Started tracks c's cgroup at once when c.CgroupID is set (so that
	// nothing the container does from now on is missed) and queues the
	// start, to attribute the cgroup's events to c.
	Started(c Container) error
	// Stopped queues the stop; the cgroup is untracked once its last
	// events are attributed.
	Stopped(c Container) error
}

// Reconnect runs follow until ctx ends, again after every end of it,
// waiting retry in between: a runtime that restarts is followed again,
// and its next full listing resyncs what changed meanwhile.
func Reconnect(ctx context.Context, log *slog.Logger, retry time.Duration, follow func(context.Context) error) error {
	for {
		err := follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("connection to the runtime ended; reconnecting", logfields.Error, err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}
