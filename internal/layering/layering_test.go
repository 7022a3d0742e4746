// Package layering checks the direction of imports: internal/ holds leaf
// packages that the components (agent, collector, sensor, discovery,
// scanner, api) build on, so no internal package may depend on a
// component, not even through another package. golangci-lint's depguard
// checks the direct imports (make lint); this test checks every
// dependency, as `go list -deps` names it.
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
	cmd := exec.Command("go", "list", "-deps=false", "-json=ImportPath,Deps", module+"/internal/...")
	out, err := cmd.Output()
	require.NoError(t, err, "go list: %s", stderr(err))
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		checked++
		for _, d := range p.Deps {
			if strings.HasPrefix(d, module+"/") && !strings.HasPrefix(d, module+"/internal/") {
				t.Errorf("%s depends on the component %s: internal packages import nothing above them", p.ImportPath, d)
			}
		}
	}
	require.Greater(t, checked, 10, "go list named too few internal packages")
}

func stderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}
