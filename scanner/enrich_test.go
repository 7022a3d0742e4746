package scanner_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/scanner"
)

// enrichReport is the report the fixtures are enriched with: zlib in
// use, bzip2 not observed, libc6 unknown, openssl not in the image.
var enrichReport = &scanner.Report{
	Name: "debian:12", Digest: "sha256:3333333333333333333333333333333333333333333333333333333333333333",
	Packages: []scanner.Package{
		{ID: "a9b1b3e7c3b3a1d2", Name: "zlib1g", Version: "1:1.2.13.dfsg-1", Type: "deb",
			PURL: "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&upstream=zlib&distro=debian-12", Verdict: scanner.InUse,
			Evidence: []scanner.Evidence{{Path: "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13", How: scanner.HowRead}}},
		{ID: "c4d5e6f7a8b9c0d1", Name: "libbz2-1.0", Version: "1.0.8-5+b1", Type: "deb",
			PURL: "pkg:deb/debian/libbz2-1.0@1.0.8-5%2Bb1?arch=amd64&upstream=bzip2%401.0.8-5&distro=debian-12", Verdict: scanner.NotObserved},
		{ID: "d0d0d0d0d0d0d0d0", Name: "libc6", Version: "2.36-9+deb12u14", Type: "deb",
			PURL: "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&upstream=glibc&distro=debian-12", Verdict: scanner.Unknown},
	},
}

func enrichFixture(t *testing.T, name string) map[string]any {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "enrich", name))
	require.NoError(t, err)
	defer f.Close()
	out, err := scanner.Enrich(f, enrichReport)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(out, &doc))
	return doc
}

// annotation reads the "inuse" object of one finding as verdict/matched.
func annotation(t *testing.T, finding any) string {
	t.Helper()
	a, ok := finding.(map[string]any)["inuse"].(map[string]any)
	require.True(t, ok, "finding has no inuse annotation: %v", finding)
	s := a["verdict"].(string)
	if a["matched"] != true {
		s += " unmatched"
	}
	return s
}

func TestEnrich(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		// findings lists each finding's id with its annotation
		findings func(t *testing.T, doc map[string]any) map[string]string
		want     map[string]string
	}{
		{
			name: "grype json", fixture: "grype.json",
			findings: func(t *testing.T, doc map[string]any) map[string]string {
				got := map[string]string{}
				for _, m := range doc["matches"].([]any) {
					id := m.(map[string]any)["vulnerability"].(map[string]any)["id"].(string)
					got[id] = annotation(t, m)
				}
				require.Equal(t, "grype", doc["descriptor"].(map[string]any)["name"], "the rest of the report is kept")
				return got
			},
			want: map[string]string{"CVE-2023-45853": "in_use", "CVE-2019-12900": "not_observed", "CVE-2024-0727": "unknown unmatched"},
		},
		{
			name: "trivy json", fixture: "trivy.json",
			findings: func(t *testing.T, doc map[string]any) map[string]string {
				got := map[string]string{}
				for _, r := range doc["Results"].([]any) {
					for _, v := range r.(map[string]any)["Vulnerabilities"].([]any) {
						got[v.(map[string]any)["VulnerabilityID"].(string)] = annotation(t, v)
					}
				}
				return got
			},
			// zlib by purl with Trivy's epoch qualifier, libc6 (no purl)
			// by name@version, braces not in the image
			want: map[string]string{"CVE-2023-45853": "in_use", "CVE-2019-12900": "not_observed", "CVE-2025-0001": "unknown", "CVE-2024-4068": "unknown unmatched"},
		},
		{
			name: "cyclonedx json", fixture: "cyclonedx.json",
			findings: func(t *testing.T, doc map[string]any) map[string]string {
				got := map[string]string{}
				for _, v := range doc["vulnerabilities"].([]any) {
					vm := v.(map[string]any)
					an := vm["analysis"].(map[string]any)
					s, _ := an["state"].(string)
					if j, _ := an["justification"].(string); j != "" {
						s += "/" + j
					}
					got[vm["id"].(string)] = s
				}
				return got
			},
			// an analysis the BOM already had is kept
			want: map[string]string{"CVE-2023-45853": "exploitable", "CVE-2019-12900": "not_affected/code_not_reachable", "CVE-2024-0727": "resolved"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := enrichFixture(t, tc.fixture)
			require.Equal(t, tc.want, tc.findings(t, doc))
		})
	}
}

func TestEnrichRejects(t *testing.T) {
	tests := []struct{ name, input string }{
		{"not json", "this is not a report"},
		{"other json object", `{"kind": "something else", "items": []}`},
		{"json array", `[{"matches": []}]`},
		{"empty", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := scanner.Enrich(strings.NewReader(tc.input), enrichReport)
			require.ErrorIs(t, err, scanner.ErrUnknownReport)
			require.Contains(t, err.Error(), "not a grype JSON, Trivy JSON or CycloneDX JSON report")
		})
	}
}

// TestEnrichOwnCycloneDX: the scanner's own CycloneDX output enriches too.
func TestEnrichOwnCycloneDX(t *testing.T) {
	rep := *enrichReport
	rep.Vulnerabilities = []scanner.Vulnerability{{ID: "CVE-1", Severity: "High", PackageID: "c4d5e6f7a8b9c0d1", PackageName: "libbz2-1.0", Verdict: scanner.NotObserved}}
	var b bytes.Buffer
	require.NoError(t, scanner.Write(&b, &rep, "cyclonedx"))
	out, err := scanner.Enrich(&b, &rep)
	require.NoError(t, err)
	require.Contains(t, string(out), `"state": "not_affected"`)
}
