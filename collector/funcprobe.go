package collector

import (
	"github.com/inuse-dev/inuse/bpf/funcprobe"
	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/store"
)

// functionMembers maps the agent's function probe events to the profile
// members they add: a planned Go function ran, a binary's plan was in place.
func functionMembers(ev sensor.Event) []member {
	switch e := ev.(type) {
	case funcprobe.FunctionEvent:
		return []member{{store.Functions, store.FunctionMember(e.Binary, e.Symbol)}}
	case funcprobe.ProbedEvent:
		return []member{{store.Probed, store.ProbedMember(e.Binary, e.BuildID)}}
	}
	return nil
}
