package sensor

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/internal/testutil"
)

func TestLoadBTFErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	require.NoError(t, os.WriteFile(garbage, []byte("not BTF at all\n"), 0o644))
	self, err := os.Executable() // an ELF without .BTF
	require.NoError(t, err)
	arch := map[string]string{"amd64": "x86", "arm64": "arm64"}[runtime.GOARCH]
	for _, tc := range []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "missing"), "no such file"},
		{"not BTF", garbage, "a raw BTF file or an ELF with .BTF"},
		{"ELF without BTF", self, "a raw BTF file or an ELF with .BTF"},
		{"a BPF object's BTF", "sensor_" + arch + "_bpfel.o", "not a kernel's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadBTF(tc.path)
			require.ErrorContains(t, err, tc.path)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.Create(to)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
}

// requireSeesFiles checks that a sensor opened with cfg reports the files
// of a tracked process.
func requireSeesFiles(t *testing.T, cfg Config) {
	t.Helper()
	s, h, cgDir, id := tracked(t, cfg)
	dir := fixture(t)
	stop := collect(t, s)
	runIn(t, h, cgDir, actor(t, "files", dir))
	require.Len(t, filesByPath(stop(), id)[filepath.Join(dir, "read.txt")], 1)
}

func TestSensorExternalBTF(t *testing.T) {
	testutil.RequirePrivileged(t)
	path := filepath.Join(t.TempDir(), "vmlinux.btf")
	copyFile(t, "/sys/kernel/btf/vmlinux", path) // as a distribution would publish it
	types, err := LoadBTF(path)
	require.NoError(t, err)
	requireSeesFiles(t, Config{KernelBTF: types})
}

// hiddenBTFEnv names a copy of the kernel's BTF while tests/kernels hides
// /sys/kernel/btf (a tmpfs over it), as on a node whose agent cannot see it.
const hiddenBTFEnv = "INUSE_KERNEL_BTF_HIDDEN"

// TestSensorHiddenKernelBTF is what a kernel without BTF of its own gives,
// and what a published BTF file can and cannot stand in for. Run by
// tests/kernels (init.sh) only: it hides the BTF of a throwaway VM.
func TestSensorHiddenKernelBTF(t *testing.T) {
	path := os.Getenv(hiddenBTFEnv)
	if path == "" {
		t.Skipf("run by tests/kernels, which hides /sys/kernel/btf and sets %s", hiddenBTFEnv)
	}
	require.NoFileExists(t, "/sys/kernel/btf/vmlinux")
	types, err := LoadBTF(path)
	require.NoError(t, err)
	for _, cfg := range []Config{{}, {KernelBTF: types}} {
		_, err := Open(slog.New(slog.DiscardHandler), cfg)
		require.ErrorIs(t, err, ErrNoKernelBTF)
		require.ErrorContains(t, err, "CONFIG_DEBUG_INFO_BTF")
	}

	// The kernel's own BTF where libbpf and cilium/ebpf also look for it.
	var uts unix.Utsname
	require.NoError(t, unix.Uname(&uts))
	boot := "/boot/vmlinux-" + unix.ByteSliceToString(uts.Release[:])
	require.NoError(t, os.MkdirAll("/boot", 0o755))
	copyFile(t, path, boot)
	t.Cleanup(func() { _ = os.Remove(boot) })
	requireSeesFiles(t, Config{KernelBTF: types})
}
