package scanner_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
	"github.com/inuse-dev/inuse/scanner/scannertest"
)

// packageSet names the packages of a report as name@version.
func packageSet(t *testing.T, sc *scanner.Scanner, digest string) []string {
	t.Helper()
	rep, err := sc.Report(t.Context(), digest, nil)
	require.NoError(t, err)
	var out []string
	for _, p := range rep.Packages {
		out = append(out, p.Name+"@"+p.Version)
	}
	return out
}

// The same Debian image read as an OCI layout directory and as a docker
// save tarball yields the packages of the OCI archive, each catalogued
// into a cache of its own.
func TestSources(t *testing.T) {
	f := debian(t)
	_, err := f.scanner.Catalog(t.Context(), scanner.SourceSpec{Kind: scanner.OCIArchive, Ref: f.archive})
	require.NoError(t, err)
	want := packageSet(t, f.scanner, f.digest)
	require.Greater(t, len(want), 50)

	dir := t.TempDir()
	ociDir := filepath.Join(dir, "layout")
	ociDigest := scannertest.WriteOCIDir(t, f.root, ociDir)
	dockerArchive := filepath.Join(dir, "debian.docker.tar")
	scannertest.WriteDockerArchive(t, f.root, "inuse-test/debian:bookworm", dockerArchive)

	for _, tc := range []struct {
		name       string
		spec       scanner.SourceSpec
		wantDigest string
	}{
		{"oci-dir", scanner.SourceSpec{Kind: scanner.OCIDir, Ref: ociDir}, ociDigest},
		{"docker-archive", scanner.SourceSpec{Kind: scanner.DockerArchive, Ref: dockerArchive}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := scanner.New(scanner.Config{CacheDir: t.TempDir(), DB: scanner.DBConfig{Dir: f.dbRoot}})
			require.NoError(t, err)
			defer sc.Close()
			digest, err := sc.Catalog(t.Context(), tc.spec)
			require.NoError(t, err)
			require.True(t, store.ValidDigest(digest), digest)
			if tc.wantDigest != "" {
				require.Equal(t, tc.wantDigest, digest)
			}
			require.True(t, sc.Cached(digest))
			require.ElementsMatch(t, want, packageSet(t, sc, digest))
		})
	}
}

// A truncated or garbage image is a clear error and leaves nothing in the
// cache.
func TestCorruptImage(t *testing.T) {
	f := debian(t)
	dir := t.TempDir()
	whole, err := os.ReadFile(f.archive)
	require.NoError(t, err)
	truncated := filepath.Join(dir, "truncated.tar")
	require.NoError(t, os.WriteFile(truncated, whole[:len(whole)/3], 0o644))
	garbage := filepath.Join(dir, "garbage.tar")
	require.NoError(t, os.WriteFile(garbage, []byte("not an image at all\n"), 0o644))

	cache := t.TempDir()
	sc, err := scanner.New(scanner.Config{CacheDir: cache, DB: scanner.DBConfig{Dir: f.dbRoot}})
	require.NoError(t, err)
	defer sc.Close()
	for _, file := range []string{truncated, garbage} {
		t.Run(filepath.Base(file), func(t *testing.T) {
			_, err := sc.Catalog(t.Context(), scanner.SourceSpec{Kind: scanner.OCIArchive, Ref: file})
			require.Error(t, err)
			require.Contains(t, err.Error(), file, "the error names the image")
		})
	}
	require.False(t, sc.Cached(f.digest), "a failed catalog caches nothing")
}
