package scanner

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/version"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// goldenReport is a small report with every verdict, every way of loading
// a file, a fix, a description and a match repeated on another arch
// (OpenVEX states it once). Times are fixed; profiled=false is the same
// image before any profile: every package unknown.
func goldenReport(profiled bool) *Report {
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	seen := at.Add(-2 * time.Hour)
	rep := &Report{
		Name:   "registry.example/shop/api:1.4",
		Digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		Distro: Distro{ID: "debian", Version: "12"}, GeneratedAt: at,
		Packages: []Package{
			{ID: "bash-id", Name: "bash", Version: "5.2.15-2+b2", Type: "deb", PURL: "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12",
				Arch: "amd64", OS: true, Verdict: InUse, Evidence: []Evidence{{Path: "/usr/bin/bash", How: HowExec, FirstSeen: seen}}},
			{ID: "bz2-id", Name: "libbz2-1.0", Version: "1.0.8-5+b1", Type: "deb", PURL: "pkg:deb/debian/libbz2-1.0@1.0.8-5%2Bb1?arch=amd64&distro=debian-12",
				Arch: "amd64", OS: true, Verdict: NotObserved},
			{ID: "bz2-i386-id", Name: "libbz2-1.0", Version: "1.0.8-5+b1", Type: "deb", PURL: "pkg:deb/debian/libbz2-1.0@1.0.8-5%2Bb1?arch=i386&distro=debian-12",
				Arch: "i386", OS: true, Verdict: NotObserved},
			{ID: "text-id", Name: "golang.org/x/text", Version: "v0.3.7", Type: "go-module", PURL: "pkg:golang/golang.org/x/text@v0.3.7",
				Verdict: InUse, Evidence: []Evidence{{Path: "/usr/bin/app", How: HowExec, FirstSeen: seen}}},
			{ID: "yaml-id", Name: "gopkg.in/yaml.v3", Version: "v3.0.0", Type: "go-module", PURL: "pkg:golang/gopkg.in/yaml.v3@v3.0.0", Verdict: Unknown},
			{ID: "zlib-id", Name: "zlib1g", Version: "1:1.2.13.dfsg-1", Type: "deb", PURL: "pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1?arch=amd64&distro=debian-12",
				Arch: "amd64", OS: true, Verdict: InUse, Evidence: []Evidence{
					{Path: "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13", How: HowMapped, FirstSeen: seen},
					{Path: "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13", How: HowRead, FirstSeen: seen.Add(time.Second)},
				}},
		},
	}
	vuln := func(id, severity string, p Package, fixedIn ...string) Vulnerability {
		return Vulnerability{
			ID: id, Severity: severity, URLs: []string{"https://security-tracker.debian.org/tracker/" + id},
			FixState: "not-fixed", FixedIn: fixedIn, PackageID: p.ID, PackageName: p.Name, PackageVersion: p.Version,
			PackageType: p.Type, PURL: p.PURL, Verdict: p.Verdict,
		}
	}
	p := rep.Packages
	zlib := vuln("CVE-2099-0001", "Critical", p[5], "1:1.2.13.dfsg-2")
	zlib.FixState, zlib.Description = "fixed", "zlib overflows its window on a crafted stream"
	// Go vulnerabilities with symbols: one whose function ran, one whose
	// functions did not though the module's binary ran.
	ran := vuln("GO-2022-1059", "High", p[3], "v0.3.8")
	ran.Symbols = []string{"golang.org/x/text/language.MatchStrings", "golang.org/x/text/language.ParseAcceptLanguage"}
	ran.Reachability, ran.Functions = ReachFunctionExecuted, []FunctionEvidence{{Binary: "/usr/bin/app", Symbol: "golang.org/x/text/language.ParseAcceptLanguage", FirstSeen: seen.Add(time.Minute)}}
	notRan := vuln("GO-2099-0005", "Medium", p[3], "v0.3.9")
	notRan.Symbols = []string{"golang.org/x/text/unicode/norm.Iter.Next"}
	notRan.Reachability, notRan.Verdict = ReachFunctionNotObserved, NotObserved
	rep.Vulnerabilities = []Vulnerability{
		vuln("CVE-2099-0003", "Medium", p[4]),
		vuln("CVE-2099-0002", "High", p[1]),
		zlib,
		vuln("CVE-2099-0002", "High", p[2]),
		vuln("CVE-2099-0004", "Low", p[0]),
		ran, notRan,
	}
	for i := range rep.Vulnerabilities {
		if rep.Vulnerabilities[i].Reachability == "" {
			rep.Vulnerabilities[i].Reachability = ReachPackage
		}
	}
	if profiled {
		rep.Profile = ProfileState{Found: true, State: "done", Confidence: "high", Revision: 42, FirstSeen: seen, LastSeen: at.Add(-time.Minute)}
	} else {
		for i := range rep.Packages {
			rep.Packages[i].Verdict, rep.Packages[i].Evidence = Unknown, nil
		}
		for i := range rep.Vulnerabilities {
			v := &rep.Vulnerabilities[i]
			v.Verdict, v.Reachability, v.Functions = Unknown, ReachPackage, nil
		}
	}
	sortVulnerabilities(rep.Vulnerabilities)
	rep.Summary = countVulnerabilities(rep.Vulnerabilities)
	return rep
}

// TestGolden compares every output format with testdata/<report>.<format>.golden;
// `go test ./scanner -run Golden -update` rewrites them.
func TestGolden(t *testing.T) {
	// The tool version is the only field not fixed by the report: pin it
	// as a release would stamp it.
	defer func(v string) { version.Version = v }(version.Version)
	version.Version = "1.2.3"
	for _, tc := range []struct {
		name     string
		profiled bool
	}{{"profiled", true}, {"unprofiled", false}} {
		for _, format := range Formats {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				var got bytes.Buffer
				require.NoError(t, Write(&got, goldenReport(tc.profiled), format))
				golden := filepath.Join("testdata", "report-"+tc.name+"."+format+".golden")
				if *update {
					require.NoError(t, os.WriteFile(golden, got.Bytes(), 0o644))
				}
				want, err := os.ReadFile(golden)
				require.NoError(t, err, "missing golden file: run go test ./scanner -run Golden -update")
				if d := cmp.Diff(string(want), got.String()); d != "" {
					t.Errorf("%s output changed (-want +got); if intended, run go test ./scanner -run Golden -update:\n%s", format, d)
				}
			})
		}
	}
}

// Package names and versions come from the image: the table shows their
// escape sequences and newlines escaped.
func TestTableEscapes(t *testing.T) {
	rep := goldenReport(true)
	rep.Name = "shop/\x1b[2J"
	rep.Vulnerabilities[0].PackageName = "evil\x1b[31m\nCritical  CVE-0000-0000  forged"
	rep.Vulnerabilities[0].PackageVersion = "1.0\r"
	var out bytes.Buffer
	require.NoError(t, Write(&out, rep, "table"))
	require.NotContains(t, out.String(), "\x1b")
	require.NotContains(t, out.String(), "\r")
	require.NotContains(t, out.String(), "\nCritical  CVE-0000-0000")
	require.Contains(t, out.String(), `"evil\x1b[31m\nCritical  CVE-0000-0000  forged"`)
	require.Contains(t, out.String(), `"shop/\x1b[2J"`)
}
