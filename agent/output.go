package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/registry"
)

// Record is one line of the agent's JSON output, the same for `run -o`,
// `exec` and `trace`: an event with the container it is attributed to, or
// a container's start or stop.
type Record struct {
	// Container is absent on the lines of `trace`, which follows a bare
	// cgroup.
	Container *lifecycle.Container `json:"container,omitempty"`
	// Event is what the sensor saw, on event lines.
	Event sensor.JSON `json:"event,omitzero"`
	// Lifecycle is "started" or "stopped", on a container's start and stop.
	Lifecycle lifecycle.Kind `json:"lifecycle,omitempty"`
}

// jsonLines writes Records, one per line. It is a registry.Sink; the first
// write error is kept and reported when the agent stops.
type jsonLines struct {
	mu       sync.Mutex
	enc      *json.Encoder
	writeErr error
}

var _ registry.Sink[sensor.Event] = (*jsonLines)(nil)

func newJSONLines(w io.Writer) *jsonLines { return &jsonLines{enc: json.NewEncoder(w)} }

func (j *jsonLines) write(r Record) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.enc.Encode(r); err != nil && j.writeErr == nil {
		j.writeErr = fmt.Errorf("writing event: %w", err)
	}
}

func (j *jsonLines) err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.writeErr
}

// ContainerStarted implements registry.Sink.
func (j *jsonLines) ContainerStarted(c lifecycle.Container) {
	j.write(Record{Container: &c, Lifecycle: lifecycle.Started})
}

// Observe implements registry.Sink.
func (j *jsonLines) Observe(c lifecycle.Container, ev sensor.Event) {
	j.write(Record{Container: &c, Event: sensor.JSON{Event: ev}})
}

// ContainerStopped implements registry.Sink.
func (j *jsonLines) ContainerStopped(c lifecycle.Container) {
	j.write(Record{Container: &c, Lifecycle: lifecycle.Stopped})
}

// fanOut hands attributed observations to every sink (the collector and
// the JSON output, when both are asked for).
func fanOut(sinks []registry.Sink[sensor.Event]) registry.Sink[sensor.Event] {
	if len(sinks) == 1 {
		return sinks[0]
	}
	return sinkList(sinks)
}

type sinkList []registry.Sink[sensor.Event]

func (l sinkList) ContainerStarted(c lifecycle.Container) {
	for _, s := range l {
		s.ContainerStarted(c)
	}
}

func (l sinkList) Observe(c lifecycle.Container, ev sensor.Event) {
	for _, s := range l {
		s.Observe(c, ev)
	}
}

func (l sinkList) ContainerStopped(c lifecycle.Container) {
	for _, s := range l {
		s.ContainerStopped(c)
	}
}
