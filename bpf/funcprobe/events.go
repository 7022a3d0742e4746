package funcprobe

import "github.com/inuse-dev/inuse/bpf/sensor"

// FunctionEvent says that a planned function of a Go binary ran in a
// tracked cgroup: the agent made it from a Hit and the probe plan.
type FunctionEvent struct {
	sensor.Header
	// Binary is the path of the Go binary inside the container.
	Binary string `json:"binary"`
	// Symbol is the function, as the plan names it.
	Symbol string `json:"symbol"`
}

// Kind implements sensor.Event.
func (FunctionEvent) Kind() string { return "function" }

// ProbedEvent says that every probe of a binary's plan was in place before
// a process of the cgroup executed it, so that none of its calls of a
// planned function went unseen.
type ProbedEvent struct {
	sensor.Header
	Binary  string `json:"binary"`
	BuildID string `json:"build_id"`
}

// Kind implements sensor.Event.
func (ProbedEvent) Kind() string { return "probed" }
