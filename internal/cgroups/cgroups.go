// Package cgroups finds, creates and identifies the cgroups that inuse
// tracks, on cgroup v2, hybrid and pure v1 hosts.
//
// A container is keyed by its cgroup v2 id (the inode number of its cgroup2
// directory, what bpf_get_current_cgroup_id returns). On a host whose
// processes all sit in the cgroup2 root (pure v1), the key is the id of the
// container's cgroup in one v1 controller hierarchy instead (see Hierarchy).
package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Root is where cgroup file systems are mounted.
const Root = "/sys/fs/cgroup"

// ErrNoHierarchy is returned when no cgroup hierarchy of the wanted kind is mounted.
var ErrNoHierarchy = errors.New("cgroups: hierarchy not mounted")

// Hierarchy is one mounted cgroup tree whose directories key tracked cgroups.
type Hierarchy struct {
	// Dir is the mount point, e.g. /sys/fs/cgroup/unified.
	Dir string
	// Controller is empty for cgroup v2, else the v1 controller ("memory").
	Controller string
}

// V1 reports whether the hierarchy is a v1 controller hierarchy.
func (h Hierarchy) V1() bool { return h.Controller != "" }

func (h Hierarchy) String() string {
	if h.V1() {
		return fmt.Sprintf("cgroup v1 %s at %s", h.Controller, h.Dir)
	}
	return "cgroup2 at " + h.Dir
}

// Unified returns the cgroup2 hierarchy: /sys/fs/cgroup on pure v2 hosts,
// /sys/fs/cgroup/unified on hybrid ones.
func Unified() (Hierarchy, error) {
	for _, dir := range []string{Root, filepath.Join(Root, "unified")} {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return Hierarchy{Dir: dir}, nil
		}
	}
	return Hierarchy{}, fmt.Errorf("%w: no cgroup2 under %s", ErrNoHierarchy, Root)
}

// V1Controller returns the v1 hierarchy that carries controller.
func V1Controller(controller string) (Hierarchy, error) {
	dir := filepath.Join(Root, controller)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.CGROUP_SUPER_MAGIC {
		return Hierarchy{}, fmt.Errorf("%w: no cgroup v1 %s controller at %s", ErrNoHierarchy, controller, dir)
	}
	return Hierarchy{Dir: dir, Controller: controller}, nil
}

// Detect picks the hierarchy that tells containers apart: cgroup2 when it
// is mounted, else the v1 memory controller.
func Detect() (Hierarchy, error) {
	h, err := Unified()
	if err == nil {
		return h, nil
	}
	if h1, err1 := V1Controller("memory"); err1 == nil {
		return h1, nil
	}
	return Hierarchy{}, err
}

// Path returns the directory of a cgroup path ("/docker/abc", as runtimes
// and /proc/PID/cgroup write it) in this hierarchy. An absolute directory
// already under the hierarchy is returned as it is.
func (h Hierarchy) Path(cgroupPath string) string {
	if strings.HasPrefix(cgroupPath, h.Dir+"/") || cgroupPath == h.Dir {
		return cgroupPath
	}
	return filepath.Join(h.Dir, cgroupPath)
}

// ID returns the id of the cgroup at dir: the inode number of its directory.
func ID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("reading cgroup id of %s: %w", dir, err)
	}
	return st.Ino, nil
}

// Create makes the cgroup directory at cgroupPath (and its parents) and
// returns its directory and id.
func (h Hierarchy) Create(cgroupPath string) (dir string, id uint64, err error) {
	dir = h.Path(cgroupPath)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", 0, fmt.Errorf("creating cgroup %s: %w", dir, err)
	}
	id, err = ID(dir)
	return dir, id, err
}

// Remove deletes an empty cgroup directory; a cgroup that is already gone is not an error.
func Remove(dir string) error {
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing cgroup %s: %w", dir, err)
	}
	return nil
}

// OfProcess returns the path of pid's cgroup in this hierarchy, as written
// in /proc/PID/cgroup ("/" for the root). pid 0 means the calling thread.
func (h Hierarchy) OfProcess(pid int) (string, error) {
	file := "/proc/thread-self/cgroup"
	if pid != 0 {
		file = fmt.Sprintf("/proc/%d/cgroup", pid)
	}
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("reading cgroups of process: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-id:controller-list:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if !h.V1() && parts[0] == "0" && parts[1] == "" {
			return parts[2], nil
		}
		if h.V1() && containsController(parts[1], h.Controller) {
			return parts[2], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading %s: %w", file, err)
	}
	return "", fmt.Errorf("%w: %s not in %s", ErrNoHierarchy, h, file)
}

func containsController(list, controller string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == controller {
			return true
		}
	}
	return false
}
