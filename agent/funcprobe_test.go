package agent

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/bpf/funcprobe"
	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/lifecycle"
)

// Function probe events take the same Record schema as the sensor's, with
// kinds of their own: "function" (a planned function ran) and "probed".
func TestFunctionRecordSchema(t *testing.T) {
	var buf bytes.Buffer
	j := newJSONLines(&buf)
	c := lifecycle.Container{ID: "c1", Runtime: lifecycle.RuntimeExec, Image: lifecycle.Image{Digest: "sha256:aa"}, CgroupID: 7}
	h := sensor.Header{CgroupID: 7, PID: 42, Monotonic: 9}
	j.Observe(c, funcprobe.ProbedEvent{Header: h, Binary: "/app/api", BuildID: "a/b/c/d"})
	j.Observe(c, funcprobe.FunctionEvent{Header: h, Binary: "/app/api", Symbol: "golang.org/x/text/language.Parse"})
	require.NoError(t, j.err())

	ctr := `"container":{"id":"c1","runtime":"exec","image":{"name":"","digest":"sha256:aa"},"cgroup_id":7}`
	require.Equal(t, `{`+ctr+`,"event":{"kind":"probed","cgroup_id":7,"pid":42,"monotonic_ns":9,"binary":"/app/api","build_id":"a/b/c/d"}}
{`+ctr+`,"event":{"kind":"function","cgroup_id":7,"pid":42,"monotonic_ns":9,"binary":"/app/api","symbol":"golang.org/x/text/language.Parse"}}
`, buf.String())
}
