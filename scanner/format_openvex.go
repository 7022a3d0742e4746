package scanner

import (
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/anchore/packageurl-go"
	"github.com/openvex/go-vex/pkg/vex"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/version"
)

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
		case v.Verdict == NotObserved && done && v.Reachability == ReachFunctionNotObserved:
			st.Status = vex.StatusNotAffected
			st.Justification = vex.VulnerableCodeNotInExecutePath
			st.ImpactStatement = "the package runs, but none of its vulnerable functions (" + strings.Join(v.Symbols, ", ") +
				") ran while probed from the start of every process (runtime profile done)"
		case v.Verdict == NotObserved && done:
			st.Status = vex.StatusNotAffected
			st.Justification = vex.VulnerableCodeNotInExecutePath
			st.ImpactStatement = "no file of the package was loaded while the image ran (runtime profile done)"
		case v.Verdict == InUse && v.Reachability == ReachFunctionExecuted:
			st.Status = vex.StatusAffected
			st.ActionStatement = "the vulnerable function " + v.Functions[0].Symbol + " ran: update the package"
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
