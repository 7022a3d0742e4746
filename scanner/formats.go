package scanner

import (
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/anchore/packageurl-go"
	"github.com/openvex/go-vex/pkg/vex"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/version"
)

// Formats a report is written in.
var Formats = []string{"table", "json", "openvex", "cyclonedx"}

// Write writes rep in format to w.
func Write(w io.Writer, rep *Report, format string) error {
	switch format {
	case "table":
		return WriteTable(w, rep)
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	case "openvex":
		doc, err := OpenVEX(rep)
		if err != nil {
			return err
		}
		return doc.ToJSON(w)
	case "cyclonedx":
		return cdx.NewBOMEncoder(w, cdx.BOMFileFormatJSON).SetPretty(true).Encode(CycloneDX(rep))
	}
	return fmt.Errorf("unknown format %q (want one of %s)", format, strings.Join(Formats, ", "))
}

// verdictLabels are what the table shows in its In Use column.
var verdictLabels = map[Verdict]string{InUse: "yes", NotObserved: "no", Unknown: "?"}

// WriteTable writes the vulnerabilities with an In Use column, then the
// summary.
func WriteTable(w io.Writer, rep *Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tVULNERABILITY\tPACKAGE\tVERSION\tFIXED IN\tIN USE")
	for _, v := range rep.Vulnerabilities {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Severity, v.ID, v.PackageName, v.PackageVersion,
			strings.Join(v.FixedIn, ","), verdictLabels[v.Verdict])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	s := rep.Summary
	fmt.Fprintln(w)
	profile := "no profile (every package unknown)"
	if rep.Profile.Found {
		profile = fmt.Sprintf("%s, confidence %s, revision %d", rep.Profile.State, rep.Profile.Confidence, rep.Profile.Revision)
	}
	fmt.Fprintf(w, "image:      %s %s\nprofile:    %s\n", rep.Name, rep.Digest, profile)
	fmt.Fprintf(w, "total:      %d vulnerabilities, %d in use, %d not observed, %d unknown\n", s.Total, s.InUse, s.NotObserved, s.Unknown)
	fmt.Fprintf(w, "reduction:  %.1f%%\n", s.Reduction)
	sevs := make([]string, 0, len(s.BySeverity))
	for sev := range s.BySeverity {
		sevs = append(sevs, sev)
	}
	slices.SortFunc(sevs, func(a, b string) int { return SeverityRank(a) - SeverityRank(b) })
	for _, sev := range sevs {
		c := s.BySeverity[sev]
		fmt.Fprintf(w, "  %-10s %d total, %d in use\n", sev+":", c.Total, c.InUse)
	}
	return nil
}

// ProductPURL is the OpenVEX product of an image, as grype names images:
// pkg:oci/<name>@sha256%3A<hex>, name without registry and tag.
func ProductPURL(name, digest string) string {
	base := path.Base(repoOf(name))
	if base == "" || base == "." || base == "/" {
		_, hex, _ := strings.Cut(digest, ":")
		base = hex
	}
	return packageurl.NewPackageURL("oci", "", strings.ToLower(base), digest, nil, "").ToString()
}

// barePURL drops a purl's qualifiers and subpath: a VEX subcomponent then
// matches the package whatever its arch or distro qualifiers.
func barePURL(p string) string {
	u, err := packageurl.FromString(p)
	if err != nil {
		return p
	}
	u.Qualifiers, u.Subpath = nil, ""
	return u.ToString()
}

// OpenVEX states what the profile proves. A not_observed package of a
// done profile is not_affected (vulnerable_code_not_in_execute_path); an
// in-use one is affected. Unknown findings get no statement: nothing is
// known of them, and grype keeps unmatched findings anyway.
func OpenVEX(rep *Report) (*vex.VEX, error) {
	doc := vex.New()
	doc.Author = "inuse"
	doc.Tooling = "inuse " + version.Version
	now := rep.GeneratedAt
	if now.IsZero() {
		now = time.Now().UTC()
	}
	doc.Timestamp = &now
	product := ProductPURL(rep.Name, rep.Digest)
	done := rep.Profile.Found && rep.Profile.State == string(store.Done)
	seen := map[string]bool{}
	for _, v := range rep.Vulnerabilities {
		st := vex.Statement{
			Vulnerability: vex.Vulnerability{Name: vex.VulnerabilityID(v.ID)},
			Products: []vex.Product{{
				Component:     vex.Component{ID: product},
				Subcomponents: []vex.Subcomponent{{Component: vex.Component{ID: barePURL(v.PURL)}}},
			}},
			Timestamp: &now,
		}
		switch {
		case v.Verdict == NotObserved && done:
			st.Status = vex.StatusNotAffected
			st.Justification = vex.VulnerableCodeNotInExecutePath
			st.ImpactStatement = "no file of the package was loaded while the image ran (runtime profile done)"
		case v.Verdict == InUse:
			st.Status = vex.StatusAffected
			st.ActionStatement = "the package is loaded at runtime: update it"
		default:
			continue
		}
		key := v.ID + " " + st.Products[0].Subcomponents[0].ID
		if seen[key] {
			continue
		}
		seen[key] = true
		doc.Statements = append(doc.Statements, st)
	}
	if _, err := doc.GenerateCanonicalID(); err != nil {
		return nil, fmt.Errorf("naming openvex document: %w", err)
	}
	return &doc, nil
}

// cdxStates map verdicts to CycloneDX impact analysis.
var cdxStates = map[Verdict]cdx.ImpactAnalysisState{
	InUse: cdx.IASExploitable, NotObserved: cdx.IASNotAffected, Unknown: cdx.IASInTriage,
}

// CycloneDX is the report as a CycloneDX BOM with vulnerabilities and
// their VEX analysis.
func CycloneDX(rep *Report) *cdx.BOM {
	bom := cdx.NewBOM()
	bom.SerialNumber = ""
	ts := rep.GeneratedAt
	if ts.IsZero() {
		ts = time.Now().UTC()
	}
	bom.Metadata = &cdx.Metadata{
		Timestamp: ts.Format(time.RFC3339),
		Tools:     &cdx.ToolsChoice{Components: &[]cdx.Component{{Type: cdx.ComponentTypeApplication, Name: "inuse", Version: version.Version}}},
		Component: &cdx.Component{
			BOMRef: rep.Digest, Type: cdx.ComponentTypeContainer, Name: repoOf(rep.Name), Version: rep.Digest,
			PackageURL: ProductPURL(rep.Name, rep.Digest),
		},
	}
	comps := make([]cdx.Component, 0, len(rep.Packages))
	for _, p := range rep.Packages {
		c := cdx.Component{BOMRef: p.ID, Type: cdx.ComponentTypeLibrary, Name: p.Name, Version: p.Version, PackageURL: p.PURL}
		props := []cdx.Property{{Name: "inuse:verdict", Value: string(p.Verdict)}, {Name: "syft:package:type", Value: p.Type}}
		for _, e := range p.Evidence {
			props = append(props, cdx.Property{Name: "inuse:evidence:" + string(e.How), Value: e.Path})
		}
		c.Properties = &props
		comps = append(comps, c)
	}
	bom.Components = &comps
	vulns := make([]cdx.Vulnerability, 0, len(rep.Vulnerabilities))
	for _, v := range rep.Vulnerabilities {
		an := &cdx.VulnerabilityAnalysis{State: cdxStates[v.Verdict]}
		switch v.Verdict {
		case NotObserved:
			an.Justification = cdx.IAJCodeNotReachable
			an.Detail = "no file of the package was loaded while the image ran"
		case InUse:
			an.Detail = "a file of the package was loaded at runtime"
		default:
			an.State = cdx.IASInTriage
			an.Detail = "the runtime profile does not tell yet"
		}
		cv := cdx.Vulnerability{
			BOMRef: v.ID + "/" + v.PackageID, ID: v.ID, Description: v.Description,
			Ratings:  &[]cdx.VulnerabilityRating{{Severity: cdx.Severity(strings.ToLower(v.Severity))}},
			Analysis: an,
			Affects:  &[]cdx.Affects{{Ref: v.PackageID}},
		}
		if len(v.FixedIn) > 0 {
			cv.Recommendation = "update to " + strings.Join(v.FixedIn, " or ")
		}
		vulns = append(vulns, cv)
	}
	bom.Vulnerabilities = &vulns
	return bom
}
