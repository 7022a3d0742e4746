package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/scanner"
	"github.com/inuse-dev/inuse/scanner/scannertest"
)

// debianSetup is what the root-only CLI tests share: the debootstrapped
// Debian root, a cache with the test database imported, the root's digest
// (the one `inuse-agent exec --root` files its profile under) and a store.
func debianSetup(t *testing.T) (root, cache, digest string, srv *redistest.Server, st *store.Store) {
	t.Helper()
	testutil.RequirePrivileged(t) // the Debian root is debootstrapped
	root = scannertest.DebianRoot(t)
	cache = t.TempDir()
	_, err := runInuse(t, "db", "import", "--cache-dir", cache, testDB(t))
	require.NoError(t, err)
	digest, err = lifecycle.RootfsDigest(root)
	require.NoError(t, err)
	srv = redistest.Start(t)
	st, err = store.Open(srv.URL())
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return root, cache, digest, srv, st
}

// TestScanRootfs runs `inuse scan --rootfs` on the Debian root with a
// profile that `inuse-agent exec --root` would have written (same
// digest), in every format, then `inuse enrich` on a grype report.
func TestScanRootfs(t *testing.T) {
	root, cache, digest, srv, st := debianSetup(t)
	d := store.NewDelta()
	d.AddTo(store.Names, "bookworm-root")
	d.Add(store.FilesRead, "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13", time.Now().UnixMilli())
	_, err := st.Apply(t.Context(), map[string]*store.Delta{digest: d}, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	time.Sleep(5 * time.Millisecond)

	scan := func(t *testing.T, format string, extra ...string) string {
		t.Helper()
		args := append([]string{"scan", "--rootfs", root, "--cache-dir", cache, "--format", format}, extra...)
		out, err := runInuse(t, args...)
		require.NoError(t, err)
		return out
	}
	withProfile := []string{"--redis", srv.URL(), "--min-observed", "1ms", "--stable-window", "1ms"}

	t.Run("json", func(t *testing.T) {
		var rep struct {
			Digest  string `json:"digest"`
			Profile struct {
				Found bool   `json:"found"`
				State string `json:"learning_state"`
			} `json:"profile"`
			Vulns []struct {
				ID, Verdict string
				Package     string `json:"package_name"`
			} `json:"vulnerabilities"`
		}
		require.NoError(t, json.Unmarshal([]byte(scan(t, "json", withProfile...)), &rep))
		require.Equal(t, digest, rep.Digest, "the rootfs digest is the one inuse-agent exec uses")
		require.True(t, rep.Profile.Found)
		require.Equal(t, "done", rep.Profile.State)
		require.Len(t, rep.Vulns, 1)
		require.Equal(t, "CVE-2099-0001", rep.Vulns[0].ID)
		require.Equal(t, "zlib1g", rep.Vulns[0].Package)
		require.Equal(t, "in_use", rep.Vulns[0].Verdict)
	})
	t.Run("table without profile", func(t *testing.T) {
		out := scan(t, "table")
		require.Regexp(t, `Critical\s+CVE-2099-0001\s+zlib1g\s+\S+\s+\S+\s+\?`, out)
		require.Contains(t, out, "no profile (every package unknown)")
	})
	t.Run("openvex", func(t *testing.T) {
		out := scan(t, "openvex", withProfile...)
		require.Contains(t, out, `"status": "affected"`)
		require.Contains(t, out, "pkg:oci/"+filepath.Base(root)+"@sha256%3A")
	})
	t.Run("cyclonedx", func(t *testing.T) {
		out := scan(t, "cyclonedx", withProfile...)
		require.Contains(t, out, `"state": "exploitable"`)
	})
	t.Run("unknown format", func(t *testing.T) {
		_, err := runInuse(t, "scan", "--rootfs", root, "--cache-dir", cache, "--format", "xml")
		require.ErrorContains(t, err, "unknown --format")
	})
	t.Run("enrich", func(t *testing.T) {
		report := filepath.Join(t.TempDir(), "grype.json")
		b, err := os.ReadFile(filepath.Join("..", "..", "scanner", "testdata", "enrich", "grype.json"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(report, b, 0o644))
		out, err := runInuse(t, append(append([]string{"enrich", "--source", "rootfs:" + root, "--cache-dir", cache}, withProfile...), report)...)
		require.NoError(t, err)
		var doc struct {
			Matches []struct {
				Artifact struct{ Name string }
				Inuse    struct{ Verdict string }
			}
		}
		require.NoError(t, json.Unmarshal([]byte(out), &doc))
		got := map[string]string{}
		for _, m := range doc.Matches {
			got[m.Artifact.Name] = m.Inuse.Verdict
		}
		require.Equal(t, map[string]string{"zlib1g": "in_use", "libbz2-1.0": "not_observed", "libssl3": "unknown"}, got)

		garbage := filepath.Join(t.TempDir(), "garbage.json")
		require.NoError(t, os.WriteFile(garbage, []byte(`{"hello": "world"}`), 0o644))
		_, err = runInuse(t, "enrich", "--source", "rootfs:"+root, "--cache-dir", cache, garbage)
		require.ErrorContains(t, err, "not a grype JSON, Trivy JSON or CycloneDX JSON report")
	})
}

// TestSourceFlags: scan and enrich read the image source from the flags
// under their names and under the deprecated ones, and from both
// environment variables of the containerd address.
func TestSourceFlags(t *testing.T) {
	const ns = scanner.DefaultContainerdNamespace
	rootfs := scanner.SourceSpec{Kind: scanner.Rootfs, Ref: "/srv/root", Name: "shop/api:1", ContainerdNamespace: ns}
	nginx := scanner.SourceSpec{Kind: scanner.Containerd, Ref: "nginx", ContainerdNamespace: ns, ContainerdAddress: "/run/c.sock"}
	archive := scanner.SourceSpec{Kind: scanner.OCIArchive, Ref: "/tmp/api.tar", ContainerdNamespace: ns}
	for _, tc := range []struct {
		name string
		cmd  *cli.Command
		args []string
		env  map[string]string
		want scanner.SourceSpec
	}{
		{name: "scan --image-name", cmd: scanCommand, args: []string{"--rootfs", "/srv/root", "--image-name", "shop/api:1"}, want: rootfs},
		{name: "scan --name (deprecated)", cmd: scanCommand, args: []string{"--rootfs", "/srv/root", "--name", "shop/api:1"}, want: rootfs},
		{name: "scan --containerd-address", cmd: scanCommand, args: []string{"--containerd-address", "/run/c.sock", "containerd:nginx"}, want: nginx},
		{name: "scan --containerd-socket (deprecated)", cmd: scanCommand, args: []string{"--containerd-socket", "/run/c.sock", "containerd:nginx"}, want: nginx},
		{name: "scan INUSE_CONTAINERD_ADDRESS", cmd: scanCommand, args: []string{"containerd:nginx"}, env: map[string]string{"INUSE_CONTAINERD_ADDRESS": "/run/c.sock"}, want: nginx},
		{name: "scan INUSE_CONTAINERD_SOCKET (deprecated)", cmd: scanCommand, args: []string{"containerd:nginx"}, env: map[string]string{"INUSE_CONTAINERD_SOCKET": "/run/c.sock"}, want: nginx},
		{name: "enrich --source", cmd: enrichCommand, args: []string{"--source", "oci-archive:/tmp/api.tar"}, want: archive},
		{name: "enrich --image (deprecated)", cmd: enrichCommand, args: []string{"--image", "oci-archive:/tmp/api.tar"}, want: archive},
		{name: "enrich --containerd-socket (deprecated)", cmd: enrichCommand, args: []string{"--source", "containerd:nginx", "--containerd-socket", "/run/c.sock"}, want: nginx},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var got scanner.SourceSpec
			app := &cli.App{Name: "inuse", Flags: freshFlags(tc.cmd.Flags), Writer: io.Discard, Action: func(c *cli.Context) error {
				if tc.cmd == enrichCommand {
					got = enrichSource(c)
					return nil
				}
				var err error
				got, err = sourceSpec(c)
				return err
			}}
			require.NoError(t, app.RunContext(t.Context(), append([]string{"inuse"}, tc.args...)))
			require.Equal(t, tc.want, got)
		})
	}
}

// freshFlags copies the string flags: urfave/cli keeps a value read from
// the environment in the flag itself, which would leak into later tests.
func freshFlags(flags []cli.Flag) []cli.Flag {
	out := make([]cli.Flag, len(flags))
	for i, f := range flags {
		out[i] = f
		if sf, ok := f.(*cli.StringFlag); ok {
			c := *sf
			out[i] = &c
		}
	}
	return out
}
