package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
)

// dockerd is Debian's dockerd with all its state in a temporary directory.
type dockerd struct {
	host string // DOCKER_HOST
	cli  *client.Client
}

func startDockerd(t *testing.T) *dockerd {
	t.Helper()
	bin, err := exec.LookPath("dockerd")
	require.NoError(t, err, "dockerd is missing: scripts/runtimes.sh installs Debian's docker.io")
	rt, err := os.MkdirTemp("", "inuse-dockerd-")
	require.NoError(t, err)
	sock := filepath.Join(rt, "docker.sock")
	cmd := exec.Command(bin, "--data-root", filepath.Join(rt, "root"), "--exec-root", filepath.Join(rt, "exec"),
		"-H", "unix://"+sock, "--pidfile", filepath.Join(rt, "dockerd.pid"),
		"--bridge=none", "--iptables=false", "--ip-forward=false")
	// Debian's containerd (1.6), not one of the project's builds.
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	logf, err := os.Create(filepath.Join(rt, "dockerd.log"))
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	require.NoError(t, cmd.Start())
	d := &dockerd{host: "unix://" + sock}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(unix.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		_ = exec.Command("umount", "-R", "-l", filepath.Join(rt, "root")).Run()
		_ = exec.Command("umount", "-R", "-l", filepath.Join(rt, "exec")).Run()
		os.RemoveAll(rt)
	})
	d.cli, err = client.NewClientWithOpts(client.WithHost(d.host), client.WithAPIVersionNegotiation())
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := d.cli.Ping(context.Background()); err == nil {
			return d
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(rt, "dockerd.log"))
			t.Fatalf("dockerd did not start:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// importImage imports a root file system as an image and returns its id.
func (d *dockerd) importImage(t *testing.T, root, ref string, changes ...string) string {
	t.Helper()
	ctx := context.Background()
	rc, err := d.cli.ImageImport(ctx, image.ImportSource{Source: tarDir(t, root), SourceName: "-"}, ref, image.ImportOptions{Changes: changes})
	require.NoError(t, err)
	_, _ = rc.Read(make([]byte, 1<<16))
	rc.Close()
	info, err := d.cli.ImageInspect(ctx, ref)
	require.NoError(t, err)
	return info.ID
}

// run starts a container and returns its id; wait blocks until it exits.
func (d *dockerd) run(t *testing.T, ref string, cmd ...string) (id string, wait func()) {
	t.Helper()
	ctx := context.Background()
	created, err := d.cli.ContainerCreate(ctx, &container.Config{Image: ref, Cmd: cmd}, &container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	require.NoError(t, err)
	statusC, errC := d.cli.ContainerWait(ctx, created.ID, container.WaitConditionNextExit)
	require.NoError(t, d.cli.ContainerStart(ctx, created.ID, container.StartOptions{}))
	return created.ID, func() {
		select {
		case st := <-statusC:
			require.Zero(t, st.StatusCode)
		case err := <-errC:
			require.NoError(t, err)
		case <-time.After(60 * time.Second):
			t.Fatal("container did not exit")
		}
	}
}

// A container whose entrypoint exits at once: it is over before dockerd
// reports its start, so only early tracking sees it. Its entrypoint, its
// ELF loader and its shared libraries are attributed to its image.
func TestDockerShortLivedContainer(t *testing.T) {
	testutil.RequirePrivileged(t)
	d := startDockerd(t)
	srv := redistest.Start(t)
	root, loader := dynamicRoot(t)
	imageID := d.importImage(t, root, "inuse-test/true:1", `CMD ["/usr/bin/true"]`)

	a := startAgent(t, []string{"DOCKER_HOST=" + d.host}, "--redis", srv.URL(), "--nri-socket", "", "--flush-interval", "200ms", "--node-name", "e2e")
	id, wait := d.run(t, "inuse-test/true:1")
	wait()

	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	p := waitProfile(t, st, imageID, func(p *store.Profile) bool {
		return has(p, store.Executed, "/usr/bin/true") && has(p, store.Mapped, "/usr/lib/x86_64-linux-gnu/libc.so.6")
	})
	require.True(t, has(p, store.Executed, loader), "ELF loader %s in %v", loader, p.Sections[store.Executed])
	require.True(t, has(p, store.FilesRead, "/usr/lib/x86_64-linux-gnu/libc.so.6"))
	require.Equal(t, []string{id}, p.Containers)
	require.Equal(t, []string{"inuse-test/true:1"}, p.Names)
	require.Zero(t, p.Meta.PartialContainers)
	for _, sec := range []store.Section{store.FilesRead, store.Executed, store.Mapped} {
		for _, e := range p.Sections[sec] {
			require.False(t, strings.Contains(e.Value, "/var/lib/") || strings.Contains(e.Value, "inuse-dockerd"), "host path %s", e.Value)
		}
	}
	a.stop(t)
}

// The agent killed while a container runs, and started again: the running
// container is found again and marked partial.
func TestDockerAgentRestartMarksPartial(t *testing.T) {
	testutil.RequirePrivileged(t)
	d := startDockerd(t)
	srv := redistest.Start(t)
	imageID := d.importImage(t, testutil.BusyboxRoot(t), "inuse-test/busybox:1", `CMD ["/bin/sh"]`)
	env := []string{"DOCKER_HOST=" + d.host}
	args := []string{"--redis", srv.URL(), "--nri-socket", "", "--flush-interval", "200ms"}

	first := startAgent(t, env, args...)
	id, _ := d.run(t, "inuse-test/busybox:1", "sh", "-c", "while true; do cat /etc/passwd >/dev/null; sleep 0.2; done")
	t.Cleanup(func() { _ = d.cli.ContainerKill(context.Background(), id, "KILL") })
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	waitProfile(t, st, imageID, func(p *store.Profile) bool { return has(p, store.FilesRead, "/etc/passwd") })
	first.kill()

	// The container's profile is cleared so that what follows can only
	// come from the second agent.
	require.NoError(t, exec.Command("redis-cli", "-h", srv.Host, "-p", strconv.Itoa(srv.Port), "FLUSHALL").Run())
	second := startAgent(t, env, args...)
	p := waitProfile(t, st, imageID, func(p *store.Profile) bool {
		return has(p, store.FilesRead, "/etc/passwd") && p.Meta.PartialContainers > 0
	})
	require.Equal(t, []string{id}, p.Containers)
	require.Equal(t, store.Low, p.Confidence, "a partial container lowers confidence")
	second.stop(t)
}
