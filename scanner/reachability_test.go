package scanner_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
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

func TestGoReachability(t *testing.T) {
	tmp := t.TempDir()
	dbPath, err := vulndbtest.Write(filepath.Join(tmp, "build-db"), gosymtest.Advisories)
	require.NoError(t, err)
	st, err := store.Open(redistest.Start(t).URL())
	require.NoError(t, err)
	defer st.Close()
	for _, stripped := range []bool{false, true} {
		t.Run(map[bool]string{false: "unstripped", true: "stripped"}[stripped], func(t *testing.T) {
			sc, err := scanner.New(scanner.Config{CacheDir: filepath.Join(t.TempDir(), "cache"), Plans: st})
			require.NoError(t, err)
			defer sc.Close()
			require.NoError(t, sc.DB().Import(t.Context(), dbPath, nil))
			status, err := sc.DB().Status()
			require.NoError(t, err)
			require.True(t, status.GoSymbols)

			// an OCI archive: grype names the OpenVEX product of an image
			// after its digest
			archive := filepath.Join(t.TempDir(), "app.oci.tar")
			digest := scannertest.WriteOCIArchive(t, gosymtest.Image(t, stripped), archive)
			_, err = sc.Catalog(t.Context(), scanner.SourceSpec{Kind: scanner.OCIArchive, Ref: archive, Name: "go/app:1"})
			require.NoError(t, err)

			// No profile: every vulnerability at package level; the plan
			// is published all the same, so the agent can probe the
			// first run.
			rep, err := sc.Report(t.Context(), digest, nil)
			require.NoError(t, err)
			vulns := byID(rep)
			require.Contains(t, vulns, "GO-2099-0001")
			require.Contains(t, vulns, "GHSA-2099-0001-0001")
			require.NotContains(t, vulns, "GO-2022-1059", "x/text v0.42.0 is fixed")
			require.Equal(t, []string{"golang.org/x/text/language.MatchStrings", "golang.org/x/text/language.ParseAcceptLanguage"}, vulns["GHSA-2099-0001-0001"].Symbols, "joined by alias")
			require.Contains(t, vulns, "GO-2099-0002", "the test's own module, v1.0.0 by its tag")
			for _, v := range rep.Vulnerabilities {
				require.Equal(t, scanner.ReachPackage, v.Reachability)
			}
			plans, err := st.GoPlans(t.Context(), digest)
			require.NoError(t, err)
			require.Contains(t, plans, "/usr/bin/app")
			require.NotContains(t, plans, "/usr/bin/nosym", "no function table: package level, no error")
			plan := plans["/usr/bin/app"]
			symbols := map[string][]store.GoProbe{}
			for _, p := range plan.Probes {
				symbols[p.Symbol] = append(symbols[p.Symbol], p)
			}
			require.Len(t, symbols["golang.org/x/text/language.ParseAcceptLanguage"], 1)
			require.Equal(t, []string{"GHSA-2099-0001-0001", "GO-2099-0001"}, symbols["golang.org/x/text/language.ParseAcceptLanguage"][0].Vulns)
			require.NotContains(t, symbols, "golang.org/x/text/language.MatchStrings", "not linked")
			require.NotEmpty(t, symbols["example.com/inusetest/vuln.Small"])
			require.True(t, symbols["example.com/inusetest/vuln.Small"][0].Inlined, "Small is inlined only")
			require.Len(t, symbols["example.com/inusetest/vuln.Counter.Add"], 1)
			require.Len(t, symbols["example.com/inusetest/vuln.Map"], 2)
			require.Len(t, symbols["example.com/inusetest/vuln.Safe"], 1)
			require.Contains(t, vulns, "GO-2099-0004", "the standard library")
			require.NotEmpty(t, symbols["fmt.Println"])

			lc := store.LearningConfig{MinObserved: time.Millisecond, StableWindow: time.Millisecond}
			t0 := time.Now()
			profile := func(d *store.Delta) *store.Profile {
				_, err := st.Apply(t.Context(), map[string]*store.Delta{digest: d}, t0, lc)
				require.NoError(t, err)
				p, err := st.Profile(t.Context(), digest, t0.Add(time.Hour), lc)
				require.NoError(t, err)
				require.Equal(t, store.Done, p.State)
				return p
			}
			// report keeps the matches on the packages that the profile
			// puts in use through /usr/bin/app; every other match (on
			// nosym's packages, if syft keeps them apart) stays at package
			// level.
			report := func(p *store.Profile) map[string]scanner.Vulnerability {
				rep, err := sc.Report(t.Context(), digest, p)
				require.NoError(t, err)
				app := map[string]bool{}
				for _, pkg := range rep.Packages {
					for _, e := range pkg.Evidence {
						app[pkg.ID] = app[pkg.ID] || e.Path == "/usr/bin/app"
					}
				}
				out := map[string]scanner.Vulnerability{}
				for _, v := range rep.Vulnerabilities {
					if app[v.PackageID] {
						out[v.ID] = v
					} else {
						require.Equal(t, scanner.ReachPackage, v.Reachability, "%s on %s", v.ID, v.PackageID)
					}
				}
				return out
			}

			// The binary ran, unprobed: package level.
			ran := t0.Add(time.Second)
			d := store.NewDelta()
			d.Add(store.Exec, "/usr/bin/app", ran.UnixMilli())
			vulns = report(profile(d))
			require.Equal(t, scanner.InUse, vulns["GO-2099-0002"].Verdict)
			require.Equal(t, scanner.ReachPackage, vulns["GO-2099-0002"].Reachability)

			// Probed from before its first run: nothing hit is
			// function_not_observed, a hit is function_executed.
			d = store.NewDelta()
			d.Add(store.Probed, store.ProbedMember("/usr/bin/app", plan.BuildID), ran.UnixMilli())
			d.Add(store.Functions, store.FunctionMember("/usr/bin/app", "example.com/inusetest/vuln.Small"), ran.Add(time.Second).UnixMilli())
			vulns = report(profile(d))
			for _, id := range []string{"GO-2099-0001", "GHSA-2099-0001-0001", "GO-2099-0003", "GO-2099-0004"} {
				require.Equal(t, scanner.ReachFunctionNotObserved, vulns[id].Reachability, id)
				require.Equal(t, scanner.NotObserved, vulns[id].Verdict, id)
			}
			own := vulns["GO-2099-0002"]
			require.Equal(t, scanner.ReachFunctionExecuted, own.Reachability)
			require.Equal(t, scanner.InUse, own.Verdict)
			require.Equal(t, []scanner.FunctionEvidence{{Binary: "/usr/bin/app", Symbol: "example.com/inusetest/vuln.Small", FirstSeen: time.UnixMilli(ran.Add(time.Second).UnixMilli())}}, own.Functions)
			if !stripped {
				grypeVEX(t, sc, digest, profile(store.NewDelta()))
			}
		})
	}
}

// grypeVEX runs the real grype CLI on the image's SBOM with the report's
// OpenVEX: it ignores exactly the findings whose vulnerability and package
// purl are not observed (function_not_observed included) and keeps the
// others (a purl shared by two binaries' packages is one VEX subject: in
// use in one keeps it).
func grypeVEX(t *testing.T, sc *scanner.Scanner, digest string, p *store.Profile) {
	grype := testutil.GrypeBinary(t)
	rep, err := sc.Report(t.Context(), digest, p)
	require.NoError(t, err)
	dir := t.TempDir()
	raw, err := sc.SBOM(digest)
	require.NoError(t, err)
	sbomPath, vexPath := filepath.Join(dir, "sbom.syft.json"), filepath.Join(dir, "inuse.openvex.json")
	require.NoError(t, os.WriteFile(sbomPath, raw, 0o644))
	vf, err := os.Create(vexPath)
	require.NoError(t, err)
	require.NoError(t, scanner.Write(vf, rep, "openvex"))
	require.NoError(t, vf.Close())

	inUse := map[string]bool{}
	for _, v := range rep.Vulnerabilities {
		inUse[v.ID+" "+v.PURL] = inUse[v.ID+" "+v.PURL] || v.Verdict != scanner.NotObserved
	}
	var wantKept, wantIgnored []string
	for _, v := range rep.Vulnerabilities {
		if inUse[v.ID+" "+v.PURL] {
			wantKept = append(wantKept, v.ID+" "+v.PackageName)
		} else {
			wantIgnored = append(wantIgnored, v.ID+" "+v.PackageName)
		}
	}
	require.Contains(t, wantIgnored, "GO-2099-0001 golang.org/x/text", "function_not_observed")
	require.Contains(t, wantKept, "GO-2099-0002 example.com/inusetest", "function_executed")
	dbRoot := filepath.Join(dir, "db")
	require.NoError(t, os.CopyFS(dbRoot, os.DirFS(filepath.Dir(filepath.Dir(status(t, sc).Path)))))
	matches, ignored := testutil.RunGrype(t, grype, dbRoot, "sbom:"+sbomPath, "--vex", vexPath)
	require.ElementsMatch(t, wantKept, matches)
	require.ElementsMatch(t, wantIgnored, ignored)

	// inuse enrich gives grype's findings the function-level verdicts
	cmd := exec.Command(grype, "sbom:"+sbomPath, "-o", "json")
	cmd.Env = append(os.Environ(), "GRYPE_DB_CACHE_DIR="+dbRoot, "GRYPE_DB_AUTO_UPDATE=false", "GRYPE_DB_VALIDATE_AGE=false", "GRYPE_CHECK_FOR_APP_UPDATE=false")
	out, err := cmd.Output()
	require.NoError(t, err)
	enriched, err := scanner.Enrich(bytes.NewReader(out), rep)
	require.NoError(t, err)
	var doc struct {
		Matches []struct {
			Vulnerability struct{ ID string } `json:"vulnerability"`
			InUse         scanner.Annotation  `json:"inuse"`
		} `json:"matches"`
	}
	require.NoError(t, json.Unmarshal(enriched, &doc))
	reach := map[string][]scanner.Reachability{}
	for _, m := range doc.Matches {
		reach[m.Vulnerability.ID] = append(reach[m.Vulnerability.ID], m.InUse.Reachability)
	}
	require.Contains(t, reach["GO-2099-0001"], scanner.ReachFunctionNotObserved)
	require.Contains(t, reach["GO-2099-0002"], scanner.ReachFunctionExecuted)
}

func status(t *testing.T, sc *scanner.Scanner) scanner.DBStatus {
	st, err := sc.DB().Status()
	require.NoError(t, err)
	return st
}

func byID(rep *scanner.Report) map[string]scanner.Vulnerability {
	out := map[string]scanner.Vulnerability{}
	for _, v := range rep.Vulnerabilities {
		out[v.ID] = v
	}
	return out
}
