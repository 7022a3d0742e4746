package funcprobe_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/bench/funcprobe/gofunc"
	"github.com/inuse-dev/inuse/bpf/funcprobe"
	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/testutil"
)

// A probe at a Go function's entry fires on every call, tracked cgroup or
// not (Traps), and reports the first call of each tracked cgroup once: an
// untracked process is not reported, a tracked one calling 1,000 times is
// reported once, with the probe's cookie. On cgroup2 and on the v1
// fallback, whose tracking maps come from the sensor alike, and with the
// perf event uprobes of kernels before uprobe_multi links.
func TestFunctionProbe(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, tc := range []struct {
		name       string
		controller string
		perfEvents bool
	}{{"cgroup2", "", false}, {"v1", "memory", false}, {"perf events", "", true}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.perfEvents {
				funcprobe.WithoutUprobeMulti(t)
			}
			if tc.controller != "" {
				testutil.RequireCgroupV1(t)
			}
			const cookie = 7
			pt := openParseProbe(t, tc.controller, cookie)
			untrackedDir, _ := testCgroup(t, pt.h)
			trackedDir, id := testCgroup(t, pt.h)
			require.NoError(t, pt.s.Track(id))
			pt.run(untrackedDir)
			pid := pt.run(trackedDir)
			hits := pt.stop()

			require.Len(t, hits, 1)
			require.Equal(t, funcprobe.Hit{CgroupID: id, Cookie: cookie, PID: uint32(pid), Monotonic: hits[0].Monotonic}, hits[0])
			traps, err := pt.p.Traps()
			require.NoError(t, err)
			require.EqualValues(t, 2000, traps)
		})
	}
}

// A probe is done after the first call in a cgroup of its owner (the high
// bits of its cookie): a cgroup of another owner is reported and leaves it
// armed, and once done, no cgroup is reported any more. Every call still
// traps until the probe is detached.
func TestFunctionProbeDone(t *testing.T) {
	testutil.RequirePrivileged(t)
	cookie := funcprobe.Cookie(1, 7)
	pt := openParseProbe(t, "", cookie)
	var ids []uint64
	var dirs []string
	for _, owner := range []uint32{2, 1, 1} {
		dir, id := testCgroup(t, pt.h)
		require.NoError(t, pt.s.Track(id))
		require.NoError(t, pt.p.Own(id, owner))
		dirs, ids = append(dirs, dir), append(ids, id)
	}
	for _, dir := range dirs {
		pt.run(dir)
	}
	hits := pt.stop()
	var got []uint64
	for _, h := range hits {
		require.Equal(t, cookie, h.Cookie)
		got = append(got, h.CgroupID)
	}
	require.Equal(t, ids[:2], got, "another owner's cgroup, then the owner's first; none after")
	traps, err := pt.p.Traps()
	require.NoError(t, err)
	require.EqualValues(t, 3000, traps)

	_, err = pt.p.Attach(pt.exe, []uint64{0x10}, []uint64{0})
	require.ErrorIs(t, err, funcprobe.ErrZeroCookie)
}

// parseProbe is a probe at Parse's entry in the test target, its hits
// read until stop.
type parseProbe struct {
	t    *testing.T
	h    cgroups.Hierarchy
	s    *sensor.Sensor
	p    *funcprobe.Probe
	exe  *link.Executable
	bin  string
	stop func() []funcprobe.Hit
}

// openParseProbe opens the sensor (on the v1 controller, when given) and
// the probe, and attaches it at Parse's entry with cookie.
func openParseProbe(t *testing.T, controller string, cookie uint64) *parseProbe {
	t.Helper()
	bin, plan, err := gofunc.Build(t.TempDir(), true)
	require.NoError(t, err)
	require.Equal(t, gofunc.Planned[0], plan.Probes[0].Symbol)
	h, err := cgroups.Unified()
	if controller != "" {
		h, err = cgroups.V1Controller(controller)
	}
	require.NoError(t, err)
	s, err := sensor.Open(slog.New(slog.DiscardHandler), sensor.Config{CgroupV1Controller: controller})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	tracking, err := s.Tracking()
	require.NoError(t, err)
	p, err := funcprobe.Open(tracking)
	if errors.Is(err, funcprobe.ErrNoAttachCookie) {
		t.Skipf("this kernel cannot probe functions: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })

	exe, err := link.OpenExecutable(bin)
	require.NoError(t, err)
	links, err := p.Attach(exe, []uint64{plan.Probes[0].Offset}, []uint64{cookie}) // Parse's entry
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, l := range links {
			require.NoError(t, l.Close())
		}
	})

	ctx, cancel := context.WithCancel(t.Context())
	var mu sync.Mutex
	var hits []funcprobe.Hit
	done := make(chan error, 1)
	go func() {
		done <- p.Run(ctx, func(h funcprobe.Hit) { mu.Lock(); hits = append(hits, h); mu.Unlock() })
	}()
	stop := func() []funcprobe.Hit {
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		return hits
	}
	return &parseProbe{t: t, h: h, s: s, p: p, exe: exe, bin: bin, stop: stop}
}

// run runs the target in the cgroup at dir, calling Parse 1,000 times,
// and returns its pid.
func (pt *parseProbe) run(dir string) int {
	cmd := exec.Command(pt.bin, "bench", "1000")
	require.NoError(pt.t, pt.h.Start(cmd, dir))
	require.NoError(pt.t, cmd.Wait())
	return cmd.Process.Pid
}

func testCgroup(t *testing.T, h cgroups.Hierarchy) (string, uint64) {
	t.Helper()
	dir, id, err := h.Create(fmt.Sprintf("inuse-test/%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cgroups.Remove(dir) })
	return dir, id
}
