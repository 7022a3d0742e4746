package scanner

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/anchore/clio"
	"github.com/anchore/grype/cmd/grype/cli/options"
	"github.com/anchore/grype/grype"
	"github.com/anchore/grype/grype/distro"
	"github.com/anchore/grype/grype/match"
	"github.com/anchore/grype/grype/matcher"
	"github.com/anchore/grype/grype/matcher/dotnet"
	"github.com/anchore/grype/grype/matcher/dpkg"
	"github.com/anchore/grype/grype/matcher/golang"
	"github.com/anchore/grype/grype/matcher/hex"
	"github.com/anchore/grype/grype/matcher/java"
	"github.com/anchore/grype/grype/matcher/javascript"
	"github.com/anchore/grype/grype/matcher/python"
	"github.com/anchore/grype/grype/matcher/rpm"
	"github.com/anchore/grype/grype/matcher/ruby"
	"github.com/anchore/grype/grype/matcher/rust"
	"github.com/anchore/grype/grype/matcher/stock"
	"github.com/anchore/grype/grype/pkg"
	"github.com/anchore/grype/grype/version"
	"github.com/anchore/grype/grype/vulnerability"
	syftPkg "github.com/anchore/syft/syft/pkg"
)

// grypeOptions are grype's CLI defaults: matching here must find what
// `grype sbom:FILE` finds on the same SBOM and database.
var grypeOptions = options.DefaultGrype(clio.Identification{Name: "grype"})

// ignoreLinuxKernelHeaders is what grype's CLI ignores by default (its
// --match-upstream-kernel-headers is off): matches on kernel header
// packages through the kernel's upstream.
var ignoreLinuxKernelHeaders = []match.IgnoreRule{
	{Package: match.IgnoreRulePackage{Name: "kernel-headers", UpstreamName: "kernel", Type: string(syftPkg.RpmPkg)}, MatchType: match.ExactIndirectMatch},
	{Package: match.IgnoreRulePackage{Name: "linux(-.*)?-headers-.*", UpstreamName: "linux.*", Type: string(syftPkg.DebPkg)}, MatchType: match.ExactIndirectMatch},
	{Package: match.IgnoreRulePackage{Name: "linux-libc-dev", UpstreamName: "linux", Type: string(syftPkg.DebPkg)}, MatchType: match.ExactIndirectMatch},
	{Package: match.IgnoreRulePackage{Name: "linux-kbuild-.*", UpstreamName: "linux.*", Type: string(syftPkg.DebPkg)}, MatchType: match.ExactIndirectMatch},
}

// matcherConfig is grype's CLI getMatcherConfig on its default options.
func matcherConfig(opts *options.Grype) matcher.Config {
	return matcher.Config{
		Java: java.MatcherConfig{
			ExternalSearchConfig: opts.ExternalSources.ToJavaMatcherConfig(),
			UseCPEs:              opts.Match.Java.UseCPEs,
		},
		Ruby:       ruby.MatcherConfig(opts.Match.Ruby),
		Python:     python.MatcherConfig(opts.Match.Python),
		Dotnet:     dotnet.MatcherConfig(opts.Match.Dotnet),
		Javascript: javascript.MatcherConfig(opts.Match.Javascript),
		Golang: golang.MatcherConfig{
			UseCPEs:                                opts.Match.Golang.UseCPEs,
			AlwaysUseCPEForStdlib:                  opts.Match.Golang.AlwaysUseCPEForStdlib,
			AllowMainModulePseudoVersionComparison: opts.Match.Golang.AllowMainModulePseudoVersionComparison,
		},
		Rust:  rust.MatcherConfig(opts.Match.Rust),
		Hex:   hex.MatcherConfig(opts.Match.Hex),
		Stock: stock.MatcherConfig(opts.Match.Stock),
		Dpkg: dpkg.MatcherConfig{
			MissingEpochStrategy: opts.Match.Dpkg.MissingEpochStrategy,
			UseCPEsForEOL:        opts.Match.Dpkg.UseCPEsForEOL,
			UseCPEs:              opts.Match.Dpkg.UseCPEs,
		},
		Rpm: rpm.MatcherConfig{
			MissingEpochStrategy: opts.Match.Rpm.MissingEpochStrategy,
			UseCPEsForEOL:        opts.Match.Rpm.UseCPEsForEOL,
			UseCPEs:              opts.Match.Rpm.UseCPEs,
		},
	}
}

// fixChannels is grype's CLI getFixChannels on its default options: each
// default channel with the options' Apply and version window.
func fixChannels(opts *options.Grype) []distro.FixChannel {
	defaults := distro.DefaultFixChannels()
	out := []distro.FixChannel{}
	for _, c := range []struct {
		name string
		opt  options.FixChannel
	}{{"eus", opts.FixChannel.RedHatEUS}, {"esm", opts.FixChannel.UbuntuESM}} {
		def := defaults.Get(c.name)
		if def == nil {
			continue
		}
		ch := *def
		ch.Apply = distro.FixChannelEnabled(c.opt.Apply)
		if c.opt.Versions != "" {
			ch.Versions = version.MustGetConstraint(c.opt.Versions, version.SemanticFormat)
		}
		out = append(out, ch)
	}
	return out
}

// match runs grype on a syft JSON SBOM as `grype sbom:FILE` does.
func matchSBOM(ctx context.Context, vp vulnerability.Provider, sbomJSON []byte) ([]Vulnerability, error) {
	cfg := pkg.ProviderConfig{
		SynthesisConfig: pkg.SynthesisConfig{
			GenerateMissingCPEs: grypeOptions.GenerateMissingCPEs,
			Distro:              pkg.DistroConfig{FixChannels: fixChannels(grypeOptions)},
		},
	}
	packages, pkgContext, _, err := pkg.ProvideFromReader(bytes.NewReader(sbomJSON), cfg)
	if err != nil {
		return nil, fmt.Errorf("reading packages for matching: %w", err)
	}
	vm := grype.VulnerabilityMatcher{
		VulnerabilityProvider: vp,
		IgnoreRules:           ignoreLinuxKernelHeaders,
		Matchers:              matcher.NewDefaultMatchers(matcherConfig(grypeOptions)),
	}
	remaining, _, err := vm.FindMatchesContext(ctx, packages, pkgContext)
	if err != nil {
		return nil, fmt.Errorf("matching vulnerabilities: %w", err)
	}
	var out []Vulnerability
	for _, m := range remaining.Sorted() {
		v := Vulnerability{
			ID:             m.Vulnerability.ID,
			Severity:       "Unknown",
			FixState:       string(m.Vulnerability.Fix.State),
			FixedIn:        m.Vulnerability.Fix.Versions,
			PackageID:      string(m.Package.ID),
			PackageName:    m.Package.Name,
			PackageVersion: m.Package.Version,
			PackageType:    string(m.Package.Type),
			PURL:           m.Package.PURL,
		}
		md := m.Vulnerability.Metadata
		if md == nil {
			// older providers keep metadata apart; grype's presenter falls
			// back the same way
			md, _ = vp.VulnerabilityMetadata(m.Vulnerability.Reference) //nolint:staticcheck // deprecated, still grype's own fallback
		}
		if md != nil {
			v.Severity = cmp.Or(md.Severity, "Unknown")
			v.Description = md.Description
			v.URLs = slices.Compact(append([]string{md.DataSource}, md.URLs...))
			if v.URLs[0] == "" {
				v.URLs = v.URLs[1:]
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// Severities lists grype's severities, most severe first.
var Severities = []string{"critical", "high", "medium", "low", "negligible", "unknown"}

// SeverityRank orders severities most severe first; anything unknown last.
func SeverityRank(s string) int {
	if i := slices.Index(Severities, strings.ToLower(s)); i >= 0 {
		return i
	}
	return len(Severities) - 1
}
