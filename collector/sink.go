// Package collector folds what the sensor sees into per-image runtime
// profiles in Redis.
package collector

import (
	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/lifecycle"
)

// Sink receives attributed observations from the agent's pipeline: the
// discovery sources say which containers exist, the sensor what they do.
// Implementations must not block: they are called on the event path.
type Sink interface {
	// ContainerStarted is called once per container when it is tracked
	// (c.Partial when it was already running).
	ContainerStarted(c lifecycle.Container)
	// Observe is called for each sensor event of a tracked container.
	Observe(c lifecycle.Container, ev sensor.Event)
	// ContainerStopped is called when the container is untracked.
	ContainerStopped(c lifecycle.Container)
}
