package agent

import (
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/internal/containerfs"
)

// runsContainerCode tells from /proc what bpf/sensor/runtime.h tells in
// the kernel: whether the process's executable is a file of a mount in
// its own mount namespace. An OCI runtime's init waiting to start the
// container (runc init, crun) runs the host's binary, or a copy of it,
// in the container's namespace: its mappings and files are the runtime's,
// not the image's. Mount ids are unique on the host, so the executable's
// is in the process's mountinfo exactly when its mount is in that
// namespace.
func runsContainerCode(proc *containerfs.Process) bool {
	stx, err := proc.Statx("exe", unix.STATX_MNT_ID)
	if err != nil || stx.Mask&unix.STATX_MNT_ID == 0 {
		return false
	}
	b, err := proc.ReadFile("mountinfo", maxProcTable)
	if err != nil {
		return false
	}
	id := strconv.FormatUint(stx.Mnt_id, 10)
	for line := range strings.Lines(string(b)) {
		if first, _, _ := strings.Cut(line, " "); first == id {
			return true
		}
	}
	return false
}
