package tests

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/bench/funcprobe/gofunc"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/tests/runtimes"
)

// functions lists the Functions members of a profile.
func functions(p *store.Profile) []string {
	var out []string
	for _, e := range p.Sections[store.Functions] {
		out = append(out, e.Value)
	}
	return out
}

// probedPath is where goFuncImage puts the Go program in its root.
const probedPath = "/app/target"

// goFuncImage is a busybox root with the stripped Go program of
// bench/funcprobe/gofunc at probedPath, and its probe plan.
func goFuncImage(t *testing.T) (root string, plan store.GoPlan) {
	t.Helper()
	bin, plan, err := gofunc.Build(t.TempDir(), true)
	require.NoError(t, err)
	root = testutil.BusyboxRoot(t)
	runtimes.CopyFile(t, bin, filepath.Join(root, probedPath))
	return root, plan
}

// Function-level reachability in CI mode (issue 16): inuse-agent exec
// reads the image's probe plan from Redis and probes a stripped Go binary
// before it runs. Mode A calls the planned functions, one of them only
// inlined: both are recorded. Mode B calls only another function of the
// same package: none is. Both binaries were probed from their first
// instruction, which Probed says. A plan for another build is not applied.
func TestFunctionProbesExec(t *testing.T) {
	testutil.RequirePrivileged(t)
	ctx := context.Background()
	bin, plan, err := gofunc.Build(t.TempDir(), true)
	require.NoError(t, err)
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()

	run := func(digest, mode string, plan store.GoPlan) *store.Profile {
		t.Helper()
		require.NoError(t, st.WriteGoPlans(ctx, digest, map[string]store.GoPlan{bin: plan}))
		out, err := exec.Command(agentBinary, "exec", "--redis", srv.URL(), "--image-digest", digest, "--image-name", "ci/gofunc:"+mode,
			"--node-name", "ci", "--", bin, mode).CombinedOutput()
		require.NoError(t, err, "%s", out)
		p, err := st.Profile(ctx, digest, time.Now(), store.DefaultLearning)
		require.NoError(t, err)
		return p
	}
	a := run("sha256:"+strings.Repeat("a1", 32), "A", plan)
	want := []string{store.FunctionMember(bin, gofunc.Planned[0]), store.FunctionMember(bin, gofunc.Planned[1])}
	require.ElementsMatch(t, want, functions(a))
	require.True(t, has(a, store.Probed, store.ProbedMember(bin, plan.BuildID)), "probed: %v", a.Sections[store.Probed])
	require.True(t, has(a, store.Exec, bin))

	b := run("sha256:"+strings.Repeat("b2", 32), "B", plan)
	require.Empty(t, functions(b))
	require.True(t, has(b, store.Probed, store.ProbedMember(bin, plan.BuildID)), "probed: %v", b.Sections[store.Probed])
	require.True(t, has(b, store.Exec, bin))

	// A plan made for another build of the binary is not applied: its
	// offsets are not this file's.
	stale := plan
	stale.BuildID = "another/build/of/target"
	c := run("sha256:"+strings.Repeat("c3", 32), "A", stale)
	require.Empty(t, functions(c))
	require.Empty(t, c.Sections[store.Probed])
	require.True(t, has(c, store.Exec, bin))
}

// The same through containerd's CRI: a container whose Go process started
// before the agent gets its planned functions recorded once the agent has
// probed it (not Probed: it ran unprobed before), and a container of
// another image started under the agent is probed at NRI's StartContainer,
// before its process runs (Probed, and no function of mode B).
func TestFunctionProbesContainerd(t *testing.T) {
	testutil.RequirePrivileged(t)
	ctx := context.Background()
	root, plan := goFuncImage(t)
	c := runtimes.StartContainerd(t, nil)
	c.ImportPause(t)
	const refA, refB = "docker.io/inuse-test/gofunc-a:1", "docker.io/inuse-test/gofunc-b:1"
	digestA := c.ImportImage(t, root, refA, probedPath, "loop-A")
	digestB := c.ImportImage(t, root, refB, probedPath, "B")
	require.NotEqual(t, digestA, digestB)
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	for _, d := range []string{digestA, digestB} {
		require.NoError(t, st.WriteGoPlans(ctx, d, map[string]store.GoPlan{probedPath: plan}))
	}

	pod := c.RunPod(t, "gofunc-7c9d8f6b5-a1b2c", "shop", "uid-gofunc")
	c.Run(t, pod, refA, "loop", probedPath, "loop-A")
	a := runtimes.StartAgent(t, agentBinary, nil, "--redis", srv.URL(), "--nri-socket", c.NRI, "--docker=false",
		"--flush-interval", "200ms", "--node-name", "e2e")
	want := []string{store.FunctionMember(probedPath, gofunc.Planned[0]), store.FunctionMember(probedPath, gofunc.Planned[1])}
	p := waitProfile(t, st, digestA, func(p *store.Profile) bool { return len(functions(p)) == len(want) })
	require.ElementsMatch(t, want, functions(p))
	require.Empty(t, p.Sections[store.Probed], "the process ran before it was probed")

	c.RunToExit(t, pod, refB, "once", probedPath, "B")
	p = waitProfile(t, st, digestB, func(p *store.Profile) bool {
		return has(p, store.Exec, probedPath) && len(p.Sections[store.Probed]) > 0
	})
	require.True(t, has(p, store.Probed, store.ProbedMember(probedPath, plan.BuildID)), "probed: %v", p.Sections[store.Probed])
	require.Empty(t, functions(p))
	noErrors(t, a)
	a.Stop(t)
}

// Under Docker a container is named only after its process started: its
// first calls of a planned function reach the agent before its image is
// known. With the image's binary probed already (another container of the
// image runs), the hits of a short-lived container are held until dockerd
// names it, and recorded.
func TestFunctionProbesDocker(t *testing.T) {
	testutil.RequirePrivileged(t)
	ctx := context.Background()
	root, plan := goFuncImage(t)
	d := runtimes.StartDockerd(t)
	const ref = "inuse-test/gofunc:1"
	imageID := d.ImportImage(t, root, ref, `CMD ["/bin/sh"]`)
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	require.NoError(t, st.WriteGoPlans(ctx, imageID, map[string]store.GoPlan{probedPath: plan}))

	a := runtimes.StartAgent(t, agentBinary, []string{"DOCKER_HOST=" + d.Host}, "--redis", srv.URL(), "--nri-socket", "",
		"--flush-interval", "200ms", "--node-name", "e2e")
	d.Run(t, ref, "/bin/busybox", "sleep", "20") // keeps the image's binary probed
	a.WaitLog(t, "probed a binary")
	_, wait := d.Run(t, ref, probedPath, "A")
	wait()
	want := []string{store.FunctionMember(probedPath, gofunc.Planned[0]), store.FunctionMember(probedPath, gofunc.Planned[1])}
	p := waitProfile(t, st, imageID, func(p *store.Profile) bool { return len(functions(p)) == len(want) })
	require.ElementsMatch(t, want, functions(p))
	noErrors(t, a)
	a.Stop(t)
}
