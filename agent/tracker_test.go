package agent

import (
	"errors"
	"log/slog"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/registry"
)

// fakeSensor records what the tracker tracks; Track fails for refuse.
type fakeSensor struct {
	tracked []uint64
	refuse  uint64
}

func (f *fakeSensor) Track(id uint64) error {
	if id == f.refuse {
		return errors.New("sensor: tracked cgroup table is full")
	}
	f.tracked = append(f.tracked, id)
	return nil
}

func (f *fakeSensor) TrackRunning(id uint64) error { return f.Track(id) }

func (f *fakeSensor) Untrack(id uint64) error {
	f.tracked = slices.DeleteFunc(f.tracked, func(t uint64) bool { return t == id })
	return nil
}

// recordSink remembers what the registry attributed.
type recordSink struct{ calls []string }

func (r *recordSink) ContainerStarted(c lifecycle.Container) {
	r.calls = append(r.calls, "start "+c.ID)
}
func (r *recordSink) ContainerStopped(c lifecycle.Container) { r.calls = append(r.calls, "stop "+c.ID) }
func (r *recordSink) Observe(c lifecycle.Container, ev sensor.Event) {
	r.calls = append(r.calls, c.ID+" "+ev.Kind())
}

func newTestAgent() (*Agent, *fakeSensor, *recordSink) {
	log := slog.New(slog.DiscardHandler)
	s, sink := &fakeSensor{refuse: 99}, &recordSink{}
	a := &Agent{log: log, metrics: &agentMetrics{}, tracker: newTracker(log, s)}
	a.registry = registry.New[sensor.Event](log, sink, a.tracker, registry.Config{})
	return a, s, sink
}

var testImage = lifecycle.Image{Name: "app:1", Digest: "sha256:4444444444444444444444444444444444444444444444444444444444444444"}

// Every way a cgroup comes to be observed goes through the tracker: a
// discovery source's container, and a cgroup the kernel tracked at
// creation, which the registry then matches by path.
func TestTrackerIsTheOnePlaceThatTracks(t *testing.T) {
	a, s, sink := newTestAgent()

	require.NoError(t, a.tracker.Started(lifecycle.Container{ID: "nri", CgroupID: 7, Image: testImage}))
	require.Equal(t, []uint64{7}, s.tracked, "tracked before Started returns")

	a.observe(sensor.CgroupEvent{Header: sensor.Header{CgroupID: 9}, Path: "/docker/abc"})
	a.observe(sensor.FileEvent{Header: sensor.Header{CgroupID: 9}, Path: "/entrypoint"})
	require.Equal(t, []uint64{7, 9}, s.tracked, "the kernel's early tracking is adopted")
	// dockerd describes the container after it exited: by path only.
	require.NoError(t, a.tracker.Started(lifecycle.Container{ID: "abc", CgroupPath: "/docker/abc", Image: testImage}))

	require.Error(t, a.tracker.Started(lifecycle.Container{ID: "full", CgroupID: 99, Image: testImage}))

	a.tracker.drain(a.registry.Handle)
	require.Equal(t, []string{"start nri", "start abc", "abc file"}, sink.calls)

	require.NoError(t, a.tracker.Stopped(lifecycle.Container{ID: "abc", CgroupPath: "/docker/abc", Image: testImage}))
	a.tracker.drain(a.registry.Handle)
	require.Equal(t, []uint64{7}, s.tracked, "a stop untracks through the tracker")
}

// A full queue never blocks a runtime's callback: the event is refused
// with ErrQueueFull, for the source to count.
func TestTrackerQueueFullRefuses(t *testing.T) {
	a, _, _ := newTestAgent()
	for i := range queueSize {
		require.NoError(t, a.tracker.Stopped(lifecycle.Container{ID: string(rune(i))}))
	}
	require.ErrorIs(t, a.tracker.Started(lifecycle.Container{ID: "one too many", CgroupID: 5}), lifecycle.ErrQueueFull)
	require.ErrorIs(t, a.tracker.Stopped(lifecycle.Container{ID: "one too many"}), lifecycle.ErrQueueFull)
}
