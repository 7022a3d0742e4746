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
	bin, plan, err := gofunc.Build(t.TempDir(), true)
	require.NoError(t, err)
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
			h, err := cgroups.Unified()
			if tc.controller != "" {
				h, err = cgroups.V1Controller(tc.controller)
			}
			require.NoError(t, err)
			s, err := sensor.Open(slog.New(slog.DiscardHandler), sensor.Config{CgroupV1Controller: tc.controller})
			require.NoError(t, err)
			defer s.Close()
			tracking, err := s.Tracking()
			require.NoError(t, err)
			p, err := funcprobe.Open(tracking)
			if errors.Is(err, funcprobe.ErrNoAttachCookie) {
				t.Skipf("this kernel cannot probe functions: %v", err)
			}
			require.NoError(t, err)
			defer p.Close()

			exe, err := link.OpenExecutable(bin)
			require.NoError(t, err)
			const cookie = 7
			links, err := p.Attach(exe, []uint64{plan.Probes[0].Offset}, []uint64{cookie}) // Parse's entry
			require.NoError(t, err)
			defer func() {
				for _, l := range links {
					require.NoError(t, l.Close())
				}
			}()
			require.Equal(t, gofunc.Planned[0], plan.Probes[0].Symbol)

			ctx, cancel := context.WithCancel(t.Context())
			var mu sync.Mutex
			var hits []funcprobe.Hit
			done := make(chan error, 1)
			go func() {
				done <- p.Run(ctx, func(h funcprobe.Hit) { mu.Lock(); hits = append(hits, h); mu.Unlock() })
			}()

			untrackedDir, _ := testCgroup(t, h)
			trackedDir, id := testCgroup(t, h)
			require.NoError(t, s.Track(id))
			run := func(dir string) int {
				cmd := exec.Command(bin, "bench", "1000")
				require.NoError(t, h.Start(cmd, dir))
				require.NoError(t, cmd.Wait())
				return cmd.Process.Pid
			}
			run(untrackedDir)
			pid := run(trackedDir)
			cancel()
			require.ErrorIs(t, <-done, context.Canceled)

			require.Len(t, hits, 1)
			require.Equal(t, funcprobe.Hit{CgroupID: id, Cookie: cookie, PID: uint32(pid), Monotonic: hits[0].Monotonic}, hits[0])
			traps, err := p.Traps()
			require.NoError(t, err)
			require.EqualValues(t, 2000, traps)
		})
	}
}

func testCgroup(t *testing.T, h cgroups.Hierarchy) (string, uint64) {
	t.Helper()
	dir, id, err := h.Create(fmt.Sprintf("inuse-test/%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cgroups.Remove(dir) })
	return dir, id
}
