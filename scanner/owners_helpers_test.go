package scanner

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/cataloging"
	"github.com/anchore/syft/syft/cataloging/pkgcataloging"
	"github.com/anchore/syft/syft/file"
	"github.com/anchore/syft/syft/sbom"
	"github.com/anchore/syft/syft/source"
	"github.com/stretchr/testify/require"
)

// catalog runs syft on a root directory the way the scanner runs it on an
// image: the image catalogers (installed packages, not lock files) and the
// squashed resolver.
func catalog(t *testing.T, root string) (*sbom.SBOM, file.Resolver) {
	t.Helper()
	ctx := context.Background()
	src, err := syft.GetSource(ctx, root, syft.DefaultGetSourceConfig().WithSources("dir"))
	require.NoError(t, err, "opening %s as a syft source", root)
	t.Cleanup(func() { _ = src.Close() })
	cfg := syft.DefaultCreateSBOMConfig().
		WithCatalogerSelection(cataloging.NewSelectionRequest().WithDefaults(pkgcataloging.ImageTag))
	s, err := syft.CreateSBOM(ctx, src, cfg)
	require.NoError(t, err, "cataloging %s", root)
	res, err := src.FileResolver(source.SquashedScope)
	require.NoError(t, err, "resolver of %s", root)
	return s, res
}

// cacheDir holds downloaded packages between runs, outside the repository.
func cacheDir(t *testing.T, sub string) string {
	t.Helper()
	home, err := os.UserHomeDir()
	require.NoError(t, err)
	dir := filepath.Join(home, ".cache", "inuse", "testdata", sub)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

var aptMu sync.Mutex

// fetchDeb returns the path of the .deb of a Debian package, downloading it
// into the cache with `apt-get download` the first time.
func fetchDeb(t *testing.T, name string) string {
	t.Helper()
	aptMu.Lock()
	defer aptMu.Unlock()
	dir := cacheDir(t, "debs")
	find := func() string {
		m, _ := filepath.Glob(filepath.Join(dir, name+"_*.deb"))
		if len(m) == 0 {
			return ""
		}
		return m[len(m)-1]
	}
	if deb := find(); deb != "" {
		return deb
	}
	run(t, dir, "apt-get", "download", name)
	deb := find()
	require.NotEmpty(t, deb, "apt-get download %s left no .deb in %s", name, dir)
	return deb
}

// installDebs installs Debian packages into root as dpkg would for
// syft: files unpacked (through root's usr-merge symlinks), a status entry
// and the md5sums file list per package.
func installDebs(t *testing.T, root string, names ...string) {
	t.Helper()
	var status strings.Builder
	info := filepath.Join(root, "var/lib/dpkg/info")
	require.NoError(t, os.MkdirAll(info, 0o755))
	for _, name := range names {
		deb := fetchDeb(t, name)
		stage := t.TempDir()
		run(t, "", "dpkg-deb", "-x", deb, filepath.Join(stage, "data"))
		run(t, "", "dpkg-deb", "-e", deb, filepath.Join(stage, "control"))
		mergeTree(t, filepath.Join(stage, "data"), root)
		control, err := os.ReadFile(filepath.Join(stage, "control", "control"))
		require.NoError(t, err)
		c := strings.TrimRight(string(control), "\n")
		// dpkg writes Status right after Package.
		first, rest, _ := strings.Cut(c, "\n")
		fmt.Fprintf(&status, "%s\nStatus: install ok installed\n%s\n\n", first, rest)
		if sums, err := os.ReadFile(filepath.Join(stage, "control", "md5sums")); err == nil {
			require.NoError(t, os.WriteFile(filepath.Join(info, name+".md5sums"), sums, 0o644))
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), []byte(status.String()), 0o644))
}

// usrMerged makes root a usr-merged Debian root: /bin, /lib, /lib64 and
// /sbin are symlinks into /usr.
func usrMerged(t *testing.T, root string) {
	t.Helper()
	for _, d := range []string{"bin", "lib", "lib64", "sbin"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, "usr", d), 0o755))
		require.NoError(t, os.Symlink("usr/"+d, filepath.Join(root, d)))
	}
}

// mergeTree copies src into dst following dst's directory symlinks, the way
// dpkg unpacks into a usr-merged root (tar would replace /lib by a
// directory instead).
func mergeTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		default:
			return copyFile(p, target)
		}
	})
	require.NoError(t, err, "copying %s into %s", src, dst)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// writeFiles creates files under root; a value "-> x" makes a symlink to x.
func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		if link, ok := strings.CutPrefix(content, "-> "); ok {
			require.NoError(t, os.Symlink(link, p))
			continue
		}
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
}

// run runs a command in dir and fails the test with its output on error.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	return runEnv(t, dir, nil, name, args...)
}

func runEnv(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}
