// Package e2e runs the whole chain on real components: a Debian image run
// as containers by containerd (CRI, NRI) and by dockerd, `inuse-agent run`,
// redis-server, `inuse scan`, `inuse serve` and the grype CLI. Privileged:
// `make test` runs it as root, which CI is.
package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/scanner"
	"github.com/inuse-dev/inuse/scanner/scannertest"
	"github.com/inuse-dev/inuse/scanner/vulndbtest"
	"github.com/inuse-dev/inuse/tests/runtimes"
)

// binaries built once by TestMain.
var agentBinary, inuseBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "inuse-e2e-bin-")
	if err == nil {
		agentBinary, err = testutil.Build(dir, "github.com/inuse-dev/inuse/cmd/inuse-agent")
	}
	if err == nil {
		inuseBinary, err = testutil.Build(dir, "github.com/inuse-dev/inuse/cmd/inuse")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// advisories on packages of the Debian minbase root: two the workloads
// load (zlib, glibc), two they never touch.
var advisories = []vulndbtest.Advisory{
	{ID: "CVE-2099-0001", Severity: "critical", Package: "zlib", Constraint: "< 1:1.2.13.dfsg-2", Fixed: "1:1.2.13.dfsg-2"},
	{ID: "CVE-2099-0002", Severity: "high", Package: "glibc", Constraint: "< 2.36-9+deb12u99", Fixed: "2.36-9+deb12u99"},
	{ID: "CVE-2099-0003", Severity: "medium", Package: "bzip2", Constraint: "< 1.0.8-6"},
	{ID: "CVE-2099-0004", Severity: "low", Package: "xz-utils", Constraint: "< 5.4.1-2", Fixed: "5.4.1-2"},
}

// The workloads and the packages they load. The shell is dash (/bin/sh),
// every dynamic binary maps the ELF loader and libc (libc6).
var (
	// containerd: cat (coreutils) reads /etc/debian_version (base-files).
	criCmd   = []string{"/bin/sh", "-c", "cat /etc/debian_version >/dev/null"}
	criInUse = []string{"base-files", "coreutils", "dash", "libc6"}
	// dockerd: fsck.cramfs (util-linux) links libz (zlib1g).
	dockerCmd   = []string{"sh", "-c", "fsck.cramfs -V >/dev/null"}
	dockerInUse = []string{"dash", "libc6", "util-linux", "zlib1g"}
)

// workloadPods run the containerd image under each kind of Kubernetes
// workload (the Deployment is the test's first pod): the pod name and
// labels as Kubernetes makes them, and the workload runtimeimages names.
var workloadPods = []struct {
	pod    string
	labels map[string]string
	want   string
}{
	{"db-0", map[string]string{"app": "db", "controller-revision-hash": "db-6b8d9c7f5", "statefulset.kubernetes.io/pod-name": "db-0"}, "StatefulSet/db"},
	{"node-agent-x7k2p", map[string]string{"name": "node-agent", "controller-revision-hash": "5d4b8c9f7", "pod-template-generation": "1"}, "DaemonSet/node-agent"},
	{"backup-29412360-hx8vd", map[string]string{"batch.kubernetes.io/job-name": "backup-29412360", "job-name": "backup-29412360", "controller-uid": "77aa"}, "CronJob/backup"},
	{"debug-shell", map[string]string{"run": "debug-shell"}, "Pod/debug-shell"},
}

// TestEndToEnd: containers of a Debian image through containerd + NRI
// and through dockerd, profiled by the agent into Redis, reported by
// `inuse serve` over SBOMs `inuse scan` cached.
func TestEndToEnd(t *testing.T) {
	testutil.RequirePrivileged(t)
	start := time.Now()
	root := scannertest.DebianRoot(t)
	grype := testutil.GrypeBinary(t)
	tmp := t.TempDir()
	cache := filepath.Join(tmp, "cache")

	// The runtimes, each with the Debian root as an image.
	c := runtimes.StartContainerd(t, nil)
	c.ImportPause(t)
	const criRef = "docker.io/inuse-test/debian:bookworm"
	criDigest := c.ImportImage(t, root, criRef, "/bin/sh")
	d := runtimes.StartDockerd(t)
	const dockerRef = "inuse-test/debian:bookworm"
	dockerDigest := d.ImportImage(t, root, dockerRef, `CMD ["/bin/sh"]`)
	t.Logf("images: containerd %s, dockerd %s (%s)", criDigest, dockerDigest, time.Since(start).Round(time.Second))

	// The vulnerability database and the SBOMs, as an operator makes them.
	for i := range advisories {
		advisories[i].Ecosystem, advisories[i].VersionFormat, advisories[i].OS = "deb", "deb", &vulndbtest.Bookworm
	}
	db, err := vulndbtest.Write(filepath.Join(tmp, "build-db"), advisories)
	require.NoError(t, err)
	inuse(t, "db", "import", "--cache-dir", cache, db)
	// Each image is read from its own runtime, which names its digest.
	for _, scan := range []struct{ image, digest string }{
		{"containerd:" + criRef, criDigest},
		{"docker:" + dockerRef, dockerDigest},
	} {
		cmd := exec.Command(inuseBinary, "--log-level", "warn", "scan", "--cache-dir", cache,
			"--containerd-address", c.Socket, "--format", "json", scan.image)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, "inuse scan %s: %s", scan.image, stderr.String())
		var rep scanner.Report
		require.NoError(t, json.Unmarshal(out, &rep))
		require.Equal(t, scan.digest, rep.Digest, "%s is profiled and scanned under one digest", scan.image)
	}
	t.Logf("scanned (%s)", time.Since(start).Round(time.Second))

	// The agent, Redis, the server and a token.
	srv := redistest.Start(t)
	a := runtimes.StartAgent(t, agentBinary, []string{"DOCKER_HOST=" + d.Host},
		"--redis", srv.URL(), "--nri-socket", c.NRI, "--flush-interval", "200ms", "--node-name", "e2e")
	a.WaitLog(t, "connected to the runtime over NRI")
	const admin = "a-long-enough-admin-secret"
	base := serve(t, srv.URL(), cache, admin)
	out := inuse(t, "token", "create", "--redis", srv.URL(), "--name", "e2e")
	token := regexp.MustCompile(`inuse_[A-Za-z0-9_-]{43}`).FindString(out)
	require.NotEmpty(t, token, out)
	api := func(path string, into any) {
		t.Helper()
		require.NoError(t, get(base+path, token, into))
	}

	// The workloads. The load to In Use latency is timed from the start
	// of the dockerd container, whose fsck.cramfs maps libz.
	p := c.RunPod(t, "web-7c9d8f6b5-x2x4z", "shop", "uid-e2e")
	c.RunToExit(t, p, criRef, "app", criCmd...)
	// The same image under each kind of Kubernetes workload, with the
	// labels its controller and the kubelet set.
	for i, w := range workloadPods {
		p := c.RunPodWithLabels(t, w.pod, "shop", fmt.Sprintf("uid-e2e-%d", i), w.labels)
		c.RunToExit(t, p, criRef, "app", criCmd...)
	}
	loaded := time.Now()
	_, wait := d.Run(t, dockerRef, dockerCmd...)
	var latency time.Duration
	for {
		var vulns page[scanner.Vulnerability]
		if get(base+"/api/v1/images/"+dockerDigest+"/vulnerabilities?in_use=true", token, &vulns) == nil &&
			slices.ContainsFunc(vulns.Items, func(v scanner.Vulnerability) bool { return v.ID == "CVE-2099-0001" }) {
			latency = time.Since(loaded)
			break
		}
		require.Less(t, time.Since(loaded), 30*time.Second, "zlib's vulnerability never In Use")
		time.Sleep(20 * time.Millisecond)
	}
	wait()
	t.Logf("end to end: container start (load of libz) -> In Use in the API after %s (target 10 s)", latency.Round(time.Millisecond))
	require.Less(t, latency, 10*time.Second)

	// Once the profiles are done, In Use is exactly what was loaded and
	// every other package is not_observed.
	for digest, want := range map[string][]string{criDigest: criInUse, dockerDigest: dockerInUse} {
		var img struct {
			State string `json:"learning_state"`
		}
		require.Eventually(t, func() bool {
			api("/api/v1/images/"+digest, &img)
			return img.State == "done"
		}, 60*time.Second, 200*time.Millisecond, "profile of %s never done", digest)
		var pkgs page[scanner.Package]
		require.Eventually(t, func() bool {
			api("/api/v1/images/"+digest+"/packages?limit=1000", &pkgs)
			return !slices.ContainsFunc(pkgs.Items, func(p scanner.Package) bool { return p.Verdict == scanner.Unknown })
		}, 20*time.Second, 200*time.Millisecond, "a report of the done profile")
		var inUse []string
		for _, p := range pkgs.Items {
			require.Contains(t, []scanner.Verdict{scanner.InUse, scanner.NotObserved}, p.Verdict, p.Name)
			if p.Verdict == scanner.InUse {
				inUse = append(inUse, p.Name)
			}
		}
		require.Greater(t, len(pkgs.Items), 50, "the minbase root's packages")
		require.ElementsMatch(t, want, inUse, "In Use of %s", digest)
	}

	// The runtimeimages endpoint, as Sysdig's scraper calls it.
	var rt struct {
		Data []struct {
			ImageID      string `json:"imageID"`
			Namespace    string `json:"namespace"`
			WorkloadName string `json:"workloadName"`
			WorkloadKind string `json:"workloadKind"`
			Container    string `json:"container"`
			Packages     []struct {
				Name     string `json:"name"`
				OSFamily string `json:"osFamily"`
			} `json:"packages"`
		} `json:"data"`
	}
	api("/api/scanning/eveintegration/v2/runtimeimages", &rt)
	b, _ := json.MarshalIndent(rt, "", " ")
	t.Logf("runtimeimages:\n%s", b)
	found := map[string]bool{}
	kinds := map[string]bool{}
	for _, e := range rt.Data {
		var names []string
		for _, p := range e.Packages {
			names = append(names, p.Name)
			require.Equal(t, "debian", p.OSFamily)
		}
		// A plain Docker container has no Kubernetes workload: it is in
		// /api/v1 (above), not here.
		require.Equal(t, criDigest, e.ImageID, "only Kubernetes workloads")
		require.Equal(t, "shop", e.Namespace)
		require.Equal(t, "app", e.Container)
		require.ElementsMatch(t, criInUse, names)
		kinds[e.WorkloadKind+"/"+e.WorkloadName] = true
		found[e.ImageID] = true
	}
	require.Len(t, found, 1)
	wantKinds := map[string]bool{"Deployment/web": true}
	for _, w := range workloadPods {
		wantKinds[w.want] = true
	}
	require.Equal(t, wantKinds, kinds)
	var images page[struct{ Digest string }]
	api("/api/v1/images", &images)
	require.True(t, slices.ContainsFunc(images.Items, func(i struct{ Digest string }) bool { return i.Digest == dockerDigest }),
		"the Docker container's image is in /api/v1/images")

	// grype with the API's OpenVEX drops exactly the not_observed matches.
	sc, err := scanner.New(scanner.Config{CacheDir: cache})
	require.NoError(t, err)
	sbom, err := sc.SBOM(dockerDigest)
	sc.Close()
	require.NoError(t, err)
	sbomPath := filepath.Join(tmp, "sbom.syft.json")
	require.NoError(t, os.WriteFile(sbomPath, sbom, 0o644))
	var vulns page[scanner.Vulnerability]
	api("/api/v1/images/"+dockerDigest+"/vulnerabilities?limit=1000", &vulns)
	var wantKept, wantIgnored []string
	for _, v := range vulns.Items {
		if v.Verdict == scanner.NotObserved {
			wantIgnored = append(wantIgnored, v.ID+" "+v.PackageName)
		} else {
			wantKept = append(wantKept, v.ID+" "+v.PackageName)
		}
	}
	require.ElementsMatch(t, []string{"CVE-2099-0001 zlib1g", "CVE-2099-0002 libc6"}, wantKept)
	require.ElementsMatch(t, []string{"CVE-2099-0002 libc-bin", "CVE-2099-0003 libbz2-1.0", "CVE-2099-0004 liblzma5"}, wantIgnored)
	vexPath := filepath.Join(tmp, "inuse.openvex.json")
	var vex json.RawMessage
	api("/api/v1/images/"+dockerDigest+"/openvex", &vex)
	require.NoError(t, os.WriteFile(vexPath, vex, 0o644))
	dbRoot := filepath.Join(cache, "db")
	matches, ignored := testutil.RunGrype(t, grype, dbRoot, "sbom:"+sbomPath)
	require.ElementsMatch(t, append(append([]string{}, wantKept...), wantIgnored...), matches, "grype alone")
	require.Empty(t, ignored)
	matches, ignored = testutil.RunGrype(t, grype, dbRoot, "sbom:"+sbomPath, "--vex", vexPath)
	require.ElementsMatch(t, wantKept, matches, "grype keeps exactly the in-use matches")
	require.ElementsMatch(t, wantIgnored, ignored, "grype ignores exactly the not_observed matches")
	a.Stop(t)
	t.Logf("whole test: %s", time.Since(start).Round(time.Second))
}

type page[T any] struct {
	Items []T `json:"items"`
}

// inuse runs the inuse CLI and returns its output.
func inuse(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(inuseBinary, append([]string{"--log-level", "warn"}, args...)...).CombinedOutput()
	require.NoError(t, err, "inuse %s: %s", strings.Join(args, " "), out)
	return string(out)
}

// serve runs `inuse serve` with learning windows of seconds and returns
// its base URL once it answers.
func serve(t *testing.T, redisURL, cache, admin string) string {
	t.Helper()
	addr := testutil.FreeAddr(t)
	cert, key, tlsClient := testutil.ServerCert(t)
	client = tlsClient
	cmd := exec.Command(inuseBinary, "--log-level", "warn", "serve", "--redis", redisURL, "--listen", addr,
		"--tls-cert", cert, "--tls-key", key,
		"--cache-dir", cache, "--poll-interval", "200ms", "--min-observed", "4s", "--stable-window", "3s")
	cmd.Env = append(os.Environ(), "INUSE_ADMIN_TOKEN="+admin)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		// stopped as systemd would: it must exit cleanly
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			require.NoError(t, err, "inuse serve")
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("inuse serve did not stop on SIGTERM")
		}
		if t.Failed() {
			t.Logf("inuse serve log:\n%s", logs.String())
		}
	})
	base := "https://" + addr
	testutil.WaitHealthyWith(t, client, base+"/healthz", 20*time.Second)
	return base
}

// client talks to the `inuse serve` of the test over HTTPS, trusting its
// certificate.
var client = http.DefaultClient

// get GETs url with a bearer token and decodes its JSON body.
func get(url, token string, into any) error {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return json.Unmarshal(b, into)
}
