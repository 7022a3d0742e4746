package tests

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/scanner/scannertest"
	"github.com/inuse-dev/inuse/scanner/vulndbtest"
	"github.com/inuse-dev/inuse/tests/runtimes"
)

// Day one on a running node: containers that run before the agent starts
// are seeded from /proc (issue 11).

// pythonCmd has Python load ssl and sqlite3, then sleep: after its start it
// does nothing the sensor could see.
var pythonCmd = []string{"python3", "-c", "import ssl, sqlite3, time; time.sleep(3600)"}

// pythonRoot is bookworm with python3: python3.11, libpython3.11-stdlib
// (the _ssl and _sqlite3 modules), libssl3 and libsqlite3-0.
func pythonRoot(t *testing.T) string {
	return scannertest.DebianRootWith(t, "bookworm-python3-v1", "python3")
}

// pythonLoaded are the files Python runs or maps once it imported ssl and
// sqlite3, as paths in its root: symbolic links resolved, as the kernel
// names a mapping.
func pythonLoaded(t *testing.T, root string) (exec string, mapped []string) {
	t.Helper()
	real := func(p string) string {
		r, err := filepath.EvalSymlinks(filepath.Join(root, p))
		require.NoError(t, err)
		rel, err := filepath.Rel(root, r)
		require.NoError(t, err)
		return "/" + rel
	}
	mods, err := filepath.Glob(filepath.Join(root, "usr/lib/python3.11/lib-dynload/_ssl.*.so"))
	require.NoError(t, err)
	require.Len(t, mods, 1)
	lib := "/usr/lib/x86_64-linux-gnu/"
	return real("/usr/bin/python3"), []string{
		real(lib + "libssl.so.3"), real(lib + "libcrypto.so.3"), real(lib + "libsqlite3.so.0"),
		strings.TrimPrefix(mods[0], root),
	}
}

// seededWith reports whether the profile holds exec as executed and every
// mapped as mapped, each also marked as seeded.
func seededWith(exe string, mapped []string) func(*store.Profile) bool {
	return func(p *store.Profile) bool {
		if !has(p, store.Exec, exe) || !has(p, store.Seeded, store.SectionMember(store.Exec, exe)) {
			return false
		}
		for _, m := range mapped {
			if !has(p, store.Mapped, m) || !has(p, store.Seeded, store.SectionMember(store.Mapped, m)) {
				return false
			}
		}
		return true
	}
}

// waitLoaded waits until the process pid has a file whose path ends in
// suffix in /proc/PID/<what> (maps or the links of fd): what the agent will
// find, so that the test does not race the container's own start.
func waitLoaded(t *testing.T, pid int, what, suffix string) {
	t.Helper()
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	require.Eventually(t, func() bool {
		if what == "maps" {
			b, _ := os.ReadFile(filepath.Join(dir, "maps"))
			return strings.Contains(string(b), suffix+"\n")
		}
		fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
		for _, fd := range fds {
			if l, _ := os.Readlink(filepath.Join(dir, "fd", fd.Name())); strings.HasSuffix(l, suffix) {
				return true
			}
		}
		return false
	}, 60*time.Second, 50*time.Millisecond, "process %d never loaded %s", pid, suffix)
}

func dockerPID(t *testing.T, d *runtimes.Dockerd, id string) int {
	t.Helper()
	info, err := d.Client.ContainerInspect(context.Background(), id)
	require.NoError(t, err)
	require.NotZero(t, info.State.Pid)
	return info.State.Pid
}

// noHostPaths fails on a member that names the host's view of a container
// (its root, /proc/PID/root, map_files) rather than the container's own.
func noHostPaths(t *testing.T, p *store.Profile) {
	t.Helper()
	for sec, entries := range p.Sections {
		for _, e := range entries {
			for _, host := range []string{"/proc/", "/var/lib/", "inuse-dockerd", "/tmp/ictr", "overlay", "rootfs", ".cache/inuse"} {
				require.NotContains(t, e.Value, host, "host path in %s", sec)
			}
		}
	}
}

// members lists a profile's members per section and fails on a duplicate.
func members(t *testing.T, p *store.Profile) map[store.Section][]string {
	t.Helper()
	out := map[store.Section][]string{}
	for sec, entries := range p.Sections {
		for _, e := range entries {
			require.NotContains(t, out[sec], e.Value, "duplicate in %s", sec)
			out[sec] = append(out[sec], e.Value)
		}
		slices.Sort(out[sec])
	}
	return out
}

// noErrors fails on any line the agent logged at level ERROR.
func noErrors(t *testing.T, a *runtimes.Agent) {
	t.Helper()
	for _, l := range a.Lines() {
		var rec struct{ Level string }
		if json.Unmarshal([]byte(l), &rec) == nil {
			require.NotEqual(t, "ERROR", rec.Level, l)
		}
	}
}

// Docker: a Python container runs before the agent, with containers whose
// processes come and go while the agent seeds. Within 10 s its profile
// holds what Python has loaded, marked as seeded; `inuse scan` calls the
// owners in use from that source; an agent restart seeds it again and
// loses or duplicates nothing.
func TestDayOneDocker(t *testing.T) {
	testutil.RequirePrivileged(t)
	root := pythonRoot(t)
	exe, mapped := pythonLoaded(t, root)
	d := runtimes.StartDockerd(t)
	srv := redistest.Start(t)
	const ref = "inuse-test/python:1"
	imageID := d.ImportImage(t, root, ref, `CMD ["/bin/sh"]`)
	d.ImportImage(t, testutil.BusyboxRoot(t), "inuse-test/busybox:1", `CMD ["/bin/sh"]`)

	id, _ := d.Run(t, ref, pythonCmd...)
	t.Cleanup(func() { _ = d.Client.ContainerKill(context.Background(), id, "KILL") })
	waitLoaded(t, dockerPID(t, d, id), "maps", mapped[3])
	// Processes that exit while the agent reads /proc: a loop of short
	// ones, and a container that ends as the agent starts.
	loop, _ := d.Run(t, "inuse-test/busybox:1", "sh", "-c", "while :; do /bin/true; sleep 0.01; done")
	t.Cleanup(func() { _ = d.Client.ContainerKill(context.Background(), loop, "KILL") })
	d.Run(t, "inuse-test/busybox:1", "sh", "-c", "sleep 0.3")

	// inuse serve runs already, as in a cluster where the agent is added,
	// and has catalogued the image (it does so once per image, the first
	// time it sees it: measured apart, in docs/benchmarks.md).
	sc := prepareScanning(t)
	catalogued := time.Now()
	sc.scan(t, d, "", ref)
	t.Logf("cataloguing the image (syft, once per image): %s", time.Since(catalogued).Round(10*time.Millisecond))
	const admin = "day-one-admin-credential-0123456789"
	base := sc.serve(t, d, srv.URL(), admin)

	env := []string{"DOCKER_HOST=" + d.Host}
	args := []string{"--redis", srv.URL(), "--nri-socket", "", "--flush-interval", "200ms", "--node-name", "e2e"}
	start := time.Now()
	first := runtimes.StartAgent(t, agentBinary, env, args...)
	running := time.Since(start)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	p := waitProfile(t, st, imageID, seededWith(exe, mapped))
	took := time.Since(start)
	t.Logf("agent start to profile seeded (%s, %s): %s, of which %s until the agent said it runs",
		exe, strings.Join(mapped, ", "), took.Round(10*time.Millisecond), running.Round(10*time.Millisecond))
	require.LessOrEqual(t, took, 10*time.Second)
	inUseInAPI(t, base, admin, imageID, "libssl3", "libsqlite3-0", "libpython3.11-stdlib")
	t.Logf("agent start to libssl3, libsqlite3-0 and libpython3.11-stdlib In Use in inuse serve's API: %s",
		time.Since(start).Round(10*time.Millisecond))
	require.Positive(t, p.Meta.PartialContainers, "what ran before the agent is unknown")
	require.Equal(t, []string{id}, p.Containers)
	noHostPaths(t, p)
	noErrors(t, first)

	// The scanner names the owners in use, from the seeded source.
	sc.scanInUse(t, d, srv.URL(), ref, "libssl3", "libsqlite3-0", "libpython3.11-stdlib")

	// The agent restarts while the container runs: it seeds again (the
	// profile gets events, and only Python's image could send them).
	before := members(t, p)
	first.Stop(t)
	second := runtimes.StartAgent(t, agentBinary, env, args...)
	again := waitProfile(t, st, imageID, func(q *store.Profile) bool { return q.Meta.Events > p.Meta.Events })
	after := members(t, again)
	for sec, ms := range before {
		for _, m := range ms {
			require.Contains(t, after[sec], m, "lost from %s by the restart", sec)
		}
	}
	for _, sec := range []store.Section{store.Exec, store.Mapped, store.Seeded} {
		require.Equal(t, before[sec], after[sec], "%s after the restart", sec)
	}
	noHostPaths(t, again)
	noErrors(t, second)
	second.Stop(t)
}

// scanning is the `inuse` binary and a cache with a one-advisory test
// vulnerability database imported.
type scanning struct{ inuse, cache string }

func prepareScanning(t *testing.T) scanning {
	t.Helper()
	tmp := t.TempDir()
	inuse, err := testutil.Build(tmp, "github.com/inuse-dev/inuse/cmd/inuse")
	require.NoError(t, err)
	cache := filepath.Join(tmp, "cache")
	db, err := vulndbtest.Write(filepath.Join(tmp, "build-db"), []vulndbtest.Advisory{{
		ID: "CVE-2099-1100", Severity: "high", Package: "openssl", Constraint: "< 3.0.99", Fixed: "3.0.99",
		Ecosystem: "deb", VersionFormat: "deb", OS: &vulndbtest.Bookworm,
	}})
	require.NoError(t, err)
	out, err := exec.Command(inuse, "db", "import", "--cache-dir", cache, db).CombinedOutput()
	require.NoError(t, err, "inuse db import: %s", out)
	return scanning{inuse, cache}
}

// scanInUse runs `inuse scan` on the image with the profile of redisURL
// and requires pkgs in use, with evidence seeded from /proc.
func (sc scanning) scanInUse(t *testing.T, d *runtimes.Dockerd, redisURL, ref string, pkgs ...string) {
	t.Helper()
	requireSeededInUse(t, sc.scan(t, d, redisURL, ref), pkgs...)
}

// scan runs `inuse scan` on the image, with the profile of redisURL when
// given, and returns its packages as its JSON says them.
func (sc scanning) scan(t *testing.T, d *runtimes.Dockerd, redisURL, ref string, extra ...string) []scannedPackage {
	t.Helper()
	return sc.scanWith(t, []string{"DOCKER_HOST=" + d.Host}, redisURL, append(extra, "docker:"+ref)...)
}

// scanWith runs `inuse scan` with args and env, with the profile of
// redisURL when given.
func (sc scanning) scanWith(t *testing.T, env []string, redisURL string, args ...string) []scannedPackage {
	t.Helper()
	all := []string{"--log-level", "warn", "scan", "--cache-dir", sc.cache, "--format", "json"}
	if redisURL != "" {
		all = append(all, "--redis", redisURL)
	}
	cmd := exec.Command(sc.inuse, append(all, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "inuse scan: %s", stderr.String())
	var rep struct{ Packages []scannedPackage }
	require.NoError(t, json.Unmarshal(out, &rep))
	return rep.Packages
}

func requireSeededInUse(t *testing.T, packages []scannedPackage, pkgs ...string) {
	t.Helper()
	for _, name := range pkgs {
		i := slices.IndexFunc(packages, func(p scannedPackage) bool { return p.Name == name })
		require.GreaterOrEqual(t, i, 0, "%s not in the SBOM", name)
		p := packages[i]
		require.Equal(t, "in_use", p.Verdict, "%s: %+v", name, p.Evidence)
		require.True(t, slices.ContainsFunc(p.Evidence, func(e scannedEvidence) bool { return e.Source == "proc" }),
			"%s: no evidence from /proc in %+v", name, p.Evidence)
	}
}

// serve starts `inuse serve` on redisURL, cataloguing images from d, and
// returns its base URL.
func (sc scanning) serve(t *testing.T, d *runtimes.Dockerd, redisURL, admin string, extra ...string) string {
	t.Helper()
	addr := testutil.FreeAddr(t)
	cmd := exec.Command(sc.inuse, append([]string{"--log-level", "warn", "serve", "--redis", redisURL, "--listen", addr,
		"--cache-dir", sc.cache, "--catalog-from", "docker", "--poll-interval", "200ms"}, extra...)...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host, "INUSE_ADMIN_TOKEN="+admin)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("inuse serve log:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	testutil.WaitHealthy(t, base+"/healthz", 20*time.Second)
	return base
}

// inUseInAPI returns once the API lists pkgs in use for the image, with
// evidence seeded from /proc.
func inUseInAPI(t *testing.T, base, admin, digest string, pkgs ...string) {
	t.Helper()
	var last []scannedPackage
	require.Eventually(t, func() bool {
		req, err := http.NewRequest("GET", base+"/api/v1/images/"+digest+"/packages?in_use=true&limit=1000", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var page struct{ Items []scannedPackage }
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&page) != nil {
			return false
		}
		last = page.Items
		for _, name := range pkgs {
			if !slices.ContainsFunc(page.Items, func(p scannedPackage) bool { return p.Name == name }) {
				return false
			}
		}
		return true
	}, 20*time.Second, 50*time.Millisecond, "in use in the API: %v; last answer %+v", pkgs, last)
	requireSeededInUse(t, last, pkgs...)
}

type scannedPackage struct {
	Name, Verdict string
	Evidence      []scannedEvidence
}

type scannedEvidence struct{ Path, How, Source string }

// containerd with NRI: the Python container runs in a CRI pod before the
// agent, which seeds it when NRI's Synchronize lists it.
func TestDayOneContainerd(t *testing.T) {
	testutil.RequirePrivileged(t)
	root := pythonRoot(t)
	exe, mapped := pythonLoaded(t, root)
	c := runtimes.StartContainerd(t, nil)
	c.ImportPause(t)
	const ref = "docker.io/inuse-test/python:1"
	digest := c.ImportImage(t, root, ref, "/bin/sh")
	srv := redistest.Start(t)
	pod := c.RunPod(t, "py-7c9d8f6b5-a1b2c", "shop", "uid-day-one")
	id := c.Run(t, pod, ref, "python", pythonCmd...)
	status, err := c.CRI.ContainerStatus(context.Background(), &cri.ContainerStatusRequest{ContainerId: id, Verbose: true})
	require.NoError(t, err)
	var info struct{ Pid int }
	require.NoError(t, json.Unmarshal([]byte(status.Info["info"]), &info))
	waitLoaded(t, info.Pid, "maps", mapped[3])

	start := time.Now()
	a := runtimes.StartAgent(t, agentBinary, nil, "--redis", srv.URL(), "--nri-socket", c.NRI, "--docker=false", "--flush-interval", "200ms", "--node-name", "e2e")
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	p := waitProfile(t, st, digest, seededWith(exe, mapped))
	took := time.Since(start)
	t.Logf("agent start to profile seeded over NRI: %s", took.Round(10*time.Millisecond))
	require.LessOrEqual(t, took, 10*time.Second)
	require.Positive(t, p.Meta.PartialContainers)
	require.Equal(t, []string{id}, p.Containers)
	noHostPaths(t, p)
	noErrors(t, a)
	a.Stop(t)
}

// jvmRoot is bookworm with a JRE and /app/{a,b,c}.jar built here: a.jar's
// Main loads b.B from b.jar and sleeps; c.jar is never read. The JRE's root
// is linked (not copied) into a temporary directory next to it.
func jvmRoot(t *testing.T) string {
	t.Helper()
	jre := scannertest.DebianRootWith(t, "bookworm-jre-v1", "openjdk-17-jre-headless")
	root, err := os.MkdirTemp(filepath.Dir(jre), "jvm-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	require.NoError(t, os.Remove(root))
	out, err := exec.Command("cp", "-al", jre, root).CombinedOutput()
	require.NoError(t, err, "cp: %s", out)

	src := t.TempDir()
	for file, code := range map[string]string{
		"a/Main.java": "public class Main { public static void main(String[] args) throws Exception { Class.forName(\"b.B\"); Thread.sleep(3600_000L); } }",
		"b/b/B.java":  "package b; public class B {}",
		"c/c/C.java":  "package c; public class C {}",
	} {
		p := filepath.Join(src, file)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(code), 0o644))
	}
	app := filepath.Join(root, "app")
	require.NoError(t, os.MkdirAll(app, 0o755))
	for _, jar := range []struct{ dir, class string }{{"a", "Main.java"}, {"b", "b/B.java"}, {"c", "c/C.java"}} {
		dir := filepath.Join(src, jar.dir)
		out, err := exec.Command("javac", "--release", "17", "-d", dir, filepath.Join(dir, jar.class)).CombinedOutput()
		require.NoError(t, err, "javac: %s", out)
		out, err = exec.Command("jar", "cf", filepath.Join(app, jar.dir+".jar"), "-C", dir, ".").CombinedOutput()
		require.NoError(t, err, "jar: %s", out)
	}
	return root
}

// A JVM started before the agent keeps the class-path jars it read from
// open: they are seeded as read; the jar it never read is not.
func TestDayOneJVM(t *testing.T) {
	testutil.RequirePrivileged(t)
	root := jvmRoot(t)
	d := runtimes.StartDockerd(t)
	srv := redistest.Start(t)
	const ref = "inuse-test/jvm:1"
	imageID := d.ImportImage(t, root, ref, `CMD ["/bin/sh"]`)
	id, _ := d.Run(t, ref, "java", "-cp", "/app/a.jar:/app/b.jar:/app/c.jar", "Main")
	t.Cleanup(func() { _ = d.Client.ContainerKill(context.Background(), id, "KILL") })
	waitLoaded(t, dockerPID(t, d, id), "fd", "/app/b.jar")

	start := time.Now()
	a := runtimes.StartAgent(t, agentBinary, []string{"DOCKER_HOST=" + d.Host}, "--redis", srv.URL(), "--nri-socket", "", "--flush-interval", "200ms")
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	p := waitProfile(t, st, imageID, func(p *store.Profile) bool {
		for _, jar := range []string{"/app/a.jar", "/app/b.jar"} {
			if !has(p, store.FilesRead, jar) || !has(p, store.Seeded, store.SectionMember(store.FilesRead, jar)) {
				return false
			}
		}
		return true
	})
	t.Logf("agent start to the JVM's jars seeded: %s", time.Since(start).Round(10*time.Millisecond))
	require.False(t, has(p, store.FilesRead, "/app/c.jar"), "c.jar was never read")
	noHostPaths(t, p)
	noErrors(t, a)
	a.Stop(t)
}
