package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
)

// runAgent runs inuse-agent in-process with args and returns its error.
func runAgent(ctx context.Context, args ...string) error {
	app := cliapp.New("inuse-agent", "test", commands)
	return app.RunContext(ctx, append([]string{"inuse-agent", "--log-level", "warn"}, args...))
}

// line is the event of one line of output (agent.Record).
type line struct {
	Kind  string   `json:"kind"`
	Path  string   `json:"path"`
	Role  string   `json:"role"`
	Names []string `json:"names"`
}

// readLines returns the events of the output, and checks that every line
// is an event or a container's start or stop.
func readLines(t *testing.T, file string) []line {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	var out []line
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r struct {
			Event     *line  `json:"event"`
			Lifecycle string `json:"lifecycle"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r), "line %q", sc.Text())
		if r.Lifecycle != "" {
			continue
		}
		require.NotNil(t, r.Event, "line %q", sc.Text())
		require.NotEmpty(t, r.Event.Kind)
		out = append(out, *r.Event)
	}
	require.NoError(t, sc.Err())
	return out
}

func has(lines []line, kind, path string) bool {
	for _, l := range lines {
		if l.Kind == kind && l.Path == path {
			return true
		}
	}
	return false
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var exit cli.ExitCoder
	require.True(t, errors.As(err, &exit), "error %v is not an exit status", err)
	return exit.ExitCode()
}

func TestExecReportsCommandAndExitStatus(t *testing.T) {
	testutil.RequirePrivileged(t)
	out := filepath.Join(t.TempDir(), "events.jsonl")
	data := filepath.Join(t.TempDir(), "data.txt")
	require.NoError(t, os.WriteFile(data, []byte("x"), 0o644))

	err := runAgent(t.Context(), "exec", "-o", out, "--", "/bin/sh", "-c", "cat "+data+" >/dev/null; exit 7")
	require.Equal(t, 7, exitCode(t, err))
	lines := readLines(t, out)
	sh, err := filepath.EvalSymlinks("/bin/sh")
	require.NoError(t, err)
	require.True(t, has(lines, "exec", sh), "exec of %s in %+v", sh, lines)
	require.True(t, has(lines, "file", data), "open of %s in %+v", data, lines)
}

func TestExecInRoot(t *testing.T) {
	testutil.RequirePrivileged(t)
	root := testutil.BusyboxRoot(t)
	out := filepath.Join(t.TempDir(), "events.jsonl")

	err := runAgent(t.Context(), "exec", "--root", root, "-o", out, "--", "sh", "-c", "cat /etc/passwd /proc/self/stat")
	require.Equal(t, 0, exitCode(t, err))
	lines := readLines(t, out)
	require.True(t, has(lines, "exec", "/bin/busybox"), "%+v", lines)
	require.True(t, has(lines, "file", "/etc/passwd"), "%+v", lines)
	for _, l := range lines {
		require.NotContains(t, l.Path, root, "host path leaked")
	}
	var st os.FileInfo
	st, err = os.Stat(filepath.Join(root, "proc/self"))
	require.Error(t, err, "proc must be unmounted after exec, found %v", st)
}

// The command keeps stdout: events go to their own file, so a command that
// writes with sendfile (busybox cat) cannot overwrite them, and sharing
// stdout needs -o -.
func TestExecKeepsEventsApartFromOutput(t *testing.T) {
	testutil.RequirePrivileged(t)
	err := runAgent(t.Context(), "exec", "--", "true")
	require.Equal(t, 2, exitCode(t, err), "no -o and no --redis")

	root := testutil.BusyboxRoot(t)
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef\n"), 1<<14)
	require.NoError(t, os.WriteFile(filepath.Join(root, "big.txt"), data, 0o644))
	events, output := filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "output")
	f, err := os.Create(output)
	require.NoError(t, err)
	stdout := os.Stdout
	os.Stdout = f // the command's stdout, as a shell's > would make it
	err = runAgent(t.Context(), "exec", "--root", root, "-o", events, "--", "cat", "/big.txt")
	os.Stdout = stdout
	require.NoError(t, f.Close())
	require.Equal(t, 0, exitCode(t, err))
	got, err := os.ReadFile(output)
	require.NoError(t, err)
	require.Equal(t, data, got, "the command's output, whole")
	lines := readLines(t, events)
	require.True(t, has(lines, "file", "/big.txt"), "%+v", lines)
}

func TestExecNeedsACommand(t *testing.T) {
	err := runAgent(t.Context(), "exec")
	require.Equal(t, 2, exitCode(t, err))
}

func TestTracePrintsEventsOfOneCgroup(t *testing.T) {
	testutil.RequirePrivileged(t)
	h, err := cgroups.Unified()
	require.NoError(t, err)
	name := "inuse-test/trace-" + time.Now().Format("150405.000000")
	dir, _, err := h.Create(name)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cgroups.Remove(dir) })
	out := filepath.Join(t.TempDir(), "events.jsonl")
	data := filepath.Join(t.TempDir(), "traced.txt")
	require.NoError(t, os.WriteFile(data, []byte("x"), 0o644))

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- runAgent(ctx, "trace", "--cgroup", "/"+name, "-o", out) }()
	// trace creates its output once the cgroup is tracked.
	for {
		if _, err := os.Stat(out); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("trace ended early: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	cmd := exec.Command("cat", data)
	require.NoError(t, h.Start(cmd, dir))
	require.NoError(t, cmd.Wait())
	// Stopping trace drains what the kernel already wrote.
	cancel()
	require.NoError(t, <-done)
	lines := readLines(t, out)
	require.True(t, has(lines, "file", data), "%+v", lines)
}

// Two agents (two nodes) profile the same image with exec --redis: one
// merged profile lists both nodes and what each command loaded.
func TestExecFoldsIntoStore(t *testing.T) {
	testutil.RequirePrivileged(t)
	srv := redistest.Start(t)
	root := testutil.BusyboxRoot(t)
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/a.conf"), []byte("a"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/b.conf"), []byte("b"), 0o644))
	const digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	for node, file := range map[string]string{"node-a": "/etc/a.conf", "node-b": "/etc/b.conf"} {
		err := runAgent(t.Context(), "exec", "--redis", srv.URL(), "--image-name", "demo/busybox:1", "--image-digest", digest,
			"--node-name", node, "--root", root, "--", "cat", file)
		require.Equal(t, 0, exitCode(t, err))
	}
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	p, err := st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.Equal(t, []string{"node-a", "node-b"}, p.NodeNames)
	require.Len(t, p.Containers, 2)
	var read []string
	for _, e := range p.Sections[store.FilesRead] {
		read = append(read, e.Value)
	}
	require.Subset(t, read, []string{"/etc/a.conf", "/etc/b.conf"})
	require.Equal(t, "/bin/busybox", p.Sections[store.Exec][0].Value)
	require.NotEmpty(t, p.Sections[store.Syscalls])
}

func TestExecRedisNeedsAnImage(t *testing.T) {
	srv := redistest.Start(t)
	err := runAgent(t.Context(), "exec", "--redis", srv.URL(), "--", "true")
	require.Equal(t, 2, exitCode(t, err))
}
