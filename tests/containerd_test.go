package tests

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
	"strings"
	"testing"
	"time"

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
	"github.com/inuse-dev/inuse/nri-plugin/plugin"
)

// containerd is containerd 2.4.2 (built by scripts/runtimes.sh) with CRI
// and NRI, all its state in a temporary directory.
type containerd struct {
	rt     string
	socket string
	nri    string
	cmd    *exec.Cmd
	conn   *grpc.ClientConn
	cri    cri.RuntimeServiceClient
}

func cacheBin(t *testing.T, name string) string {
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

// startContainerd starts containerd; plugins (file name -> binary) are
// installed in its NRI plugin directory first, for it to launch.
func startContainerd(t *testing.T, plugins map[string]string) *containerd {
	t.Helper()
	rt, err := os.MkdirTemp("/tmp", "ictr") // short: unix socket paths are limited
	require.NoError(t, err)
	for name, bin := range plugins {
		copyFile(t, bin, filepath.Join(rt, "nri-plugins", name))
	}
	c := &containerd{rt: rt, socket: filepath.Join(rt, "c.sock"), nri: filepath.Join(rt, "nri.sock")}
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
`, filepath.Join(rt, "root"), filepath.Join(rt, "state"), c.socket, c.nri, filepath.Join(rt, "nri-plugins"), filepath.Join(rt, "nri-conf"))
	require.NoError(t, os.WriteFile(filepath.Join(rt, "config.toml"), []byte(config), 0o644))
	t.Cleanup(func() {
		c.stop()
		// Shims outlive containerd: end those of this instance.
		_ = exec.Command("pkill", "-KILL", "-f", "containerd-shim-runc-v2 .*"+rt).Run()
		_ = exec.Command("umount", "-R", "-l", rt).Run()
		os.RemoveAll(rt)
	})
	c.start(t)
	return c
}

func (c *containerd) start(t *testing.T) {
	t.Helper()
	bin := cacheBin(t, "containerd")
	c.cmd = exec.Command(bin, "--config", filepath.Join(c.rt, "config.toml"))
	c.cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	logf, err := os.OpenFile(filepath.Join(c.rt, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	require.NoError(t, c.cmd.Start())
	logf.Close()
	c.conn, err = grpc.NewClient("unix://"+c.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	c.cri = cri.NewRuntimeServiceClient(c.conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.cri.Version(context.Background(), &cri.VersionRequest{}); err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(c.rt, "containerd.log"))
			t.Fatalf("containerd did not start:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop kills containerd, as a crash or a restart by systemd would.
func (c *containerd) stop() {
	if c.conn != nil {
		c.conn.Close()
	}
	if c.cmd != nil && c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// importImage packs root as an image with go-containerregistry, imports
// it into the k8s.io namespace and returns its manifest digest.
func (c *containerd) importImage(t *testing.T, root, ref string, cmd ...string) string {
	t.Helper()
	layer, err := tarball.LayerFromOpener(func() (r io.ReadCloser, err error) { return io.NopCloser(tarDir(t, root)), nil })
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
	ctr := cacheBin(t, "ctr")
	out, err := exec.Command(ctr, "-a", c.socket, "-n", "k8s.io", "images", "import", file).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(ctr, "-a", c.socket, "-n", "k8s.io", "images", "ls").Output()
	require.NoError(t, err)
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == ref {
			return f[2]
		}
	}
	t.Fatalf("%s not in\n%s", ref, out)
	return ""
}

// importImages imports the pause image and a busybox image and returns
// the busybox image's manifest digest.
func (c *containerd) importImages(t *testing.T) string {
	t.Helper()
	pauseRoot := t.TempDir()
	out, err := exec.Command("go", "build", "-o", filepath.Join(pauseRoot, "pause"), "./testdata/pause").CombinedOutput()
	require.NoError(t, err, "%s", out)
	c.importImage(t, pauseRoot, "docker.io/inuse-test/pause:1", "/pause")
	return c.importImage(t, testutil.BusyboxRoot(t), "docker.io/inuse-test/busybox:1", "/bin/sh")
}

// pod is one CRI pod sandbox with host networking.
type pod struct {
	id     string
	config *cri.PodSandboxConfig
}

func (c *containerd) runPod(t *testing.T, name, namespace, uid string) pod {
	t.Helper()
	cfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: uid},
		Labels:       map[string]string{"pod-template-hash": "7c9d8f6b5"},
		LogDirectory: t.TempDir(),
		Linux: &cri.LinuxPodSandboxConfig{
			CgroupParent:    "/kubepods/besteffort/pod" + uid,
			SecurityContext: &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}},
		},
	}
	resp, err := c.cri.RunPodSandbox(context.Background(), &cri.RunPodSandboxRequest{Config: cfg})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = c.cri.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: resp.PodSandboxId})
		_, _ = c.cri.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId})
	})
	return pod{id: resp.PodSandboxId, config: cfg}
}

// runToExit creates and starts a container in the pod and waits for its end.
func (c *containerd) runToExit(t *testing.T, p pod, image, name string, cmd ...string) string {
	t.Helper()
	ctx := context.Background()
	created, err := c.cri.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId: p.id, SandboxConfig: p.config,
		Config: &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: name}, Image: &cri.ImageSpec{Image: image},
			Command: cmd, LogPath: name + ".log", Linux: &cri.LinuxContainerConfig{}},
	})
	require.NoError(t, err)
	_, err = c.cri.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: created.ContainerId})
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := c.cri.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: created.ContainerId})
		require.NoError(t, err)
		if st.Status.State == cri.ContainerState_CONTAINER_EXITED {
			require.Zero(t, st.Status.ExitCode, "container %s: %s", name, st.Status.Message)
			return created.ContainerId
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("container %s did not exit", name)
	return ""
}

// attributed reads the agent's JSON lines: every event with its container.
type attributed struct {
	Container struct {
		ID    string `json:"id"`
		Name  string `json:"name"`
		Image struct {
			Name   string `json:"name"`
			Digest string `json:"digest"`
		} `json:"image"`
		Pod struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
			UID       string `json:"uid"`
		} `json:"pod"`
		Workload struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"workload"`
	} `json:"container"`
	Event struct {
		Kind string `json:"kind"`
		Path string `json:"path"`
		Role string `json:"role"`
	} `json:"event"`
}

func readAttributed(t *testing.T, file string) []attributed {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	var out []attributed
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var a attributed
		require.NoError(t, json.Unmarshal(sc.Bytes(), &a))
		if a.Event.Kind != "" {
			out = append(out, a)
		}
	}
	return out
}

// A pod created through CRI whose container reads a file and exits at
// once: its entrypoint and files are attributed to the right image digest,
// container and pod. Then containerd restarts under the running agent,
// which reconnects and attributes the next container too.
func TestContainerdNRI(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := startContainerd(t, nil)
	digest := c.importImages(t)

	events := filepath.Join(t.TempDir(), "events.jsonl")
	a := startAgent(t, nil, "--nri-socket", c.nri, "--docker=false", "-o", events)
	a.waitLog(t, "connected to the runtime over NRI")
	p := c.runPod(t, "web-7c9d8f6b5-x2x4z", "shop", "uid-1")
	first := c.runToExit(t, p, "docker.io/inuse-test/busybox:1", "app", "/bin/sh", "-c", "cat /etc/passwd")

	// The fallback for runtimes whose NRI events carry no image: CRI's
	// image service names the image's digest (the image id when it was
	// never pulled from a registry), cached for later events.
	images, err := plugin.NewCRIImages(c.socket)
	require.NoError(t, err)
	defer images.Close()
	fromCRI, err := images.Digest(context.Background(), "docker.io/inuse-test/busybox:1")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(fromCRI, "sha256:"), fromCRI)
	_, err = images.Digest(context.Background(), "docker.io/inuse-test/nothing:1")
	require.Error(t, err)

	// containerd restarts: the agent reconnects and still tracks.
	c.stop()
	cached, err := images.Digest(context.Background(), "docker.io/inuse-test/busybox:1")
	require.NoError(t, err, "answered from the cache while containerd is down")
	require.Equal(t, fromCRI, cached)
	a.waitLog(t, "reconnecting")
	c.start(t)
	a.waitLog(t, "connected to the runtime over NRI")
	second := c.runToExit(t, p, "docker.io/inuse-test/busybox:1", "again", "/bin/cat", "/etc/group")
	a.stop(t)

	got := map[string]map[string]bool{} // container id -> "kind path"
	for _, ev := range readAttributed(t, events) {
		if ev.Container.ID != first && ev.Container.ID != second {
			continue
		}
		require.Equal(t, digest, ev.Container.Image.Digest)
		require.Equal(t, "docker.io/inuse-test/busybox:1", ev.Container.Image.Name)
		require.Equal(t, "web-7c9d8f6b5-x2x4z", ev.Container.Pod.Name)
		require.Equal(t, "shop", ev.Container.Pod.Namespace)
		require.Equal(t, "uid-1", ev.Container.Pod.UID)
		require.Equal(t, "Deployment", ev.Container.Workload.Kind)
		require.Equal(t, "web", ev.Container.Workload.Name)
		if got[ev.Container.ID] == nil {
			got[ev.Container.ID] = map[string]bool{}
		}
		got[ev.Container.ID][ev.Event.Kind+" "+ev.Event.Path] = true
	}
	for _, want := range []string{"exec /bin/busybox", "file /etc/passwd"} {
		require.True(t, got[first][want], "%s of the first container in %v", want, got[first])
	}
	require.True(t, got[second]["file /etc/group"], "after the restart: %v", got[second])
}

// The agent installed as a pre-registered NRI plugin: containerd launches
// it from its plugin directory, and it reads its settings from
// /etc/nri/conf.d/05-inuse.conf.
func TestContainerdLaunchesTheAgentAsPlugin(t *testing.T) {
	testutil.RequirePrivileged(t)
	events := filepath.Join(t.TempDir(), "events.jsonl")
	conf := "/etc/nri/conf.d/05-inuse.conf"
	_, err := os.Stat(conf)
	require.True(t, os.IsNotExist(err), "%s exists: this test would overwrite it", conf)
	require.NoError(t, os.MkdirAll(filepath.Dir(conf), 0o755))
	require.NoError(t, os.WriteFile(conf, []byte("output: "+events+"\nlog-level: debug\n"), 0o644))
	t.Cleanup(func() { os.Remove(conf) })

	c := startContainerd(t, map[string]string{"05-inuse": agentBinary})
	digest := c.importImages(t)
	// containerd waits for its plugins to register before it serves CRI.
	p := c.runPod(t, "batch-x1", "jobs", "uid-2")
	id := c.runToExit(t, p, "docker.io/inuse-test/busybox:1", "job", "/bin/cat", "/etc/passwd")
	c.stop() // the plugin's connection closes: it drains and exits

	var seen bool
	defer func() {
		if !seen {
			log, _ := os.ReadFile(filepath.Join(c.rt, "containerd.log"))
			t.Logf("containerd log:\n%s", log)
		}
	}()
	require.Eventually(t, func() bool {
		for _, ev := range readAttributed(t, events) {
			if ev.Container.ID == id && ev.Event.Kind == "file" && ev.Event.Path == "/etc/passwd" {
				require.Equal(t, digest, ev.Container.Image.Digest)
				require.Equal(t, "batch-x1", ev.Container.Pod.Name)
				seen = true
			}
		}
		return seen
	}, 20*time.Second, 200*time.Millisecond)
}
