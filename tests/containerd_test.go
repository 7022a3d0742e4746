package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/nri-plugin/plugin"
	"github.com/inuse-dev/inuse/tests/runtimes"
)

// importImages imports the pause image and a busybox image and returns
// the busybox image's manifest digest.
func importImages(t *testing.T, c *runtimes.Containerd) string {
	t.Helper()
	c.ImportPause(t)
	return c.ImportImage(t, testutil.BusyboxRoot(t), "docker.io/inuse-test/busybox:1", "/bin/sh")
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
	c := runtimes.StartContainerd(t, nil)
	digest := importImages(t, c)

	events := filepath.Join(t.TempDir(), "events.jsonl")
	a := runtimes.StartAgent(t, agentBinary, nil, "--nri-socket", c.NRI, "--docker=false", "-o", events)
	a.WaitLog(t, "connected to the runtime over NRI")
	p := c.RunPod(t, "web-7c9d8f6b5-x2x4z", "shop", "uid-1")
	first := c.RunToExit(t, p, "docker.io/inuse-test/busybox:1", "app", "/bin/sh", "-c", "cat /etc/passwd")

	// The fallback for runtimes whose NRI events carry no image: CRI's
	// image service names the image's digest (the image id when it was
	// never pulled from a registry), cached for later events.
	images, err := plugin.NewCRIImages(c.Socket)
	require.NoError(t, err)
	defer images.Close()
	fromCRI, err := images.Digest(context.Background(), "docker.io/inuse-test/busybox:1")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(fromCRI, "sha256:"), fromCRI)
	_, err = images.Digest(context.Background(), "docker.io/inuse-test/nothing:1")
	require.Error(t, err)

	// containerd restarts: the agent reconnects and still tracks.
	c.Stop()
	cached, err := images.Digest(context.Background(), "docker.io/inuse-test/busybox:1")
	require.NoError(t, err, "answered from the cache while containerd is down")
	require.Equal(t, fromCRI, cached)
	a.WaitLog(t, "reconnecting")
	c.Start(t)
	a.WaitLog(t, "connected to the runtime over NRI")
	second := c.RunToExit(t, p, "docker.io/inuse-test/busybox:1", "again", "/bin/cat", "/etc/group")
	a.Stop(t)

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

	c := runtimes.StartContainerd(t, map[string]string{"05-inuse": agentBinary})
	digest := importImages(t, c)
	// containerd waits for its plugins to register before it serves CRI.
	p := c.RunPod(t, "batch-x1", "jobs", "uid-2")
	id := c.RunToExit(t, p, "docker.io/inuse-test/busybox:1", "job", "/bin/cat", "/etc/passwd")
	c.Stop() // the plugin's connection closes: it drains and exits

	var seen bool
	defer func() {
		if !seen {
			log, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
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
