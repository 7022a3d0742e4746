// Package runtimes runs the real components the end-to-end tests drive:
// containerd 2.4.2 with CRI and NRI, Debian's dockerd and `inuse-agent run`,
// each with its state in a temporary directory and ended by t.Cleanup.
package runtimes

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/inuse-dev/inuse/internal/testutil"
)

// Agent is a running `inuse-agent run`.
type Agent struct {
	cmd *exec.Cmd

	mu     sync.Mutex
	lines  []string // every line the agent logged
	exited bool
	seen   int // lines up to the last WaitLog match
}

// StartAgent runs the agent binary bin and waits until it says it runs.
func StartAgent(t *testing.T, bin string, env []string, args ...string) *Agent {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--log-format", "json", "--log-level", "debug", "run"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	a := &Agent{cmd: cmd}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			a.mu.Lock()
			a.lines = append(a.lines, sc.Text())
			a.mu.Unlock()
		}
		a.mu.Lock()
		a.exited = true
		a.mu.Unlock()
	}()
	t.Cleanup(func() {
		a.Kill()
		if t.Failed() {
			a.mu.Lock()
			defer a.mu.Unlock()
			t.Logf("agent log (last %d lines):\n%s", min(len(a.lines), 200), strings.Join(a.lines[max(0, len(a.lines)-200):], "\n"))
		}
	})
	a.waitLog(t, "agent running", false)
	return a
}

// PeakRSS is the agent's peak resident memory so far (VmHWM).
func (a *Agent) PeakRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(t, err)
			return kib << 10
		}
	}
	t.Fatal("no VmHWM in the agent's status")
	return 0
}

// WaitLog waits for a log line, after those WaitLog already matched,
// whose message contains msg.
func (a *Agent) WaitLog(t *testing.T, msg string) {
	t.Helper()
	a.waitLog(t, msg, true)
}

// waitLog finds the next line with msg from the cursor; consume moves the
// cursor past it. StartAgent's wait for "agent running" does not consume:
// lines the agent logs before it (NRI connects concurrently) are still
// there for WaitLog.
func (a *Agent) waitLog(t *testing.T, msg string, consume bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		a.mu.Lock()
		exited := a.exited
		for i := a.seen; i < len(a.lines); i++ {
			var l struct{ Msg string }
			if json.Unmarshal([]byte(a.lines[i]), &l) == nil && strings.Contains(l.Msg, msg) {
				if consume {
					a.seen = i + 1
				}
				a.mu.Unlock()
				return
			}
		}
		a.mu.Unlock()
		switch {
		case exited:
			t.Fatalf("agent exited before logging %q", msg)
		case time.Now().After(deadline):
			t.Fatalf("agent never logged %q", msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Lines returns every line the agent logged so far.
func (a *Agent) Lines() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.lines)
}

// Stop ends the agent as systemd or Kubernetes would, and waits.
func (a *Agent) Stop(t *testing.T) {
	t.Helper()
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, a.cmd.Wait())
}

// Kill ends the agent without a chance to clean up, as a crash would.
func (a *Agent) Kill() {
	if a.cmd.ProcessState == nil {
		_ = a.cmd.Process.Kill()
		_ = a.cmd.Wait()
	}
}

func CopyFile(t *testing.T, from, to string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(to), 0o755))
	in, err := os.Open(from)
	require.NoError(t, err)
	defer in.Close()
	st, err := in.Stat()
	require.NoError(t, err)
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	require.NoError(t, err)
	defer out.Close()
	_, err = io.Copy(out, in)
	require.NoError(t, err)
}

// TarDir packs dir as a tar stream, as `docker import` takes it.
func TarDir(t *testing.T, dir string) io.Reader {
	t.Helper()
	out, err := exec.Command("tar", "-C", dir, "-cf", "-", ".").Output()
	require.NoError(t, err)
	return strings.NewReader(string(out))
}

// Containerd is containerd 2.4.2 (built by scripts/runtimes.sh) with CRI
// and NRI, all its state in a temporary directory.
type Containerd struct {
	Dir    string // all its state
	Socket string // CRI and containerd's API
	NRI    string // NRI socket
	cmd    *exec.Cmd
	conn   *grpc.ClientConn
	CRI    cri.RuntimeServiceClient
}

func CacheBin(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("INUSE_CACHE")
	if dir == "" {
		dir = filepath.Join(os.Getenv("HOME"), ".cache", "inuse")
	}
	p := filepath.Join(dir, "bin", name)
	_, err := os.Stat(p)
	require.NoError(t, err, "%s is missing: scripts/runtimes.sh builds it", name)
	return p
}

// StartContainerd starts containerd; plugins (file name -> binary) are
// installed in its NRI plugin directory first, for it to launch.
func StartContainerd(t *testing.T, plugins map[string]string) *Containerd {
	t.Helper()
	rt, err := os.MkdirTemp("/tmp", "ictr") // short: unix socket paths are limited
	require.NoError(t, err)
	testutil.MountTmpfs(t, rt)
	for name, bin := range plugins {
		CopyFile(t, bin, filepath.Join(rt, "nri-plugins", name))
	}
	c := &Containerd{Dir: rt, Socket: filepath.Join(rt, "c.sock"), NRI: filepath.Join(rt, "nri.sock")}
	config := fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'docker.io/inuse-test/pause:1'
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = %q
  plugin_path = %q
  plugin_config_path = %q
`, filepath.Join(rt, "root"), filepath.Join(rt, "state"), c.Socket, c.NRI, filepath.Join(rt, "nri-plugins"), filepath.Join(rt, "nri-conf"))
	require.NoError(t, os.WriteFile(filepath.Join(rt, "config.toml"), []byte(config), 0o644))
	t.Cleanup(func() {
		c.Stop()
		// Shims outlive containerd: end those of this instance.
		_ = exec.Command("pkill", "-KILL", "-f", "containerd-shim-runc-v2 .*"+rt).Run()
		_ = exec.Command("umount", "-R", "-l", rt).Run()
		os.RemoveAll(rt)
	})
	c.Start(t)
	return c
}

func (c *Containerd) Start(t *testing.T) {
	t.Helper()
	bin := CacheBin(t, "containerd")
	c.cmd = exec.Command(bin, "--config", filepath.Join(c.Dir, "config.toml"))
	c.cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	logf, err := os.OpenFile(filepath.Join(c.Dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	require.NoError(t, c.cmd.Start())
	logf.Close()
	c.conn, err = grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	c.CRI = cri.NewRuntimeServiceClient(c.conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.CRI.Version(context.Background(), &cri.VersionRequest{}); err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
			t.Fatalf("containerd did not start:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop kills containerd, as a crash or a restart by systemd would.
func (c *Containerd) Stop() {
	if c.conn != nil {
		c.conn.Close()
	}
	if c.cmd != nil && c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// ImportImage packs root as an image with go-containerregistry, imports
// it into the k8s.io namespace and returns its manifest digest.
func (c *Containerd) ImportImage(t *testing.T, root, ref string, cmd ...string) string {
	t.Helper()
	layer, err := tarball.LayerFromOpener(func() (r io.ReadCloser, err error) { return io.NopCloser(TarDir(t, root)), nil })
	require.NoError(t, err)
	img, err := mutate.AppendLayers(empty.Image, layer)
	require.NoError(t, err)
	cf, err := img.ConfigFile()
	require.NoError(t, err)
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Cmd = cmd
	cf.Config.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	img, err = mutate.ConfigFile(img, cf)
	require.NoError(t, err)
	tag, err := name.NewTag(ref)
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "image.tar")
	require.NoError(t, tarball.WriteToFile(file, tag, img))
	ctr := CacheBin(t, "ctr")
	out, err := exec.Command(ctr, "-a", c.Socket, "-n", "k8s.io", "images", "import", file).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(ctr, "-a", c.Socket, "-n", "k8s.io", "images", "ls").Output()
	require.NoError(t, err)
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == ref {
			return f[2]
		}
	}
	t.Fatalf("%s not in\n%s", ref, out)
	return ""
}

// ImportPause imports the sandbox image containerd is configured with,
// built from tests/testdata/pause.
func (c *Containerd) ImportPause(t *testing.T) {
	t.Helper()
	root := t.TempDir()
	_, err := testutil.Build(root, "github.com/inuse-dev/inuse/tests/testdata/pause")
	require.NoError(t, err)
	c.ImportImage(t, root, "docker.io/inuse-test/pause:1", "/pause")
}

// Pod is one CRI pod sandbox with host networking.
type Pod struct {
	id     string
	config *cri.PodSandboxConfig
}

func (c *Containerd) RunPod(t *testing.T, name, namespace, uid string) Pod {
	t.Helper()
	return c.RunPodWithLabels(t, name, namespace, uid, map[string]string{"pod-template-hash": "7c9d8f6b5"})
}

// RunPodWithLabels runs a pod sandbox with the labels its controller and
// the kubelet would have set.
func (c *Containerd) RunPodWithLabels(t *testing.T, name, namespace, uid string, labels map[string]string) Pod {
	t.Helper()
	cfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: uid},
		Labels:       labels,
		LogDirectory: t.TempDir(),
		Linux: &cri.LinuxPodSandboxConfig{
			CgroupParent:    "/kubepods/besteffort/pod" + uid,
			SecurityContext: &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}},
		},
	}
	resp, err := c.CRI.RunPodSandbox(context.Background(), &cri.RunPodSandboxRequest{Config: cfg})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = c.CRI.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: resp.PodSandboxId})
		_, _ = c.CRI.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId})
	})
	return Pod{id: resp.PodSandboxId, config: cfg}
}

// RunOptions are what some containers need beyond an image and a command.
type RunOptions struct {
	// Mounts bind host directories (values) at container paths (keys).
	Mounts map[string]string
	// Timeout bounds the wait for the container's end; zero: a minute.
	Timeout time.Duration
	// Runtime names the OCI runtime of a Docker container (one that
	// StartDockerdWith added); empty: dockerd's default, Debian's runc.
	Runtime string
	// User runs the container's process as this uid; nil: the image's
	// (root), with the runtime's default capabilities.
	User *int64
}

func (o RunOptions) timeout() time.Duration {
	if o.Timeout == 0 {
		return time.Minute
	}
	return o.Timeout
}

// RunToExit creates and starts a container in the pod and waits for its end.
func (c *Containerd) RunToExit(t *testing.T, p Pod, image, name string, cmd ...string) string {
	t.Helper()
	return c.RunToExitWith(t, RunOptions{Timeout: 30 * time.Second}, p, image, name, cmd...)
}

// RunToExitWith is RunToExit with options.
func (c *Containerd) RunToExitWith(t *testing.T, o RunOptions, p Pod, image, name string, cmd ...string) string {
	t.Helper()
	id := c.startWith(t, o, p, image, name, cmd)
	c.waitStateWithin(t, id, name, cri.ContainerState_CONTAINER_EXITED, o.timeout())
	return id
}

// Run creates and starts a container in the pod and returns its id once it
// runs; it is stopped and removed at the test's end.
func (c *Containerd) Run(t *testing.T, p Pod, image, name string, cmd ...string) string {
	t.Helper()
	return c.RunWith(t, RunOptions{}, p, image, name, cmd...)
}

// RunWith is Run with options.
func (c *Containerd) RunWith(t *testing.T, o RunOptions, p Pod, image, name string, cmd ...string) string {
	t.Helper()
	id := c.startWith(t, o, p, image, name, cmd)
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = c.CRI.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: id})
		_, _ = c.CRI.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: id})
	})
	c.waitState(t, id, name, cri.ContainerState_CONTAINER_RUNNING)
	return id
}

func (c *Containerd) startWith(t *testing.T, o RunOptions, p Pod, image, name string, cmd []string) string {
	t.Helper()
	ctx := context.Background()
	var mounts []*cri.Mount
	for ctrPath, hostPath := range o.Mounts {
		mounts = append(mounts, &cri.Mount{ContainerPath: ctrPath, HostPath: hostPath})
	}
	linux := &cri.LinuxContainerConfig{}
	if o.User != nil {
		linux.SecurityContext = &cri.LinuxContainerSecurityContext{RunAsUser: &cri.Int64Value{Value: *o.User}}
	}
	created, err := c.CRI.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId: p.id, SandboxConfig: p.config,
		Config: &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: name}, Image: &cri.ImageSpec{Image: image},
			Command: cmd, LogPath: name + ".log", Linux: linux, Mounts: mounts},
	})
	require.NoError(t, err)
	_, err = c.CRI.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: created.ContainerId})
	require.NoError(t, err)
	return created.ContainerId
}

// waitState waits until the container is in state; an exited container
// must have exited 0.
func (c *Containerd) waitState(t *testing.T, id, name string, state cri.ContainerState) {
	t.Helper()
	c.waitStateWithin(t, id, name, state, 30*time.Second)
}

func (c *Containerd) waitStateWithin(t *testing.T, id, name string, state cri.ContainerState, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		st, err := c.CRI.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
		require.NoError(t, err)
		if st.Status.State == cri.ContainerState_CONTAINER_EXITED {
			require.Zero(t, st.Status.ExitCode, "container %s: %s", name, st.Status.Message)
		}
		if st.Status.State == state {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("container %s never reached %s", name, state)
}

// TmpfsDir is a temporary directory on a tmpfs of its own, gone in one
// unmount: a test that writes hundreds of thousands of files leaves no
// unlink storm behind (the disk here discards on every freed block).
func TmpfsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	testutil.MountTmpfs(t, dir)
	return dir
}

// Dockerd is Debian's dockerd with all its state in a temporary directory.
type Dockerd struct {
	Host   string // DOCKER_HOST
	Client *client.Client
}

func StartDockerd(t *testing.T) *Dockerd {
	t.Helper()
	return StartDockerdWith(t, nil)
}

// StartDockerdWith starts dockerd with more OCI runtimes (name -> binary),
// for RunOptions.Runtime.
func StartDockerdWith(t *testing.T, runtimes map[string]string) *Dockerd {
	t.Helper()
	bin, err := exec.LookPath("dockerd")
	require.NoError(t, err, "dockerd is missing: scripts/runtimes.sh installs Debian's docker.io")
	rt, err := os.MkdirTemp("", "inuse-dockerd-")
	require.NoError(t, err)
	testutil.MountTmpfs(t, rt)
	sock := filepath.Join(rt, "docker.sock")
	cmd := exec.Command(bin, "--data-root", filepath.Join(rt, "root"), "--exec-root", filepath.Join(rt, "exec"),
		"-H", "unix://"+sock, "--pidfile", filepath.Join(rt, "dockerd.pid"),
		"--bridge=none", "--iptables=false", "--ip-forward=false")
	for name, bin := range runtimes {
		cmd.Args = append(cmd.Args, "--add-runtime", name+"="+bin)
	}
	// Debian's containerd (1.6), not one of the project's builds.
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	logf, err := os.Create(filepath.Join(rt, "dockerd.log"))
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	require.NoError(t, cmd.Start())
	d := &Dockerd{Host: "unix://" + sock}
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
	d.Client, err = client.NewClientWithOpts(client.WithHost(d.Host), client.WithAPIVersionNegotiation())
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := d.Client.Ping(context.Background()); err == nil {
			return d
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(rt, "dockerd.log"))
			t.Fatalf("dockerd did not start:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ImportImage imports a root file system as an image and returns its id.
func (d *Dockerd) ImportImage(t *testing.T, root, ref string, changes ...string) string {
	t.Helper()
	ctx := context.Background()
	rc, err := d.Client.ImageImport(ctx, image.ImportSource{Source: TarDir(t, root), SourceName: "-"}, ref, image.ImportOptions{Changes: changes})
	require.NoError(t, err)
	_, _ = rc.Read(make([]byte, 1<<16))
	rc.Close()
	info, err := d.Client.ImageInspect(ctx, ref)
	require.NoError(t, err)
	return info.ID
}

// Exec runs cmd in the running container id, as docker exec does, and
// waits for it to exit 0.
func (d *Dockerd) Exec(t *testing.T, id string, cmd ...string) {
	t.Helper()
	ctx := context.Background()
	created, err := d.Client.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: cmd})
	require.NoError(t, err)
	require.NoError(t, d.Client.ContainerExecStart(ctx, created.ID, container.ExecStartOptions{Detach: true}))
	require.Eventually(t, func() bool {
		info, err := d.Client.ContainerExecInspect(ctx, created.ID)
		require.NoError(t, err)
		if info.Running || info.Pid == 0 {
			return false
		}
		require.Zero(t, info.ExitCode, "docker exec %v", cmd)
		return true
	}, 20*time.Second, 20*time.Millisecond, "docker exec %v did not end", cmd)
}

// Run starts a container and returns its id; wait blocks until it exits.
func (d *Dockerd) Run(t *testing.T, ref string, cmd ...string) (id string, wait func()) {
	t.Helper()
	return d.RunWith(t, RunOptions{}, ref, cmd...)
}

// RunWith is Run with options.
func (d *Dockerd) RunWith(t *testing.T, o RunOptions, ref string, cmd ...string) (id string, wait func()) {
	t.Helper()
	ctx := context.Background()
	host := &container.HostConfig{NetworkMode: "none", Runtime: o.Runtime}
	for ctrPath, hostPath := range o.Mounts {
		host.Binds = append(host.Binds, hostPath+":"+ctrPath)
	}
	created, err := d.Client.ContainerCreate(ctx, &container.Config{Image: ref, Cmd: cmd}, host, nil, nil, "")
	require.NoError(t, err)
	statusC, errC := d.Client.ContainerWait(ctx, created.ID, container.WaitConditionNextExit)
	require.NoError(t, d.Client.ContainerStart(ctx, created.ID, container.StartOptions{}))
	return created.ID, func() {
		select {
		case st := <-statusC:
			require.Zero(t, st.StatusCode)
		case err := <-errC:
			require.NoError(t, err)
		case <-time.After(o.timeout()):
			t.Fatal("container did not exit")
		}
	}
}
