package scanner

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/inuse-dev/inuse/internal/store"
)

// Package is one package of the SBOM with its verdict.
type Package struct {
	// ID is syft's package id, stable for the same SBOM.
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
	// Type is syft's package type: deb, rpm, apk, python, npm, java-archive,
	// go-module, rust-crate, gem, php-composer, dotnet...
	Type string `json:"type"`
	PURL string `json:"purl"`
	// Arch is the package's architecture, for OS packages.
	Arch string `json:"arch,omitempty"`
	// OS is set for packages installed by the OS package manager.
	OS       bool       `json:"os_package"`
	Verdict  Verdict    `json:"verdict"`
	Evidence []Evidence `json:"evidence,omitempty"`
	// VerdictWithoutExecSessions is the verdict when exec sessions do not
	// count, set when it differs: only they loaded the package.
	VerdictWithoutExecSessions Verdict `json:"verdict_without_exec_sessions,omitempty"`
}

// Vulnerability is one match of a vulnerability on a package.
type Vulnerability struct {
	ID          string   `json:"id"`
	Severity    string   `json:"severity"`
	Description string   `json:"description,omitempty"`
	URLs        []string `json:"urls,omitempty"`
	FixState    string   `json:"fix_state,omitempty"`
	FixedIn     []string `json:"fixed_in,omitempty"`
	// PackageID is the Package.ID the match is on.
	PackageID      string  `json:"package_id"`
	PackageName    string  `json:"package_name"`
	PackageVersion string  `json:"package_version"`
	PackageType    string  `json:"package_type"`
	PURL           string  `json:"purl"`
	Verdict        Verdict `json:"verdict"`
	// Symbols are the vulnerable functions of a Go vulnerability, as
	// "<import path>.<symbol>", from the Go vulnerability database.
	Symbols []string `json:"symbols,omitempty"`
	// Reachability says whether Verdict is the package's or was found at
	// function level.
	Reachability Reachability `json:"reachability"`
	// Functions are the vulnerable functions that ran, first seen first.
	Functions []FunctionEvidence `json:"functions,omitempty"`
}

// Distro is the image's operating system, as syft detected it.
type Distro struct {
	ID      string `json:"id"`      // e.g. debian
	Version string `json:"version"` // e.g. 12
}

// ProfileState is what the report knew of the runtime profile.
type ProfileState struct {
	// Found is false when the image has no profile yet.
	Found      bool      `json:"found"`
	State      string    `json:"learning_state"`
	Confidence string    `json:"confidence"`
	Revision   int64     `json:"revision"`
	FirstSeen  time.Time `json:"first_seen,omitzero"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
}

// VulnerabilityCounts counts the vulnerabilities of a report by verdict
// and severity.
type VulnerabilityCounts struct {
	Total       int `json:"total"`
	InUse       int `json:"in_use"`
	NotObserved int `json:"not_observed"`
	Unknown     int `json:"unknown"`
	// Reduction is the share of vulnerabilities not in use, in percent.
	Reduction float64 `json:"reduction_percent"`
	// BySeverity counts per severity: total and in use.
	BySeverity map[string]SeverityCount `json:"by_severity"`
}

// SeverityCount is one severity's line of VulnerabilityCounts.
type SeverityCount struct {
	Total int `json:"total"`
	InUse int `json:"in_use"`
}

// Report is the verdicts of one image.
type Report struct {
	// Name is the image name (repo:tag) the report was asked for.
	Name string `json:"name"`
	// Digest is the image's manifest digest: the profile key.
	Digest          string              `json:"digest"`
	Distro          Distro              `json:"distro"`
	Profile         ProfileState        `json:"profile"`
	Packages        []Package           `json:"packages"`
	Vulnerabilities []Vulnerability     `json:"vulnerabilities"`
	Summary         VulnerabilityCounts `json:"summary"`
	GeneratedAt     time.Time           `json:"generated_at"`
}

// Report joins the cached SBOM and matches of digest with profile (nil:
// no profile yet). Only the verdicts are computed per call: call it
// whenever the profile's revision changes. A panic while computing it is
// its error (ErrPanic).
func (s *Scanner) Report(ctx context.Context, digest string, profile *store.Profile) (rep *Report, err error) {
	defer s.recovered(&err, digest)
	if reportHook != nil {
		reportHook(digest)
	}
	return s.report(ctx, digest, profile)
}

// reportHook, set by tests only, runs at the start of each Report.
var reportHook func(digest string)

func (s *Scanner) report(ctx context.Context, digest string, profile *store.Profile) (*Report, error) {
	im, err := s.load(digest)
	if err != nil {
		return nil, err
	}
	vulns, built, err := s.matches(ctx, digest, im)
	if err != nil {
		return nil, err
	}
	plan, err := s.goPlanFor(digest, im, built, vulns)
	if err != nil {
		return nil, err
	}
	verdicts := im.owners.Verdicts(profile)
	rep := &Report{
		Name: im.meta.Name, Digest: digest, Distro: im.distro, GeneratedAt: time.Now().UTC(),
		Packages: make([]Package, len(im.pkgs)), Vulnerabilities: make([]Vulnerability, len(vulns)),
	}
	if profile != nil {
		rep.Profile = ProfileState{
			Found: true, State: string(profile.State), Confidence: string(profile.Confidence),
			Revision: profile.Meta.Revision, FirstSeen: profile.Meta.FirstSeen, LastSeen: profile.Meta.LastSeen,
		}
	}
	verdictOf := func(id string) PackageVerdict {
		if v, ok := verdicts[id]; ok && v.Verdict != "" {
			return v
		}
		return PackageVerdict{Verdict: Unknown}
	}
	for i, p := range im.pkgs {
		v := verdictOf(p.ID)
		p.Verdict, p.Evidence, p.VerdictWithoutExecSessions = v.Verdict, v.Evidence, v.WithoutExecSessions
		rep.Packages[i] = p
	}
	for i, v := range vulns {
		v.Verdict, v.Reachability = verdictOf(v.PackageID).Verdict, ReachPackage
		rep.Vulnerabilities[i] = v
	}
	stored, err := s.publishGoPlans(ctx, digest, plan.plans)
	if err != nil {
		// the report stands at package level for Go
		s.log.Warn("publishing the Go probe plan", "digest", digest, "error", err)
	}
	reachability(rep.Vulnerabilities, verdicts, plan.bins, stored, profile)
	sortVulnerabilities(rep.Vulnerabilities)
	rep.Summary = countVulnerabilities(rep.Vulnerabilities)
	return rep, nil
}

// WithoutExecSessions is the report as it is when what exec sessions
// loaded does not count: their evidence is left out, and a package only
// they loaded takes the verdict it would have without them, as do its
// vulnerabilities, unless a vulnerable function of theirs ran. r itself
// is not changed.
func (r *Report) WithoutExecSessions() *Report {
	out := *r
	out.Packages = make([]Package, len(r.Packages))
	changed := map[string]Verdict{}
	for i, p := range r.Packages {
		p.Evidence = slices.DeleteFunc(slices.Clone(p.Evidence), func(e Evidence) bool { return e.Source == SourceExecSession })
		if p.VerdictWithoutExecSessions != "" {
			p.Verdict, p.VerdictWithoutExecSessions = p.VerdictWithoutExecSessions, ""
			changed[p.ID] = p.Verdict
		}
		out.Packages[i] = p
	}
	out.Vulnerabilities = slices.Clone(r.Vulnerabilities)
	for i := range out.Vulnerabilities {
		v := &out.Vulnerabilities[i]
		if verdict, ok := changed[v.PackageID]; ok && v.Reachability != ReachFunctionExecuted {
			v.Verdict, v.Reachability = verdict, ReachPackage
		}
	}
	sortVulnerabilities(out.Vulnerabilities)
	out.Summary = countVulnerabilities(out.Vulnerabilities)
	return &out
}

// sortVulnerabilities orders by severity, then in use first, then id and
// package, so that the report is stable.
func sortVulnerabilities(vs []Vulnerability) {
	slices.SortStableFunc(vs, func(a, b Vulnerability) int {
		if d := SeverityRank(a.Severity) - SeverityRank(b.Severity); d != 0 {
			return d
		}
		if d := VerdictRank(a.Verdict) - VerdictRank(b.Verdict); d != 0 {
			return d
		}
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return strings.Compare(a.PackageName, b.PackageName)
	})
}

func countVulnerabilities(vs []Vulnerability) VulnerabilityCounts {
	sum := VulnerabilityCounts{Total: len(vs), BySeverity: map[string]SeverityCount{}}
	for _, v := range vs {
		sc := sum.BySeverity[v.Severity]
		sc.Total++
		switch v.Verdict {
		case InUse:
			sum.InUse++
			sc.InUse++
		case NotObserved:
			sum.NotObserved++
		default:
			sum.Unknown++
		}
		sum.BySeverity[v.Severity] = sc
	}
	if sum.Total > 0 {
		// only what is known not to be used reduces the work
		sum.Reduction = float64(sum.NotObserved) * 100 / float64(sum.Total)
	}
	return sum
}
