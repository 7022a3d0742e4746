package testutil

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// GrypeVersion is the grype CLI the scanner's library matches.
const GrypeVersion = "v0.120.0"

// GrypeBinary returns the real grype CLI, installed once per machine into
// ~/.cache/inuse/bin (the same binary the scanner's tests install).
func GrypeBinary(tb testing.TB) string {
	tb.Helper()
	home, err := os.UserHomeDir()
	require.NoError(tb, err)
	bin := filepath.Join(home, ".cache", "inuse", "bin")
	path := filepath.Join(bin, "grype")
	// a go-installed grype reports no version of its own: read the module
	// version from the binary's build info
	if out, err := exec.Command("go", "version", "-m", path).Output(); err == nil &&
		strings.Contains(string(out), "github.com/anchore/grype\t"+GrypeVersion) {
		return path
	}
	tb.Logf("installing grype %s into %s (once per machine)", GrypeVersion, bin)
	cmd := exec.Command("go", "install", "github.com/anchore/grype/cmd/grype@"+GrypeVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	require.NoError(tb, err, "installing grype: %s", out)
	return path
}

type grypeFinding struct {
	Vulnerability struct {
		ID string `json:"id"`
	} `json:"vulnerability"`
	Artifact struct {
		Name string `json:"name"`
	} `json:"artifact"`
}

// RunGrype runs the grype CLI offline on the database under dbRoot (as
// `inuse db import` laid it out) and returns its matches and ignored
// matches as "VULN-ID package".
func RunGrype(tb testing.TB, grype, dbRoot string, args ...string) (matches, ignored []string) {
	tb.Helper()
	cmd := exec.Command(grype, append(args, "-o", "json")...)
	cmd.Env = append(os.Environ(), "GRYPE_DB_CACHE_DIR="+dbRoot, "GRYPE_DB_AUTO_UPDATE=false",
		"GRYPE_DB_VALIDATE_AGE=false", "GRYPE_CHECK_FOR_APP_UPDATE=false")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(tb, err, "grype: %s", stderr.String())
	var doc struct {
		Matches        []grypeFinding `json:"matches"`
		IgnoredMatches []grypeFinding `json:"ignoredMatches"`
	}
	require.NoError(tb, json.Unmarshal(out, &doc))
	for _, m := range doc.Matches {
		matches = append(matches, m.Vulnerability.ID+" "+m.Artifact.Name)
	}
	for _, m := range doc.IgnoredMatches {
		ignored = append(ignored, m.Vulnerability.ID+" "+m.Artifact.Name)
	}
	return matches, ignored
}
