package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build builds the main package pkg (an import path) into dir and returns
// the binary's path.
func Build(dir, pkg string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	// Static, as `make build` and the images build it: a binary copied
	// into a container image without libc must run there.
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}
