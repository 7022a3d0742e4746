package api

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// replicaDigestPrefix starts the digests of the replica tests' images,
// which all have the app's SBOM (fixtureOf).
const replicaDigestPrefix = "sha256:eeee"

func replicaDigest(i int) string { return fmt.Sprintf("%s%060x", replicaDigestPrefix, i) }

// fixtureOf is the fixture of digest.
func fixtureOf(digest string) (fixtureImage, bool) {
	if fx, ok := fixtures[digest]; ok {
		return fx, true
	}
	if strings.HasPrefix(digest, replicaDigestPrefix) {
		return fixtures[digestApp], true
	}
	return fixtureImage{}, false
}

// seedReplicaImages writes n profiles, each reading libc in one
// deployment; they stay learning for the whole test.
func seedReplicaImages(t *testing.T, st *store.Store, n int) []string {
	t.Helper()
	now := time.Now()
	deltas := map[string]*store.Delta{}
	var digests []string
	for i := range n {
		d := replicaDigest(i)
		digests = append(digests, d)
		delta := store.NewDelta()
		delta.AddTo(store.Names, fmt.Sprintf("demo/app-%d:1", i))
		delta.AddTo(store.Containers, fmt.Sprintf("c-%d", i))
		delta.AddTo(store.Workloads, store.Workload{Namespace: "prod", Kind: "Deployment", Name: fmt.Sprintf("web-%d", i), Container: "app"}.Member())
		delta.Add(store.FilesRead, "/usr/lib/x86_64-linux-gnu/libc.so.6", now.UnixMilli())
		deltas[d] = delta
	}
	_, err := st.Apply(t.Context(), deltas, now, store.DefaultLearning)
	require.NoError(t, err)
	return digests
}

// replica is one serve replica over a shared Redis, with its own
// connections, scanner and HTTP server.
type replica struct {
	t       *testing.T
	srv     *Server
	reports *fixtureReports
	ts      *httptest.Server
	// stop cancels the replica's background work, as a kill would stop
	// it: a lease it holds stays until it expires.
	stop func()
}

func startReplica(t *testing.T, redisURL string, tune func(*Config)) *replica {
	t.Helper()
	st, err := store.Open(redisURL)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	r := &replica{t: t, reports: &fixtureReports{}}
	cfg := Config{
		Store: st, Learning: store.DefaultLearning, Reports: r.reports, Formats: testFormats,
		AdminSecret: adminKey, PollInterval: 50 * time.Millisecond, RateLimit: 1e6, RateBurst: 1e6,
	}
	if tune != nil {
		tune(&cfg)
	}
	r.srv = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.srv.Run(ctx); close(done) }()
	r.stop = func() { cancel(); <-done }
	t.Cleanup(r.stop)
	r.ts = httptest.NewServer(r.srv.Handler())
	t.Cleanup(r.ts.Close)
	return r
}

// waitReady waits until the replica answers a report of every digest.
func (r *replica) waitReady(timeout time.Duration, digests ...string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), timeout)
	defer cancel()
	for {
		missing := 0
		for _, d := range digests {
			if _, st, _ := r.srv.cache.reportOf(ctx, d); st != statusReady {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		r.srv.cache.waitPoll(ctx)
		require.NoError(r.t, ctx.Err(), "%d reports of %d not ready", missing, len(digests))
	}
}

// scans reads inuse_scans_total{result="ok"} from the replica's /metrics.
func (r *replica) scans() int {
	r.t.Helper()
	code, body, _ := do(r.t, r.ts.URL, "GET", "/metrics", "", nil)
	require.Equal(r.t, http.StatusOK, code)
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `inuse_scans_total{result="ok"} `); ok {
			n, err := strconv.Atoi(v)
			require.NoError(r.t, err)
			return n
		}
	}
	return 0
}

// vulnerabilities is the replica's answer for the image's vulnerabilities.
func (r *replica) vulnerabilities(digest string) string {
	r.t.Helper()
	code, body, _ := do(r.t, r.ts.URL, "GET", "/api/v1/images/"+digest+"/vulnerabilities", adminKey, nil)
	require.Equal(r.t, http.StatusOK, code, "%s", body)
	return string(body)
}

// TestReplicasShareScans runs two replicas over one Redis, and over a
// 3-master Cluster: every image is scanned exactly once across them, the
// scans spread over both, and both answer the same reports.
func TestReplicasShareScans(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"single", func(t *testing.T) string { return redistest.Start(t).URL() }},
		{"cluster", func(t *testing.T) string { return redistest.StartCluster(t, 3).URL() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.url(t)
			st, err := store.Open(url)
			require.NoError(t, err)
			t.Cleanup(func() { st.Close() })
			digests := seedReplicaImages(t, st, 20)
			// A scan takes a while, as a real one does: both replicas'
			// workers find work.
			slow := func(c *Config) { c.Reports.(*fixtureReports).delay = 20 * time.Millisecond }
			a, b := startReplica(t, url, slow), startReplica(t, url, slow)
			a.waitReady(20*time.Second, digests...)
			b.waitReady(20*time.Second, digests...)
			t.Logf("scans: %d + %d", a.scans(), b.scans())
			require.Equal(t, len(digests), a.scans()+b.scans(), "every image scanned exactly once")
			require.Positive(t, a.scans(), "scans spread over both replicas")
			require.Positive(t, b.scans(), "scans spread over both replicas")
			for _, d := range digests {
				require.JSONEq(t, a.vulnerabilities(d), b.vulnerabilities(d), "both replicas answer the same report of %s", d)
			}
		})
	}
}

// TestReplicaKilledMidScan stops a replica while it holds scan leases:
// once they expire, the other replica gives every image a report.
func TestReplicaKilledMidScan(t *testing.T) {
	url := redistest.Start(t).URL()
	st, err := store.Open(url)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	digests := seedReplicaImages(t, st, 6)
	const lease = 600 * time.Millisecond
	short := func(c *Config) { c.LeaseDuration = lease }

	a := startReplica(t, url, func(c *Config) { short(c); c.Reports.(*fixtureReports).hold = make(chan struct{}) })
	require.Eventually(t, func() bool {
		a.reports.mu.Lock()
		defer a.reports.mu.Unlock()
		return a.reports.calls == 2 // both workers stuck, each holding a lease
	}, 10*time.Second, 10*time.Millisecond)
	a.stop()
	killed := time.Now()

	b := startReplica(t, url, short)
	b.waitReady(20*time.Second, digests...)
	require.Equal(t, len(digests), b.scans(), "the other replica scanned every image, those of the dead one too")
	require.Equal(t, 0, a.scans())
	require.GreaterOrEqual(t, time.Since(killed), lease/2, "the dead replica's images waited for its leases")
}

// TestReplicaRestartIsWarm starts a replica over reports another one
// stored: it serves them without scanning, keeping at most ReportCache
// of them in memory and reading the others from Redis.
func TestReplicaRestartIsWarm(t *testing.T) {
	url := redistest.Start(t).URL()
	st, err := store.Open(url)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	digests := seedReplicaImages(t, st, 10)
	first := startReplica(t, url, nil)
	first.waitReady(20*time.Second, digests...)
	want := map[string]string{}
	for _, d := range digests {
		want[d] = first.vulnerabilities(d)
	}
	first.stop()

	again := startReplica(t, url, func(c *Config) { c.ReportCache = 3 })
	again.waitReady(5*time.Second, digests...)
	for _, d := range digests {
		require.JSONEq(t, want[d], again.vulnerabilities(d))
	}
	require.Equal(t, 0, again.scans(), "the restarted replica rescanned nothing")
	require.Zero(t, again.reports.calls)
	require.LessOrEqual(t, again.srv.cache.reports.order.Len(), 3)
}

// TestReportCodec round-trips a report of an image the size of a Debian
// application image (300 packages, 150 matches) through the stored form,
// and logs its size: the Redis memory a report takes.
func TestReportCodec(t *testing.T) {
	rep := &scanner.Report{Name: "shop/api:1", Digest: digestApp, Distro: scanner.Distro{ID: "debian", Version: "12"}, GeneratedAt: time.Now().UTC()}
	for i := range 300 {
		name := fmt.Sprintf("lib%s%d", []string{"ssl", "xml", "curl", "python3.11-stdlib", "gnutls"}[i%5], i)
		p := scanner.Package{
			ID: fmt.Sprintf("%016x", uint64(i)*0x9e3779b97f4a7c15), Name: name, Version: fmt.Sprintf("%d.%d.%d-%d+deb12u%d", i%7, i%13, i%5, i%3, i%4),
			Type: "deb", Arch: "amd64", OS: true, Verdict: scanner.NotObserved,
		}
		p.PURL = fmt.Sprintf("pkg:deb/debian/%s@%s?arch=amd64&distro=debian-12", p.Name, p.Version)
		if i%4 == 0 {
			p.Verdict = scanner.InUse
			p.Evidence = []scanner.Evidence{{Path: "/usr/lib/x86_64-linux-gnu/" + name + ".so.3", How: scanner.HowMapped}}
		}
		rep.Packages = append(rep.Packages, p)
		if i%2 == 0 {
			rep.Vulnerabilities = append(rep.Vulnerabilities, scanner.Vulnerability{
				ID: fmt.Sprintf("CVE-20%d-%05d", 20+i%6, i*37), Severity: []string{"Low", "Medium", "High", "Critical"}[i%4],
				Description: fmt.Sprintf("A flaw was found in %s before %s: a crafted input could lead to a denial of service or, in configuration %d, to memory disclosure.", name, p.Version, i),
				URLs:        []string{fmt.Sprintf("https://security-tracker.debian.org/tracker/CVE-20%d-%05d", 20+i%6, i*37)},
				FixState:    "fixed", FixedIn: []string{p.Version + "1"},
				PackageID: p.ID, PackageName: p.Name, PackageVersion: p.Version, PackageType: p.Type, PURL: p.PURL, Verdict: p.Verdict,
			})
		}
	}
	data, err := encodeReport(rep)
	require.NoError(t, err)
	plain, err := json.Marshal(rep)
	require.NoError(t, err)
	t.Logf("report of %d packages and %d matches: %d bytes of JSON, %d stored", len(rep.Packages), len(rep.Vulnerabilities), len(plain), len(data))
	got, err := decodeReport(data, maxReport)
	require.NoError(t, err)
	again, err := json.Marshal(got)
	require.NoError(t, err)
	require.JSONEq(t, string(plain), string(again))
	_, err = decodeReport(data[:len(data)-4], maxReport)
	require.Error(t, err, "a truncated report is refused")
}

// A stored report is read from Redis, which whoever reaches it can write:
// one that inflates past maxReport (a gzip bomb) is refused with a clear
// error after maxReport bytes, not decoded.
func TestReportBomb(t *testing.T) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	require.NoError(t, err)
	_, err = zw.Write([]byte(`{"name":"`))
	require.NoError(t, err)
	chunk := bytes.Repeat([]byte("a"), 1<<20)
	for range maxReport>>20 + 1 {
		_, err = zw.Write(chunk)
		require.NoError(t, err)
	}
	_, err = zw.Write([]byte(`"}`))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	t.Logf("%d bytes stored inflate to %d", buf.Len(), maxReport+1<<20)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = decodeReport(buf.Bytes(), maxReport)
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, ErrReportTooLarge)
	t.Logf("%v: %d MiB allocated", err, (after.TotalAlloc-before.TotalAlloc)>>20)
	// the JSON decoder's buffer doubles up to the limit: 256 MiB in all
	// here, whatever the bomb inflates to past it
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(8*maxReport))

	// the same report under the limit decodes
	small, err := encodeReport(&scanner.Report{Name: "demo/app:1"})
	require.NoError(t, err)
	rep, err := decodeReport(small, maxReport)
	require.NoError(t, err)
	require.Equal(t, "demo/app:1", rep.Name)
	_, err = decodeReport(small, 10)
	require.ErrorIs(t, err, ErrReportTooLarge)
}
