package tests

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/bench/funcprobe/gofunc"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
)

// functions lists the Functions members of a profile.
func functions(p *store.Profile) []string {
	var out []string
	for _, e := range p.Sections[store.Functions] {
		out = append(out, e.Value)
	}
	return out
}

// Function-level reachability in CI mode (issue 16): inuse-agent exec
// reads the image's probe plan from Redis and probes a stripped Go binary
// before it runs. Mode A calls the planned functions, one of them only
// inlined: both are recorded. Mode B calls only another function of the
// same package: none is. Both binaries were probed from their first
// instruction, which Probed says.
func TestFunctionProbesExec(t *testing.T) {
	testutil.RequirePrivileged(t)
	ctx := context.Background()
	bin, plan, err := gofunc.Build(t.TempDir(), true)
	require.NoError(t, err)
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()

	run := func(digest, mode string) *store.Profile {
		t.Helper()
		require.NoError(t, st.WriteGoPlans(ctx, digest, map[string]store.GoPlan{bin: plan}))
		out, err := exec.Command(agentBinary, "exec", "--redis", srv.URL(), "--image-digest", digest, "--image-name", "ci/gofunc:"+mode,
			"--node-name", "ci", "--", bin, mode).CombinedOutput()
		require.NoError(t, err, "%s", out)
		p, err := st.Profile(ctx, digest, time.Now(), store.DefaultLearning)
		require.NoError(t, err)
		return p
	}
	a := run("sha256:"+strings.Repeat("a1", 32), "A")
	want := []string{store.FunctionMember(bin, gofunc.Planned[0]), store.FunctionMember(bin, gofunc.Planned[1])}
	require.ElementsMatch(t, want, functions(a))
	require.True(t, has(a, store.Probed, store.ProbedMember(bin, plan.BuildID)), "probed: %v", a.Sections[store.Probed])
	require.True(t, has(a, store.Exec, bin))

	b := run("sha256:"+strings.Repeat("b2", 32), "B")
	require.Empty(t, functions(b))
	require.True(t, has(b, store.Probed, store.ProbedMember(bin, plan.BuildID)), "probed: %v", b.Sections[store.Probed])
	require.True(t, has(b, store.Exec, bin))
}
