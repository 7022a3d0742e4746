// Package gosymtest builds the Go program of the function-level
// reachability tests (internal/gosym/testdata/prog: module
// example.com/inusetest with golang.org/x/text v0.42.0) into an image root
// and holds the Go vulnerability database records about it, for the
// scanner's tests and the end-to-end ones.
package gosymtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	v6 "github.com/anchore/grype/grype/db/v6"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/scanner/vulndbtest"
)

// Advisories are Go vulnerability database records. GO-2022-1059 is
// the real one (golang.org/x/text's ParseAcceptLanguage and MatchStrings,
// fixed in v0.3.8); the module cache here holds x/text v0.42.0, not
// v0.3.7, so GO-2099-0001 is made up for the test: the same symbols on
// the version the test builds with, matched through its GHSA alias (a
// GHSA record joins the GO record by alias). GO-2099-0002 is on the
// test's own module: a function inlined at its call site, a pointer
// method, a generic function.
var Advisories = []vulndbtest.Advisory{
	vulndbtest.Go("GO-2022-1059", "high", "golang.org/x/text", "< 0.3.8", "0.3.8", []string{"CVE-2022-32149", "GHSA-69ch-w2m2-3vjp"},
		v6.GoImport{Path: "golang.org/x/text/language", Symbols: []string{"MatchStrings", "ParseAcceptLanguage"}}),
	vulndbtest.Go("GO-2099-0001", "high", "golang.org/x/text", "< 0.42.1", "0.42.1", []string{"GHSA-2099-0001-0001"},
		v6.GoImport{Path: "golang.org/x/text/language", Symbols: []string{"MatchStrings", "ParseAcceptLanguage"}}),
	{ID: "GHSA-2099-0001-0001", Severity: "high", Package: "golang.org/x/text", Ecosystem: "go-module", Constraint: "< 0.42.1", VersionFormat: "go", Fixed: "0.42.1"},
	vulndbtest.Go("GO-2099-0002", "medium", "example.com/inusetest", "< 1.0.1", "1.0.1", nil,
		v6.GoImport{Path: "example.com/inusetest/vuln", Symbols: []string{"Small", "Counter.Add", "Map"}}),
	vulndbtest.Go("GO-2099-0003", "low", "example.com/inusetest", "< 1.0.1", "1.0.1", nil,
		v6.GoImport{Path: "example.com/inusetest/vuln", Symbols: []string{"Safe"}}),
	// the standard library: fmt.Println is inlined into main.main
	vulndbtest.Go("GO-2099-0004", "low", "stdlib", "< 1.99.0", "1.99.0", nil,
		v6.GoImport{Path: "fmt", Symbols: []string{"Println"}}),
}

// Image is a root holding /usr/bin/app, built from
// internal/gosym/testdata/prog as module example.com/inusetest v1.0.0 (a
// git tag stamps the version), stripped when asked, and /usr/bin/nosym,
// the same without its function table (.gopclntab removed; its build
// information still names its modules). Run with "a", app calls the
// vulnerable functions (vuln.Small only inlined); without, only others of
// the same packages (language.Parse, vuln.Safe).
func Image(t testing.TB, stripped bool) string {
	t.Helper()
	// the program's directory, found from this file: the tests of several
	// packages build it, each from its own working directory
	_, self, _, ok := runtime.Caller(0)
	require.True(t, ok)
	src := t.TempDir()
	require.NoError(t, os.CopyFS(src, os.DirFS(filepath.Join(filepath.Dir(self), "..", "..", "internal", "gosym", "testdata", "prog"))))
	env := append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
		"GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "CGO_ENABLED=0")
	root := t.TempDir()
	args := []string{"build", "-buildvcs=true", "-o", filepath.Join(root, "usr/bin/app")}
	if stripped {
		args = append(args, "-ldflags=-s -w")
	}
	for _, cmd := range [][]string{
		{"git", "init", "-q"}, {"git", "add", "."}, {"git", "commit", "-qm", "v1"}, {"git", "tag", "v1.0.0"},
		append([]string{"go"}, append(args, ".")...),
		{"objcopy", "--remove-section", ".gopclntab", filepath.Join(root, "usr/bin/app"), filepath.Join(root, "usr/bin/nosym")},
	} {
		c := exec.Command(cmd[0], cmd[1:]...)
		c.Dir, c.Env = src, env
		out, err := c.CombinedOutput()
		require.NoError(t, err, "%v: %s", cmd, out)
	}
	return root
}
