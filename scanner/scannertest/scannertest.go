// Package scannertest builds real images for the scanner's tests: a
// debootstrapped Debian root, cached once per machine outside the
// repository, and OCI archives of it.
package scannertest

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/logfields"
)

// DebianRootVersion keys the cached debootstrap root: bump it to rebuild.
const DebianRootVersion = "bookworm-minbase-v1"

// DebianRoot returns a Debian bookworm minbase root, debootstrapped once
// per machine under ~/.cache/inuse/testdata (never in the repository).
func DebianRoot(t testing.TB) string {
	return DebianRootWith(t, DebianRootVersion)
}

// DebianRootWith returns a bookworm minbase root with packages (and what
// they depend on) installed, debootstrapped once per machine under
// ~/.cache/inuse/testdata/<name>: name keys the cache, bump its version
// to rebuild.
func DebianRootWith(t testing.TB, name string, packages ...string) string {
	dir, err := CachedDebianRoot(slog.New(slog.NewTextHandler(t.Output(), nil)), name, packages...)
	require.NoError(t, err)
	return dir
}

// CachedDebianRoot is DebianRootWith for programs (the benchmark harness);
// log says when it debootstraps, which takes minutes.
func CachedDebianRoot(log *slog.Logger, name string, packages ...string) (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(home, ".cache", "inuse", "testdata", name)
	if _, err := os.Stat(filepath.Join(dir, "var/lib/dpkg/status")); err == nil {
		return dir, nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("debootstrap is missing, run scripts/deps.sh: %w", err)
	}
	mirror := os.Getenv("INUSE_DEBIAN_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	log.Info("debootstrapping bookworm once per machine", logfields.Path, dir, "packages", packages)
	args := []string{"--variant=minbase"}
	if len(packages) > 0 {
		args = append(args, "--include="+strings.Join(packages, ","))
	}
	if out, err := exec.Command("debootstrap", append(args, "bookworm", tmp, mirror)...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("debootstrap: %w: %s", err, out)
	}
	return dir, os.Rename(tmp, dir)
}

// WriteOCIArchive packs root as a one-layer OCI image into an OCI archive
// (a tar of an image layout) and returns the manifest digest.
func WriteOCIArchive(t testing.TB, root, archive string) string {
	t.Helper()
	d, err := OCIArchive(root, archive)
	require.NoError(t, err)
	return d
}

// OCIArchive is WriteOCIArchive for programs (the benchmark harness).
func OCIArchive(root, archive string) (string, error) {
	dir := filepath.Dir(archive)
	img, err := image(root, dir)
	if err != nil {
		return "", err
	}
	defer os.Remove(filepath.Join(dir, "layer.tar"))
	layoutDir := filepath.Join(dir, "layout")
	if err := writeLayout(img, layoutDir); err != nil {
		return "", err
	}
	defer os.RemoveAll(layoutDir)
	if err := tarDir(layoutDir, archive, true); err != nil {
		return "", err
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// WriteOCIDir packs root as an OCI image layout directory and returns the
// manifest digest.
func WriteOCIDir(t testing.TB, root, dir string) string {
	t.Helper()
	img, err := image(root, t.TempDir())
	require.NoError(t, err)
	require.NoError(t, writeLayout(img, dir))
	d, err := img.Digest()
	require.NoError(t, err)
	return d.String()
}

// WriteDockerArchive packs root as a `docker save` tarball tagged ref.
func WriteDockerArchive(t testing.TB, root, ref, archive string) {
	t.Helper()
	img, err := image(root, t.TempDir())
	require.NoError(t, err)
	tag, err := name.NewTag(ref)
	require.NoError(t, err)
	require.NoError(t, tarball.WriteToFile(archive, tag, img))
}

// image makes a one-layer OCI image of root; its layer is staged in dir.
func image(root, dir string) (v1.Image, error) {
	layerPath := filepath.Join(dir, "layer.tar")
	if err := tarDir(root, layerPath, false); err != nil {
		return nil, err
	}
	// tarball reads the staged file again each time the layer is written.
	layer, err := tarball.LayerFromFile(layerPath, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = []string{"/bin/bash"}
	return mutate.ConfigFile(img, cf)
}

func writeLayout(img v1.Image, dir string) error {
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return lp.AppendImage(img)
}

// tarDir writes dir's regular files, directories and symlinks into a tar.
func tarDir(dir, out string, flat bool) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case info.Mode().IsRegular(), info.IsDir():
		default:
			return nil // devices, sockets: not image content
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Name = rel
		if info.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			if _, err := io.Copy(tw, src); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
