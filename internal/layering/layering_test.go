// Package layering checks the direction of imports: internal/ holds leaf
// packages that the components (agent, collector, sensor, discovery,
// scanner, api) build on, so no internal package may depend on a
// component, not even through another package. golangci-lint's depguard
// checks the direct imports (make lint); this test checks every
// dependency, as `go list -deps` names it. bpf/ sits below the components
// the same way, and the agent's binary leaves syft and grype to the
// scanner's.
package layering

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/inuse-dev/inuse"

type pkg struct {
	ImportPath string
	Deps       []string
}

func TestInternalPackagesAreLeaves(t *testing.T) {
	pkgs := list(t, module+"/internal/...")
	require.Greater(t, len(pkgs), 10, "go list named too few internal packages")
	for _, p := range pkgs {
		for _, d := range p.Deps {
			if strings.HasPrefix(d, module+"/") && !strings.HasPrefix(d, module+"/internal/") {
				t.Errorf("%s depends on the component %s: internal packages import nothing above them", p.ImportPath, d)
			}
		}
	}
}

// The kernel programs' owners sit below every component: they depend on
// each other and on internal/ only.
func TestBPFImportsNothingAbove(t *testing.T) {
	pkgs := list(t, module+"/bpf/...")
	require.Greater(t, len(pkgs), 2, "go list named too few bpf packages")
	for _, p := range pkgs {
		for _, d := range p.Deps {
			if strings.HasPrefix(d, module+"/") && !strings.HasPrefix(d, module+"/bpf/") && !strings.HasPrefix(d, module+"/internal/") {
				t.Errorf("%s depends on %s: bpf/ imports nothing above it", p.ImportPath, d)
			}
		}
	}
}

// The node agent runs on every node: syft and grype (and their hundreds
// of packages) stay in the scanner's binary.
func TestAgentLinksNoScanner(t *testing.T) {
	pkgs := list(t, module+"/cmd/inuse-agent")
	require.Len(t, pkgs, 1)
	for _, d := range pkgs[0].Deps {
		if strings.HasPrefix(d, "github.com/anchore/syft") || strings.HasPrefix(d, "github.com/anchore/grype") {
			t.Errorf("inuse-agent links %s", d)
		}
	}
	require.Contains(t, pkgs[0].Deps, module+"/internal/gosym", "the agent reads build ids through internal/gosym")
}

// list is `go list` of the packages matching pattern, each with every
// package it depends on.
func list(t *testing.T, pattern string) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps=false", "-json=ImportPath,Deps", pattern)
	out, err := cmd.Output()
	require.NoError(t, err, "go list: %s", stderr(err))
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			return pkgs
		} else {
			require.NoError(t, err)
		}
		pkgs = append(pkgs, p)
	}
}

func stderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}
