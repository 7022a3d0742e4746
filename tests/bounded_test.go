package tests

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/tests/runtimes"
)

// Bounded profiles (issue 12): a container that writes and reads a
// million files keeps its image's profile within a few megabytes, with
// the same verdicts as without the storm.

// stormFiles are written and read by the storm, half under /tmp (the
// container's layer) and half under /data (a volume), 1,000 to a directory.
const stormFiles = 1_000_000

// stormScript loads ssl, writes and reads its argument's number of files,
// then loads a library and runs a binary that it wrote itself (drift).
const stormScript = `
import ctypes, os, shutil, ssl, subprocess, sys
n = int(sys.argv[1])
for base in ("/tmp/storm", "/data/storm"):
    for i in range(n // 2):
        if i % 1000 == 0:
            d = "%s/%04d" % (base, i // 1000)
            os.makedirs(d)
        p = "%s/%d" % (d, i)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644); os.write(fd, b"x"); os.close(fd)
        fd = os.open(p, os.O_RDONLY); os.read(fd, 1); os.close(fd)
shutil.copy("/usr/lib/x86_64-linux-gnu/libsqlite3.so.0", "/tmp/libdrift.so")
ctypes.CDLL("/tmp/libdrift.so")
shutil.copy("/bin/true", "/tmp/drift-true")
subprocess.run(["/tmp/drift-true"], check=True)
`

var stormDrift = []string{
	store.DriftMember("mapped", "container", "/tmp/libdrift.so"),
	store.DriftMember("exec", "container", "/tmp/drift-true"),
}

// stormed waits for the storm's profile (its drift comes last) and checks
// what bounds it: Redis memory, the folded patterns and their counts.
func stormed(t *testing.T, srv *redistest.Server, st *store.Store, digest string) {
	t.Helper()
	waitProfile(t, st, digest, func(p *store.Profile) bool {
		for _, m := range stormDrift {
			if !has(p, store.Drift, m) {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second) // the last flush
	p, err := st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	used := srv.MemoryUsage(t, "inuse:{"+digest+"}:*")
	t.Logf("storm of %d files: Redis memory of the image %d bytes (estimated %d); events %d, lost %d; %d folded patterns",
		stormFiles, used, p.Meta.Bytes, p.Meta.Events, p.Meta.Losses, len(p.Folded))
	require.LessOrEqual(t, used, int64(5_000_000), "the image's profile stays under 5 MB")
	require.False(t, p.Meta.Truncated, "the caps, not the ceiling, bound a storm of runtime files")

	for _, sec := range []store.Section{store.RuntimeFilesWritten, store.RuntimeFilesRead} {
		kept := int64(len(p.Sections[sec]))
		require.Equal(t, store.DefaultLimits.SectionCap, kept, "%s is full", sec)
		folded := int64(0)
		for _, f := range p.Folded {
			if f.Section == sec {
				require.True(t, strings.HasPrefix(f.Pattern, "/tmp/") || strings.HasPrefix(f.Pattern, "/data/"), "pattern %s", f.Pattern)
				require.True(t, strings.HasSuffix(f.Pattern, "/*"), "pattern %s", f.Pattern)
				folded += f.Count
			}
		}
		// Every file once: kept one by one or counted under its directory
		// (a few files besides the storm's: the drift copies, Python's).
		require.InDelta(t, stormFiles, kept+folded+p.Meta.Losses, 20, "%s: %d kept, %d folded, %d lost", sec, kept, folded, p.Meta.Losses)
	}
	for _, sec := range []store.Section{store.FilesRead, store.FilesWritten, store.Exec, store.Mapped} {
		for _, e := range p.Sections[sec] {
			require.False(t, strings.HasPrefix(e.Value, "/tmp/") || strings.HasPrefix(e.Value, "/data/"), "%s holds runtime file %s", sec, e.Value)
		}
	}
}

// inUse names the packages in use of a scan.
func inUse(pkgs []scannedPackage) []string {
	var out []string
	for _, p := range pkgs {
		if p.Verdict == "in_use" {
			out = append(out, p.Name)
		}
	}
	slices.Sort(out)
	return out
}

func TestBoundedProfileDocker(t *testing.T) {
	testutil.RequirePrivileged(t)
	root := pythonRoot(t)
	d := runtimes.StartDockerd(t)
	srv := redistest.Start(t)
	storm := d.ImportImage(t, root, "inuse-test/storm:1", `CMD ["storm"]`)
	quiet := d.ImportImage(t, root, "inuse-test/storm:quiet", `CMD ["quiet"]`)
	a := runtimes.StartAgent(t, agentBinary, []string{"DOCKER_HOST=" + d.Host}, "--redis", srv.URL(), "--nri-socket", "", "--flush-interval", "200ms")
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()

	start := time.Now()
	_, wait := d.RunWith(t, runtimes.RunOptions{Mounts: map[string]string{"/data": runtimes.TmpfsDir(t)}, Timeout: 10 * time.Minute},
		"inuse-test/storm:1", "python3", "-c", stormScript, strconv.Itoa(stormFiles))
	wait()
	t.Logf("the storm ran in %s", time.Since(start).Round(time.Second))
	_, wait = d.RunWith(t, runtimes.RunOptions{Mounts: map[string]string{"/data": runtimes.TmpfsDir(t)}}, "inuse-test/storm:quiet", "python3", "-c", stormScript, "0")
	wait()
	stormed(t, srv, st, storm)
	waitProfile(t, st, quiet, func(p *store.Profile) bool { return has(p, store.Drift, stormDrift[1]) })
	noErrors(t, a)
	a.Stop(t)

	sc := prepareScanning(t)
	done := []string{"--min-observed", "0s", "--stable-window", "0s"}
	stormUse, quietScan := inUse(sc.scan(t, d, srv.URL(), "inuse-test/storm:1")), sc.scan(t, d, srv.URL(), "inuse-test/storm:quiet", done...)
	require.Contains(t, stormUse, "libssl3")
	require.Contains(t, stormUse, "libpython3.11-stdlib")
	require.Equal(t, inUse(quietScan), stormUse, "the storm changes no verdict")
	require.True(t, slices.ContainsFunc(quietScan, func(p scannedPackage) bool { return p.Verdict == "not_observed" }),
		"a done profile has packages not observed")

	// An agent with a small ceiling: a container reading many of its
	// image's files truncates its profile, and nothing is not_observed.
	wide := d.ImportImage(t, root, "inuse-test/storm:wide", `CMD ["wide"]`)
	b := runtimes.StartAgent(t, agentBinary, []string{"DOCKER_HOST=" + d.Host}, "--redis", srv.URL(), "--nri-socket", "",
		"--flush-interval", "200ms", "--profile-max-bytes", "65536")
	_, wait = d.Run(t, "inuse-test/storm:wide", "python3", "-c",
		`import os, ssl
for d, _, fs in os.walk("/usr"):
    for f in fs:
        p = os.path.join(d, f)
        if os.path.isfile(p) and not os.path.islink(p):
            open(p, "rb").close()`)
	wait()
	p := waitProfile(t, st, wide, func(p *store.Profile) bool { return p.Meta.Truncated && has(p, store.Exec, "/usr/bin/python3.11") })
	t.Logf("truncated profile: %d files kept, %d dropped", len(p.Sections[store.FilesRead]), p.Meta.Dropped)
	b.Stop(t)

	out, err := exec.Command(sc.inuse, "profile", "show", "--redis", srv.URL(), wide).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "truncated   yes")
	wideScan := sc.scan(t, d, srv.URL(), "inuse-test/storm:wide", done...)
	require.Contains(t, inUse(wideScan), "libssl3")
	for _, pkg := range wideScan {
		require.NotEqual(t, "not_observed", pkg.Verdict, "%s: a truncated profile proves no absence", pkg.Name)
	}

	const admin = "bounded-admin-credential-0123456789"
	base := sc.serve(t, d, srv.URL(), admin, done...)
	get := func(path string, into any) {
		t.Helper()
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			req, err := http.NewRequest("GET", base+path, nil)
			require.NoError(c, err)
			req.Header.Set("Authorization", "Bearer "+admin)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(c, err)
			defer resp.Body.Close()
			require.Equal(c, http.StatusOK, resp.StatusCode)
			require.NoError(c, json.NewDecoder(resp.Body).Decode(into))
		}, 30*time.Second, 100*time.Millisecond)
	}
	var detail struct {
		Meta         store.Meta `json:"meta"`
		ReportStatus string     `json:"report_status"`
	}
	require.Eventually(t, func() bool { get("/api/v1/images/"+wide, &detail); return detail.ReportStatus == "ready" }, 60*time.Second, 200*time.Millisecond)
	require.True(t, detail.Meta.Truncated)
	var page struct{ Total int }
	get("/api/v1/images/"+wide+"/packages?verdict=not_observed", &page)
	require.Zero(t, page.Total, "not_observed in the API for a truncated profile")
	get("/api/v1/images/"+quiet+"/packages?verdict=not_observed", &page)
	require.Positive(t, page.Total, "the API says not_observed for a done profile")
	var drift struct {
		Items []store.Entry `json:"items"`
	}
	get("/api/v1/images/"+storm+"/sections/drift", &drift)
	require.Len(t, drift.Items, len(stormDrift), "drift in the API: %v", drift.Items)
}

// The same storm through containerd (CRI, NRI): the image's root is
// scanned as a directory, under the digest containerd gave the image.
func TestBoundedProfileContainerd(t *testing.T) {
	testutil.RequirePrivileged(t)
	root := pythonRoot(t)
	c := runtimes.StartContainerd(t, nil)
	c.ImportPause(t)
	const stormRef, quietRef = "docker.io/inuse-test/storm:1", "docker.io/inuse-test/storm:quiet"
	storm := c.ImportImage(t, root, stormRef, "storm")
	quiet := c.ImportImage(t, root, quietRef, "quiet")
	srv := redistest.Start(t)
	a := runtimes.StartAgent(t, agentBinary, nil, "--redis", srv.URL(), "--nri-socket", c.NRI, "--docker=false", "--flush-interval", "200ms")
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()

	pod := c.RunPod(t, "storm-5d8f7c9b6-x1y2z", "shop", "uid-storm")
	start := time.Now()
	c.RunToExitWith(t, runtimes.RunOptions{Mounts: map[string]string{"/data": runtimes.TmpfsDir(t)}, Timeout: 10 * time.Minute},
		pod, stormRef, "storm", "python3", "-c", stormScript, strconv.Itoa(stormFiles))
	t.Logf("the storm ran in %s", time.Since(start).Round(time.Second))
	c.RunToExitWith(t, runtimes.RunOptions{Mounts: map[string]string{"/data": runtimes.TmpfsDir(t)}}, pod, quietRef, "quiet", "python3", "-c", stormScript, "0")
	stormed(t, srv, st, storm)
	waitProfile(t, st, quiet, func(p *store.Profile) bool { return has(p, store.Drift, stormDrift[1]) })
	noErrors(t, a)
	a.Stop(t)

	sc := prepareScanning(t)
	stormUse := inUse(sc.scanWith(t, nil, srv.URL(), "--rootfs", root, "--image-digest", storm))
	require.Contains(t, stormUse, "libssl3")
	require.Equal(t, inUse(sc.scanWith(t, nil, srv.URL(), "--rootfs", root, "--image-digest", quiet)), stormUse, "the storm changes no verdict")
}
