package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BusyboxRoot builds a minimal root file system from Debian's
// busybox-static (installed by `make deps`): /bin/busybox with sh, cat, ls
// and echo applets, an /etc/passwd and an /etc/group.
func BusyboxRoot(tb testing.TB) string {
	tb.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		tb.Fatalf("busybox-static is missing (run `make deps`): %v", err)
	}
	b, err := os.ReadFile(busybox)
	if err != nil {
		tb.Fatal(err)
	}
	root := tb.TempDir()
	for _, d := range []string{"bin", "etc", "proc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755); err != nil {
		tb.Fatal(err)
	}
	for _, applet := range []string{"sh", "cat", "ls", "echo"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			tb.Fatal(err)
		}
	}
	for file, content := range map[string]string{"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n"} {
		if err := os.WriteFile(filepath.Join(root, file), []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return root
}
