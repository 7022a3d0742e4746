package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/testutil"
)

// `run --metrics-listen` answers /metrics with what the real sensor saw: a
// cgroup made under an early prefix and the command run in it.
func TestRunServesMetrics(t *testing.T) {
	testutil.RequirePrivileged(t)
	srv := redistest.Start(t)
	h, err := cgroups.Unified()
	require.NoError(t, err)
	prefix := fmt.Sprintf("/inuse-test/metrics-%d-", time.Now().UnixNano())
	addr := testutil.FreeAddr(t)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- runAgent(ctx, "run", "--redis", srv.URL(), "--nri-socket", "", "--docker=false",
			"--early-cgroup-prefix", prefix, "--metrics-listen", addr, "--flush-interval", "200ms")
	}()
	scrape := func() (string, error) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("status %s", resp.Status)
		}
		return string(b), err
	}
	waitFor := func(what string, cond func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			body, err := scrape()
			if err == nil && cond(body) {
				return body
			}
			select {
			case err := <-done:
				t.Fatalf("agent ended early: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("metrics never showed %s; last error %v, body:\n%s", what, err, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	body := waitFor("the agent", func(string) bool { return true })
	require.Equal(t, 0.0, testutil.MetricValue(body, `inuse_agent_sensor_events_total{kind="cgroup"}`))
	require.Equal(t, 0.0, testutil.MetricValue(body, `inuse_agent_collector_flush_failures_total`))
	require.NotContains(t, body, "inuse_agent_discovery_handled_total", "no NRI or dockerd in this run")

	cg, _, err := h.Create(prefix + "c1")
	require.NoError(t, err)
	t.Cleanup(func() { _ = cgroups.Remove(cg) })
	cmd := exec.Command("cat", "/etc/hostname")
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWNS} // a mount namespace of its own, as a container's
	require.NoError(t, h.Start(cmd, cg))
	require.NoError(t, cmd.Wait())

	body = waitFor("the cgroup and its exec", func(b string) bool {
		return testutil.MetricValue(b, `inuse_agent_sensor_events_total{kind="cgroup"}`) == 1 &&
			testutil.MetricValue(b, `inuse_agent_sensor_events_total{kind="exec"}`) >= 1
	})
	require.GreaterOrEqual(t, testutil.MetricValue(body, `inuse_agent_sensor_events_total{kind="file"}`), 1.0)
	// Nobody names the cgroup: its events wait in the registry, unfolded.
	require.Equal(t, 0.0, testutil.MetricValue(body, `inuse_agent_collector_observations_total`))
	require.Equal(t, 0.0, testutil.MetricValue(body, `inuse_agent_registry_expired_cgroups_total`))

	cancel()
	require.NoError(t, <-done)
	_, err = scrape()
	require.Error(t, err, "metrics still served after the agent stopped")
}
