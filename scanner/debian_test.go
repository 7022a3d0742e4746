package scanner_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anchore/packageurl-go"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/scanner"
	"github.com/inuse-dev/inuse/scanner/scannertest"
	"github.com/inuse-dev/inuse/scanner/vulndbtest"
)

// testImageName is the --name the archive is scanned under.
const testImageName = "inuse-test/debian:bookworm"

// Paths the profile records, as the kernel resolves them (usr-merged).
const (
	libzPath = "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"
	libcPath = "/usr/lib/x86_64-linux-gnu/libc.so.6"
)

// advisories of the test database, on packages of the minbase root; each
// is written under its Debian source package.
var advisories = []vulndbtest.Advisory{
	{ID: "CVE-2099-0001", Severity: "critical", Package: "zlib", Constraint: "< 1:1.2.13.dfsg-2", Fixed: "1:1.2.13.dfsg-2"},
	{ID: "CVE-2099-0002", Severity: "high", Package: "glibc", Constraint: "< 2.36-9+deb12u99", Fixed: "2.36-9+deb12u99"},
	{ID: "CVE-2099-0003", Severity: "medium", Package: "bzip2", Constraint: "< 1.0.8-6"},
	{ID: "CVE-2099-0004", Severity: "low", Package: "xz-utils", Constraint: "< 5.4.1-2", Fixed: "5.4.1-2"},
}

func init() {
	for i := range advisories {
		advisories[i].Ecosystem, advisories[i].VersionFormat, advisories[i].OS = "deb", "deb", &vulndbtest.Bookworm
	}
}

// Expected matches: glibc's advisory matches both of its binary packages.
var (
	wantInUse       = []string{"CVE-2099-0001 zlib1g", "CVE-2099-0002 libc6"}
	wantNotObserved = []string{"CVE-2099-0002 libc-bin", "CVE-2099-0003 libbz2-1.0", "CVE-2099-0004 liblzma5"}
)

// debianFixture is the setup every Debian test shares: it is built once
// per test binary (the root once per machine).
type debianFixture struct {
	root, archive, dbPath, dbRoot, cacheDir string
	digest                                  string
	redis                                   *redistest.Server
	scanner                                 *scanner.Scanner
}

var (
	fixtureOnce sync.Once
	fixture     *debianFixture
	errFixture  error
	fixtureTmp  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture != nil {
		fixture.scanner.Close()
		fixture.redis.Stop()
	}
	if fixtureTmp != "" {
		os.RemoveAll(fixtureTmp)
	}
	os.Exit(code)
}

func debian(t *testing.T) *debianFixture {
	t.Helper()
	testutil.RequirePrivileged(t) // debootstrap needs root
	fixtureOnce.Do(func() { fixture, errFixture = newDebianFixture(t) })
	require.NoError(t, errFixture, "setting up the Debian image")
	require.NotNil(t, fixture, "setting up the Debian image failed in an earlier test")
	return fixture
}

func newDebianFixture(t *testing.T) (*debianFixture, error) {
	root := scannertest.DebianRoot(t)
	tmp, err := os.MkdirTemp("", "inuse-debian-")
	require.NoError(t, err)
	fixtureTmp = tmp
	f := &debianFixture{root: root, archive: filepath.Join(tmp, "debian.oci.tar"), cacheDir: filepath.Join(tmp, "cache")}
	f.digest = scannertest.WriteOCIArchive(t, root, f.archive)

	f.dbPath, err = vulndbtest.Write(filepath.Join(tmp, "build-db"), advisories)
	require.NoError(t, err)
	f.dbRoot = filepath.Join(f.cacheDir, "db")
	f.scanner, err = scanner.New(scanner.Config{CacheDir: f.cacheDir})
	require.NoError(t, err)
	require.NoError(t, f.scanner.DB().Import(context.Background(), f.dbPath, nil))

	// the Redis server outlives this first test: TestMain stops it
	f.redis = redistest.Start(packageTB{t, tmp})
	return f, nil
}

// packageTB lets a fixture built inside one test live for the package:
// TestMain cleans up after all tests.
type packageTB struct {
	testing.TB
	tmp string
}

func (packageTB) Cleanup(func()) {}

func (p packageTB) TempDir() string {
	d, err := os.MkdirTemp(p.tmp, "tb-")
	if err != nil {
		p.Fatal(err)
	}
	return d
}

// writeProfile folds a runtime profile into Redis: zlib opened, libc
// mapped, bash executed, and a directory listed (which proves nothing).
func (f *debianFixture) writeProfile(t *testing.T) *store.Store {
	st, err := store.Open(f.redis.URL())
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	now := time.Now()
	d := store.NewDelta()
	d.AddTo(store.Names, testImageName)
	d.AddTo(store.Containers, "c1")
	d.AddTo(store.Nodes, "node-a")
	d.Add(store.FilesRead, libzPath, now.UnixMilli())
	d.Add(store.Mapped, libcPath, now.UnixMilli())
	d.Add(store.Exec, "/usr/bin/bash", now.UnixMilli())
	d.Add(store.DirsRead, "/usr/lib/x86_64-linux-gnu", now.UnixMilli())
	_, err = st.Apply(t.Context(), map[string]*store.Delta{f.digest: d}, now, store.DefaultLearning)
	require.NoError(t, err)
	return st
}

// shortLearning makes a profile done a moment after it was written.
var shortLearning = store.LearningConfig{MinObserved: time.Millisecond, StableWindow: time.Millisecond}

func findings(rep *scanner.Report, v scanner.Verdict) []string {
	var out []string
	for _, x := range rep.Vulnerabilities {
		if x.Verdict == v {
			out = append(out, x.ID+" "+x.PackageName)
		}
	}
	return out
}

func TestDebianImage(t *testing.T) {
	f := debian(t)
	ctx := t.Context()
	spec := scanner.SourceSpec{Kind: scanner.OCIArchive, Ref: f.archive, Name: testImageName}
	digest, err := f.scanner.Catalog(ctx, spec)
	require.NoError(t, err)
	require.Equal(t, f.digest, digest, "the digest is the archive's manifest digest")

	st := f.writeProfile(t)
	done, err := st.Profile(ctx, digest, time.Now().Add(time.Second), shortLearning)
	require.NoError(t, err)
	require.Equal(t, store.Done, done.State)
	rep, err := f.scanner.Report(ctx, digest, done)
	require.NoError(t, err)

	t.Run("verdicts", func(t *testing.T) {
		require.ElementsMatch(t, wantInUse, findings(rep, scanner.InUse))
		require.ElementsMatch(t, wantNotObserved, findings(rep, scanner.NotObserved))
		require.Empty(t, findings(rep, scanner.Unknown))
		var ids []string
		for _, v := range rep.Vulnerabilities {
			ids = append(ids, v.ID+" "+v.PackageName)
		}
		// by severity, in use first within one
		require.Equal(t, []string{"CVE-2099-0001 zlib1g", "CVE-2099-0002 libc6", "CVE-2099-0002 libc-bin", "CVE-2099-0003 libbz2-1.0", "CVE-2099-0004 liblzma5"}, ids)
		require.Equal(t, "Critical", rep.Vulnerabilities[0].Severity)
		pkgs := map[string]scanner.Package{}
		for _, p := range rep.Packages {
			pkgs[p.Name] = p
		}
		require.Equal(t, scanner.InUse, pkgs["zlib1g"].Verdict)
		require.Contains(t, evidencePaths(pkgs["zlib1g"]), libzPath)
		require.Equal(t, scanner.NotObserved, pkgs["libbz2-1.0"].Verdict)
		require.Equal(t, scanner.InUse, pkgs["bash"].Verdict, "an executed binary puts its package in use")
	})

	t.Run("summary", func(t *testing.T) {
		s := rep.Summary
		require.Equal(t, 5, s.Total)
		require.Equal(t, 2, s.InUse)
		require.Equal(t, 3, s.NotObserved)
		require.InDelta(t, 60.0, s.Reduction, 0.01)
		require.Equal(t, scanner.SeverityCount{Total: 2, InUse: 1}, s.BySeverity["High"])
		require.Equal(t, scanner.SeverityCount{Total: 1, InUse: 1}, s.BySeverity["Critical"])
	})

	t.Run("json", func(t *testing.T) {
		b, err := json.Marshal(rep)
		require.NoError(t, err)
		var doc struct {
			Digest   string `json:"digest"`
			Distro   map[string]string
			Profile  map[string]any
			Packages []map[string]any
			Vulns    []map[string]any `json:"vulnerabilities"`
		}
		require.NoError(t, json.Unmarshal(b, &doc))
		require.Equal(t, digest, doc.Digest)
		require.Equal(t, "debian", doc.Distro["id"])
		require.True(t, strings.HasPrefix(doc.Distro["version"], "12"), "distro version %q", doc.Distro["version"])
		require.Equal(t, "done", doc.Profile["learning_state"])
		require.NotEmpty(t, doc.Profile["confidence"])
		for _, k := range []string{"name", "version", "type", "purl", "verdict"} {
			require.Contains(t, doc.Packages[0], k)
		}
		for _, k := range []string{"id", "severity", "package_id", "package_name", "package_version", "purl", "verdict"} {
			require.Contains(t, doc.Vulns[0], k)
		}
	})

	t.Run("table", func(t *testing.T) {
		var b strings.Builder
		require.NoError(t, scanner.WriteTable(&b, rep))
		out := b.String()
		require.Contains(t, out, "IN USE")
		require.Regexp(t, `Critical\s+CVE-2099-0001\s+zlib1g\s+1:1.2.13.dfsg-1\s+1:1.2.13.dfsg-2\s+yes`, out)
		require.Regexp(t, `Low\s+CVE-2099-0004\s+liblzma5\s+\S+\s+5.4.1-2\s+no`, out)
		require.Contains(t, out, "5 vulnerabilities, 2 in use, 3 not observed, 0 unknown")
		require.Contains(t, out, "reduction:  60.0%")
		require.Less(t, strings.Index(out, "CVE-2099-0001"), strings.Index(out, "CVE-2099-0003"))
	})

	t.Run("openvex", func(t *testing.T) {
		doc, err := scanner.OpenVEX(rep)
		require.NoError(t, err)
		product := "pkg:oci/debian@sha256%3A" + strings.TrimPrefix(digest, "sha256:")
		pkgs := map[string]scanner.Package{}
		for _, p := range rep.Packages {
			pkgs[p.Name] = p
		}
		var notAffected []string
		for _, s := range doc.Statements {
			require.Len(t, s.Products, 1)
			require.Equal(t, product, s.Products[0].ID)
			require.Len(t, s.Products[0].Subcomponents, 1)
			sub := s.Products[0].Subcomponents[0].ID
			require.NotContains(t, sub, "?", "subcomponents carry no qualifiers")
			u, err := packageurl.FromString(sub)
			require.NoError(t, err)
			require.Equal(t, pkgs[u.Name].Version, u.Version, "subcomponent %s is the package's purl", sub)
			if s.Status == "not_affected" {
				require.Equal(t, "vulnerable_code_not_in_execute_path", string(s.Justification))
				notAffected = append(notAffected, string(s.Vulnerability.Name)+" "+u.Name)
			} else {
				require.Equal(t, "affected", string(s.Status))
			}
		}
		require.ElementsMatch(t, wantNotObserved, notAffected, "not_affected exactly for the not_observed findings")
	})

	t.Run("cyclonedx", func(t *testing.T) {
		bom := scanner.CycloneDX(rep)
		states := map[string]string{}
		refs := map[string]string{}
		for _, c := range *bom.Components {
			refs[c.BOMRef] = c.Name
		}
		for _, v := range *bom.Vulnerabilities {
			a := (*v.Affects)[0]
			key := v.ID + " " + refs[a.Ref]
			states[key] = string(v.Analysis.State) + "/" + string(v.Analysis.Justification)
		}
		require.Equal(t, map[string]string{
			"CVE-2099-0001 zlib1g":     "exploitable/",
			"CVE-2099-0002 libc6":      "exploitable/",
			"CVE-2099-0002 libc-bin":   "not_affected/code_not_reachable",
			"CVE-2099-0003 libbz2-1.0": "not_affected/code_not_reachable",
			"CVE-2099-0004 liblzma5":   "not_affected/code_not_reachable",
		}, states)
		var b strings.Builder
		require.NoError(t, scanner.Write(&b, rep, "cyclonedx"))
		require.Contains(t, b.String(), `"bomFormat": "CycloneDX"`)
	})

	t.Run("learning", func(t *testing.T) {
		learning, err := st.Profile(ctx, digest, time.Now(), store.DefaultLearning)
		require.NoError(t, err)
		require.Equal(t, store.Learning, learning.State)
		lr, err := f.scanner.Report(ctx, digest, learning)
		require.NoError(t, err)
		require.Empty(t, findings(lr, scanner.NotObserved), "nothing is not_observed while learning")
		require.ElementsMatch(t, wantInUse, findings(lr, scanner.InUse), "what loaded is in use at once")
		doc, err := scanner.OpenVEX(lr)
		require.NoError(t, err)
		for _, s := range doc.Statements {
			require.NotEqual(t, "not_affected", string(s.Status))
		}
	})

	t.Run("no profile", func(t *testing.T) {
		nr, err := f.scanner.Report(ctx, digest, nil)
		require.NoError(t, err)
		require.False(t, nr.Profile.Found)
		require.Len(t, findings(nr, scanner.Unknown), 5)
	})

	t.Run("cache", func(t *testing.T) {
		meta := filepath.Join(f.cacheDir, "images", "sha256", strings.TrimPrefix(digest, "sha256:"), "meta.json")
		before, err := os.Stat(meta)
		require.NoError(t, err)
		again, err := f.scanner.Catalog(ctx, spec)
		require.NoError(t, err)
		require.Equal(t, digest, again)
		after, err := os.Stat(meta)
		require.NoError(t, err)
		require.Equal(t, before.ModTime(), after.ModTime(), "a cached image is not catalogued again")

		// the archive gone, a fresh scanner on the same cache still
		// reports from the cached SBOM and matches
		moved := f.archive + ".moved"
		require.NoError(t, os.Rename(f.archive, moved))
		t.Cleanup(func() { _ = os.Rename(moved, f.archive) })
		fresh, err := scanner.New(scanner.Config{CacheDir: f.cacheDir})
		require.NoError(t, err)
		defer fresh.Close()
		require.True(t, fresh.Cached(digest))
		got, err := fresh.Catalog(ctx, scanner.SourceSpec{Kind: scanner.OCIArchive, Ref: f.archive, Digest: digest})
		require.NoError(t, err, "--image-digest of a cached image needs no source")
		require.Equal(t, digest, got)
		fr, err := fresh.Report(ctx, digest, done)
		require.NoError(t, err)
		require.Equal(t, rep.Summary, fr.Summary)
		_, err = fresh.Catalog(ctx, spec)
		require.Error(t, err, "without the archive nor a digest, nothing names the image")
	})
}

func evidencePaths(p scanner.Package) []string {
	var out []string
	for _, e := range p.Evidence {
		out = append(out, e.Path)
	}
	return out
}

// doneReport is the report of the image under a done profile.
func (f *debianFixture) doneReport(t *testing.T) *scanner.Report {
	t.Helper()
	digest, err := f.scanner.Catalog(t.Context(), scanner.SourceSpec{Kind: scanner.OCIArchive, Ref: f.archive, Name: testImageName, Digest: f.digest})
	require.NoError(t, err)
	st := f.writeProfile(t)
	p, err := st.Profile(t.Context(), digest, time.Now().Add(time.Second), shortLearning)
	require.NoError(t, err)
	require.Equal(t, store.Done, p.State)
	rep, err := f.scanner.Report(t.Context(), digest, p)
	require.NoError(t, err)
	rep.Name = testImageName
	return rep
}

// TestGrypeVEX runs the real grype CLI on the cached SBOM: it finds what
// the scanner found, and with our OpenVEX it keeps exactly the in-use
// findings and ignores exactly the not_observed ones.
func TestGrypeVEX(t *testing.T) {
	f := debian(t)
	grype := testutil.GrypeBinary(t)
	rep := f.doneReport(t)
	dir := t.TempDir()

	raw, err := f.scanner.SBOM(rep.Digest)
	require.NoError(t, err)
	sbomPath := filepath.Join(dir, "sbom.syft.json")
	require.NoError(t, os.WriteFile(sbomPath, raw, 0o644))
	vexPath := filepath.Join(dir, "inuse.openvex.json")
	vf, err := os.Create(vexPath)
	require.NoError(t, err)
	require.NoError(t, scanner.Write(vf, rep, "openvex"))
	require.NoError(t, vf.Close())

	all := append(append([]string{}, wantInUse...), wantNotObserved...)
	t.Run("same matches", func(t *testing.T) {
		matches, ignored := testutil.RunGrype(t, grype, f.dbRoot, "sbom:"+sbomPath)
		require.ElementsMatch(t, all, matches)
		require.Empty(t, ignored)
	})
	t.Run("vex", func(t *testing.T) {
		matches, ignored := testutil.RunGrype(t, grype, f.dbRoot, "sbom:"+sbomPath, "--vex", vexPath)
		require.ElementsMatch(t, wantInUse, matches, "grype keeps exactly the in-use findings")
		require.ElementsMatch(t, wantNotObserved, ignored, "grype ignores exactly the not_observed findings")
	})
}
