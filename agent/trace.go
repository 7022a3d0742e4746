package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/logfields"
)

// Trace writes the events of one cgroup (a path as in /proc/PID/cgroup,
// or its directory) to the output until ctx ends. The output is opened
// once the cgroup is tracked, so that a reader who waits for it misses
// nothing. Without a container, lines carry no container.
func (a *Agent) Trace(ctx context.Context, cgroup string) error {
	dir := a.hierarchy.Path(cgroup)
	id, err := cgroups.ID(dir)
	if err != nil {
		return err
	}
	// Its processes may be running: none of them is the entrypoint.
	if err := a.sensor.TrackRunning(id); err != nil {
		return fmt.Errorf("tracking cgroup %d: %w", id, err)
	}
	out, err := openOutput(a.cfg.Output)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, out.Close)
	lines := newJSONLines(out)
	a.log.Info("tracing", logfields.CgroupPath, dir, logfields.CgroupID, id)
	err = a.sensor.Run(ctx, func(ev sensor.Event) { lines.write(Record{Event: sensor.JSON{Event: ev}}) })
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("tracing %s: %w", dir, err)
	}
	return lines.err()
}
