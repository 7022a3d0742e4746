package cgroups

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Start starts cmd so that its first instruction already runs in the cgroup
// at dir: with CLONE_INTO_CGROUP on cgroup2, and on a v1 hierarchy by
// forking from a thread that was moved into the cgroup for the fork.
func (h Hierarchy) Start(cmd *exec.Cmd, dir string) error {
	if h.V1() {
		return h.startV1(cmd, dir)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening cgroup %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = fd
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s in %s: %w", cmd.Path, dir, err)
	}
	return nil
}

// startV1 forks from a dedicated, locked thread. v1 allows a single thread
// to change cgroup, and a child inherits the cgroup of the forking thread.
// When the thread cannot be moved back, it is left locked so that it dies
// with its goroutine instead of running other code in the wrong cgroup.
func (h Hierarchy) startV1(cmd *exec.Cmd, dir string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := h.OfProcess(0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		tid := strconv.Itoa(unix.Gettid())
		if err := os.WriteFile(dir+"/tasks", []byte(tid), 0); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("moving thread into cgroup %s: %w", dir, err)
			return
		}
		startErr := cmd.Start()
		if err := os.WriteFile(h.Path(orig)+"/tasks", []byte(tid), 0); err != nil {
			errc <- fmt.Errorf("moving thread back to cgroup %s: %w", orig, err)
			return // still locked: the thread exits with this goroutine
		}
		runtime.UnlockOSThread()
		if startErr != nil {
			startErr = fmt.Errorf("starting %s in %s: %w", cmd.Path, dir, startErr)
		}
		errc <- startErr
	}()
	return <-errc
}
