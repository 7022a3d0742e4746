package api

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestOpenAPIRoutes checks that the spec and the server agree: every
// operation of the spec is a route the server matches, and every route
// the server has is in the spec.
func TestOpenAPIRoutes(t *testing.T) {
	e := newEnv(t, nil)
	var spec struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	require.NoError(t, yaml.Unmarshal(openapiSpec, &spec))
	methods := []string{"get", "post", "put", "patch", "delete"}
	var inSpec []string
	for p, ops := range spec.Paths {
		for m := range ops {
			if slices.Contains(methods, m) {
				inSpec = append(inSpec, strings.ToUpper(m)+" "+p)
			}
		}
	}
	var served []string
	for _, rt := range e.srv.routes() {
		served = append(served, rt.method+" "+strings.TrimSuffix(rt.path, "{$}"))
	}
	slices.Sort(inSpec)
	slices.Sort(served)
	require.Empty(t, cmp.Diff(inSpec, served), "spec (-) and routes (+) differ")

	// Each operation of the spec, with its parameters filled in, reaches
	// the route of that pattern (not the mux's 404 or 405).
	param := regexp.MustCompile(`\{[^}]+\}`)
	byPattern := map[string]string{}
	for _, rt := range e.srv.routes() {
		byPattern[rt.method+" "+strings.TrimSuffix(rt.path, "{$}")] = rt.pattern()
	}
	for _, op := range inSpec {
		method, p, _ := strings.Cut(op, " ")
		req := httptest.NewRequest(method, param.ReplaceAllString(p, "x"), nil)
		_, pattern := e.srv.mux.Handler(req)
		require.Equal(t, byPattern[op], pattern, "spec operation %s", op)
	}

	code, body := e.get("/api/openapi.yaml", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, openapiSpec, body)
}

// What only exec sessions loaded counts by default, with evidence that
// says so; ?exec_sessions=exclude, or the server's --exclude-exec-sessions,
// leaves it out, and a request can still ask for it.
func TestExecSessionsParameter(t *testing.T) {
	for _, excludeByDefault := range []bool{false, true} {
		t.Run(fmt.Sprintf("exclude-exec-sessions=%v", excludeByDefault), func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.ExcludeExecSessions = excludeByDefault })
			e.seedFixtures()
			// kubectl exec ... -- openssl: libssl is loaded in a session only.
			session := store.NewDelta()
			session.Add(store.ExecSessions, store.SectionMember(store.FilesRead, "/usr/lib/x86_64-linux-gnu/libssl.so.3"), time.Now().UnixMilli())
			_, err := e.st.Apply(t.Context(), map[string]*store.Delta{digestApp: session}, time.Now(), store.DefaultLearning)
			require.NoError(t, err)
			require.Eventually(t, func() bool {
				rep, status, _ := e.srv.cache.reportOf(t.Context(), digestApp)
				return status == statusReady && slices.ContainsFunc(rep.Packages, func(p scanner.Package) bool { return p.Name == "libssl3" && p.Verdict == scanner.InUse })
			}, 10*time.Second, 50*time.Millisecond)

			inUse := func(query string) []string {
				var pkgs page[scanner.Package]
				e.getJSON("/api/v1/images/"+digestApp+"/packages?in_use=true"+query, &pkgs)
				return pkgNames(pkgs.Items)
			}
			with, without := []string{"libc6", "libssl3", "requests"}, []string{"libc6", "requests"}
			require.ElementsMatch(t, with, inUse("&exec_sessions=include"))
			require.ElementsMatch(t, without, inUse("&exec_sessions=exclude"))
			if excludeByDefault {
				require.ElementsMatch(t, without, inUse(""))
			} else {
				require.ElementsMatch(t, with, inUse(""))
				var pkgs page[scanner.Package]
				e.getJSON("/api/v1/images/"+digestApp+"/packages?verdict=in_use&type=deb", &pkgs)
				i := slices.IndexFunc(pkgs.Items, func(p scanner.Package) bool { return p.Name == "libssl3" })
				require.GreaterOrEqual(t, i, 0)
				require.Equal(t, scanner.SourceExecSession, pkgs.Items[i].Evidence[0].Source)
				require.Equal(t, scanner.Unknown, pkgs.Items[i].VerdictWithoutExecSessions)
			}
			var vulns page[scanner.Vulnerability]
			e.getJSON("/api/v1/images/"+digestApp+"/vulnerabilities?in_use=true&exec_sessions=exclude", &vulns)
			for _, v := range vulns.Items {
				require.NotEqual(t, "libssl3", v.PackageName)
			}
			code, body := e.get("/api/v1/images/"+digestApp+"/openvex?exec_sessions=sometimes", adminKey)
			require.Equal(t, http.StatusBadRequest, code, "%s", body)
			require.Contains(t, string(body), "exec_sessions must be include or exclude")
		})
	}
}

func TestImagesAPI(t *testing.T) {
	e := newEnv(t, nil)
	e.seedFixtures()
	e.waitReports(e.srv, digestApp, digestDB)

	var images page[ImageSummary]
	e.getJSON("/api/v1/images", &images)
	require.EqualValues(t, 2, images.Total)
	require.Len(t, images.Items, 2)
	app := images.Items[0]
	require.Equal(t, digestApp, app.Digest, "seen last, so first")
	require.Equal(t, []string{"demo/app:1"}, app.Names)
	require.Equal(t, store.Learning, app.State)
	require.Equal(t, "ready", app.ReportStatus)
	require.Equal(t, 5, app.Report.Vulnerabilities.Total)
	// libc (Low) and requests (Medium) are in use: 2 of 5.
	require.Equal(t, 2, app.Report.Vulnerabilities.InUse)
	require.InDelta(t, 40.0, app.Report.InUsePercent, 0.001)
	require.Equal(t, 2, app.Report.PackagesInUse)
	require.Equal(t, store.Done, images.Items[1].State)

	e.getJSON("/api/v1/images?limit=1&offset=1", &images)
	require.EqualValues(t, 2, images.Total)
	require.Len(t, images.Items, 1)
	require.Equal(t, digestDB, images.Items[0].Digest)

	var img ImageDetail
	e.getJSON("/api/v1/images/"+url.PathEscape("demo/app:1"), &img)
	require.Equal(t, digestApp, img.Digest, "resolved by name")
	require.Equal(t, 2, img.Sections[store.FilesRead]+0*len(img.Workloads)-1, "three files read, minus /etc/hosts")
	require.Len(t, img.Workloads, 2)
	require.Equal(t, []string{"node-a"}, img.Nodes)
	require.Equal(t, store.Low, img.Confidence)

	var sec page[store.Entry]
	e.getJSON("/api/v1/images/"+digestApp+"/sections/files:read?limit=2", &sec)
	require.EqualValues(t, 3, sec.Total)
	require.Equal(t, []string{"/etc/hosts", "/usr/lib/python3/dist-packages/requests/__init__.py"}, values(sec.Items))
	e.getJSON("/api/v1/images/"+digestApp+"/sections/files:read?limit=2&offset=2", &sec)
	require.Equal(t, []string{"/usr/lib/x86_64-linux-gnu/libc.so.6"}, values(sec.Items))

	var pkgs page[scanner.Package]
	e.getJSON("/api/v1/images/"+digestApp+"/packages?in_use=true", &pkgs)
	require.Equal(t, []string{"libc6", "requests"}, pkgNames(pkgs.Items))
	e.getJSON("/api/v1/images/"+digestApp+"/packages?verdict=unknown&type=deb", &pkgs)
	require.Equal(t, []string{"zlib1g", "libssl3"}, pkgNames(pkgs.Items))
	e.getJSON("/api/v1/images/"+digestDB+"/packages?verdict=not_observed", &pkgs)
	require.Equal(t, []string{"musl"}, pkgNames(pkgs.Items), "done profile: not observed")

	tests := []struct {
		name, query string
		want        []string
	}{
		{"by severity, in use first", "", []string{"CVE-2023-45853", "CVE-2024-5535", "GHSA-9wx4-h78v-vm56", "CVE-2024-9143", "CVE-2025-0001"}},
		{"least severe first", "?sort=-severity", []string{"CVE-2025-0001", "CVE-2024-9143", "GHSA-9wx4-h78v-vm56", "CVE-2024-5535", "CVE-2023-45853"}},
		{"by id", "?sort=id", []string{"CVE-2023-45853", "CVE-2024-5535", "CVE-2024-9143", "CVE-2025-0001", "GHSA-9wx4-h78v-vm56"}},
		{"in use", "?in_use=true", []string{"GHSA-9wx4-h78v-vm56", "CVE-2025-0001"}},
		{"not in use", "?in_use=false&severity=critical,HIGH", []string{"CVE-2023-45853", "CVE-2024-5535"}},
		{"one severity", "?severity=medium", []string{"GHSA-9wx4-h78v-vm56", "CVE-2024-9143"}},
		{"paged", "?limit=2&offset=1", []string{"CVE-2024-5535", "GHSA-9wx4-h78v-vm56"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var vulns page[scanner.Vulnerability]
			e.getJSON("/api/v1/images/"+digestApp+"/vulnerabilities"+tc.query, &vulns)
			var got []string
			for _, v := range vulns.Items {
				got = append(got, v.ID)
			}
			require.Equal(t, tc.want, got)
		})
	}

	var vex map[string]any
	e.getJSON("/api/v1/images/"+digestApp+"/openvex", &vex)
	require.Equal(t, digestApp, vex["product"])
	var bom map[string]any
	e.getJSON("/api/v1/images/"+digestApp+"/cyclonedx", &bom)
	require.EqualValues(t, 4, bom["components"])
	code, body, _ := do(t, e.ts.URL, "POST", "/api/v1/images/"+digestApp+"/enrich", adminKey, strings.NewReader(`{"matches":[]}`))
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.JSONEq(t, `{"matches":[],"inuse":2}`, string(body))
}

func values(es []store.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Value)
	}
	return out
}

func pkgNames(ps []scanner.Package) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// TestAPIErrors checks that bad requests get a JSON error with the right
// 4xx status.
func TestAPIErrors(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxEnrichBytes = 1 << 10 })
	e.seedFixtures()
	e.waitReports(e.srv, digestApp, digestDB)
	big := `{"x":"` + strings.Repeat("a", 2<<10) + `"}`
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"unknown route", "GET", "/api/v1/nope", "", 404},
		{"wrong method", "PUT", "/api/v1/images", "", 405},
		{"limit zero", "GET", "/api/v1/images?limit=0", "", 400},
		{"limit too big", "GET", "/api/v1/images?limit=1001", "", 400},
		{"limit not a number", "GET", "/api/v1/images?limit=ten", "", 400},
		{"negative offset", "GET", "/api/v1/images?offset=-1", "", 400},
		{"unknown parameter", "GET", "/api/v1/images?limt=5", "", 400},
		{"unknown image", "GET", "/api/v1/images/nope:1", "", 404},
		{"unknown digest", "GET", "/api/v1/images/sha256:" + strings.Repeat("c", 64), "", 404},
		{"unknown section", "GET", "/api/v1/images/" + digestApp + "/sections/files", "", 404},
		{"bad verdict", "GET", "/api/v1/images/" + digestApp + "/packages?verdict=maybe", "", 400},
		{"bad in_use", "GET", "/api/v1/images/" + digestApp + "/vulnerabilities?in_use=perhaps", "", 400},
		{"bad severity", "GET", "/api/v1/images/" + digestApp + "/vulnerabilities?severity=urgent", "", 400},
		{"bad sort", "GET", "/api/v1/images/" + digestApp + "/vulnerabilities?sort=cvss", "", 400},
		{"enrich empty", "POST", "/api/v1/images/" + digestApp + "/enrich", "", 400},
		{"enrich not JSON", "POST", "/api/v1/images/" + digestApp + "/enrich", "{nope", 422},
		{"enrich too big", "POST", "/api/v1/images/" + digestApp + "/enrich", big, 413},
		{"token bad JSON", "POST", "/api/v1/tokens", "{", 400},
		{"token unknown field", "POST", "/api/v1/tokens", `{"name":"a","expires":"1mo","admin":true}`, 400},
		{"token bad expiry", "POST", "/api/v1/tokens", `{"name":"a","expires":"2w"}`, 400},
		{"token no name", "POST", "/api/v1/tokens", `{"expires":"1mo"}`, 400},
		{"token control name", "POST", "/api/v1/tokens", `{"name":"a\u0007","expires":"1mo"}`, 400},
		{"token two values", "POST", "/api/v1/tokens", `{"name":"a","expires":"1mo"}{}`, 400},
		{"token body too big", "POST", "/api/v1/tokens", `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, 413},
		{"renew unknown", "POST", "/api/v1/tokens/0123456789abcdef/renew", `{"expires":"1y"}`, 404},
		{"renew bad id", "POST", "/api/v1/tokens/..%2f/renew", `{"expires":"1y"}`, 404},
		{"delete unknown", "DELETE", "/api/v1/tokens/0123456789abcdef", "", 404},
		{"runtime limit 0", "GET", "/api/scanning/eveintegration/v2/runtimeimages?limit=0", "", 400},
		{"runtime limit 501", "GET", "/api/scanning/eveintegration/v2/runtimeimages?limit=501", "", 400},
		{"runtime limit empty", "GET", "/api/scanning/eveintegration/v2/runtimeimages?limit=", "", 400},
		{"runtime bad cursor", "GET", "/api/scanning/eveintegration/v2/runtimeimages?cursor=%%%", "", 400},
		{"runtime forged cursor", "GET", "/api/scanning/eveintegration/v2/runtimeimages?cursor=aGVsbG8", "", 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body *strings.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, err := http.NewRequest(tc.method, e.ts.URL+tc.path, nil)
			if body != nil {
				req, err = http.NewRequest(tc.method, e.ts.URL+tc.path, body)
			}
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+adminKey)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			var b []byte
			b, _ = readAll(resp)
			requireJSONError(t, resp.StatusCode, b, tc.want)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		})
	}
}

// TestReportStates checks what the API says while there is no report:
// pending, failed (with the reason), or no scanner at all.
func TestReportStates(t *testing.T) {
	t.Run("failed", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reports.fail = testError("pulling demo/app:1: registry unreachable")
		e.seedFixtures()
		e.waitStatus(e.srv, statusFailed, digestApp)
		var img ImageDetail
		e.getJSON("/api/v1/images/"+digestApp, &img)
		require.Equal(t, "failed", img.ReportStatus)
		require.Contains(t, img.ReportError, "registry unreachable")
		code, body := e.get("/api/v1/images/"+digestApp+"/vulnerabilities", adminKey)
		requireJSONError(t, code, body, http.StatusServiceUnavailable)
	})
	t.Run("scan panics", func(t *testing.T) {
		// One image's scan panics: that image fails with the panic as its
		// error, the server lives and keeps scanning and serving others.
		e := newEnv(t, nil)
		e.reports.panicOn = digestApp
		e.seedFixtures()
		e.waitStatus(e.srv, statusFailed, digestApp)
		e.waitReports(e.srv, digestDB)
		var img ImageDetail
		e.getJSON("/api/v1/images/"+digestApp, &img)
		require.Equal(t, "failed", img.ReportStatus)
		require.Contains(t, img.ReportError, "scan panicked")
		require.Contains(t, img.ReportError, "nil map")
		require.Contains(t, e.logs.String(), "scan panicked")
		code, _ := e.get("/api/v1/images/"+digestDB+"/vulnerabilities", adminKey)
		require.Equal(t, http.StatusOK, code)
	})
	t.Run("no scanner", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.Reports = nil })
		e.seedFixtures()
		var images page[ImageSummary]
		e.getJSON("/api/v1/images", &images)
		require.Equal(t, "unavailable", images.Items[0].ReportStatus)
		require.Nil(t, images.Items[0].Report)
		code, body := e.get("/api/v1/images/"+digestApp+"/packages", adminKey)
		requireJSONError(t, code, body, http.StatusNotImplemented)
	})
}

// TestRuntimeImages checks the Sysdig-compatible answer field by field
// against a golden file, and that paging with any limit returns the same
// entries as one page.
func TestRuntimeImages(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ClusterName = "prod-eu" })
	e.seedFixtures()
	e.waitReports(e.srv, digestApp, digestDB)
	const path = "/api/scanning/eveintegration/v2/runtimeimages"

	code, body := e.get(path+"?clusterName=prod-eu", adminKey)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var got bytes.Buffer
	require.NoError(t, json.Indent(&got, body, "", "  "))
	golden := filepath.Join("testdata", "runtimeimages.golden.json")
	if *update {
		require.NoError(t, os.WriteFile(golden, append(got.Bytes(), '\n'), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err, "missing golden; run go test ./api -run TestRuntimeImages -update")
	require.JSONEq(t, string(want), string(body))

	// Field by field: the exact key sets, OS versus application packages.
	var raw struct {
		Page map[string]any   `json:"page"`
		Data []map[string]any `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &raw))
	require.Equal(t, []string{"next", "returned"}, keys(raw.Page))
	require.EqualValues(t, 3, raw.Page["returned"])
	require.Equal(t, "", raw.Page["next"])
	for _, d := range raw.Data {
		require.Equal(t, []string{"container", "imageID", "namespace", "packages", "workloadKind", "workloadName"}, keys(d))
		for _, p := range d["packages"].([]any) {
			p := p.(map[string]any)
			if p["installedViaPackageManager"] == true {
				require.Equal(t, []string{"arch", "installedViaPackageManager", "name", "osFamily", "osVersion", "purl", "version"}, keys(p))
			} else {
				require.Equal(t, []string{"installedViaPackageManager", "name", "purl", "type", "version"}, keys(p))
			}
		}
	}

	var full RuntimeImages
	require.NoError(t, json.Unmarshal(body, &full))
	for _, limit := range []int{1, 2, 3, 500} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			var all []RuntimeImage
			cursor := ""
			for range 10 {
				var pg RuntimeImages
				e.getJSON(fmt.Sprintf("%s?limit=%d&cursor=%s", path, limit, url.QueryEscape(cursor)), &pg)
				require.Equal(t, len(pg.Data), pg.Page.Returned)
				require.LessOrEqual(t, pg.Page.Returned, limit)
				all = append(all, pg.Data...)
				if cursor = pg.Page.Next; cursor == "" {
					break
				}
			}
			require.Empty(t, cmp.Diff(full.Data, all, cmp.Comparer(func(a, b runtimePackage) bool { return a == b })))
		})
	}

	var other RuntimeImages
	e.getJSON(path+"?clusterName=staging", &other)
	require.Empty(t, other.Data, "another cluster's name")
	require.NotNil(t, other.Data)
}

func readAll(resp *http.Response) ([]byte, error) {
	var b strings.Builder
	_, err := fmt.Fprint(&b, "")
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		b.Write(buf[:n])
		if rerr != nil {
			break
		}
	}
	return []byte(b.String()), err
}
