package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
)

const digest = "sha256:2222222222222222222222222222222222222222222222222222222222222222"

// runInuse runs the CLI in-process and returns what it printed.
func runInuse(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := cliapp.New("inuse", "test", commands)
	var out bytes.Buffer
	app.Writer = &out
	err := app.RunContext(t.Context(), append([]string{"inuse", "--log-level", "warn"}, args...))
	return out.String(), err
}

func seed(t *testing.T, url string) {
	t.Helper()
	st, err := store.Open(url)
	require.NoError(t, err)
	defer st.Close()
	d := store.NewDelta()
	d.AddTo(store.Names, "demo/app:2")
	d.AddTo(store.Nodes, "node-a")
	d.AddTo(store.Containers, "c1")
	d.Add(store.FilesRead, "/usr/lib/libz.so.1", time.Now().UnixMilli())
	d.Add(store.Exec, "/usr/bin/app", time.Now().UnixMilli())
	_, err = st.Apply(t.Context(), map[string]*store.Delta{digest: d}, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
}

func TestProfileCommands(t *testing.T) {
	srv := redistest.Start(t)
	seed(t, srv.URL())

	out, err := runInuse(t, "profile", "list", "--redis", srv.URL())
	require.NoError(t, err)
	require.Contains(t, out, "demo/app:2")
	require.Contains(t, out, "sha256:222222222222")
	require.Contains(t, out, "learning")

	out, err = runInuse(t, "profile", "show", "--redis", srv.URL(), "demo/app:2")
	require.NoError(t, err)
	require.Contains(t, out, "/usr/lib/libz.so.1")
	require.Contains(t, out, "exec (1)\n  /usr/bin/app")

	out, err = runInuse(t, "profile", "show", "--redis", srv.URL(), "--format", "json", digest)
	require.NoError(t, err)
	var p store.Profile
	require.NoError(t, json.Unmarshal([]byte(out), &p))
	require.Equal(t, digest, p.Digest)
	require.Equal(t, store.Learning, p.State)
	require.Equal(t, "/usr/lib/libz.so.1", p.Sections[store.FilesRead][0].Value)
}

func TestProfileErrors(t *testing.T) {
	srv := redistest.Start(t)
	seed(t, srv.URL())
	_, err := runInuse(t, "profile", "show", "--redis", srv.URL(), "nope:latest")
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = runInuse(t, "profile", "list", "--redis", srv.URL(), "--format", "xml")
	var exit cli.ExitCoder
	require.True(t, errors.As(err, &exit))
	require.Equal(t, 2, exit.ExitCode())
	_, err = runInuse(t, "profile", "list")
	require.True(t, errors.As(err, &exit), "no store configured")
	srv.Stop()
	_, err = runInuse(t, "profile", "list", "--redis", srv.URL())
	require.ErrorContains(t, err, "connecting to redis")
}

// A container names its files and an image its tags: an escape sequence
// or a newline in them reaches the terminal escaped, never raw.
func TestProfileEscapes(t *testing.T) {
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	const evil = "/tmp/\x1b[2J\nexec (1)\n  /usr/bin/forged"
	d := store.NewDelta()
	d.AddTo(store.Names, "demo/evil:\x1b]0;owned\x07")
	d.AddTo(store.Nodes, "node-a")
	d.AddTo(store.Containers, "c1")
	d.Add(store.FilesRead, evil, time.Now().UnixMilli())
	_, err = st.Apply(t.Context(), map[string]*store.Delta{digest: d}, time.Now(), store.DefaultLearning)
	require.NoError(t, err)

	for _, args := range [][]string{{"profile", "list", "--redis", srv.URL()}, {"profile", "show", "--redis", srv.URL(), digest}} {
		t.Run(args[1], func(t *testing.T) {
			out, err := runInuse(t, args...)
			require.NoError(t, err)
			require.NotContains(t, out, "\x1b", "an escape reached the terminal raw")
			require.NotContains(t, out, "\x07")
			require.Contains(t, out, `demo/evil:\x1b]0;owned\a`)
			if args[1] == "show" {
				require.Contains(t, out, `"/tmp/\x1b[2J\nexec (1)\n  /usr/bin/forged"`)
				require.NotContains(t, out, "\n  /usr/bin/forged", "a newline in a path forged a line")
			}
		})
	}
}
