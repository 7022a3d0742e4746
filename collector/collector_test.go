package collector

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var quiet = slog.New(slog.DiscardHandler)

func container(id string) lifecycle.Container {
	return lifecycle.Container{ID: id, Runtime: lifecycle.RuntimeExec, Image: lifecycle.Image{Name: "example/app:1", Digest: digest}, CgroupID: 7}
}

// The tests re-execute this binary as a second agent process.
const agentEnv = "INUSE_COLLECTOR_AGENT"

func TestMain(m *testing.M) {
	if url := os.Getenv(agentEnv); url != "" {
		if err := runAgent(url, os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "agent:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	redis.SetLogger(discardLogger{}) // the collector reports outages itself
	os.Exit(m.Run())
}

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// runAgent folds the given file paths into the test image as node.
func runAgent(url, node string, files []string) error {
	st, err := store.Open(url)
	if err != nil {
		return err
	}
	defer st.Close()
	c := New(quiet, st, Config{Node: node})
	ctr := container("ctr-" + node)
	c.ContainerStarted(ctr)
	for _, f := range files {
		c.Observe(ctr, sensor.FileEvent{Path: f, Access: sensor.AccessRead})
	}
	return c.Flush(context.Background())
}

func openStore(t testing.TB, url string, opts ...store.Option) *store.Store {
	t.Helper()
	st, err := store.Open(url, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

func values(entries []store.Entry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Value)
	}
	return out
}

// workload is one container's events: files, an exec, ports, syscalls.
func workload(c *Collector, ctr lifecycle.Container) {
	c.ContainerStarted(ctr)
	for _, ev := range []sensor.Event{
		sensor.ExecEvent{Role: sensor.RoleBinary, Path: "/usr/bin/python3.11"},
		sensor.ExecEvent{Role: sensor.RoleLoader, Path: "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"},
		sensor.FileEvent{Path: "/usr/lib/x86_64-linux-gnu/libssl.so.3", Access: sensor.AccessRead},
		sensor.FileEvent{Path: "/usr/lib/x86_64-linux-gnu/libssl.so.3", Access: sensor.AccessMapped},
		sensor.FileEvent{Path: "/var/log/app.log", Access: sensor.AccessWrite | sensor.AccessCreate},
		sensor.FileEvent{Path: "/etc", Access: sensor.AccessRead, Dir: true},
		sensor.FileEvent{Path: "/opath", Access: 0},
		sensor.NetEvent{Protocol: sensor.TCP, Direction: sensor.Inbound, Port: 8080},
		sensor.NetEvent{Protocol: sensor.UDP, Direction: sensor.Outbound, Port: 53},
		sensor.SyscallEvent{Names: []string{"openat", "read"}},
	} {
		c.Observe(ctr, ev)
	}
}

// wantSections is what workload leaves in a profile.
var wantSections = map[store.Section][]string{
	store.Exec:         {"/usr/bin/python3.11", "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"},
	store.FilesRead:    {"/usr/lib/x86_64-linux-gnu/libssl.so.3"},
	store.Mapped:       {"/usr/lib/x86_64-linux-gnu/libssl.so.3"},
	store.FilesWritten: {"/var/log/app.log"},
	store.DirsRead:     {"/etc"},
	store.TCPIn:        {"8080"},
	store.UDPOut:       {"53"},
	store.Syscalls:     {"openat", "read"},
}

func checkProfile(t *testing.T, st *store.Store) *store.Profile {
	t.Helper()
	p, err := st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	for _, sec := range store.Sections {
		require.Equal(t, wantSections[sec], values(p.Sections[sec]), "section %s", sec)
	}
	require.Equal(t, []string{"example/app:1"}, p.Names)
	return p
}

func TestFoldIntoProfile(t *testing.T) {
	srv := redistest.Start(t)
	st := openStore(t, srv.URL())
	c := New(quiet, st, Config{Node: "node-a"})
	workload(c, container("c1"))
	require.NoError(t, c.Flush(t.Context()))

	p := checkProfile(t, st)
	require.Equal(t, []string{"c1"}, p.Containers)
	require.Equal(t, []string{"node-a"}, p.NodeNames)
	require.EqualValues(t, 10, p.Meta.Events)
	require.EqualValues(t, 1, p.Meta.Revision)
	require.Equal(t, store.Learning, p.State)

	// The same observations again change nothing but counters: no new revision.
	workload(c, container("c1"))
	require.NoError(t, c.Flush(t.Context()))
	p = checkProfile(t, st)
	require.EqualValues(t, 1, p.Meta.Revision)
	require.EqualValues(t, 20, p.Meta.Events)

	c.Observe(container("c1"), sensor.FileEvent{Path: "/new", Access: sensor.AccessRead})
	require.NoError(t, c.Flush(t.Context()))
	p, err := st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.EqualValues(t, 2, p.Meta.Revision)

	got, err := st.Resolve(t.Context(), "example/app:1")
	require.NoError(t, err)
	require.Equal(t, digest, got)
	images, err := st.Images(t.Context(), time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.Len(t, images, 1)
	require.Equal(t, digest, images[0].Digest)
	require.EqualValues(t, 2, images[0].Files)
}

func TestClusterGivesTheSameProfile(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	st := openStore(t, cluster.URL())
	c := New(quiet, st, Config{Node: "node-a"})
	workload(c, container("c1"))
	require.NoError(t, c.Flush(t.Context()))
	p := checkProfile(t, st)
	require.EqualValues(t, 1, p.Meta.Revision)
	require.Equal(t, []string{"node-a"}, p.NodeNames)
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func TestLearningTransitions(t *testing.T) {
	srv := redistest.Start(t)
	st := openStore(t, srv.URL())
	lc := store.LearningConfig{MinObserved: 10 * time.Second, StableWindow: 4 * time.Second}
	clock := &fakeClock{t: time.Now()}
	c := New(quiet, st, Config{Node: "n", Learning: lc})
	c.now = clock.now
	ctr := container("c1")
	state := func() store.State {
		t.Helper()
		require.NoError(t, c.Flush(t.Context()))
		p, err := st.Profile(t.Context(), digest, clock.now(), lc)
		require.NoError(t, err)
		return p.State
	}

	workload(c, ctr)
	require.Equal(t, store.Learning, state(), "just started")
	clock.add(6 * time.Second)
	require.Equal(t, store.Learning, state(), "stable but observed for too short a time")
	clock.add(6 * time.Second)
	require.Equal(t, store.Done, state(), "observed 12s, nothing new for 12s")
	c.Observe(ctr, sensor.FileEvent{Path: "/late", Access: sensor.AccessRead})
	require.Equal(t, store.Learning, state(), "something new appeared")
	clock.add(5 * time.Second)
	require.Equal(t, store.Done, state(), "stable again")
	c.Observe(ctr, sensor.LossEvent{Lost: 3})
	require.Equal(t, store.Incomplete, state(), "losses: never complete")
}

func TestConfidence(t *testing.T) {
	lc := store.LearningConfig{MinObserved: time.Minute, StableWindow: time.Minute}
	now := time.Now()
	long := store.Meta{FirstSeen: now.Add(-5 * time.Minute), LastSeen: now, LastNew: now.Add(-4 * time.Minute), Containers: 3, Nodes: 2}
	for _, tc := range []struct {
		name   string
		change func(*store.Meta)
		want   store.Confidence
	}{
		{"long, many containers and nodes, done", func(*store.Meta) {}, store.High},
		{"one container, one node", func(m *store.Meta) { m.Containers, m.Nodes = 1, 1 }, store.Medium},
		{"losses", func(m *store.Meta) { m.Losses = 1 }, store.Medium},
		{"losses and partial containers", func(m *store.Meta) { m.Losses, m.PartialContainers = 1, 1 }, store.Low},
		{"guard pauses", func(m *store.Meta) { m.GuardPauses, m.Containers = 1, 1 }, store.Medium},
		{"just started", func(m *store.Meta) { *m = store.Meta{FirstSeen: now, LastSeen: now, Containers: 1, Nodes: 1} }, store.Low},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := long
			tc.change(&m)
			require.Equal(t, tc.want, m.Confidence(now, lc))
		})
	}
}

// TestOutageLosesNothing stops redis-server in the middle of a stream of
// events and starts it again: the profile ends equal to the stream.
func TestOutageLosesNothing(t *testing.T) {
	srv := redistest.StartDurable(t)
	st := openStore(t, srv.URL())
	c := New(quiet, st, Config{Node: "n", FlushInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	ctr := container("c1")
	c.ContainerStarted(ctr)
	var want []string
	stream := func(n int, every time.Duration) {
		for range n {
			p := fmt.Sprintf("/data/file-%05d", len(want))
			want = append(want, p)
			c.Observe(ctr, sensor.FileEvent{Path: p, Access: sensor.AccessRead})
			time.Sleep(every)
		}
	}
	stream(200, time.Millisecond)
	srv.Stop()
	stream(1000, 3*time.Millisecond) // about 3 s without Redis
	require.Positive(t, c.Stats().Failures, "flushes failed during the outage")
	srv.Restart()
	flushed := c.Stats().Flushes
	stream(200, time.Millisecond)
	// go-redis answers dials with the last dial error until its background
	// redial succeeds (about a second): wait for the collector to flush by
	// itself before the final flush at shutdown.
	require.Eventually(t, func() bool { return c.Stats().Flushes > flushed }, 20*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	p, err := st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	slices.Sort(want)
	require.Equal(t, want, values(p.Sections[store.FilesRead]))
	require.Zero(t, p.Meta.Losses)
	require.Zero(t, c.Stats().Overflow)
}

func TestPendingBoundCountsOverflow(t *testing.T) {
	srv := redistest.StartDurable(t)
	st := openStore(t, srv.URL())
	srv.Stop()
	c := New(quiet, st, Config{Node: "n", MaxPending: 10})
	ctr := container("c1")
	for i := range 25 {
		c.Observe(ctr, sensor.FileEvent{Path: "/f" + strconv.Itoa(i), Access: sensor.AccessRead})
	}
	require.Error(t, c.Flush(t.Context()))
	require.EqualValues(t, 15, c.Stats().Overflow)
	srv.Restart()
	require.NoError(t, c.Flush(t.Context()))
	p, err := st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.Len(t, p.Sections[store.FilesRead], 10)
	require.EqualValues(t, 15, p.Meta.Losses, "what overflowed is recorded as lost")
}

// TestTwoAgentsMerge runs two agent processes with different node names
// writing the same image.
func TestTwoAgentsMerge(t *testing.T) {
	srv := redistest.Start(t)
	var wg sync.WaitGroup
	for _, agent := range []struct {
		node  string
		files []string
	}{
		{"node-a", []string{"/shared", "/only-a"}},
		{"node-b", []string{"/shared", "/only-b"}},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], append([]string{agent.node}, agent.files...)...)
			cmd.Env = append(os.Environ(), agentEnv+"="+srv.URL())
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
		}()
	}
	wg.Wait()
	st := openStore(t, srv.URL())
	p, err := st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.Equal(t, []string{"/only-a", "/only-b", "/shared"}, values(p.Sections[store.FilesRead]))
	require.Equal(t, []string{"node-a", "node-b"}, p.NodeNames)
	require.Equal(t, []string{"ctr-node-a", "ctr-node-b"}, p.Containers)
}

func TestGuardPausesAndResumes(t *testing.T) {
	srv := redistest.Start(t)
	st := openStore(t, srv.URL())
	c := New(quiet, st, Config{Node: "n", FlushInterval: 50 * time.Millisecond,
		Guard: GuardConfig{MaxCPU: 0.2, Interval: 100 * time.Millisecond, CoolDown: 300 * time.Millisecond}})
	ctr := container("c1")
	c.ContainerStarted(ctr)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	// Burn a core until the guard pauses profiling.
	deadline := time.Now().Add(10 * time.Second)
	for !c.guard.paused() {
		require.True(t, time.Now().Before(deadline), "guard never paused")
		for start := time.Now(); time.Since(start) < 10*time.Millisecond; {
		}
	}
	c.Observe(ctr, sensor.FileEvent{Path: "/while-paused", Access: sensor.AccessRead})
	require.EqualValues(t, 1, c.Stats().Paused)
	// Idle: it resumes after the cool-down.
	require.Eventually(t, func() bool { return !c.guard.paused() }, 10*time.Second, 50*time.Millisecond)
	c.Observe(ctr, sensor.FileEvent{Path: "/after", Access: sensor.AccessRead})
	cancel()
	require.NoError(t, <-done)

	p, err := st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.Positive(t, p.Meta.GuardPauses)
	require.Equal(t, []string{"/after"}, values(p.Sections[store.FilesRead]))
	require.Positive(t, c.Stats().Pauses)
}

// An event read from /proc (a container already running when tracked) is
// folded like any other and also recorded as seeded, so that evidence can
// say so.
func TestSeededEventsAreRecorded(t *testing.T) {
	srv := redistest.Start(t)
	st := openStore(t, srv.URL())
	c := New(quiet, st, Config{Node: "node-a"})
	ctr := container("c1")
	ctr.Partial = true
	c.ContainerStarted(ctr)
	seeded := sensor.Header{Seeded: true}
	c.Observe(ctr, sensor.ExecEvent{Header: seeded, Role: sensor.RoleBinary, Path: "/usr/bin/python3.11"})
	c.Observe(ctr, sensor.FileEvent{Header: seeded, Path: "/usr/lib/x86_64-linux-gnu/libssl.so.3", Access: sensor.AccessMapped})
	c.Observe(ctr, sensor.FileEvent{Path: "/etc/hosts", Access: sensor.AccessRead}) // seen live
	require.NoError(t, c.Flush(t.Context()))

	p, err := st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.Equal(t, []string{"/usr/bin/python3.11"}, values(p.Sections[store.Exec]))
	require.Equal(t, []string{"/usr/lib/x86_64-linux-gnu/libssl.so.3"}, values(p.Sections[store.Mapped]))
	require.Equal(t, []string{"/etc/hosts"}, values(p.Sections[store.FilesRead]))
	require.ElementsMatch(t, []string{"exec|/usr/bin/python3.11", "mapped|/usr/lib/x86_64-linux-gnu/libssl.so.3"}, values(p.Sections[store.Seeded]))
	require.EqualValues(t, 1, p.Meta.PartialContainers)
}

// What exec sessions loaded is kept apart from what the workload loaded:
// a reader gets both in the sections, and ExecSessions names the members
// only sessions put there; a file both loaded is the workload's. Drift
// (a bounded section) takes a session's downloads like the workload's.
func TestExecSessionEventsAreKeptApart(t *testing.T) {
	srv := redistest.Start(t)
	st := openStore(t, srv.URL())
	c := New(quiet, st, Config{Node: "node-a"})
	ctr := container("c1")
	c.ContainerStarted(ctr)
	session := sensor.Header{ExecSession: true}
	c.Observe(ctr, sensor.ExecEvent{Header: session, Role: sensor.RoleBinary, Path: "/usr/bin/bash"})
	c.Observe(ctr, sensor.FileEvent{Header: session, Path: "/usr/lib/x86_64-linux-gnu/libreadline.so.8", Access: sensor.AccessMapped})
	c.Observe(ctr, sensor.FileEvent{Header: session, Path: "/etc/hosts", Access: sensor.AccessRead})
	c.Observe(ctr, sensor.FileEvent{Header: session, Path: "/tmp/tool", Access: sensor.AccessMapped, Origin: sensor.OriginContainer})
	c.Observe(ctr, sensor.FileEvent{Path: "/etc/hosts", Access: sensor.AccessRead})
	c.Observe(ctr, sensor.FileEvent{Path: "/etc/passwd", Access: sensor.AccessRead})
	require.NoError(t, c.Flush(t.Context()))

	p, err := st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.Equal(t, []string{"/usr/bin/bash"}, values(p.Sections[store.Exec]))
	require.Equal(t, []string{"/usr/lib/x86_64-linux-gnu/libreadline.so.8"}, values(p.Sections[store.Mapped]))
	require.Equal(t, []string{"/etc/hosts", "/etc/passwd"}, values(p.Sections[store.FilesRead]))
	require.ElementsMatch(t, []string{"exec|/usr/bin/bash", "mapped|/usr/lib/x86_64-linux-gnu/libreadline.so.8"},
		values(p.Sections[store.ExecSessions]), "only what no workload process loaded")
	require.Len(t, p.Sections[store.Drift], 1)

	workloadOnly, err := st.ProfileSections(t.Context(), digest, time.Now(), store.DefaultLearning, store.Exec, store.FilesRead)
	require.NoError(t, err)
	require.Empty(t, workloadOnly.Sections[store.Exec], "without ExecSessions, a reader gets the workload's alone")
	require.Equal(t, []string{"/etc/hosts", "/etc/passwd"}, values(workloadOnly.Sections[store.FilesRead]))
}

// Pending members are bounded in bytes, in all and per image: an image
// flooding 4 KiB paths while Redis is away loses its own members (recorded
// as lost in its profile), and a quiet image's library still gets in.
func TestPendingBytesBound(t *testing.T) {
	const quietDigest = "sha256:5555555555555555555555555555555555555555555555555555555555555555"
	long := strings.Repeat("x", 4000)
	for _, tc := range []struct {
		name                string
		total, image        int64
		wantFlood, wantLoss int
	}{
		// 64 KiB per image: 16 members of 4,066 bytes, the rest lost.
		{name: "per image", total: 1 << 20, image: 64 << 10, wantFlood: 16, wantLoss: 84},
		// 40 KiB in all: 10 flooding members, and room left for the quiet one.
		{name: "in all", total: 40 << 10, image: 1 << 20, wantFlood: 10, wantLoss: 90},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(quiet, nil, Config{Node: "n", MaxPendingBytes: tc.total, MaxImagePendingBytes: tc.image})
			flood := container("flood")
			q := lifecycle.Container{ID: "quiet", Runtime: lifecycle.RuntimeExec, Image: lifecycle.Image{Digest: quietDigest}, CgroupID: 8}
			for i := range 100 {
				c.Observe(flood, sensor.FileEvent{Path: "/" + long + strconv.Itoa(i), Access: sensor.AccessRead})
			}
			c.Observe(q, sensor.FileEvent{Path: "/usr/lib/libssl.so.3", Access: sensor.AccessMapped})
			require.Equal(t, tc.wantFlood, len(c.pending[digest].Sections[store.FilesRead]))
			require.EqualValues(t, tc.wantLoss, c.pending[digest].Losses)
			require.Contains(t, c.pending[quietDigest].Sections[store.Mapped], "/usr/lib/libssl.so.3")
			require.Zero(t, c.pending[quietDigest].Losses)
			require.LessOrEqual(t, c.Gauges().PendingBytes, tc.total)
		})
	}
}
