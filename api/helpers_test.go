package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

const (
	digestApp = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestDB  = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	digestJob = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
	adminKey  = "admin-secret-for-tests-0123456789"
)

// fixturePackage is a package of a test image's SBOM and the files it owns.
type fixturePackage struct {
	scanner.Package
	files []string
	vulns []scanner.Vulnerability
}

// fixtureImage is the SBOM and vulnerabilities of a test image: the data
// the scanner would compute from the image itself.
type fixtureImage struct {
	name     string
	distro   scanner.Distro
	packages []fixturePackage
}

var fixtures = map[string]fixtureImage{
	digestApp: {
		name: "demo/app:1", distro: scanner.Distro{ID: "debian", Version: "12"},
		packages: []fixturePackage{
			{
				Package: scanner.Package{ID: "p-libc", Name: "libc6", Version: "2.36-9+deb12u7", Type: "deb", PURL: "pkg:deb/debian/libc6@2.36-9%2Bdeb12u7?arch=amd64&distro=debian-12", Arch: "amd64", OS: true},
				files:   []string{"/usr/lib/x86_64-linux-gnu/libc.so.6"},
				vulns:   []scanner.Vulnerability{{ID: "CVE-2025-0001", Severity: "Low"}},
			},
			{
				Package: scanner.Package{ID: "p-zlib", Name: "zlib1g", Version: "1:1.2.13.dfsg-1", Type: "deb", PURL: "pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1?arch=amd64&distro=debian-12", Arch: "amd64", OS: true},
				files:   []string{"/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"},
				vulns:   []scanner.Vulnerability{{ID: "CVE-2023-45853", Severity: "Critical"}},
			},
			{
				Package: scanner.Package{ID: "p-ssl", Name: "libssl3", Version: "3.0.15-1~deb12u1", Type: "deb", PURL: "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12", Arch: "amd64", OS: true},
				files:   []string{"/usr/lib/x86_64-linux-gnu/libssl.so.3"},
				vulns:   []scanner.Vulnerability{{ID: "CVE-2024-5535", Severity: "High"}, {ID: "CVE-2024-9143", Severity: "Medium"}},
			},
			{
				Package: scanner.Package{ID: "p-requests", Name: "requests", Version: "2.31.0", Type: "python", PURL: "pkg:pypi/requests@2.31.0"},
				files:   []string{"/usr/lib/python3/dist-packages/requests/__init__.py"},
				vulns:   []scanner.Vulnerability{{ID: "GHSA-9wx4-h78v-vm56", Severity: "Medium"}},
			},
		},
	},
	digestDB: {
		name: "demo/db:7", distro: scanner.Distro{ID: "alpine", Version: "3.20.3"},
		packages: []fixturePackage{
			{
				Package: scanner.Package{ID: "p-musl", Name: "musl", Version: "1.2.5-r0", Type: "apk", PURL: "pkg:apk/alpine/musl@1.2.5-r0?arch=aarch64&distro=alpine-3.20.3", Arch: "aarch64", OS: true},
				files:   []string{"/lib/ld-musl-aarch64.so.1"},
			},
			{
				Package: scanner.Package{ID: "p-pg", Name: "github.com/jackc/pgx/v5", Version: "v5.5.4", Type: "go-module", PURL: "pkg:golang/github.com/jackc/pgx/v5@v5.5.4"},
				files:   []string{"/usr/local/bin/db"},
				vulns:   []scanner.Vulnerability{{ID: "GHSA-mrww-27vc-gghv", Severity: "Critical"}},
			},
		},
	},
	digestJob: {
		name: "demo/report:3", distro: scanner.Distro{ID: "alpine", Version: "3.20.3"},
		packages: []fixturePackage{
			{
				Package: scanner.Package{ID: "p-busybox", Name: "busybox", Version: "1.36.1-r29", Type: "apk", PURL: "pkg:apk/alpine/busybox@1.36.1-r29?arch=x86_64&distro=alpine-3.20.3", Arch: "x86_64", OS: true},
				files:   []string{"/bin/busybox"},
			},
			{
				Package: scanner.Package{ID: "p-express", Name: "express", Version: "4.19.2", Type: "npm", PURL: "pkg:npm/express@4.19.2"},
				files:   []string{"/app/node_modules/express/index.js"},
				vulns:   []scanner.Vulnerability{{ID: "CVE-2024-43796", Severity: "Low"}},
			},
		},
	},
}

// fixtureReports computes reports of the fixture images from their
// profiles, as the scanner does: a package is in use when a file it owns
// was read, executed or mapped; not observed when the profile is done and
// none was; unknown otherwise.
type fixtureReports struct {
	mu    sync.Mutex
	calls int
	fail  error
	// hold, when set, makes every scan wait until it is closed or the
	// scan's context is done: a replica stuck mid-scan.
	hold chan struct{}
	// delay is how long each scan takes.
	delay time.Duration
	// panicOn is an image whose scan panics, as a parser reading a
	// crafted file might.
	panicOn string
}

func (f *fixtureReports) DBBuild(context.Context) (string, error) { return "2026-12-01T00:00:00Z", nil }

func (f *fixtureReports) Report(ctx context.Context, digest string, p *store.Profile) (*scanner.Report, error) {
	f.mu.Lock()
	f.calls++
	fail, hold, delay, panicOn := f.fail, f.hold, f.delay, f.panicOn
	f.mu.Unlock()
	if digest == panicOn {
		var table map[string]int
		table["crafted"]++ //nolint:staticcheck // a real runtime panic (assignment to a nil map) is the point
	}
	if hold != nil || delay > 0 {
		var done <-chan time.Time // never, without a delay
		if delay > 0 {
			done = time.After(delay)
		}
		select {
		case <-hold:
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	fx, ok := fixtureOf(digest)
	if !ok {
		return nil, errUnreachable
	}
	loaded := map[string]bool{}
	for _, sec := range []store.Section{store.FilesRead, store.Exec, store.Mapped} {
		for _, e := range p.Sections[sec] {
			loaded[e.Value] = true
		}
	}
	sessionOnly := map[string]bool{} // of FilesRead, as the fixtures load
	for _, e := range p.Sections[store.ExecSessions] {
		if sec, v, _ := store.ParseSectionMember(e.Value); sec == store.FilesRead {
			sessionOnly[v] = true
		}
	}
	rep := &scanner.Report{
		Name: fx.name, Digest: digest, Distro: fx.distro, GeneratedAt: time.Now().UTC(),
		Profile: scanner.ProfileState{Found: true, State: string(p.State), Confidence: string(p.Confidence), Revision: p.Meta.Revision},
		Summary: scanner.VulnerabilityCounts{BySeverity: map[string]scanner.SeverityCount{}},
	}
	for _, fp := range fx.packages {
		pk := fp.Package
		absent := scanner.Unknown
		if p.State == store.Done {
			absent = scanner.NotObserved
		}
		pk.Verdict, pk.VerdictWithoutExecSessions = absent, absent
		for _, f := range fp.files {
			if loaded[f] {
				pk.Verdict = scanner.InUse
				ev := scanner.Evidence{Path: f, How: scanner.HowRead}
				if sessionOnly[f] {
					ev.Source = scanner.SourceExecSession
				} else {
					pk.VerdictWithoutExecSessions = ""
				}
				pk.Evidence = append(pk.Evidence, ev)
			}
		}
		if pk.Verdict != scanner.InUse {
			pk.VerdictWithoutExecSessions = ""
		}
		rep.Packages = append(rep.Packages, pk)
		for _, v := range fp.vulns {
			v.PackageID, v.PackageName, v.PackageVersion, v.PackageType, v.PURL, v.Verdict = pk.ID, pk.Name, pk.Version, pk.Type, pk.PURL, pk.Verdict
			rep.Vulnerabilities = append(rep.Vulnerabilities, v)
			rep.Summary.Total++
			sc := rep.Summary.BySeverity[v.Severity]
			sc.Total++
			switch v.Verdict {
			case scanner.InUse:
				rep.Summary.InUse++
				sc.InUse++
			case scanner.NotObserved:
				rep.Summary.NotObserved++
			default:
				rep.Summary.Unknown++
			}
			rep.Summary.BySeverity[v.Severity] = sc
		}
	}
	if rep.Summary.Total > 0 {
		rep.Summary.Reduction = float64(rep.Summary.Total-rep.Summary.InUse) * 100 / float64(rep.Summary.Total)
	}
	return rep, nil
}

type testError string

func (e testError) Error() string { return string(e) }

const errUnreachable = testError("image not reachable from the test")

// testFormats render reports as small JSON documents: the real OpenVEX
// and CycloneDX writers are the scanner's, tested there.
var testFormats = Formats{
	OpenVEX: func(w io.Writer, rep *scanner.Report) error {
		return json.NewEncoder(w).Encode(map[string]any{"@context": "https://openvex.dev/ns/v0.2.0", "product": rep.Digest})
	},
	CycloneDX: func(w io.Writer, rep *scanner.Report) error {
		return json.NewEncoder(w).Encode(map[string]any{"bomFormat": "CycloneDX", "components": len(rep.Packages)})
	},
	Enrich: func(r io.Reader, rep *scanner.Report) ([]byte, error) {
		var doc map[string]any
		if err := json.NewDecoder(r).Decode(&doc); err != nil {
			return nil, err
		}
		doc["inuse"] = rep.Summary.InUse
		return json.Marshal(doc)
	},
}

// env is a server over a real Redis.
type env struct {
	t       testing.TB
	redis   *redistest.Server
	st      *store.Store
	rdb     *redis.Client // for what a test changes behind the store's back
	srv     *Server
	ts      *httptest.Server
	reports *fixtureReports
	logs    *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newEnv starts Redis, seeds the fixture profiles, and runs a server with
// its background scanner; tune changes the config first.
func newEnv(t testing.TB, tune func(*Config)) *env {
	t.Helper()
	e := &env{t: t, redis: redistest.Start(t), reports: &fixtureReports{}, logs: &syncBuffer{}}
	var err error
	e.st, err = store.Open(e.redis.URL())
	require.NoError(t, err)
	t.Cleanup(func() { e.st.Close() })
	e.rdb = redis.NewClient(&redis.Options{Addr: e.redis.Addr()})
	t.Cleanup(func() { e.rdb.Close() })
	e.srv = e.startServer(tune)
	e.ts = httptest.NewServer(e.srv.Handler())
	t.Cleanup(e.ts.Close)
	return e
}

func (e *env) startServer(tune func(*Config)) *Server {
	cfg := Config{
		Store: e.st, Learning: store.DefaultLearning, Reports: e.reports, Formats: testFormats,
		AdminSecret: adminKey, Log: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		PollInterval: 100 * time.Millisecond, RateLimit: 1e6, RateBurst: 1e6,
	}
	if tune != nil {
		tune(&cfg)
	}
	srv := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	e.t.Cleanup(func() { cancel(); <-done })
	return srv
}

// seedFixtures writes the profiles of the fixture images: the app reads
// libc and requests, in two containers of one deployment; the db executes
// its binary in a StatefulSet, and its profile is done.
func (e *env) seedFixtures() {
	e.t.Helper()
	now := time.Now()
	old := now.Add(-2 * time.Hour)
	db := store.NewDelta()
	db.AddTo(store.Names, "demo/db:7")
	db.AddTo(store.Nodes, "node-b")
	db.AddTo(store.Containers, "c-db-1")
	db.AddTo(store.Workloads, store.Workload{Namespace: "data", Kind: "StatefulSet", Name: "pg", Container: "db"}.Member())
	db.Add(store.Exec, "/usr/local/bin/db", old.UnixMilli())
	_, err := e.st.Apply(e.t.Context(), map[string]*store.Delta{digestDB: db}, old, store.DefaultLearning)
	require.NoError(e.t, err)
	// Seen again now with nothing new: observed for two hours, stable.
	_, err = e.st.Apply(e.t.Context(), map[string]*store.Delta{digestDB: store.NewDelta()}, now, store.DefaultLearning)
	require.NoError(e.t, err)

	app := store.NewDelta()
	app.AddTo(store.Names, "demo/app:1")
	app.AddTo(store.Nodes, "node-a")
	app.AddTo(store.Containers, "c-app-1")
	app.AddTo(store.Workloads, store.Workload{Namespace: "prod", Kind: "Deployment", Name: "web", Container: "app"}.Member())
	app.AddTo(store.Workloads, store.Workload{Namespace: "prod", Kind: "Deployment", Name: "web", Container: "sidecar"}.Member())
	app.Add(store.FilesRead, "/usr/lib/x86_64-linux-gnu/libc.so.6", now.UnixMilli())
	app.Add(store.FilesRead, "/usr/lib/python3/dist-packages/requests/__init__.py", now.UnixMilli())
	app.Add(store.FilesRead, "/etc/hosts", now.UnixMilli())
	app.Add(store.Exec, "/usr/bin/python3.11", now.UnixMilli())
	app.Add(store.TCPIn, "8080", now.UnixMilli())
	// A millisecond later, so that the app sorts first in the index.
	_, err = e.st.Apply(e.t.Context(), map[string]*store.Delta{digestApp: app}, now.Add(time.Millisecond), store.DefaultLearning)
	require.NoError(e.t, err)
}

// waitReports waits until the background scanner has a report of every
// digest.
func (e *env) waitReports(srv *Server, digests ...string) {
	e.t.Helper()
	e.waitStatus(srv, statusReady, digests...)
}

// waitStatus waits until the reports of every digest have this status.
func (e *env) waitStatus(srv *Server, want reportStatus, digests ...string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
	defer cancel()
	for {
		ready := true
		for _, d := range digests {
			if _, st, _ := srv.cache.reportOf(ctx, d); st != want {
				ready = false
			}
		}
		if ready {
			return
		}
		srv.cache.waitPoll(ctx)
		require.NoError(e.t, ctx.Err(), "reports of %v not ready", digests)
	}
}

// do sends a request with the bearer secret (none when empty) and returns
// the status and body.
func do(t testing.TB, base, method, path, secret string, body io.Reader) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, body)
	require.NoError(t, err)
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b, resp.Header
}

func (e *env) get(path, secret string) (int, []byte) {
	e.t.Helper()
	code, b, _ := do(e.t, e.ts.URL, "GET", path, secret, nil)
	return code, b
}

// getJSON gets path as admin, wants 200 and decodes the body.
func (e *env) getJSON(path string, v any) {
	e.t.Helper()
	code, b := e.get(path, adminKey)
	require.Equal(e.t, http.StatusOK, code, "GET %s: %s", path, b)
	require.NoError(e.t, json.Unmarshal(b, v), "GET %s: %s", path, b)
}

func (e *env) decode(body []byte, v any) {
	e.t.Helper()
	require.NoError(e.t, json.Unmarshal(body, v), "%s", body)
}

func requireJSONError(t testing.TB, code int, body []byte, want int) {
	t.Helper()
	require.Equal(t, want, code, "body %s", body)
	var e map[string]string
	require.NoError(t, json.Unmarshal(body, &e), "error body is JSON: %s", body)
	require.NotEmpty(t, e["error"], "error body has an error: %s", body)
	require.Len(t, e, 1)
}

func keys[M ~map[string]V, V any](m M) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

var _ = strings.TrimSpace
