package plugin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/lifecycle"
)

// tracks is the agent's tracker as the plugin sees it: it records the
// cgroups tracked and queues the events on out, bounded like the agent's
// queue. The sensor itself is tested in bpf/sensor, the agent's tracker in
// agent, and both end to end in tests/.
type tracks struct {
	mu  sync.Mutex
	ids []uint64
	out chan lifecycle.Event
}

func (r *tracks) Started(c lifecycle.Container) error {
	r.mu.Lock()
	r.ids = append(r.ids, c.CgroupID)
	r.mu.Unlock()
	return r.send(lifecycle.Event{Kind: lifecycle.Started, Container: c})
}

func (r *tracks) Stopped(c lifecycle.Container) error {
	return r.send(lifecycle.Event{Kind: lifecycle.Stopped, Container: c})
}

func (r *tracks) send(ev lifecycle.Event) error {
	select {
	case r.out <- ev:
		return nil
	default:
		return lifecycle.ErrQueueFull
	}
}

const imageDigest = "sha256:3333333333333333333333333333333333333333333333333333333333333333"

// fixture is a cgroup hierarchy in a temporary directory with one
// directory per container, and the NRI objects that name them.
type fixture struct {
	h    cgroups.Hierarchy
	pod  *api.PodSandbox
	ctrs map[string]*api.Container
	ids  map[string]uint64
}

func newFixture(t testing.TB, names ...string) *fixture {
	f := fixtureIn(t.TempDir(), names...)
	for _, n := range names {
		_, id, err := f.h.Create(f.ctrs[n].Linux.CgroupsPath)
		require.NoError(t, err)
		f.ids[n] = id
	}
	return f
}

// fixtureIn describes containers whose cgroups live under dir.
func fixtureIn(dir string, names ...string) *fixture {
	f := &fixture{
		h: cgroups.Hierarchy{Dir: dir},
		pod: &api.PodSandbox{Id: "pod1", Name: "web-7c9d8f6b5-x2x4z", Namespace: "shop", Uid: "uid-1",
			Labels: map[string]string{"pod-template-hash": "7c9d8f6b5"}},
		ctrs: map[string]*api.Container{}, ids: map[string]uint64{},
	}
	for _, n := range names {
		cgPath := "/kubepods/besteffort/poduid-1/" + n
		f.ctrs[n] = &api.Container{
			Id: n, PodSandboxId: "pod1", Name: n, State: api.ContainerState_CONTAINER_RUNNING,
			Linux: &api.LinuxContainer{CgroupsPath: cgPath},
			Image: &api.Image{Name: "docker.io/shop/web:1", Digest: imageDigest},
		}
	}
	return f
}

// runtime starts an NRI runtime (nri's adaptation, as containerd embeds it)
// on socket, which reports running as its containers at Synchronize.
func runtime(t testing.TB, socket string, f *fixture, running ...string) *adaptation.Adaptation {
	r, err := startRuntime(socket, f, running...)
	require.NoError(t, err)
	return r
}

func startRuntime(socket string, f *fixture, running ...string) (*adaptation.Adaptation, error) {
	sync := func(ctx context.Context, cb adaptation.SyncCB) error {
		var ctrs []*api.Container
		for _, n := range running {
			ctrs = append(ctrs, f.ctrs[n])
		}
		_, err := cb(ctx, []*api.PodSandbox{f.pod}, ctrs)
		return err
	}
	update := func(context.Context, []*adaptation.ContainerUpdate) ([]*adaptation.ContainerUpdate, error) {
		return nil, nil
	}
	empty, err := os.MkdirTemp("", "nri-plugins-")
	if err != nil {
		return nil, err
	}
	r, err := adaptation.New("containerd", "2.4.2", sync, update,
		adaptation.WithSocketPath(socket), adaptation.WithPluginPath(empty), adaptation.WithPluginConfigPath(empty))
	if err != nil {
		return nil, err
	}
	return r, r.Start()
}

func next(t testing.TB, events <-chan lifecycle.Event) lifecycle.Event {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no lifecycle event")
	}
	return lifecycle.Event{}
}

func TestPluginAgainstNRIRuntime(t *testing.T) {
	f := newFixture(t, "old", "new")
	socket := filepath.Join(t.TempDir(), "nri.sock")
	r := runtime(t, socket, f, "old")
	events := make(chan lifecycle.Event, 16)
	tr := &tracks{out: events}
	p := New(slog.New(slog.DiscardHandler), tr, f.h)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, Options{Socket: socket, Retry: 50 * time.Millisecond}) }()

	// Synchronize: the running container, partial.
	ev := next(t, events)
	require.Equal(t, lifecycle.Started, ev.Kind)
	require.Equal(t, lifecycle.Container{
		ID: "old", Name: "old", Runtime: lifecycle.RuntimeContainerd,
		Image:      lifecycle.Image{Name: "docker.io/shop/web:1", Digest: imageDigest},
		Pod:        lifecycle.Pod{Name: "web-7c9d8f6b5-x2x4z", Namespace: "shop", UID: "uid-1"},
		Workload:   lifecycle.Workload{Kind: "Deployment", Name: "web"},
		CgroupPath: "/kubepods/besteffort/poduid-1/old", CgroupID: f.ids["old"], Partial: true,
	}, ev.Container)

	// StartContainer: tracked before the handler returns. (The runtime
	// lists the plugin a moment after it synchronized: until then it
	// relays nothing to it.)
	startNew := func() bool {
		require.NoError(t, r.StartContainer(ctx, &adaptation.StartContainerRequest{Pod: f.pod, Container: f.ctrs["new"]}))
		return p.Stats.Started.Load() == 1
	}
	require.Eventually(t, startNew, 10*time.Second, 20*time.Millisecond)
	require.Contains(t, tr.ids, f.ids["new"], "tracked before StartContainer returned")
	ev = next(t, events)
	require.Equal(t, lifecycle.Started, ev.Kind)
	require.False(t, ev.Container.Partial)
	require.Equal(t, f.ids["new"], ev.Container.CgroupID)

	_, err := r.StopContainer(ctx, &adaptation.StopContainerRequest{Pod: f.pod, Container: f.ctrs["new"]})
	require.NoError(t, err)
	ev = next(t, events)
	require.Equal(t, lifecycle.Stopped, ev.Kind)
	require.Equal(t, "new", ev.Container.ID)

	cancel()
	require.NoError(t, <-done)
}

// runtimeEnv makes the test binary an NRI runtime process, so that the
// reconnection test can kill it as a containerd restart would.
const runtimeEnv = "INUSE_TEST_NRI_RUNTIME"

// serveRuntime is the runtime process: args are the socket, the cgroup
// directory and the running containers.
func serveRuntime(args []string) error {
	r, err := startRuntime(args[0], fixtureIn(args[1], args[2:]...), args[2:]...)
	if err != nil {
		return err
	}
	defer r.Stop()
	select {} // until killed
}

func TestPluginReconnectsAfterRuntimeRestart(t *testing.T) {
	f := newFixture(t, "old", "new")
	socket := filepath.Join(t.TempDir(), "nri.sock")
	startProcess := func(running ...string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], append([]string{socket, f.h.Dir}, running...)...)
		cmd.Env = append(os.Environ(), runtimeEnv+"=1")
		require.NoError(t, cmd.Start())
		return cmd
	}
	rt := startProcess("old")
	events := make(chan lifecycle.Event, 16)
	p := New(slog.New(slog.DiscardHandler), &tracks{out: events}, f.h)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, Options{Socket: socket, Retry: 50 * time.Millisecond}) }()
	require.Equal(t, "old", next(t, events).Container.ID)

	// containerd restarts with one more container running.
	require.NoError(t, rt.Process.Kill())
	_ = rt.Wait()
	rt = startProcess("old", "new")
	defer func() { _ = rt.Process.Kill(); _ = rt.Wait() }()
	var resynced []string
	for range 2 {
		ev := next(t, events)
		require.True(t, ev.Container.Partial)
		resynced = append(resynced, ev.Container.ID)
	}
	slices.Sort(resynced)
	require.Equal(t, []string{"new", "old"}, resynced)
	require.EqualValues(t, 2, p.Stats.Connections.Load())
	cancel()
	require.NoError(t, <-done)
}

func TestPluginNeverFailsAContainer(t *testing.T) {
	f := newFixture(t, "c1")
	socket := filepath.Join(t.TempDir(), "nri.sock")
	r := runtime(t, socket, f)
	defer r.Stop()
	// No room in the queue, and a container whose cgroup does not exist.
	p := New(slog.New(slog.DiscardHandler), &tracks{out: make(chan lifecycle.Event)}, f.h)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = p.Run(ctx, Options{Socket: socket}) }()
	require.Eventually(t, func() bool {
		require.NoError(t, r.StartContainer(ctx, &adaptation.StartContainerRequest{Pod: f.pod, Container: f.ctrs["c1"]}))
		return p.Stats.Dropped.Load() > 0
	}, 10*time.Second, 20*time.Millisecond, "a full queue drops the event and the container starts")
	gone := &api.Container{Id: "gone", Linux: &api.LinuxContainer{CgroupsPath: "/kubepods/nothing"}}
	require.NoError(t, r.StartContainer(ctx, &adaptation.StartContainerRequest{Pod: f.pod, Container: gone}))
	require.EqualValues(t, 1, p.Stats.TrackFailures.Load())
}

func TestCgroupDir(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/kubepods/besteffort/pod1/abc", "/kubepods/besteffort/pod1/abc"},
		{"kubepods-besteffort-pod1.slice:cri-containerd:abc", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope"},
		{"system.slice:docker:abc", "/system.slice/docker-abc.scope"},
		{":cri-containerd:abc", "/cri-containerd-abc.scope"},
	} {
		require.Equal(t, tc.want, CgroupDir(tc.in), tc.in)
	}
}

func TestImageFromAnnotations(t *testing.T) {
	c := &api.Container{Annotations: map[string]string{
		annotationImageName: "docker.io/library/nginx:1.27",
		annotationImageRef:  "docker.io/library/nginx@" + imageDigest,
	}}
	require.Equal(t, lifecycle.Image{Name: "docker.io/library/nginx:1.27", Digest: imageDigest}, image(c))
}

// BenchmarkStartContainer measures StartContainer as the runtime sees it:
// a ttrpc round trip to the plugin, which resolves the cgroup, tracks it
// and enqueues. The p99 is reported (target: under 5 ms).
func BenchmarkStartContainer(b *testing.B) {
	f := newFixture(b, "c1")
	socket := filepath.Join(b.TempDir(), "nri.sock")
	r := runtime(b, socket, f)
	defer r.Stop()
	events := make(chan lifecycle.Event, 1024)
	go func() {
		for range events {
		}
	}()
	p := New(slog.New(slog.DiscardHandler), &tracks{out: events}, f.h)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = p.Run(ctx, Options{Socket: socket}) }()
	req := &adaptation.StartContainerRequest{Pod: f.pod, Container: f.ctrs["c1"]}
	for p.Stats.Started.Load() == 0 {
		if err := r.StartContainer(ctx, req); err != nil {
			b.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		if err := r.StartContainer(ctx, req); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
}

func TestMain(m *testing.M) {
	if os.Getenv(runtimeEnv) != "" {
		logrus.SetOutput(io.Discard)
		if err := serveRuntime(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "runtime:", err)
			os.Exit(1)
		}
	}
	os.Unsetenv("NRI_PLUGIN_IDX")
	logrus.SetOutput(io.Discard) // the NRI runtime of the tests logs through logrus
	os.Exit(m.Run())
}

// digestsByName answers image digests from a table.
type digestsByName map[string]string

func (d digestsByName) Digest(_ context.Context, image string) (string, error) {
	if v, ok := d[image]; ok {
		return v, nil
	}
	return "", fmt.Errorf("no image %s", image)
}

func TestPluginAsksForMissingDigests(t *testing.T) {
	f := newFixture(t, "c1", "c2")
	f.ctrs["c1"].Image = &api.Image{Name: "docker.io/shop/old:1"} // NRI before containerd 2.4
	f.ctrs["c2"].Image = &api.Image{Name: "docker.io/shop/gone:1"}
	p := New(slog.New(slog.DiscardHandler), &tracks{out: make(chan lifecycle.Event, 4)}, f.h)
	p.Images = digestsByName{"docker.io/shop/old:1": imageDigest}
	c1, err := p.describe(f.pod, f.ctrs["c1"])
	require.NoError(t, err)
	require.Equal(t, imageDigest, c1.Image.Digest)
	c2, err := p.describe(f.pod, f.ctrs["c2"])
	require.NoError(t, err, "an unknown digest never fails the container")
	require.Empty(t, c2.Image.Digest)
}
