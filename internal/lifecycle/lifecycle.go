// Package lifecycle holds the container identity and lifecycle events that
// every discovery source (NRI, Docker, inuse-agent exec) produces and the
// collector consumes.
package lifecycle

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
)

// Runtimes that start containers.
const (
	RuntimeContainerd = "containerd"
	RuntimeDocker     = "docker"
	// RuntimeExec is a command profiled by inuse-agent exec.
	RuntimeExec = "exec"
)

// Image identifies what a container runs.
type Image struct {
	// Name as the user wrote it, e.g. docker.io/library/nginx:1.27.
	Name string `json:"name"`
	// Digest is the manifest digest (sha256:...): profiles are keyed by it.
	Digest string `json:"digest"`
	// ID is the image config digest, when known.
	ID string `json:"id,omitempty"`
}

// Pod is the Kubernetes pod of a container, when it has one.
type Pod struct {
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	UID       string `json:"uid,omitempty"`
}

// Workload is the controller that owns the pod (Deployment, DaemonSet...)
// or the Compose service of a Docker container.
type Workload struct {
	Kind string `json:"kind,omitempty"`
	Name string `json:"name,omitempty"`
}

// Container is one running container and the cgroup it is tracked by.
type Container struct {
	ID       string   `json:"id"`
	Name     string   `json:"name,omitempty"`
	Runtime  string   `json:"runtime"`
	Image    Image    `json:"image"`
	Pod      Pod      `json:"pod,omitzero"`
	Workload Workload `json:"workload,omitzero"`
	// CgroupPath is the container's cgroup, as a path under the hierarchy
	// (/docker/ID, /kubepods.slice/.../cri-containerd-ID.scope).
	CgroupPath string `json:"cgroup_path,omitempty"`
	// CgroupID is the sensor's tracking key for the container.
	CgroupID uint64 `json:"cgroup_id"`
	// Partial is set when the container ran before it was tracked, so its
	// profile may miss what it loaded early.
	Partial bool `json:"partial,omitempty"`
	// Running is set when the runtime names the container after its
	// entrypoint may have run (a Docker start event): the sensor must not
	// take the next process to join it from outside for its entrypoint
	// (bpf/sensor/runtime.h). Partial implies it.
	Running bool `json:"-"`
}

// Kind of a lifecycle event.
type Kind string

// Lifecycle event kinds.
const (
	// Started: track the container from now on.
	Started Kind = "started"
	// Stopped: the container's processes are gone; untrack it.
	Stopped Kind = "stopped"
)

// Event is a change in the set of running containers.
type Event struct {
	Kind      Kind      `json:"kind"`
	Container Container `json:"container"`
}

// RootfsDigest is the stable image id of a root directory profiled or
// scanned without a digest: the same directory always folds into the same
// profile, and `inuse scan --rootfs` finds the profile `inuse-agent exec
// --root` wrote.
func RootfsDigest(root string) (string, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("resolving root directory: %w", err)
	}
	sum := sha256.Sum256([]byte("inuse-rootfs:" + abs))
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}
