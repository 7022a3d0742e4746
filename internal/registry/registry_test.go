package registry

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/lifecycle"
)

// record is a Sink and an Untracker that remembers every call.
type record struct {
	calls     []string
	untracked []uint64
}

func (r *record) ContainerStarted(c lifecycle.Container) { r.calls = append(r.calls, "start "+c.ID) }
func (r *record) ContainerStopped(c lifecycle.Container) { r.calls = append(r.calls, "stop "+c.ID) }
func (r *record) Observe(c lifecycle.Container, ev fileEvent) {
	r.calls = append(r.calls, c.ID+" "+ev.path)
}
func (r *record) Untrack(id uint64) error { r.untracked = append(r.untracked, id); return nil }

var img = lifecycle.Image{Name: "app:1", Digest: "sha256:4444444444444444444444444444444444444444444444444444444444444444"}

// fileEvent stands for the sensor's events: the registry knows them only
// by their cgroup.
type fileEvent struct {
	cgroup uint64
	path   string
}

func (e fileEvent) Cgroup() uint64 { return e.cgroup }

func file(cgroup uint64, path string) fileEvent { return fileEvent{cgroup, path} }

func newRegistry(cfg Config) (*Registry[fileEvent], *record) {
	rec := &record{}
	return New(slog.New(slog.DiscardHandler), rec, rec, cfg), rec
}

func TestHeldUntilKnownThenReplayed(t *testing.T) {
	r, rec := newRegistry(Config{})
	r.Observe(file(7, "/bin/sh"))
	r.Observe(file(7, "/lib/libc.so.6"))
	require.Empty(t, rec.calls, "nothing is attributed before the container is known")
	r.Handle(lifecycle.Event{Kind: lifecycle.Started, Container: lifecycle.Container{ID: "c1", CgroupID: 7, Image: img}})
	r.Observe(file(7, "/etc/hosts"))
	r.Handle(lifecycle.Event{Kind: lifecycle.Started, Container: lifecycle.Container{ID: "c1", CgroupID: 7, Image: img}}) // resync: no repeat
	r.Handle(lifecycle.Event{Kind: lifecycle.Stopped, Container: lifecycle.Container{ID: "c1", CgroupID: 7, Image: img}})
	require.Equal(t, []string{"start c1", "c1 /bin/sh", "c1 /lib/libc.so.6", "c1 /etc/hosts", "stop c1"}, rec.calls)
	require.Equal(t, []uint64{7}, rec.untracked)
}

func TestEarlyTrackedMatchedByPath(t *testing.T) {
	r, rec := newRegistry(Config{})
	r.CgroupCreated(9, "/docker/abc")
	r.Observe(file(9, "/entrypoint"))
	// dockerd describes the container after it exited: path only.
	r.Handle(lifecycle.Event{Kind: lifecycle.Started, Container: lifecycle.Container{ID: "abc", CgroupPath: "/docker/abc", Image: img}})
	require.Equal(t, []string{"start abc", "abc /entrypoint"}, rec.calls)
	c, ok := r.Container(9)
	require.True(t, ok)
	require.Equal(t, "abc", c.ID)

	r.Handle(lifecycle.Event{Kind: lifecycle.Started, Container: lifecycle.Container{ID: "lost", CgroupPath: "/docker/lost", Image: img}})
	require.EqualValues(t, 1, r.Stats().Unresolved)

	// Its stop carries the path only too: found by the container's id.
	r.Handle(lifecycle.Event{Kind: lifecycle.Stopped, Container: lifecycle.Container{ID: "abc", CgroupPath: "/docker/abc", Image: img}})
	require.Equal(t, []string{"start abc", "abc /entrypoint", "stop abc"}, rec.calls)
	require.Equal(t, []uint64{9}, rec.untracked)
}

func TestUnknownCgroupsExpire(t *testing.T) {
	r, rec := newRegistry(Config{Hold: time.Minute, MaxHeld: 2})
	for _, p := range []string{"/a", "/b", "/c"} {
		r.Observe(file(5, p))
	}
	require.EqualValues(t, 1, r.Stats().Dropped, "over MaxHeld")
	r.Expire(time.Now())
	require.Empty(t, rec.untracked, "not yet")
	r.Expire(time.Now().Add(2 * time.Minute))
	require.Equal(t, []uint64{5}, rec.untracked)
	require.Equal(t, Stats{Expired: 1, Dropped: 3}, r.Stats())
	r.Handle(lifecycle.Event{Kind: lifecycle.Started, Container: lifecycle.Container{ID: "late", CgroupID: 5, Image: img}})
	require.Equal(t, []string{"start late"}, rec.calls, "expired events are gone")
}

func TestNoDigestNoProfile(t *testing.T) {
	r, rec := newRegistry(Config{})
	r.Observe(file(3, "/x"))
	r.Handle(lifecycle.Event{Kind: lifecycle.Started, Container: lifecycle.Container{ID: "c", CgroupID: 3, Image: lifecycle.Image{Name: "app:1"}}})
	require.Empty(t, rec.calls)
	require.EqualValues(t, 1, r.Stats().NoDigest)
	require.Equal(t, []uint64{3}, rec.untracked)
}

// A container that exits at once can be reported stopped before the
// sensor's reader delivered its last events: they are still attributed
// for the hold time, and then the container is forgotten.
func TestEventsAfterStopStillAttributed(t *testing.T) {
	r, rec := newRegistry(Config{Hold: time.Minute})
	c1 := lifecycle.Container{ID: "c1", CgroupID: 7, Image: img}
	r.Handle(lifecycle.Event{Kind: lifecycle.Started, Container: c1})
	r.Handle(lifecycle.Event{Kind: lifecycle.Stopped, Container: c1})
	r.Observe(file(7, "/bin/true"))
	require.Equal(t, []string{"start c1", "stop c1", "c1 /bin/true"}, rec.calls)

	r.Expire(time.Now().Add(2 * time.Minute))
	r.Observe(file(7, "/late"))
	require.Len(t, rec.calls, 3, "after the hold time the container is forgotten: events wait as for any unknown cgroup")
}

// Events dropped over MaxHeld before the container was known reach the
// sink as a loss once it is: its image's profile says events were lost.
func TestHeldDropsRecordedAsLoss(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events int
		want   []string
	}{
		{name: "within the cap", events: 2, want: []string{"start c1", "c1 /0", "c1 /1"}},
		{name: "over the cap", events: 5, want: []string{"start c1", "c1 /0", "c1 /1", "c1 lost 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rec := newRegistry(Config{MaxHeld: 2})
			r.RecordLosses(func(id, n uint64) fileEvent { return file(id, "lost "+string(rune('0'+n))) })
			for i := range tc.events {
				r.Observe(file(7, "/"+string(rune('0'+i))))
			}
			r.Handle(lifecycle.Event{Kind: lifecycle.Started, Container: lifecycle.Container{ID: "c1", CgroupID: 7, Image: img}})
			require.Equal(t, tc.want, rec.calls)
		})
	}
}
