package scanner

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/anchore/packageurl-go"
)

// ErrUnknownReport is returned by Enrich for input that is not a grype,
// Trivy or CycloneDX JSON report.
var ErrUnknownReport = errors.New("scanner: not a grype JSON, Trivy JSON or CycloneDX JSON report")

// Annotation is what Enrich adds to each finding, under the key "inuse".
type Annotation struct {
	Verdict  Verdict    `json:"verdict"`
	Evidence []Evidence `json:"evidence,omitempty"`
	// Matched is false when no package of the image's SBOM matched the
	// finding's package: its verdict is then unknown.
	Matched bool `json:"matched"`
	// Reachability is set when the verdict was found at function level
	// (Go): function_executed, with Functions, or function_not_observed.
	Reachability Reachability       `json:"reachability,omitempty"`
	Functions    []FunctionEvidence `json:"functions,omitempty"`
}

// Enrich annotates a grype JSON, Trivy JSON or CycloneDX JSON report with
// the verdict of each finding's package in rep, matched by purl without
// qualifiers, else by name@version; a grype or Trivy finding whose
// vulnerability has a function-level verdict on that package (Go) gets
// that one. The caller bounds r (the HTTP API
// wraps it in http.MaxBytesReader). Everything else of the report is
// kept as it was.
func Enrich(r io.Reader, rep *Report) ([]byte, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber() // keep numbers exactly as they were
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnknownReport, err)
	}
	ix := newPackageIndex(rep)
	switch {
	case doc["bomFormat"] == "CycloneDX":
		if err := enrichCycloneDX(doc, ix); err != nil {
			return nil, err
		}
	case isList(doc["matches"]) && doc["descriptor"] != nil:
		enrichGrype(doc, ix)
	case isList(doc["Results"]) && doc["SchemaVersion"] != nil:
		enrichTrivy(doc, ix)
	default:
		return nil, ErrUnknownReport
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encoding enriched report: %w", err)
	}
	return buf.Bytes(), nil
}

func isList(v any) bool { _, ok := v.([]any); return ok }

// packageIndex finds the packages of a report, and the verdicts found at
// function level by vulnerability and package.
type packageIndex struct {
	byPURL, byNameVersion, byID map[string]*Package
	functionLevel               map[string]*Vulnerability // "<vuln id>|<package id>"
}

func newPackageIndex(rep *Report) packageIndex {
	ix := packageIndex{byPURL: map[string]*Package{}, byNameVersion: map[string]*Package{}, byID: map[string]*Package{}, functionLevel: map[string]*Vulnerability{}}
	for i := range rep.Vulnerabilities {
		if v := &rep.Vulnerabilities[i]; v.Reachability == ReachFunctionExecuted || v.Reachability == ReachFunctionNotObserved {
			ix.functionLevel[v.ID+"|"+v.PackageID] = v
		}
	}
	for i := range rep.Packages {
		p := &rep.Packages[i]
		if p.PURL != "" {
			ix.byPURL[matchPURL(p.PURL)] = p
		}
		ix.byNameVersion[p.Name+"@"+p.Version] = p
		ix.byID[p.ID] = p
	}
	return ix
}

// matchPURL is a purl without qualifiers, with a Debian/RPM epoch
// qualifier (Trivy's form) folded into the version as syft writes it.
func matchPURL(p string) string {
	u, err := packageurl.FromString(p)
	if err != nil {
		return p
	}
	if epoch := u.Qualifiers.Map()["epoch"]; epoch != "" && epoch != "0" && !strings.Contains(u.Version, ":") {
		u.Version = epoch + ":" + u.Version
	}
	u.Qualifiers, u.Subpath = nil, ""
	return u.ToString()
}

// annotateFinding is annotate, with the function-level verdict of the
// finding's vulnerability on that package when there is one. pkgID is
// syft's package id when the finding carries it (grype's artifact id, the
// same SBOM's): it tells apart packages that share a purl, such as one
// module compiled into two binaries.
func (ix packageIndex) annotateFinding(vulnID, pkgID, purl, name, version string) Annotation {
	a, p := ix.find(purl, name, version)
	if byID, ok := ix.byID[pkgID]; ok && pkgID != "" {
		a, p = Annotation{Verdict: byID.Verdict, Evidence: byID.Evidence, Matched: true}, byID
	}
	if p == nil {
		return a
	}
	if v, ok := ix.functionLevel[vulnID+"|"+p.ID]; ok {
		a.Verdict, a.Reachability, a.Functions = v.Verdict, v.Reachability, v.Functions
	}
	return a
}

func (ix packageIndex) annotate(purl, name, version string) Annotation {
	a, _ := ix.find(purl, name, version)
	return a
}

func (ix packageIndex) find(purl, name, version string) (Annotation, *Package) {
	p := ix.byPURL[matchPURL(purl)]
	if purl == "" {
		p = nil
	}
	if p == nil {
		p = ix.byNameVersion[name+"@"+version]
	}
	if p == nil {
		return Annotation{Verdict: Unknown}, nil
	}
	return Annotation{Verdict: p.Verdict, Evidence: p.Evidence, Matched: true}, p
}

func str(m map[string]any, keys ...string) string {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = mm[k]
	}
	s, _ := v.(string)
	return s
}

// enrichGrype annotates each match and ignored match of `grype -o json`.
func enrichGrype(doc map[string]any, ix packageIndex) {
	for _, key := range []string{"matches", "ignoredMatches"} {
		list, _ := doc[key].([]any)
		for _, m := range list {
			mm, ok := m.(map[string]any)
			if !ok {
				continue
			}
			mm["inuse"] = ix.annotateFinding(str(mm, "vulnerability", "id"), str(mm, "artifact", "id"),
				str(mm, "artifact", "purl"), str(mm, "artifact", "name"), str(mm, "artifact", "version"))
		}
	}
}

// enrichTrivy annotates each vulnerability of `trivy image -f json`.
func enrichTrivy(doc map[string]any, ix packageIndex) {
	results, _ := doc["Results"].([]any)
	for _, r := range results {
		rm, ok := r.(map[string]any)
		if !ok {
			continue
		}
		vulns, _ := rm["Vulnerabilities"].([]any)
		for _, v := range vulns {
			vm, ok := v.(map[string]any)
			if !ok {
				continue
			}
			vm["inuse"] = ix.annotateFinding(str(vm, "VulnerabilityID"), "", str(vm, "PkgIdentifier", "PURL"), str(vm, "PkgName"), str(vm, "InstalledVersion"))
		}
	}
}

// enrichCycloneDX sets each vulnerability's analysis from the verdicts
// of the components it affects (in use wins), unless the BOM already has
// an analysis, and marks each component with an inuse:verdict property.
func enrichCycloneDX(doc map[string]any, ix packageIndex) error {
	comps := map[string]Annotation{}
	var walk func(list []any)
	walk = func(list []any) {
		for _, c := range list {
			cm, ok := c.(map[string]any)
			if !ok {
				continue
			}
			a := ix.annotate(str(cm, "purl"), str(cm, "name"), str(cm, "version"))
			if ref := str(cm, "bom-ref"); ref != "" {
				comps[ref] = a
			}
			props, _ := cm["properties"].([]any)
			cm["properties"] = append(props, map[string]any{"name": "inuse:verdict", "value": string(a.Verdict)})
			if sub, ok := cm["components"].([]any); ok {
				walk(sub)
			}
		}
	}
	list, _ := doc["components"].([]any)
	walk(list)
	vulns, _ := doc["vulnerabilities"].([]any)
	for _, v := range vulns {
		vm, ok := v.(map[string]any)
		if !ok {
			continue
		}
		verdict := Verdict("")
		affects, _ := vm["affects"].([]any)
		for _, af := range affects {
			afm, _ := af.(map[string]any)
			a, ok := comps[str(afm, "ref")]
			if !ok {
				continue
			}
			switch {
			case a.Verdict == InUse:
				verdict = InUse
			case a.Verdict == Unknown && verdict != InUse:
				verdict = Unknown
			case a.Verdict == NotObserved && verdict == "":
				verdict = NotObserved
			}
		}
		if verdict == "" {
			verdict = Unknown
		}
		vm["properties"] = append(asList(vm["properties"]), map[string]any{"name": "inuse:verdict", "value": string(verdict)})
		if _, has := vm["analysis"]; has {
			continue
		}
		an := map[string]any{"state": string(cdxStates[verdict])}
		if verdict == NotObserved {
			an["justification"] = "code_not_reachable"
		}
		vm["analysis"] = an
	}
	return nil
}

func asList(v any) []any { l, _ := v.([]any); return l }
