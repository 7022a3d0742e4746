// Package logfields names the keys of structured log lines, so that every
// component spells them the same way.
package logfields

// Log keys.
const (
	Component   = "component"
	Error       = "error"
	CgroupID    = "cgroup_id"
	CgroupPath  = "cgroup_path"
	ContainerID = "container_id"
	Image       = "image"
	PID         = "pid"
	Path        = "path"
	Count       = "count"
)
