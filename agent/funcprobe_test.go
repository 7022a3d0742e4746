package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/bench/funcprobe/gofunc"
	"github.com/inuse-dev/inuse/bpf/funcprobe"
	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/gosym"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
)

// Function probe events take the same Record schema as the sensor's, with
// kinds of their own: "function" (a planned function ran) and "probed".
func TestFunctionRecordSchema(t *testing.T) {
	var buf bytes.Buffer
	j := newJSONLines(&buf)
	c := lifecycle.Container{ID: "c1", Runtime: lifecycle.RuntimeExec, Image: lifecycle.Image{Digest: "sha256:aa"}, CgroupID: 7}
	h := sensor.Header{CgroupID: 7, PID: 42, Monotonic: 9}
	j.Observe(c, funcprobe.ProbedEvent{Header: h, Binary: "/app/api", BuildID: "a/b/c/d"})
	j.Observe(c, funcprobe.FunctionEvent{Header: h, Binary: "/app/api", Symbol: "golang.org/x/text/language.Parse"})
	require.NoError(t, j.err())

	ctr := `"container":{"id":"c1","runtime":"exec","image":{"name":"","digest":"sha256:aa"},"cgroup_id":7}`
	require.Equal(t, `{`+ctr+`,"event":{"kind":"probed","cgroup_id":7,"pid":42,"monotonic_ns":9,"binary":"/app/api","build_id":"a/b/c/d"}}
{`+ctr+`,"event":{"kind":"function","cgroup_id":7,"pid":42,"monotonic_ns":9,"binary":"/app/api","symbol":"golang.org/x/text/language.Parse"}}
`, buf.String())
}

// newFuncProbes is a funcProbes without a kernel program: enough for
// what happens before an attach.
func newFuncProbes(limits ProbeLimits) (*funcProbes, *[]sensor.Event) {
	var emitted []sensor.Event
	return &funcProbes{
		log: slog.New(slog.DiscardHandler), limits: limits, hold: time.Minute,
		emit:    func(ev sensor.Event) { emitted = append(emitted, ev) },
		cgroups: map[uint64]*probedCgroup{}, binaries: map[binaryKey]*probedBinary{}, imagePoints: map[string]int{},
		cookies: map[probeKey]uint64{}, points: map[uint64]probeKey{}, owners: map[string]uint32{}, hit: map[functionKey]bool{},
		gone: map[uint64]goneCgroup{}, held: map[uint64]*heldHits{},
	}, &emitted
}

// A binary whose plan has more points than a cap allows is not probed at
// all, and counted.
func TestProbeCaps(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	id, err := gosym.ReadBuildID(self)
	require.NoError(t, err)
	plan := store.GoPlan{BuildID: id}
	for i := range 5 {
		plan.Probes = append(plan.Probes, store.GoProbe{Symbol: "main.f" + strconv.Itoa(i%3), Offset: uint64(0x1000 + i)})
	}
	for _, tc := range []struct {
		name      string
		limits    ProbeLimits
		inImage   int // points the image has elsewhere
		wantImage int
	}{
		{name: "per binary", limits: ProbeLimits{PerBinary: 4, PerImage: 100}},
		{name: "per image", limits: ProbeLimits{PerBinary: 100, PerImage: 10}, inImage: 6, wantImage: 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := newFuncProbes(tc.limits)
			if tc.inImage > 0 {
				f.imagePoints["sha256:aa"] = tc.inImage
			}
			c := lifecycle.Container{ID: "c", CgroupID: 7, Image: lifecycle.Image{Digest: "sha256:aa"}}
			cg := f.track(c, "")
			file, err := os.Open(self)
			require.NoError(t, err)
			defer file.Close()
			f.acquire(cg, "/app/bin", plan, file)
			require.EqualValues(t, 1, f.stats.refusedCaps.Load())
			require.Empty(t, f.binaries)
			require.Equal(t, tc.wantImage, f.imagePoints["sha256:aa"])
		})
	}
}

func TestProbeLimitsAllow(t *testing.T) {
	l := ProbeLimits{PerBinary: 5, PerImage: 10}
	for _, tc := range []struct {
		points, inImage int
		want            bool
	}{
		{5, 0, true}, {6, 0, false}, {5, 5, true}, {5, 6, false}, {0, 10, true}, {1, 10, false},
	} {
		require.Equal(t, tc.want, l.allow(tc.points, tc.inImage), "%d points, %d in the image", tc.points, tc.inImage)
	}
}

// Plan paths from Redis that are not absolute and clean are dropped.
func TestCheckPlans(t *testing.T) {
	f, _ := newFuncProbes(ProbeLimits{})
	plans := map[string]store.GoPlan{"/app/server": {}, "/app/../../proc/self/exe": {}, "app": {}, "/app//x": {}}
	got := f.checkPlans("sha256:aa", plans)
	require.Equal(t, map[string]store.GoPlan{"/app/server": {}}, got)
	require.EqualValues(t, 3, f.stats.refusedPaths.Load())
}

// Hits of a cgroup not named yet past the cap are counted, and recorded
// as a loss of its image once the cgroup is named.
func TestHeldHitsOverCapBecomeLoss(t *testing.T) {
	f, emitted := newFuncProbes(ProbeLimits{})
	pk := probeKey{binaryKey{"sha256:aa", "/app/bin", "id"}, "main.f"}
	f.cookies[pk], f.points[1] = 1, pk
	for range maxHeldHits + 3 {
		f.onHit(funcprobe.Hit{CgroupID: 9, Cookie: 1})
	}
	require.EqualValues(t, 3, f.stats.droppedHits.Load())
	f.track(lifecycle.Container{ID: "c", CgroupID: 9, Image: lifecycle.Image{Digest: "sha256:aa"}}, "")
	var loss []sensor.LossEvent
	var functions int
	for _, ev := range *emitted {
		switch e := ev.(type) {
		case sensor.LossEvent:
			loss = append(loss, e)
		case funcprobe.FunctionEvent:
			functions++
		}
	}
	require.Equal(t, []sensor.LossEvent{{CgroupID: 9, Lost: 3}}, loss)
	require.Equal(t, 1, functions, "the first hit is reported, once")
}

// A function's probes go once its first hit is read, the others stay; all
// of a binary's probes stay while a container of its image runs and go
// with the last one. Counted as the kernel's uprobe links on the file.
func TestProbesDetach(t *testing.T) {
	testutil.RequirePrivileged(t)
	bin, plan, err := gofunc.Build(t.TempDir(), false)
	require.NoError(t, err)
	log := slog.New(slog.DiscardHandler)
	s, err := sensor.Open(log, sensor.Config{})
	require.NoError(t, err)
	defer s.Close()
	h, err := cgroups.Unified()
	require.NoError(t, err)
	plans := func(context.Context, string) (map[string]store.GoPlan, error) {
		return map[string]store.GoPlan{bin: plan}, nil
	}
	f, err := openFuncProbes(log, s, h, plans, time.Minute, ProbeLimits{})
	if errors.Is(err, funcprobe.ErrNoAttachCookie) {
		t.Skipf("this kernel cannot probe functions: %v", err)
	}
	require.NoError(t, err)
	defer f.Close()
	var mu sync.Mutex
	var symbols []string
	f.emit = func(ev sensor.Event) {
		if fe, ok := ev.(funcprobe.FunctionEvent); ok {
			mu.Lock()
			symbols = append(symbols, fe.Symbol)
			mu.Unlock()
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.run(ctx) }()
	defer func() { cancel(); require.ErrorIs(t, <-done, context.Canceled) }()
	<-f.reading()

	links := func() int {
		t.Helper()
		paths, err := testutil.UprobePaths()
		require.NoError(t, err)
		n := 0
		for _, p := range paths {
			if p == bin {
				n++
			}
		}
		return n
	}
	// One link per function with uprobe_multi, else one per place.
	want := map[string]int{}
	for _, p := range plan.Probes {
		if f.probe.AttachMode() == "perf_event" || want[p.Symbol] == 0 {
			want[p.Symbol]++
		}
	}
	parse, count := want[gofunc.Planned[0]], want[gofunc.Planned[1]]
	require.Positive(t, parse)
	require.Positive(t, count)
	require.Zero(t, links())

	var ctrs []lifecycle.Container
	var dirs []string
	for i := range 2 {
		dir, id, err := h.Create(fmt.Sprintf("inuse-test/detach-%d-%d", i, time.Now().UnixNano()))
		require.NoError(t, err)
		t.Cleanup(func() { _ = cgroups.Remove(dir) })
		require.NoError(t, s.Track(id))
		c := lifecycle.Container{ID: fmt.Sprint("c", i), CgroupID: id, Image: lifecycle.Image{Digest: "sha256:" + strings.Repeat("d", 64)}}
		f.start(c, "/", dir)
		ctrs, dirs = append(ctrs, c), append(dirs, dir)
	}
	require.Equal(t, parse+count, links(), "both containers share the image's probes")

	cmd := exec.Command(bin, "bench", "1000") // calls Parse only
	require.NoError(t, h.Start(cmd, dirs[0]))
	require.NoError(t, cmd.Wait())
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(symbols) == 1 }, 10*time.Second, 10*time.Millisecond)
	f.wait() // the detach runs apart
	require.Equal(t, []string{gofunc.Planned[0]}, symbols)
	require.Equal(t, count, links(), "Parse's probes went with its first hit, Count's stay")
	traps, err := f.probe.Traps()
	require.NoError(t, err)
	t.Logf("%d traps of 1,000 calls before the detach", traps)

	f.stopped(ctrs[0])
	f.wait()
	require.Equal(t, count, links(), "another container of the image runs")
	f.stopped(ctrs[1])
	f.wait()
	require.Zero(t, links(), "the last container of the image went")
}
