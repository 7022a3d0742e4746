package scanner

import (
	"strings"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"

	"github.com/inuse-dev/inuse/internal/version"
)

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
		switch {
		case v.Reachability == ReachFunctionExecuted:
			f := v.Functions[0]
			an.Detail = "the vulnerable function " + f.Symbol + " ran in " + f.Binary
		case v.Reachability == ReachFunctionNotObserved:
			an.Justification = cdx.IAJCodeNotReachable
			an.Detail = "the package ran, but none of its vulnerable functions did (" + strings.Join(v.Symbols, ", ") + ")"
		case v.Verdict == NotObserved:
			an.Justification = cdx.IAJCodeNotReachable
			an.Detail = "no file of the package was loaded while the image ran"
		case v.Verdict == InUse:
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
