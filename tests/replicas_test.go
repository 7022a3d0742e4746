package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/cataloging"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/scanner"
	"github.com/inuse-dev/inuse/scanner/vulndbtest"
)

// Serve replicas: separate `inuse serve` processes over one 3-master Redis
// Cluster share the scans and the reports of 50 images (issue 13).

const (
	replicaImages = 50
	replicaAdmin  = "replica-test-admin-credential"
	// replicaLease is --scan-lease: short, so that a killed replica's
	// images wait little.
	replicaLease = 3 * time.Second
	libzPath     = "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"
)

// writeZlibRoot writes the smallest Debian 12 root with a vulnerable
// package: dpkg's records of zlib1g and its library.
func writeZlibRoot(t *testing.T, dir string) {
	t.Helper()
	files := map[string]string{
		"etc/os-release": "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n",
		"var/lib/dpkg/status": "Package: zlib1g\nStatus: install ok installed\nPriority: optional\nSection: libs\n" +
			"Installed-Size: 168\nMaintainer: Mark Brown <broonie@debian.org>\nArchitecture: amd64\nMulti-Arch: same\n" +
			"Source: zlib\nVersion: 1:1.2.13.dfsg-1\nDescription: compression library - runtime\n\n",
		"var/lib/dpkg/info/zlib1g:amd64.md5sums": "00000000000000000000000000000000  " + libzPath[1:] + "\n",
		libzPath[1:]:                             "",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
}

// replicaFixture is what the replicas serve: the inuse binary, a scanner
// cache holding the SBOM of every image (as `inuse scan --rootfs
// --image-digest` leaves it), a database and the cluster with a profile
// of every image.
type replicaFixture struct {
	bin, cache, db, admin, redisURL string
	digests                         []string
	st                              *store.Store
	rdb                             *redis.ClusterClient
}

func newReplicaFixture(t *testing.T) *replicaFixture {
	t.Helper()
	dir := t.TempDir()
	bin, err := testutil.Build(dir, "github.com/inuse-dev/inuse/cmd/inuse")
	require.NoError(t, err)
	fx := &replicaFixture{bin: bin, cache: filepath.Join(dir, "cache"), db: filepath.Join(dir, "db"), admin: filepath.Join(dir, "admin")}
	require.NoError(t, os.WriteFile(fx.admin, []byte(replicaAdmin), 0o600))
	dbFile, err := vulndbtest.Write(filepath.Join(dir, "build-db"), []vulndbtest.Advisory{{
		ID: "CVE-2099-0001", Severity: "critical", Package: "zlib", Ecosystem: "deb", VersionFormat: "deb",
		OS: &vulndbtest.Bookworm, Constraint: "< 1:1.2.13.dfsg-2", Fixed: "1:1.2.13.dfsg-2",
	}})
	require.NoError(t, err)
	out, err := exec.Command(bin, "db", "import", "--db-dir", fx.db, dbFile).CombinedOutput()
	require.NoError(t, err, "%s", out)

	root := filepath.Join(dir, "rootfs")
	writeZlibRoot(t, root)
	sc, err := scanner.New(scanner.Config{CacheDir: fx.cache})
	require.NoError(t, err)
	defer sc.Close()
	// syft builds its license scanner for every SBOM unless the context
	// carries one.
	ctx, err := syft.SetContextLicenseScanner(t.Context(), cataloging.DefaultLicenseConfig())
	require.NoError(t, err)
	for i := range replicaImages {
		sum := sha256.Sum256(fmt.Appendf(nil, "replica-test/%d", i))
		d := "sha256:" + hex.EncodeToString(sum[:])
		_, err := sc.Catalog(ctx, scanner.SourceSpec{Kind: scanner.Rootfs, Ref: root, Digest: d, Name: fmt.Sprintf("shop/app-%d:1", i)})
		require.NoError(t, err)
		fx.digests = append(fx.digests, d)
	}

	cluster := redistest.StartCluster(t, 3)
	fx.redisURL = cluster.URL()
	fx.st, err = store.Open(fx.redisURL)
	require.NoError(t, err)
	t.Cleanup(func() { fx.st.Close() })
	fx.rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs()})
	t.Cleanup(func() { fx.rdb.Close() })
	fx.profile(t, libzPath)
	return fx
}

// profile adds one read of path to every image's profile: a new revision
// of each when path is new to it.
func (fx *replicaFixture) profile(t *testing.T, path string) {
	t.Helper()
	now := time.Now()
	deltas := map[string]*store.Delta{}
	for i, d := range fx.digests {
		delta := store.NewDelta()
		delta.AddTo(store.Names, fmt.Sprintf("shop/app-%d:1", i))
		delta.AddTo(store.Containers, fmt.Sprintf("c-%d", i))
		delta.AddTo(store.Workloads, store.Workload{Namespace: "shop", Kind: "Deployment", Name: fmt.Sprintf("app-%d", i), Container: "app"}.Member())
		delta.Add(store.FilesRead, path, now.UnixMilli())
		deltas[d] = delta
	}
	_, err := fx.st.Apply(t.Context(), deltas, now, store.DefaultLearning)
	require.NoError(t, err)
}

// leased lists the images whose scan lease someone holds.
func (fx *replicaFixture) leased(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, d := range fx.digests {
		n, err := fx.rdb.Exists(t.Context(), store.Keys(d).ScanLease()).Result()
		require.NoError(t, err)
		if n > 0 {
			out = append(out, d)
		}
	}
	return out
}

// storedRevisions is the profile revision each image's stored report was
// computed for.
func (fx *replicaFixture) storedRevisions(t *testing.T) map[string]int64 {
	t.Helper()
	stamps, err := fx.st.ReportStamps(t.Context(), fx.digests)
	require.NoError(t, err)
	out := map[string]int64{}
	for d, s := range stamps {
		out[d] = s.Revision
	}
	return out
}

// serveProc is one `inuse serve` process.
type serveProc struct {
	t      *testing.T
	id     string // --replica-id
	base   string
	cmd    *exec.Cmd
	exited chan struct{}
}

func (fx *replicaFixture) serve(t *testing.T) *serveProc {
	t.Helper()
	addr := testutil.FreeAddr(t)
	id := "replica-" + addr
	cmd := exec.Command(fx.bin, "--log-level", "warn", "serve", "--redis", fx.redisURL, "--listen", addr, "--replica-id", id,
		"--admin-token-file", fx.admin, "--cache-dir", fx.cache, "--db-dir", fx.db,
		"--poll-interval", "100ms", "--scan-lease", replicaLease.String(), "--rate-limit", "1000000", "--rate-burst", "1000000")
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	require.NoError(t, cmd.Start())
	p := &serveProc{t: t, id: id, base: "http://" + addr, cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.signal(syscall.SIGKILL) })
	testutil.WaitHealthy(t, p.base+"/healthz", 20*time.Second)
	return p
}

// stopHolding stops the replica (SIGSTOP) at a moment it holds scan
// leases, and returns them: held lists them. A replica killed then dies
// holding them. Scans of cached images are fast: a lease seen before a
// kill may be released before it lands, so the replica is stopped first,
// and let go on until it is caught holding one.
func (p *serveProc) stopHolding(t *testing.T, held func() []string) []string {
	t.Helper()
	var leases []string
	waitFor(t, 20*time.Second, "the replica stopped while it holds a scan lease", func() bool {
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGSTOP))
		waitFor(t, 5*time.Second, "the replica stopped", func() bool {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
			require.NoError(t, err)
			// The state follows the command name's closing parenthesis.
			return strings.HasPrefix(string(stat[strings.LastIndexByte(string(stat), ')')+1:]), " T")
		})
		if leases = held(); len(leases) > 0 {
			return true
		}
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGCONT))
		time.Sleep(5 * time.Millisecond)
		return false
	})
	return leases
}

// signal sends sig and waits until the process has exited.
func (p *serveProc) signal(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
	<-p.exited
}

func (p *serveProc) get(path string) (int, []byte) {
	p.t.Helper()
	req, err := http.NewRequest("GET", p.base+path, nil)
	require.NoError(p.t, err)
	req.Header.Set("Authorization", "Bearer "+replicaAdmin)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(p.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(p.t, err)
	return resp.StatusCode, body
}

// metric reads one series of the replica's /metrics; absent is 0.
func (p *serveProc) metric(series string) int {
	p.t.Helper()
	code, body := p.get("/metrics")
	require.Equal(p.t, http.StatusOK, code)
	return int(max(testutil.MetricValue(string(body), series), 0))
}

func (p *serveProc) scans() int { return p.metric(`inuse_scans_total{result="ok"}`) }

// waitReady waits until the replica has a report of every image.
func (p *serveProc) waitReady(timeout time.Duration) {
	p.t.Helper()
	waitFor(p.t, timeout, "every image has a report", func() bool {
		require.Zero(p.t, p.metric(`inuse_images{report="failed"}`), "no scan fails")
		return p.metric(`inuse_images{report="ready"}`) == replicaImages
	})
}

// waitFor polls cond, which may fail the test, until it holds.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "waited %s: %s", timeout, what)
		time.Sleep(time.Millisecond)
	}
}

// report is the replica's answer for the image's report: its summary
// (with the time it was computed) and its vulnerabilities.
func (p *serveProc) report(digest string) (summary json.RawMessage, vulns string) {
	p.t.Helper()
	code, body := p.get("/api/v1/images/" + digest)
	require.Equal(p.t, http.StatusOK, code, "%s", body)
	var img struct {
		Report json.RawMessage `json:"report"`
	}
	require.NoError(p.t, json.Unmarshal(body, &img))
	code, body = p.get("/api/v1/images/" + digest + "/vulnerabilities")
	require.Equal(p.t, http.StatusOK, code, "%s", body)
	return img.Report, string(body)
}

// TestServeReplicas runs `inuse serve` processes over a 3-master Cluster:
// two replicas scan 50 images exactly once in all and answer the same
// reports; a restarted replica serves them without scanning; a replica
// killed (SIGKILL) mid-scan leaves its leases, and the other replica
// gives every image its report once they expire.
func TestServeReplicas(t *testing.T) {
	fx := newReplicaFixture(t)

	a, b := fx.serve(t), fx.serve(t)
	a.waitReady(60 * time.Second)
	b.waitReady(60 * time.Second)
	t.Logf("scans: %d + %d", a.scans(), b.scans())
	require.Equal(t, replicaImages, a.scans()+b.scans(), "every image scanned exactly once")
	reports := map[string]json.RawMessage{}
	for _, d := range fx.digests {
		sa, va := a.report(d)
		sb, vb := b.report(d)
		require.JSONEq(t, string(sa), string(sb), "both replicas answer the same report of %s", d)
		require.JSONEq(t, va, vb)
		require.Contains(t, va, `"in_use"`, "the profile's read of libz puts CVE-2099-0001 in use")
		reports[d] = sa
	}

	t.Run("restarted replica is warm", func(t *testing.T) {
		b.signal(syscall.SIGTERM)
		again := fx.serve(t)
		again.waitReady(30 * time.Second)
		for _, d := range fx.digests {
			s, _ := again.report(d)
			require.JSONEq(t, string(reports[d]), string(s), "the stored report of %s", d)
		}
		require.Zero(t, again.scans(), "the restarted replica rescanned nothing")
		again.signal(syscall.SIGTERM)
	})

	t.Run("replica killed mid-scan", func(t *testing.T) {
		// Only a scans the new revisions: the leases held when it is
		// killed are its own.
		before := fx.storedRevisions(t)
		fx.profile(t, "/usr/lib/x86_64-linux-gnu/libz.so.1")
		orphans := a.stopHolding(t, func() []string { return fx.leased(t) })
		a.signal(syscall.SIGKILL)
		killed := time.Now()
		rescanned := 0
		for d, rev := range fx.storedRevisions(t) {
			if rev > before[d] {
				rescanned++
			}
		}
		t.Logf("killed with %d leases held, %d images already rescanned", len(orphans), rescanned)

		other := fx.serve(t)
		waitFor(t, 30*time.Second, "every image has a report of its new revision", func() bool {
			stored := fx.storedRevisions(t)
			for _, d := range fx.digests {
				if stored[d] <= before[d] {
					return false
				}
			}
			return true
		})
		require.GreaterOrEqual(t, time.Since(killed), replicaLease/2, "the killed replica's images waited for its leases")
		other.waitReady(10 * time.Second)
		require.Equal(t, replicaImages-rescanned, other.scans(), "the other replica scanned every image left, once")
		for _, d := range fx.digests {
			s, _ := other.report(d)
			require.NotEqual(t, string(reports[d]), string(s), "%s: the report of the new revision", d)
		}
	})

	t.Run("live replica takes over from a killed one", func(t *testing.T) {
		// Two replicas run; one is killed (SIGKILL) while it holds scan
		// leases. The live one, which never stopped, reports every image
		// once the leases expire: within a lease and one poll of the kill
		// it holds the orphaned leases, and no image is scanned (its lease
		// taken) more than twice in all.
		takes := fx.watchLeases(t)
		c, d := fx.serve(t), fx.serve(t)
		before := fx.storedRevisions(t)
		fx.profile(t, "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13-live")
		// The leases it dies holding stay until they expire.
		orphans := c.stopHolding(t, func() []string { return fx.leasedBy(t, c) })
		c.signal(syscall.SIGKILL)
		killed := time.Now()
		t.Logf("killed with %d leases held", len(orphans))
		waitFor(t, 60*time.Second, "every image has a report of its new revision", func() bool {
			stored := fx.storedRevisions(t)
			for _, dg := range fx.digests {
				if stored[dg] <= before[dg] {
					return false
				}
			}
			return true
		})
		d.waitReady(10 * time.Second)
		var slowest time.Duration
		for _, o := range orphans {
			at := takes.last(o)
			slowest = max(slowest, at.Sub(killed))
			require.True(t, at.After(killed), "%s: the live replica took the orphaned lease", o)
			require.LessOrEqual(t, at.Sub(killed), replicaLease+replicaPoll+time.Second,
				"%s: taken over within a lease and a poll of the kill (%s)", o, at.Sub(killed))
		}
		most := 0
		for _, dg := range fx.digests {
			require.LessOrEqual(t, takes.count(dg), 2, "%s scanned at most twice", dg)
			most = max(most, takes.count(dg))
		}
		t.Logf("orphaned leases taken over %s after the kill at the latest (lease %s, poll %s); at most %d scans of an image", slowest, replicaLease, replicaPoll, most)
	})
}

// replicaPoll is --poll-interval.
const replicaPoll = 100 * time.Millisecond

// leaseTakes counts the scan leases taken per image, with the time of
// the last take, from the masters' keyspace notifications: each take
// (SET NX) is the start of a scan.
type leaseTakes struct {
	mu    sync.Mutex
	n     map[string]int
	lastT map[string]time.Time
}

func (l *leaseTakes) count(digest string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[digest]
}

func (l *leaseTakes) last(digest string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastT[digest]
}

// watchLeases subscribes to the set events of every master's scan lease
// keys until the test ends.
func (fx *replicaFixture) watchLeases(t *testing.T) *leaseTakes {
	t.Helper()
	l := &leaseTakes{n: map[string]int{}, lastT: map[string]time.Time{}}
	err := fx.rdb.ForEachMaster(t.Context(), func(ctx context.Context, m *redis.Client) error {
		if err := m.ConfigSet(ctx, "notify-keyspace-events", "K$").Err(); err != nil {
			return err
		}
		sub := m.PSubscribe(context.WithoutCancel(ctx), "__keyspace@0__:inuse:*:scan")
		if _, err := sub.Receive(ctx); err != nil {
			return err
		}
		t.Cleanup(func() { sub.Close() })
		go func() {
			for msg := range sub.Channel() {
				if msg.Payload != "set" {
					continue
				}
				key := strings.TrimPrefix(msg.Channel, "__keyspace@0__:")
				digest := strings.TrimSuffix(strings.TrimPrefix(key, "inuse:{"), "}:scan")
				l.mu.Lock()
				l.n[digest]++
				l.lastT[digest] = time.Now()
				l.mu.Unlock()
			}
		}()
		return nil
	})
	require.NoError(t, err)
	return l
}

// leasedBy lists the images whose scan lease the replica p holds.
func (fx *replicaFixture) leasedBy(t *testing.T, p *serveProc) []string {
	t.Helper()
	var out []string
	for _, d := range fx.digests {
		v, err := fx.rdb.Get(t.Context(), store.Keys(d).ScanLease()).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		require.NoError(t, err)
		if v == p.id {
			out = append(out, d)
		}
	}
	return out
}
