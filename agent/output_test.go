package agent

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/lifecycle"
)

// run -o, exec and trace write one schema: an event with its container, a
// container's start or stop, or (trace) an event alone.
func TestRecordSchema(t *testing.T) {
	var buf bytes.Buffer
	j := newJSONLines(&buf)
	c := lifecycle.Container{ID: "c1", Runtime: lifecycle.RuntimeDocker, Image: lifecycle.Image{Name: "app:1", Digest: "sha256:aa"}, CgroupID: 7}
	j.ContainerStarted(c)
	j.Observe(c, sensor.FileEvent{Header: sensor.Header{CgroupID: 7}, Path: "/etc/passwd", Access: sensor.AccessRead})
	j.ContainerStopped(c)
	j.write(Record{Event: sensor.JSON{Event: sensor.ExecEvent{Header: sensor.Header{CgroupID: 7}, Role: sensor.RoleBinary, Path: "/bin/sh"}}})
	require.NoError(t, j.err())

	ctr := `"container":{"id":"c1","runtime":"docker","image":{"name":"app:1","digest":"sha256:aa"},"cgroup_id":7}`
	require.Equal(t, `{`+ctr+`,"lifecycle":"started"}
{`+ctr+`,"event":{"kind":"file","cgroup_id":7,"pid":0,"monotonic_ns":0,"path":"/etc/passwd","access":["read"],"dev":0,"ino":0}}
{`+ctr+`,"lifecycle":"stopped"}
{"event":{"kind":"exec","cgroup_id":7,"pid":0,"monotonic_ns":0,"role":"binary","path":"/bin/sh"}}
`, buf.String())
}
