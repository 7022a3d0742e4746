package tests

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/tests/runtimes"
)

// A container whose entrypoint exits at once: it is over before dockerd
// reports its start, so only early tracking sees it. Its entrypoint, its
// ELF loader and its shared libraries are attributed to its image.
func TestDockerShortLivedContainer(t *testing.T) {
	testutil.RequirePrivileged(t)
	d := runtimes.StartDockerd(t)
	srv := redistest.Start(t)
	root, loader := dynamicRoot(t)
	imageID := d.ImportImage(t, root, "inuse-test/true:1", `CMD ["/usr/bin/true"]`)

	a := runtimes.StartAgent(t, agentBinary, []string{"DOCKER_HOST=" + d.Host}, "--redis", srv.URL(), "--nri-socket", "", "--flush-interval", "200ms", "--node-name", "e2e")
	id, wait := d.Run(t, "inuse-test/true:1")
	wait()

	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	p := waitProfile(t, st, imageID, func(p *store.Profile) bool {
		return has(p, store.Exec, "/usr/bin/true") && has(p, store.Mapped, "/usr/lib/x86_64-linux-gnu/libc.so.6")
	})
	require.True(t, has(p, store.Exec, loader), "ELF loader %s in %v", loader, p.Sections[store.Exec])
	require.True(t, has(p, store.FilesRead, "/usr/lib/x86_64-linux-gnu/libc.so.6"))
	require.Equal(t, []string{id}, p.Containers)
	require.Equal(t, []string{"inuse-test/true:1"}, p.Names)
	require.Zero(t, p.Meta.PartialContainers)
	for _, sec := range []store.Section{store.FilesRead, store.Exec, store.Mapped} {
		for _, e := range p.Sections[sec] {
			require.False(t, strings.Contains(e.Value, "/var/lib/") || strings.Contains(e.Value, "inuse-dockerd"), "host path %s", e.Value)
		}
	}
	a.Stop(t)
}

// The agent killed while a container runs, and started again: the running
// container is found again and marked partial.
func TestDockerAgentRestartMarksPartial(t *testing.T) {
	testutil.RequirePrivileged(t)
	d := runtimes.StartDockerd(t)
	srv := redistest.Start(t)
	imageID := d.ImportImage(t, testutil.BusyboxRoot(t), "inuse-test/busybox:1", `CMD ["/bin/sh"]`)
	env := []string{"DOCKER_HOST=" + d.Host}
	args := []string{"--redis", srv.URL(), "--nri-socket", "", "--flush-interval", "200ms"}

	first := runtimes.StartAgent(t, agentBinary, env, args...)
	id, _ := d.Run(t, "inuse-test/busybox:1", "sh", "-c", "while true; do cat /etc/passwd >/dev/null; sleep 0.2; done")
	t.Cleanup(func() { _ = d.Client.ContainerKill(context.Background(), id, "KILL") })
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	waitProfile(t, st, imageID, func(p *store.Profile) bool { return has(p, store.FilesRead, "/etc/passwd") })
	first.Kill()

	// The container's profile is cleared so that what follows can only
	// come from the second agent.
	require.NoError(t, exec.Command("redis-cli", "-h", srv.Host, "-p", strconv.Itoa(srv.Port), "FLUSHALL").Run())
	second := runtimes.StartAgent(t, agentBinary, env, args...)
	p := waitProfile(t, st, imageID, func(p *store.Profile) bool {
		return has(p, store.FilesRead, "/etc/passwd") && p.Meta.PartialContainers > 0
	})
	require.Equal(t, []string{id}, p.Containers)
	require.Equal(t, store.Low, p.Confidence, "a partial container lowers confidence")
	second.Stop(t)
}
