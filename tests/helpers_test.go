// Package tests runs inuse end to end against real runtimes (dockerd,
// containerd with NRI), a real redis-server and the real kernel. The tests
// are privileged: `make test` runs them as root, which CI is.
package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/tests/runtimes"
)

// agentBinary is built once by TestMain, or is INUSE_TEST_AGENT: another
// build to measure against the same tests (an earlier commit's, for the
// "before" figures of docs/benchmarks.md).
var agentBinary = os.Getenv("INUSE_TEST_AGENT")

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "inuse-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if agentBinary != "" {
		fmt.Fprintln(os.Stderr, "tests: the agent under test is INUSE_TEST_AGENT:", agentBinary)
	} else if agentBinary, err = testutil.Build(dir, "github.com/inuse-dev/inuse/cmd/inuse-agent"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// waitProfile polls the store until cond holds for the image's profile.
func waitProfile(t *testing.T, st *store.Store, digest string, cond func(*store.Profile) bool) *store.Profile {
	t.Helper()
	var last *store.Profile
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		p, err := st.Profile(context.Background(), digest, time.Now(), store.DefaultLearning)
		if err == nil {
			last = p
			if cond(p) {
				return p
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(last, "", " ")
	t.Fatalf("profile of %s never matched; last:\n%s", digest, b)
	return nil
}

func has(p *store.Profile, sec store.Section, value string) bool {
	for _, e := range p.Sections[sec] {
		if e.Value == value {
			return true
		}
	}
	return false
}

// dynamicRoot writes a root file system with /usr/bin/true, its ELF loader
// and libc copied from the host: the smallest image with shared libraries.
func dynamicRoot(t *testing.T) (dir string, loader string) {
	t.Helper()
	dir = t.TempDir()
	out, err := exec.Command("readelf", "-l", "/usr/bin/true").Output()
	require.NoError(t, err, "readelf (binutils)")
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, "[Requesting program interpreter: "); i >= 0 {
			loader = strings.TrimSuffix(l[i+len("[Requesting program interpreter: "):], "]")
		}
	}
	require.NotEmpty(t, loader)
	for _, f := range []string{"/usr/bin/true", loader, "/usr/lib/x86_64-linux-gnu/libc.so.6"} {
		real, err := filepath.EvalSymlinks(f)
		require.NoError(t, err)
		runtimes.CopyFile(t, real, filepath.Join(dir, f))
	}
	return dir, loader
}
