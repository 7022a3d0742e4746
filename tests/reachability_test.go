package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/scanner"
	"github.com/inuse-dev/inuse/scanner/gosymtest"
	"github.com/inuse-dev/inuse/scanner/scannertest"
	"github.com/inuse-dev/inuse/scanner/vulndbtest"
)

// Function-level reachability as a CI pipeline runs it (issue 16): `inuse
// scan` publishes the image's probe plan, `inuse-agent exec` runs the test
// suite chrooted into the image root, probed from its first instruction,
// and `inuse scan` again gives each Go vulnerability its verdict. The
// stripped Go program run in mode a calls the vulnerable functions of
// golang.org/x/text and of its own module (one of them only inlined); in
// mode b only other functions of the same packages (language.Parse, and
// vuln.Safe, which GO-2099-0003 names). Its modules are in use either way:
// what differs is which vulnerabilities' functions ran.
func TestReachabilityEndToEnd(t *testing.T) {
	testutil.RequirePrivileged(t)
	root := gosymtest.Image(t, true)
	tmp := t.TempDir()
	inuse, err := testutil.Build(tmp, "github.com/inuse-dev/inuse/cmd/inuse")
	require.NoError(t, err)
	cache := filepath.Join(tmp, "cache")
	db, err := vulndbtest.Write(filepath.Join(tmp, "build-db"), gosymtest.Advisories)
	require.NoError(t, err)
	out, err := exec.Command(inuse, "db", "import", "--cache-dir", cache, db).CombinedOutput()
	require.NoError(t, err, "inuse db import: %s", out)
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()

	const app = "/usr/bin/app"
	// scan runs `inuse scan` on the root as the image digest.
	scan := func(digest string) scanner.Report {
		t.Helper()
		cmd := exec.Command(inuse, "--log-level", "error", "scan", "--rootfs", root, "--image-digest", digest, "--redis", srv.URL(),
			"--cache-dir", cache, "--format", "json", "--min-observed", "0s", "--stable-window", "0s")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, "inuse scan: %s", stderr.String())
		var rep scanner.Report
		require.NoError(t, json.Unmarshal(out, &rep))
		return rep
	}
	// run is the pipeline on one digest: scan, the program in mode, scan.
	// It returns the vulnerabilities of the packages that the run puts in
	// use through app (syft may list nosym's apart: never run), by id, and
	// the verdicts of those packages, by name.
	run := func(digest, mode string) (map[string]scanner.Vulnerability, map[string]scanner.Verdict, time.Time, time.Time) {
		t.Helper()
		rep := scan(digest)
		require.True(t, slices.ContainsFunc(rep.Vulnerabilities, func(v scanner.Vulnerability) bool { return v.ID == "GO-2099-0001" }))
		for _, v := range rep.Vulnerabilities {
			require.Equal(t, scanner.ReachPackage, v.Reachability, "%s before any run", v.ID)
		}
		plans, err := st.GoPlans(t.Context(), digest)
		require.NoError(t, err)
		require.Contains(t, plans, app, "the plan is published for the agent")
		require.NotContains(t, plans, "/usr/bin/nosym", "no function table, no plan")

		start := time.Now()
		out, err := exec.Command(agentBinary, "exec", "--redis", srv.URL(), "--root", root, "--image-digest", digest,
			"--image-name", "ci/app:"+mode, "--node-name", "ci", "--", app, mode).CombinedOutput()
		require.NoError(t, err, "inuse-agent exec: %s", out)
		end := time.Now()
		rep = scan(digest)
		packages := map[string]scanner.Verdict{}
		ids := map[string]bool{}
		for _, p := range rep.Packages {
			if slices.ContainsFunc(p.Evidence, func(e scanner.Evidence) bool { return e.Path == app }) {
				packages[p.Name], ids[p.ID] = p.Verdict, true
			}
		}
		vulns := map[string]scanner.Vulnerability{}
		for _, v := range rep.Vulnerabilities {
			if ids[v.PackageID] {
				vulns[v.ID] = v
			}
		}
		return vulns, packages, start, end
	}
	executed := func(v scanner.Vulnerability, start, end time.Time, symbols ...string) {
		t.Helper()
		require.Equal(t, scanner.ReachFunctionExecuted, v.Reachability, v.ID)
		require.Equal(t, scanner.InUse, v.Verdict, v.ID)
		var ran []string
		for _, f := range v.Functions {
			require.Equal(t, app, f.Binary, v.ID)
			require.WithinRange(t, f.FirstSeen, start.Truncate(time.Millisecond), end, "%s: %s", v.ID, f.Symbol)
			ran = append(ran, f.Symbol)
		}
		require.ElementsMatch(t, symbols, ran, v.ID)
	}
	notObserved := func(v scanner.Vulnerability) {
		t.Helper()
		require.Equal(t, scanner.ReachFunctionNotObserved, v.Reachability, v.ID)
		require.Equal(t, scanner.NotObserved, v.Verdict, v.ID)
		require.Empty(t, v.Functions, v.ID)
	}
	const (
		parseAccept = "golang.org/x/text/language.ParseAcceptLanguage"
		own         = "example.com/inusetest/vuln."
	)

	// Mode a: x/text's ParseAcceptLanguage, and Small (inlined only),
	// Counter.Add and Map of the program's own module.
	vulns, packages, start, end := run("sha256:"+strings.Repeat("a1", 32), "a")
	executed(vulns["GO-2099-0001"], start, end, parseAccept)
	executed(vulns["GHSA-2099-0001-0001"], start, end, parseAccept)
	executed(vulns["GO-2099-0002"], start, end, own+"Small", own+"Counter.Add", own+"Map")
	notObserved(vulns["GO-2099-0003"]) // Safe
	executed(vulns["GO-2099-0004"], start, end, "fmt.Println")
	require.Equal(t, scanner.InUse, packages["golang.org/x/text"])
	require.Equal(t, scanner.InUse, packages["example.com/inusetest"])

	// Mode b, another image of the same root: language.Parse and vuln.Safe.
	digest := "sha256:" + strings.Repeat("b2", 32)
	vulns, packages, start, end = run(digest, "b")
	notObserved(vulns["GO-2099-0001"])
	notObserved(vulns["GHSA-2099-0001-0001"])
	notObserved(vulns["GO-2099-0002"])
	executed(vulns["GO-2099-0003"], start, end, own+"Safe")
	executed(vulns["GO-2099-0004"], start, end, "fmt.Println")
	require.Equal(t, scanner.InUse, packages["golang.org/x/text"], "the package is in use, its vulnerable functions not")
	require.Equal(t, scanner.InUse, packages["example.com/inusetest"])

	grypeVEX(t, inuse, srv.URL(), cache, root, digest, scan(digest).Name, vulns)
}

// grypeVEX runs `inuse serve` on the pipeline's Redis and cache, and the
// real grype CLI on an SBOM of the image, alone and with the API's OpenVEX:
// with it, grype ignores exactly the matches of the vulnerabilities whose
// functions were not observed and keeps the others. The SBOM is of the
// image as an OCI archive named as inuse reports it: grype names the
// product of an image after its repo digests, a directory has none.
func grypeVEX(t *testing.T, inuse, redisURL, cache, root, digest, name string, vulns map[string]scanner.Vulnerability) {
	t.Helper()
	grype := testutil.GrypeBinary(t)
	const admin = "reachability-admin-credential-0123456789"
	addr := testutil.FreeAddr(t)
	cmd := exec.Command(inuse, "--log-level", "warn", "serve", "--redis", redisURL, "--listen", addr,
		"--cache-dir", cache, "--poll-interval", "200ms", "--min-observed", "0s", "--stable-window", "0s")
	cmd.Env = append(os.Environ(), "INUSE_ADMIN_TOKEN="+admin)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		require.NoError(t, cmd.Wait(), "inuse serve")
		if t.Failed() {
			t.Logf("inuse serve log:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	testutil.WaitHealthy(t, base+"/healthz", 20*time.Second)
	get := func(path string) ([]byte, error) {
		req, err := http.NewRequest("GET", base+path, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
		}
		return b, err
	}
	var img struct {
		State  string `json:"learning_state"`
		Report string `json:"report_status"`
	}
	require.Eventually(t, func() bool {
		b, err := get("/api/v1/images/" + digest)
		return err == nil && json.Unmarshal(b, &img) == nil && img.State == "done" && img.Report == "ready"
	}, 30*time.Second, 100*time.Millisecond, "the report of %s never ready: %+v", digest, img)
	vex, err := get("/api/v1/images/" + digest + "/openvex")
	require.NoError(t, err)
	tmp := t.TempDir()
	vexPath := filepath.Join(tmp, "inuse.openvex.json")
	require.NoError(t, os.WriteFile(vexPath, vex, 0o644))

	archive := filepath.Join(tmp, "app.oci.tar")
	scannertest.WriteOCIArchive(t, root, archive)
	sc, err := scanner.New(scanner.Config{CacheDir: filepath.Join(tmp, "cache")})
	require.NoError(t, err)
	defer sc.Close()
	_, err = sc.Catalog(t.Context(), scanner.SourceSpec{Kind: scanner.OCIArchive, Ref: archive, Digest: digest, Name: name})
	require.NoError(t, err)
	sbom, err := sc.SBOM(digest)
	require.NoError(t, err)
	sbomPath := filepath.Join(tmp, "sbom.syft.json")
	require.NoError(t, os.WriteFile(sbomPath, sbom, 0o644))

	var wantIgnored, wantKept []string
	for id, v := range vulns {
		if v.Reachability == scanner.ReachFunctionNotObserved {
			wantIgnored = append(wantIgnored, id)
		} else {
			wantKept = append(wantKept, id)
		}
	}
	require.NotEmpty(t, wantIgnored)
	require.NotEmpty(t, wantKept)
	// ids lists the vulnerabilities of grype's findings, "ID package".
	ids := func(findings []string) []string {
		var out []string
		for _, f := range findings {
			id, _, _ := strings.Cut(f, " ")
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
		return out
	}
	dbRoot := filepath.Join(cache, "db")
	matches, ignored := testutil.RunGrype(t, grype, dbRoot, "sbom:"+sbomPath)
	require.ElementsMatch(t, append(slices.Clone(wantIgnored), wantKept...), ids(matches), "grype alone")
	require.Empty(t, ignored)
	matches, ignored = testutil.RunGrype(t, grype, dbRoot, "sbom:"+sbomPath, "--vex", vexPath)
	require.ElementsMatch(t, wantKept, ids(matches), "grype keeps the others")
	require.ElementsMatch(t, wantIgnored, ids(ignored), "grype ignores exactly the function_not_observed matches")
	t.Logf("grype --vex with the API's OpenVEX: kept %s; ignored %s", strings.Join(matches, ", "), strings.Join(ignored, ", "))
}
