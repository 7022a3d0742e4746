package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// OverlayRoot mounts an overlay of lower under a fresh upper layer, as a
// container runtime mounts a container's root, and returns the merged
// directory; the test's end unmounts it.
func OverlayRoot(tb testing.TB, lower string) string {
	tb.Helper()
	base := tb.TempDir()
	upper, work, merged := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	if err := unix.Mount("overlay", merged, "overlay", 0, fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)); err != nil {
		tb.Fatalf("mounting an overlay: %v", err)
	}
	tb.Cleanup(func() { _ = unix.Unmount(merged, unix.MNT_DETACH) })
	return merged
}

// MountTmpfs mounts a tmpfs at dir (creating dir), as a volume; the test's
// end unmounts it, and with it everything under it, after the cleanups
// registered later.
func MountTmpfs(tb testing.TB, dir string) {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		tb.Fatalf("mounting a tmpfs: %v", err)
	}
	tb.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
}
