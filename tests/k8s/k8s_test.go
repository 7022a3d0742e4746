// Package k8s runs the Helm chart on a real single-node Kubernetes
// (cluster.sh): the agent DaemonSet under the chart's own privileges on a
// kubelet and containerd 2.4, profiling the pods of real controllers.
// Slow (the Kubernetes binaries are built once by scripts/kubernetes.sh,
// about 20 minutes cold): it runs with INUSE_K8S_TESTS=1 besides the
// privileged tests' opt-in, as `make test-k8s` does.
package k8s

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
)

const k8sEnv = "INUSE_K8S_TESTS"

// cluster is a running cluster.sh cluster.
type cluster struct {
	dir  string
	bin  string // the cache's binaries
	repo string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	testutil.RequirePrivileged(t)
	if os.Getenv(k8sEnv) == "" {
		t.Skipf("slow: set %s=1 (make test-k8s)", k8sEnv)
	}
	cache := os.Getenv("INUSE_CACHE")
	if cache == "" {
		cache = filepath.Join(os.Getenv("HOME"), ".cache", "inuse")
	}
	repo, err := filepath.Abs("../..")
	require.NoError(t, err)
	dir, err := os.MkdirTemp("/tmp", "ik8s") // short: unix socket paths are limited
	require.NoError(t, err)
	require.NoError(t, os.Remove(dir))
	c := &cluster{dir: dir, bin: filepath.Join(cache, "bin"), repo: repo}
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range []string{"kubelet", "containerd", "kube-apiserver"} {
				b, _ := os.ReadFile(filepath.Join(dir, "log", l+".log"))
				t.Logf("%s log (tail):\n%s", l, tail(string(b), 40))
			}
		}
		out, err := exec.Command(filepath.Join(repo, "tests/k8s/cluster.sh"), "down", dir).CombinedOutput()
		if err != nil {
			t.Logf("cluster.sh down: %v\n%s", err, out)
		}
	})
	start := time.Now()
	out, err := exec.Command(filepath.Join(repo, "tests/k8s/cluster.sh"), "up", dir).CombinedOutput()
	require.NoError(t, err, "cluster.sh up:\n%s", out)
	t.Logf("cluster up in %s", time.Since(start).Round(time.Second))
	return c
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// kubectl runs kubectl against the cluster and returns its stdout.
func (c *cluster) kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := c.run(stdin, "kubectl", args...)
	require.NoError(t, err)
	return out
}

func (c *cluster) run(stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(c.dir, "kubeconfig"),
		"HELM_CACHE_HOME="+filepath.Join(c.dir, "helm"), "HELM_CONFIG_HOME="+filepath.Join(c.dir, "helm"), "HELM_DATA_HOME="+filepath.Join(c.dir, "helm"))
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// importImage packs root as an image (tests/k8s/ociimage), imports it into
// the node's containerd and returns its manifest digest, the profile's key.
func (c *cluster) importImage(t *testing.T, root, ref string, entrypoint ...string) string {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "image.tar")
	args := append([]string{"run", "./tests/k8s/ociimage", "-root", root, "-ref", ref, "-o", archive, "--"}, entrypoint...)
	cmd := exec.Command("go", args...)
	cmd.Dir = c.repo
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	sock := filepath.Join(c.dir, "containerd", "containerd.sock")
	out, err = exec.Command(filepath.Join(c.bin, "ctr"), "-a", sock, "-n", "k8s.io", "images", "import", archive).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(filepath.Join(c.bin, "ctr"), "-a", sock, "-n", "k8s.io", "images", "ls").Output()
	require.NoError(t, err)
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == ref {
			return f[2]
		}
	}
	t.Fatalf("%s not in\n%s", ref, out)
	return ""
}

// nodeIP is the address the node's pods reach the host at.
func nodeIP(t *testing.T) string {
	t.Helper()
	conn, err := net.Dial("udp", "192.0.2.1:9")
	require.NoError(t, err)
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String()
}

// startRedis runs redis-server on the node's address, for the agent pods.
func startRedis(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("redis-server", "--bind", ip, "--port", strconv.Itoa(port), "--save", "", "--protected-mode", "no")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 10*time.Second, 50*time.Millisecond)
	return "redis://" + addr
}

// The chart's agent on a real node: installed by helm with the chart's
// own privileges, it becomes Ready, seeds a pod that ran before it, and
// profiles the pods of a Deployment, a StatefulSet, a DaemonSet and a
// CronJob under their workload's kind and name; helm uninstall leaves no
// BPF program of the agent on the node.
func TestChartOnKubernetes(t *testing.T) {
	c := startCluster(t)
	ip := nodeIP(t)
	redis := startRedis(t, ip)

	// The agent's image: its static binary alone (packaging/Dockerfile's
	// agent stage without the distroless base, which would be pulled).
	agentRoot := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(agentRoot, "usr/local/bin"), 0o755))
	_, err := testutil.Build(filepath.Join(agentRoot, "usr/local/bin"), "github.com/inuse-dev/inuse/cmd/inuse-agent")
	require.NoError(t, err)
	c.importImage(t, agentRoot, "docker.io/inuse-test/inuse-agent:1", "/usr/local/bin/inuse-agent")

	busybox := testutil.BusyboxRoot(t)
	// Two images: the pod started before the agent has its own profile.
	early := c.importImage(t, busybox, "docker.io/inuse-test/early:1", "/bin/sh", "-c", "exec 3</etc/passwd; exec /bin/busybox sleep 3600")
	work := c.importImage(t, busybox, "docker.io/inuse-test/busybox:1", "/bin/sh", "-c")

	c.kubectl(t, earlyManifest, "apply", "-f", "-")
	c.kubectl(t, "", "rollout", "status", "deployment/early", "--timeout=3m")

	chart := filepath.Join(c.repo, "packaging/helm/inuse")
	start := time.Now()
	_, err = c.run("", "helm", "install", "inuse", chart, "--namespace", "inuse", "--create-namespace", "--wait", "--timeout", "5m",
		"--set", "agent.image.repository=docker.io/inuse-test/inuse-agent", "--set", "agent.image.tag=1",
		"--set", "agent.nri.socket="+filepath.Join(c.dir, "nri", "nri.sock"),
		"--set", "agent.containerdSocket="+filepath.Join(c.dir, "containerd", "containerd.sock"),
		// Redis and serve need images of their own and cluster DNS: not
		// this test's part yet.
		"--set", "integrations.enabled=false", "--set", "redis.enabled=false", "--set", "redis.external.url="+redis)
	if err != nil {
		logs, _ := c.run("", "kubectl", "-n", "inuse", "logs", "daemonset/inuse-agent", "--tail=50")
		desc, _ := c.run("", "kubectl", "-n", "inuse", "describe", "pods")
		t.Fatalf("%v\nagent log:\n%s\n%s", err, logs, desc)
	}
	t.Logf("helm install to a Ready agent: %s", time.Since(start).Round(time.Second))

	st, err := store.Open(redis)
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	profile := func(digest string, cond func(*store.Profile) bool) *store.Profile {
		t.Helper()
		var last *store.Profile
		deadline := time.Now().Add(3 * time.Minute)
		for time.Now().Before(deadline) {
			if p, err := st.Profile(context.Background(), digest, time.Now(), store.DefaultLearning); err == nil {
				if last = p; cond(p) {
					return p
				}
			}
			time.Sleep(time.Second)
		}
		logs, _ := c.run("", "kubectl", "-n", "inuse", "logs", "daemonset/inuse-agent", "--tail=30")
		previous, _ := c.run("", "kubectl", "-n", "inuse", "logs", "daemonset/inuse-agent", "--previous", "--tail=30")
		t.Fatalf("the profile of %s never matched; last: %+v\nagent log:\n%s\nits previous run:\n%s", digest, last, logs, previous)
		return nil
	}

	// Day one, under the chart's privileges.
	profile(early, func(p *store.Profile) bool {
		return slices.ContainsFunc(p.Sections[store.Seeded], func(e store.Entry) bool {
			return e.Value == store.SectionMember(store.Exec, "/bin/busybox")
		})
	})

	c.kubectl(t, workloadsManifest, "apply", "-f", "-")
	want := []store.Workload{
		{Namespace: "default", Kind: "Deployment", Name: "web", Container: "main"},
		{Namespace: "default", Kind: "StatefulSet", Name: "db", Container: "main"},
		{Namespace: "default", Kind: "DaemonSet", Name: "node", Container: "main"},
		{Namespace: "default", Kind: "CronJob", Name: "tick", Container: "main"},
	}
	p := profile(work, func(p *store.Profile) bool {
		for _, w := range want {
			if !slices.Contains(p.Workloads, w) {
				return false
			}
		}
		return true
	})
	t.Logf("workloads of the profile: %+v", p.Workloads)

	_, err = c.run("", "helm", "uninstall", "inuse", "--namespace", "inuse", "--wait", "--timeout", "2m")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		out, err := exec.Command("bpftool", "prog", "show").Output()
		return err == nil && !strings.Contains(string(out), "inuse_")
	}, time.Minute, time.Second, "the agent's BPF programs outlive helm uninstall")
	pinned, _ := filepath.Glob("/sys/fs/bpf/inuse*")
	require.Empty(t, pinned, "pinned BPF objects after uninstall")
}

// earlyManifest is a Deployment of the image whose entrypoint holds
// /etc/passwd open and sleeps, applied before the agent is installed.
const earlyManifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: early, namespace: default}
spec:
  selector: {matchLabels: {app: early}}
  template:
    metadata: {labels: {app: early}}
    spec:
      containers: [{name: main, image: docker.io/inuse-test/early:1, imagePullPolicy: Never}]
`

// workloadsManifest is one workload of each controller's kind on the
// busybox image (entrypoint /bin/sh -c): each container reads a file and
// sleeps, the CronJob's reads one and exits.
const workloadsManifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: main, image: docker.io/inuse-test/busybox:1, imagePullPolicy: Never, args: ["cat /etc/passwd; exec /bin/busybox sleep 3600"]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: default}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: main, image: docker.io/inuse-test/busybox:1, imagePullPolicy: Never, args: ["cat /etc/passwd; exec /bin/busybox sleep 3600"]}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node, namespace: default}
spec:
  selector: {matchLabels: {app: node}}
  template:
    metadata: {labels: {app: node}}
    spec:
      containers: [{name: main, image: docker.io/inuse-test/busybox:1, imagePullPolicy: Never, args: ["cat /etc/passwd; exec /bin/busybox sleep 3600"]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick, namespace: default}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        metadata: {labels: {app: tick}}
        spec:
          restartPolicy: Never
          containers: [{name: main, image: docker.io/inuse-test/busybox:1, imagePullPolicy: Never, args: ["cat /etc/passwd"]}]
`
