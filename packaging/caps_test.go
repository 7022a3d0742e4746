package packaging

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/tests/runtimes"
)

// capBits are the capability numbers of linux/capability.h.
var capBits = map[string]uint{"DAC_READ_SEARCH": 2, "SYS_PTRACE": 19, "SYS_ADMIN": 21, "PERFMON": 38, "BPF": 39}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The agent runs with the chart's capabilities and no others, as the
// DaemonSet's container does (uid 0, everything else dropped from the
// bounding set), on the real kernel: it tracks a cgroup the moment it is
// made, sees what runs in it, and reports it on /metrics. Without any one
// of the capabilities it fails, which is why each is granted.
func TestAgentRunsWithChartCapabilities(t *testing.T) {
	testutil.RequirePrivileged(t)
	setpriv, err := exec.LookPath("setpriv")
	require.NoError(t, err, "setpriv (util-linux) sets the capability bounding set")
	h, err := cgroups.Unified()
	require.NoError(t, err, "early tracking needs cgroup2")
	bin := binary(t, "inuse-agent")
	srv := redistest.Start(t)
	chartCaps := documentedCapabilities(t)

	without := func(c string) []string {
		var out []string
		for _, x := range chartCaps {
			if x != c {
				out = append(out, x)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		caps []string
		// fails: the agent exits with this in its error; else it runs and
		// logs warn, if set.
		fails, warns string
	}{
		{name: "the chart's capabilities", caps: chartCaps},
		{name: "without BPF", caps: without("BPF"), fails: "operation not permitted"},
		{name: "without PERFMON", caps: without("PERFMON"), fails: "operation not permitted"},
		// The kernel tracks the cgroup at mkdir, but the agent cannot open
		// it to poll or untrack it, nor track a container at NRI's
		// StartContainer.
		{name: "without DAC_READ_SEARCH", caps: without("DAC_READ_SEARCH"), warns: "opening cgroup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bounding := "-all"
			var want uint64
			for _, c := range tc.caps {
				bounding += ",+" + strings.ToLower(c)
				want |= 1 << capBits[c]
			}
			prefix := fmt.Sprintf("/inuse-test/caps-%d-", time.Now().UnixNano())
			addr := testutil.FreeAddr(t)
			var stderr syncBuffer
			cmd := exec.Command(setpriv, "--bounding-set", bounding, "--inh-caps=-all", "--",
				bin, "--log-format", "json", "run", "--redis", srv.URL(), "--nri-socket", "", "--docker=false",
				"--early-cgroup-prefix", prefix, "--metrics-listen", addr, "--flush-interval", "200ms")
			cmd.Stderr = &stderr
			require.NoError(t, cmd.Start())
			exited := make(chan struct{})
			var waitErr error
			go func() { waitErr = cmd.Wait(); close(exited) }()
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-exited
			})

			if tc.fails != "" {
				select {
				case <-exited:
					require.Error(t, waitErr, "the agent ran without %v", tc.caps)
					require.Contains(t, stderr.String(), tc.fails)
				case <-time.After(60 * time.Second):
					t.Fatalf("the agent kept running with only %v:\n%s", tc.caps, stderr.String())
				}
				return
			}

			scrape := func() string {
				resp, err := http.Get("http://" + addr + "/metrics")
				if err != nil {
					return ""
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return string(b)
			}
			waitFor := func(what string, cond func(string) bool) string {
				t.Helper()
				deadline := time.Now().Add(60 * time.Second)
				for {
					if body := scrape(); cond(body) {
						return body
					}
					select {
					case <-exited:
						t.Fatalf("agent exited (%v):\n%s", waitErr, stderr.String())
					default:
					}
					if time.Now().After(deadline) {
						t.Fatalf("metrics never showed %s; agent log:\n%s", what, stderr.String())
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			waitFor("the agent", func(b string) bool { return b != "" })
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
			require.NoError(t, err)
			m := regexp.MustCompile(`(?m)^CapEff:\s+([0-9a-f]+)$`).FindSubmatch(status)
			require.NotNil(t, m)
			eff, err := strconv.ParseUint(string(m[1]), 16, 64)
			require.NoError(t, err)
			require.Equal(t, fmt.Sprintf("%#x", want), fmt.Sprintf("%#x", eff), "the agent holds exactly %v", tc.caps)

			cg, _, err := h.Create(prefix + "c1")
			require.NoError(t, err)
			t.Cleanup(func() { _ = cgroups.Remove(cg) })
			run := exec.Command("cat", "/etc/hostname")
			run.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWNS} // a mount namespace of its own, as a container's
			require.NoError(t, h.Start(run, cg))
			require.NoError(t, run.Wait())
			body := waitFor("the cgroup and what ran in it", func(b string) bool {
				return testutil.MetricValue(b, `inuse_agent_sensor_events_total{kind="cgroup"}`) == 1 &&
					testutil.MetricValue(b, `inuse_agent_sensor_events_total{kind="exec"}`) >= 1 &&
					testutil.MetricValue(b, `inuse_agent_sensor_events_total{kind="file"}`) >= 1
			})
			require.Equal(t, 0.0, testutil.MetricValue(body, `inuse_agent_collector_flush_failures_total`))

			if tc.warns != "" {
				require.Eventually(t, func() bool { return strings.Contains(stderr.String(), tc.warns) }, 10*time.Second, 100*time.Millisecond,
					"the agent says what it could not do:\n%s", stderr.String())
			}
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			select {
			case <-exited:
				require.NoError(t, waitErr, stderr.String())
			case <-time.After(30 * time.Second):
				t.Fatal("the agent did not stop on SIGTERM")
			}
			if tc.warns == "" {
				require.NotContains(t, stderr.String(), "operation not permitted")
			}
		})
	}
}

// Seeding runs under exactly the chart's capabilities, as the DaemonSet's
// container does: two containers run in a CRI pod before the agent starts,
// one as root with the runtime's default capabilities and one as a
// non-root user, and both are seeded from /proc once NRI's Synchronize
// lists them. The kernel lets a reader see another process's
// /proc/PID/{root,exe,maps,fd} only through ptrace_may_access: without
// CAP_SYS_PTRACE both are refused (the root one holds capabilities the
// agent lacks, the other is another user's), and the agent must say so on
// /metrics and in its log rather than seed nothing silently.
func TestAgentSeedsWithChartCapabilities(t *testing.T) {
	testutil.RequirePrivileged(t)
	setpriv, err := exec.LookPath("setpriv")
	require.NoError(t, err, "setpriv (util-linux) sets the capability bounding set")
	bin := binary(t, "inuse-agent")
	chartCaps := documentedCapabilities(t)
	require.Contains(t, chartCaps, "SYS_PTRACE", "seeding reads other processes' /proc files")

	c := runtimes.StartContainerd(t, nil)
	c.ImportPause(t)
	root := testutil.BusyboxRoot(t)
	// Two images (their commands differ): two profiles.
	cmd := []string{"/bin/sh", "-c", "exec 3</etc/passwd; exec /bin/busybox sleep 3600"}
	rootDigest := c.ImportImage(t, root, "docker.io/inuse-test/caps-root:1", cmd...)
	userDigest := c.ImportImage(t, root, "docker.io/inuse-test/caps-user:1", append(slices.Clone(cmd[:2]), cmd[2]+" # user")...)
	require.NotEqual(t, rootDigest, userDigest)
	pod := c.RunPod(t, "caps-7c9d8f6b5-a1b2c", "shop", "uid-caps")
	uid := int64(1000)
	ids := map[string]string{
		rootDigest: c.RunWith(t, runtimes.RunOptions{}, pod, "docker.io/inuse-test/caps-root:1", "root"),
		userDigest: c.RunWith(t, runtimes.RunOptions{User: &uid}, pod, "docker.io/inuse-test/caps-user:1", "user"),
	}
	for digest, id := range ids {
		status, err := c.CRI.ContainerStatus(context.Background(), &cri.ContainerStatusRequest{ContainerId: id, Verbose: true})
		require.NoError(t, err)
		var info struct{ Pid int }
		require.NoError(t, json.Unmarshal([]byte(status.Info["info"]), &info))
		// The shell has exec'd busybox sleep with /etc/passwd open.
		require.Eventually(t, func() bool {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", info.Pid))
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", info.Pid))
			return strings.HasSuffix(l, "/etc/passwd") && strings.Contains(string(cmdline), "sleep")
		}, 30*time.Second, 50*time.Millisecond, "container of %s never ran its command", digest)
	}

	without := func(c string) []string {
		return slices.DeleteFunc(slices.Clone(chartCaps), func(x string) bool { return x == c })
	}
	for _, tc := range []struct {
		name string
		caps []string
		// refused: seeding is refused for both containers, and says so.
		refused bool
	}{
		{name: "the chart's capabilities", caps: chartCaps},
		{name: "without SYS_PTRACE", caps: without("SYS_PTRACE"), refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			st, err := store.Open(srv.URL())
			require.NoError(t, err)
			t.Cleanup(func() { _ = st.Close() })
			bounding := "-all"
			for _, c := range tc.caps {
				bounding += ",+" + strings.ToLower(c)
			}
			addr := testutil.FreeAddr(t)
			var stderr syncBuffer
			cmd := exec.Command(setpriv, "--bounding-set", bounding, "--inh-caps=-all", "--",
				bin, "--log-format", "json", "run", "--redis", srv.URL(), "--nri-socket", c.NRI, "--docker=false",
				"--containerd-address", c.Socket, "--metrics-listen", addr, "--flush-interval", "200ms")
			cmd.Stderr = &stderr
			require.NoError(t, cmd.Start())
			exited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(exited) }()
			t.Cleanup(func() {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(20 * time.Second):
					_ = cmd.Process.Kill()
					<-exited
				}
				if t.Failed() {
					t.Logf("agent log:\n%s", stderr.String())
				}
			})
			refusals := func() float64 {
				resp, err := http.Get("http://" + addr + "/metrics")
				if err != nil {
					return -1
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return testutil.MetricValue(string(b), `inuse_agent_privilege_refusals_total{feature="seed"}`)
			}
			if tc.refused {
				// One refusal per container process, each container's
				// first one logged.
				require.Eventually(t, func() bool { return refusals() >= 2 }, 60*time.Second, 100*time.Millisecond,
					"the agent never counted the refused seeding:\n%s", stderr.String())
				require.Contains(t, stderr.String(), "seeding refused for lack of privilege")
				return
			}
			for digest := range ids {
				deadline := time.Now().Add(60 * time.Second)
				for {
					p, err := st.Profile(context.Background(), digest, time.Now(), store.DefaultLearning)
					if err == nil && seeded(p, store.Exec, "/bin/busybox") && seeded(p, store.FilesRead, "/etc/passwd") {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("the container of %s was never seeded (refusals: %v)", digest, refusals())
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
			require.Zero(t, refusals())
			require.NotContains(t, stderr.String(), "refused")
		})
	}
}

// seeded reports whether p holds value in sec, marked as seeded.
func seeded(p *store.Profile, sec store.Section, value string) bool {
	var in, marked bool
	for _, e := range p.Sections[sec] {
		in = in || e.Value == value
	}
	for _, e := range p.Sections[store.Seeded] {
		marked = marked || e.Value == store.SectionMember(sec, value)
	}
	return in && marked
}
