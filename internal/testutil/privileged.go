// Package testutil holds helpers shared by the tests of several packages.
package testutil

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
)

// PrivilegedEnv opts in to tests that need root and a BPF-capable kernel.
// `make test` sets it when it runs as root, and CI runs as root.
const PrivilegedEnv = "INUSE_PRIVILEGED_TESTS"

// InCI reports whether the tests run in CI (CI=true, as GitHub Actions,
// GitLab and most others set it). There, every test must run: a skip
// would count as a pass it never earned.
func InCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips the test with the reason outside CI and fails it in
// CI, where a test that cannot run is a broken runner, not a pass.
func SkipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if InCI() {
		tb.Fatalf("CI=true and this test cannot run: "+format, args...)
	}
	tb.Skipf(format, args...)
}

// RequirePrivileged skips the test unless privileged tests are opted in,
// and fails it when they are opted in but cannot run, or when CI=true
// and they are not opted in: a privileged test that silently skips in CI
// would count as a pass it never earned.
func RequirePrivileged(tb testing.TB) {
	tb.Helper()
	if os.Getenv(PrivilegedEnv) == "" {
		if InCI() {
			tb.Fatalf("CI=true but %s is not set: CI must run the privileged tests, as root on a kernel with BTF (`make test` as root sets it)", PrivilegedEnv)
		}
		tb.Skipf("needs root and BPF: run `make test` as root (it sets %s=1)", PrivilegedEnv)
	}
	if os.Geteuid() != 0 {
		tb.Fatalf("%s is set but euid is %d: run the tests as root", PrivilegedEnv, os.Geteuid())
	}
	if _, err := btf.LoadKernelSpec(); err != nil {
		tb.Fatalf("%s is set but the kernel has no BTF: %v", PrivilegedEnv, err)
	}
	if err := features.HaveMapType(ebpf.RingBuf); errors.Is(err, ebpf.ErrNotSupported) {
		tb.Fatalf("%s is set but the kernel lacks BPF ring buffers (Linux 5.8): %v", PrivilegedEnv, err)
	}
}

// NoCgroupV1Env is set by the test VMs of tests/kernels when the kernel
// refused to mount the v1 memory controller (Linux 6.12 and later built
// without CONFIG_MEMCG_V1): no host of that kernel can use the v1 fallback.
const NoCgroupV1Env = "INUSE_NO_CGROUP_V1"

// RequireCgroupV1 skips a test of the cgroup v1 fallback on a kernel that
// has no v1 memory controller.
func RequireCgroupV1(tb testing.TB) {
	tb.Helper()
	if reason := os.Getenv(NoCgroupV1Env); reason != "" {
		tb.Skipf("the kernel has no cgroup v1 memory controller: %s", reason)
	}
}
