package funcprobe

import (
	"testing"

	"github.com/cilium/ebpf"
)

// WithoutUprobeMulti makes Open load the perf event fallback, as on a
// kernel before Linux 6.6, until the test ends.
func WithoutUprobeMulti(t *testing.T) {
	saved := haveUprobeMulti
	haveUprobeMulti = func() error { return ebpf.ErrNotSupported }
	t.Cleanup(func() { haveUprobeMulti = saved })
}
