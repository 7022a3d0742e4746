package cgroups

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/testutil"
)

func TestPath(t *testing.T) {
	h := Hierarchy{Dir: "/sys/fs/cgroup/unified"}
	for _, tc := range []struct{ in, want string }{
		{"/docker/abc", "/sys/fs/cgroup/unified/docker/abc"},
		{"kubepods/pod1/c1", "/sys/fs/cgroup/unified/kubepods/pod1/c1"},
		{"/sys/fs/cgroup/unified/x", "/sys/fs/cgroup/unified/x"},
		{"/", "/sys/fs/cgroup/unified"},
	} {
		require.Equal(t, tc.want, h.Path(tc.in), tc.in)
	}
}

func TestOfProcessFindsOwnCgroup(t *testing.T) {
	// Every Linux process has a line for each mounted hierarchy; this test
	// only needs /proc, not root.
	h, err := Detect()
	if err != nil {
		testutil.SkipOrFail(t, "no cgroup hierarchy mounted: %v", err)
	}
	p, err := h.OfProcess(0)
	require.NoError(t, err)
	require.True(t, len(p) > 0 && p[0] == '/', "path %q", p)
}

func TestContainsController(t *testing.T) {
	require.True(t, containsController("cpu,cpuacct", "cpuacct"))
	require.False(t, containsController("cpu,cpuacct", "cpus"))
	require.False(t, containsController("", "memory"))
}
