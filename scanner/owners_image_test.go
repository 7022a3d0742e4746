package scanner

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/cataloging"
	"github.com/anchore/syft/syft/cataloging/pkgcataloging"
	"github.com/anchore/syft/syft/pkg"
	"github.com/anchore/syft/syft/source"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/store"
)

// TestImageSymlinks: in an image (not a directory), syft reports a
// symlink's raw target, relative or absolute; ownership must resolve both
// the same way as the kernel. zlib1g lists /lib/... behind /lib -> usr/lib
// (relative), libfoo lists /usr/lib64/... behind /usr/lib64 -> /usr/lib
// (absolute).
func TestImageSymlinks(t *testing.T) {
	type entry struct {
		name, link, body string
	}
	entries := []entry{
		{name: "usr/lib/x86_64-linux-gnu/libz.so.1.2.13", body: "elf"},
		{name: "usr/lib/x86_64-linux-gnu/libz.so.1", link: "libz.so.1.2.13"},
		{name: "usr/lib/libfoo.so.1", body: "elf"},
		{name: "lib", link: "usr/lib"},
		{name: "usr/lib64", link: "/usr/lib"},
		{name: "var/lib/dpkg/status", body: stanza("zlib1g", "1:1.2.13.dfsg-1") + "\n" + stanza("libfoo1", "1.0-1")},
		{name: "var/lib/dpkg/info/zlib1g.md5sums", body: "f3f0a5bb8e0c4bd4e7d4ad1a8e21b2b5  lib/x86_64-linux-gnu/libz.so.1.2.13\n"},
		{name: "var/lib/dpkg/info/libfoo1.md5sums", body: "0d4ad1a8e21b2b5f3f0a5bb8e0c4bd4e  usr/lib64/libfoo.so.1\n"},
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(e.body))}
		if e.link != "" {
			h = &tar.Header{Name: e.name, Mode: 0o777, Typeflag: tar.TypeSymlink, Linkname: e.link}
		}
		require.NoError(t, tw.WriteHeader(h))
		_, err := io.WriteString(tw, e.body)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer.Bytes())), nil })
	require.NoError(t, err)
	img, err := mutate.AppendLayers(empty.Image, l)
	require.NoError(t, err)
	archive := filepath.Join(t.TempDir(), "image.tar")
	ref, err := name.ParseReference("inuse.test/symlinks:1")
	require.NoError(t, err)
	require.NoError(t, tarball.WriteToFile(archive, ref, img))

	ctx := context.Background()
	src, err := syft.GetSource(ctx, archive, syft.DefaultGetSourceConfig().WithSources("docker-archive"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = src.Close() })
	s, err := syft.CreateSBOM(ctx, src, syft.DefaultCreateSBOMConfig().
		WithCatalogerSelection(cataloging.NewSelectionRequest().WithDefaults(pkgcataloging.ImageTag)))
	require.NoError(t, err)
	res, err := src.FileResolver(source.SquashedScope)
	require.NoError(t, err)
	o, err := BuildOwners(s, res)
	require.NoError(t, err)

	cases := []struct {
		name string
		load load
		want map[pkgRef]Verdict
	}{
		{
			name: "relative directory link",
			load: load{store.Mapped, "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"},
			want: map[pkgRef]Verdict{{pkg.DebPkg, "zlib1g"}: InUse, {pkg.DebPkg, "libfoo1"}: NotObserved},
		},
		{
			name: "absolute directory link",
			load: load{store.Mapped, "/usr/lib/libfoo.so.1"},
			want: map[pkgRef]Verdict{{pkg.DebPkg, "libfoo1"}: InUse, {pkg.DebPkg, "zlib1g"}: NotObserved},
		},
	}
	// syft's contains relationships resolve the same paths: check the
	// resolution of our own, which the other rules rely on, directly.
	t.Run("link resolution", func(t *testing.T) {
		lr := newLinkResolver(res)
		for in, want := range map[string]string{
			"/lib/x86_64-linux-gnu/libz.so.1.2.13": "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
			"/lib/x86_64-linux-gnu/libz.so.1":      "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
			"/usr/lib64/libfoo.so.1":               "/usr/lib/libfoo.so.1",
			"/usr/lib64/../lib64/libfoo.so.1":      "/usr/lib/libfoo.so.1",
		} {
			got, _ := lr.resolve(in)
			require.Equal(t, want, got, "resolving %s", in)
		}
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := o.Verdicts(profile(store.Done, tc.load))
			checkVerdicts(t, s, got, tc.want, nil, []load{tc.load})
			if t.Failed() {
				t.Logf("packages:\n%s\nowned files: %v", describe(s), o.Files)
			}
		})
	}
}

// stanza is a minimal dpkg status entry of an installed package.
func stanza(name, version string) string {
	return "Package: " + name + "\nStatus: install ok installed\nPriority: optional\nSection: libs\n" +
		"Installed-Size: 10\nMaintainer: inuse <test@inuse.dev>\nArchitecture: amd64\nVersion: " + version +
		"\nDescription: " + name + ", a test package\n"
}
