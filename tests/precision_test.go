package tests

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/scanner/scannertest"
	"github.com/inuse-dev/inuse/tests/runtimes"
)

// precisionWorkloads run in real containers; each is traced by strace
// inside its container, which is the ground truth of what it loaded.
var precisionWorkloads = map[string][]string{
	"shell":    {"sh", "-c", "cat /etc/debian_version; ls / >/dev/null"},
	"python":   {"python3", "-c", "import ssl, sqlite3"},
	"pipeline": {"sh", "-c", "echo hi | gzip | gunzip >/dev/null; sort /etc/passwd | head -n 1 >/dev/null; date >/dev/null"},
}

// straceCmd runs cmd under strace, writing the successful execs and opens
// of every process to /trace/out (a volume, so the trace is not the
// image's file).
func straceCmd(cmd []string) []string {
	return append([]string{"strace", "-f", "-qq", "-o", "/trace/out", "-e", "trace=execve,open,openat,openat2", "-e", "status=successful", "--"}, cmd...)
}

var (
	straceExec = regexp.MustCompile(`^\d+\s+execve\("([^"]+)"`)
	straceOpen = regexp.MustCompile(`^\d+\s+(?:open|openat|openat2)\((?:[^,]+, )?"([^"]+)", ([A-Z_|]+)`)
)

// truthDelta turns strace's trace of a workload in root into the profile
// it should have: the executed binaries and the files opened, as the
// kernel names them (symbolic links resolved inside root), plus what
// strace itself loads (its binary, loader and libraries, from ldd).
func truthDelta(t *testing.T, root, trace string) *store.Delta {
	t.Helper()
	resolve := func(p string) (string, bool) {
		if !strings.HasPrefix(p, "/") {
			p = "/" + p // the containers' working directory is /
		}
		real, err := securejoin.SecureJoin(root, p)
		if err != nil {
			return "", false
		}
		st, err := os.Stat(real)
		if err != nil || !st.Mode().IsRegular() {
			return "", false // a directory, or not a file of the image (/proc, /dev, /trace)
		}
		return "/" + strings.TrimPrefix(strings.TrimPrefix(real, root), "/"), true
	}
	d := store.NewDelta()
	ms := time.Now().UnixMilli()
	add := func(sec store.Section, p string) {
		if r, ok := resolve(p); ok {
			d.Add(sec, r, ms)
		}
	}
	f, err := os.Open(trace)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := straceExec.FindStringSubmatch(sc.Text()); m != nil {
			add(store.Exec, m[1])
		} else if m := straceOpen.FindStringSubmatch(sc.Text()); m != nil {
			if strings.Contains(m[2], "O_WRONLY") || strings.Contains(m[2], "O_RDWR") {
				add(store.FilesWritten, m[1])
			} else {
				add(store.FilesRead, m[1])
			}
		}
	}
	require.NoError(t, sc.Err())
	out, err := exec.Command("chroot", root, "/usr/bin/ldd", "/usr/bin/strace").Output()
	require.NoError(t, err, "ldd of strace")
	add(store.Exec, "/usr/bin/strace")
	add(store.FilesRead, "/etc/ld.so.cache")
	for line := range strings.Lines(string(out)) {
		for field := range strings.FieldsSeq(line) {
			if strings.HasPrefix(field, "/") {
				add(store.Mapped, field)
			}
		}
	}
	return d
}

// precisionRecall compares the packages in use by the measured profile
// with those in use by the truth.
func precisionRecall(measured, truth []string) (precision, recall float64) {
	var both int
	for _, p := range measured {
		if slices.Contains(truth, p) {
			both++
		}
	}
	return float64(both) / float64(len(measured)), float64(both) / float64(len(truth))
}

// Precision and recall of In Use under real runtimes, per workload: the
// packages the sensor's profile puts in use against those that strace,
// tracing the workload inside its container, shows it loaded (both scanned
// by the same scanner, so only what the agent recorded differs). The OCI
// runtime's own work (runc init mapping the host's libseccomp) must not
// show.
func TestPrecisionUnderRuntimes(t *testing.T) {
	testutil.RequirePrivileged(t)
	root := scannertest.DebianRootWith(t, "bookworm-precision-v1", "python3", "strace")
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	sc := prepareScanning(t)

	var runs []tracedRun
	top := t // the traces outlive each runtime's subtest
	t.Run("docker", func(t *testing.T) {
		d := runtimes.StartDockerd(t)
		a := runtimes.StartAgent(t, agentBinary, []string{"DOCKER_HOST=" + d.Host}, "--redis", srv.URL(), "--nri-socket", "", "--flush-interval", "200ms")
		for name, cmd := range precisionWorkloads {
			ref := "inuse-test/precision-" + name + ":1"
			digest := d.ImportImage(t, root, ref)
			traces := runtimes.TmpfsDir(top)
			_, wait := d.RunWith(t, runtimes.RunOptions{Mounts: map[string]string{"/trace": traces}}, ref, straceCmd(cmd)...)
			wait()
			runs = append(runs, tracedRun{"docker", name, digest, filepath.Join(traces, "out")})
		}
		waitTraced(t, st, root, runs)
		a.Stop(t)
	})
	t.Run("containerd", func(t *testing.T) {
		c := runtimes.StartContainerd(t, nil)
		c.ImportPause(t)
		a := runtimes.StartAgent(t, agentBinary, nil, "--redis", srv.URL(), "--nri-socket", c.NRI, "--docker=false", "--flush-interval", "200ms")
		a.WaitLog(t, "connected to the runtime over NRI")
		var mine []tracedRun
		for name, cmd := range precisionWorkloads {
			ref := "docker.io/inuse-test/precision-" + name + ":1"
			digest := c.ImportImage(t, root, ref, name) // a config of its own: a digest and a profile of its own
			traces := runtimes.TmpfsDir(top)
			pod := c.RunPod(t, "precision-"+name, "default", "uid-precision-"+name)
			c.RunToExitWith(t, runtimes.RunOptions{Mounts: map[string]string{"/trace": traces}}, pod, ref, "app", straceCmd(cmd)...)
			mine = append(mine, tracedRun{"containerd", name, digest, filepath.Join(traces, "out")})
		}
		waitTraced(t, st, root, mine)
		runs = append(runs, mine...)
		a.Stop(t)
	})
	require.Len(t, runs, 2*len(precisionWorkloads))

	// Every figure is logged before any is checked: they are the
	// benchmark's (docs/benchmarks.md).
	type result struct {
		run               tracedRun
		measured, truth   []string
		precision, recall float64
	}
	var results []result
	for _, r := range runs {
		truthDigest := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte("truth "+r.mode+" "+r.workload)))
		_, err := st.Apply(context.Background(), map[string]*store.Delta{truthDigest: truthDelta(t, root, r.trace)}, time.Now(), store.DefaultLearning)
		require.NoError(t, err)
		res := result{run: r,
			truth:    inUse(sc.scanWith(t, nil, srv.URL(), "--rootfs", root, "--image-digest", truthDigest)),
			measured: inUse(sc.scanWith(t, nil, srv.URL(), "--rootfs", root, "--image-digest", r.digest)),
		}
		res.precision, res.recall = precisionRecall(res.measured, res.truth)
		t.Logf("%s %s: precision %.2f recall %.2f (in use %d, truth %d; not loaded %v, missed %v)", r.mode, r.workload,
			res.precision, res.recall, len(res.measured), len(res.truth), missing(res.measured, res.truth), missing(res.truth, res.measured))
		results = append(results, res)
	}
	for _, res := range results {
		r := res.run
		require.NotContains(t, res.measured, "libseccomp2", "%s %s: the runtime's library", r.mode, r.workload)
		require.Equal(t, 1.0, res.recall, "%s %s: missed %v", r.mode, r.workload, missing(res.truth, res.measured))
		require.GreaterOrEqual(t, res.precision, 0.99, "%s %s: not loaded %v", r.mode, r.workload, missing(res.measured, res.truth))
	}
}

// tracedRun is one workload run in a container under strace.
type tracedRun struct{ mode, workload, digest, trace string }

// waitTraced waits, for at most 30 s, until each run's profile holds every
// binary its trace shows executed: the agent has written what the
// workload did. What is still missing then is the test's to report.
func waitTraced(t *testing.T, st *store.Store, root string, runs []tracedRun) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range runs {
		execs := truthDelta(t, root, r.trace).Sections[store.Exec]
		for time.Now().Before(deadline) {
			p, err := st.Profile(context.Background(), r.digest, time.Now(), store.DefaultLearning)
			if err == nil && p != nil && !slices.ContainsFunc(slices.Collect(maps.Keys(execs)), func(e string) bool { return !has(p, store.Exec, e) }) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// missing lists what of want got lacks.
func missing(want, got []string) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			out = append(out, w)
		}
	}
	return out
}
