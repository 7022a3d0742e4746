// Package scanner joins an image's runtime profile with its SBOM (syft)
// and vulnerabilities (grype) and says, for every package and every
// vulnerability, whether it is in use, with the evidence.
package scanner

import "time"

// Verdict says whether a package is used at runtime.
type Verdict string

// Verdicts.
const (
	// InUse: a file the package owns was executed, opened or mapped.
	InUse Verdict = "in_use"
	// NotObserved: the profile is done and nothing of the package loaded.
	NotObserved Verdict = "not_observed"
	// Unknown: nothing of it loaded yet while the profile still learns, or
	// no reliable file mapping for this kind of package.
	Unknown Verdict = "unknown"
)

// How a file was loaded.
type How string

// Ways a file is loaded.
const (
	Exec How = "exec"
	Open How = "open"
	Map  How = "map"
)

// Evidence is one loaded file that puts a package in use.
type Evidence struct {
	Path      string    `json:"path"`
	How       How       `json:"how"`
	FirstSeen time.Time `json:"first_seen"`
}

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

// Summary counts the vulnerabilities of a report.
type Summary struct {
	Total       int `json:"total"`
	InUse       int `json:"in_use"`
	NotObserved int `json:"not_observed"`
	Unknown     int `json:"unknown"`
	// Reduction is the share of vulnerabilities not in use, in percent.
	Reduction float64 `json:"reduction_percent"`
	// BySeverity counts per severity: total and in use.
	BySeverity map[string]SeverityCount `json:"by_severity"`
}

// SeverityCount is one severity's line of a summary.
type SeverityCount struct {
	Total int `json:"total"`
	InUse int `json:"in_use"`
}

// Report is the verdicts of one image.
type Report struct {
	// Name is the image name (repo:tag) the report was asked for.
	Name string `json:"name"`
	// Digest is the image's manifest digest: the profile key.
	Digest          string          `json:"digest"`
	Distro          Distro          `json:"distro"`
	Profile         ProfileState    `json:"profile"`
	Packages        []Package       `json:"packages"`
	Vulnerabilities []Vulnerability `json:"vulnerabilities"`
	Summary         Summary         `json:"summary"`
	GeneratedAt     time.Time       `json:"generated_at"`
}
