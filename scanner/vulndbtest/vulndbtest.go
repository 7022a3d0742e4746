// Package vulndbtest writes small grype v6 vulnerability databases for
// tests, with grype's own writer, so that `inuse db import`, the scanner
// and the real grype CLI all read them as they read the published one.
package vulndbtest

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	v6 "github.com/anchore/grype/grype/db/v6"
)

// OS is a distribution release as grype's v6 schema keys it.
type OS struct {
	Name         string // e.g. debian
	ReleaseID    string // os-release ID, e.g. debian: grype matches on it
	MajorVersion string // e.g. 12
	MinorVersion string
	Codename     string // e.g. bookworm
}

// Bookworm is Debian 12.
var Bookworm = OS{Name: "debian", ReleaseID: "debian", MajorVersion: "12", Codename: "bookworm"}

// Advisory is one vulnerability of one package.
type Advisory struct {
	ID          string // e.g. CVE-2026-0001
	Severity    string // critical, high, medium, low, negligible
	Description string
	// Package is the name grype searches: for Debian the SOURCE package
	// (zlib for zlib1g, glibc for libc6).
	Package string
	// Ecosystem is the package type: deb, rpm, apk, or a language.
	Ecosystem string
	// OS is nil for language ecosystems.
	OS *OS
	// Constraint selects the affected versions, e.g. "< 1:1.2.13.dfsg-2".
	Constraint string
	// VersionFormat is grype's version type: deb, rpm, apk, semver...
	VersionFormat string
	// Fixed is the first fixed version, "" when there is none.
	Fixed string
	// Aliases are the other ids of the vulnerability (a Go vulnerability
	// database record, GO-…, names its CVE and GHSA ids here).
	Aliases []string
	// GoImports are the vulnerable packages and symbols of a Go
	// vulnerability database record, as grype's v6 builder keeps them (a
	// GoImports package qualifier).
	GoImports []v6.GoImport
}

// Go is a record of the Go vulnerability database as grype's v6 builder
// writes it: a GO-… id on ecosystem go-module (the standard library is
// module "stdlib"), go version ranges, aliases and the vulnerable symbols.
func Go(id, severity, module, constraint, fixed string, aliases []string, imports ...v6.GoImport) Advisory {
	return Advisory{
		ID: id, Severity: severity, Package: module, Ecosystem: "go-module", Constraint: constraint,
		VersionFormat: "go", Fixed: fixed, Aliases: aliases, GoImports: imports,
	}
}

// Write writes a v6 database holding advisories into dir and returns the
// path of its vulnerability.db, which `inuse db import` and `grype db
// import` accept as it is.
func Write(dir string, advisories []Advisory) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating database directory: %w", err)
	}
	w, err := v6.NewWriter(v6.Config{DBDirPath: dir})
	if err != nil {
		return "", fmt.Errorf("creating database writer: %w", err)
	}
	err = write(w, advisories)
	if cerr := w.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing database: %w", cerr)
	}
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, v6.VulnerabilityDBFileName), nil
}

func write(w v6.ReadWriter, advisories []Advisory) error {
	now := time.Now().UTC()
	published := now.Add(-30 * 24 * time.Hour)
	providers := map[string]*v6.Provider{}
	provider := func(id string) *v6.Provider {
		if p, ok := providers[id]; ok {
			return p
		}
		p := &v6.Provider{ID: id, Version: "1", Processor: "inuse-vulndbtest", DateCaptured: &now, InputDigest: "xxh64:" + hex.EncodeToString([]byte(id))}
		providers[id] = p
		return p
	}
	for _, a := range advisories {
		if a.ID == "" || a.Package == "" || a.Constraint == "" {
			return errors.New("vulndbtest: an advisory needs an ID, a Package and a Constraint")
		}
		provID := a.Ecosystem
		if a.OS != nil {
			provID = a.OS.Name
		}
		vuln := &v6.VulnerabilityHandle{
			Name: a.ID, Status: v6.VulnerabilityActive, PublishedDate: &published, ModifiedDate: &published,
			ProviderID: provID, Provider: provider(provID),
			BlobValue: &v6.VulnerabilityBlob{
				ID:          a.ID,
				Description: a.Description,
				References:  []v6.Reference{{URL: "https://security-tracker.debian.org/tracker/" + a.ID}},
				Aliases:     a.Aliases,
				Severities:  []v6.Severity{{Scheme: v6.SeveritySchemeCHMLN, Value: a.Severity}},
			},
		}
		if err := w.AddVulnerabilities(vuln); err != nil {
			return fmt.Errorf("writing %s: %w", a.ID, err)
		}
		var os *v6.OperatingSystem
		if a.OS != nil {
			os = &v6.OperatingSystem{Name: a.OS.Name, ReleaseID: a.OS.ReleaseID, MajorVersion: a.OS.MajorVersion, MinorVersion: a.OS.MinorVersion, Codename: a.OS.Codename}
		}
		rng := v6.Range{Version: v6.Version{Type: a.VersionFormat, Constraint: a.Constraint}}
		if a.Fixed != "" {
			rng.Fix = &v6.Fix{Version: a.Fixed, State: v6.FixedStatus}
		} else {
			rng.Fix = &v6.Fix{State: v6.NotFixedStatus}
		}
		ap := &v6.AffectedPackageHandle{
			Vulnerability:   vuln,
			OperatingSystem: os,
			Package:         &v6.Package{Ecosystem: a.Ecosystem, Name: a.Package},
			BlobValue:       &v6.PackageBlob{CVEs: []string{a.ID}, Ranges: []v6.Range{rng}},
		}
		if len(a.Aliases) > 0 {
			ap.BlobValue.CVEs = a.Aliases
		}
		if len(a.GoImports) > 0 {
			ap.BlobValue.Qualifiers = &v6.PackageQualifiers{GoImports: a.GoImports}
		}
		if err := w.AddAffectedPackages(ap); err != nil {
			return fmt.Errorf("writing %s of %s: %w", a.Package, a.ID, err)
		}
	}
	if err := w.SetDBMetadata(); err != nil {
		return fmt.Errorf("writing database metadata: %w", err)
	}
	return nil
}
