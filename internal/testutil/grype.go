package testutil

import (
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
