package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/logfields"
)

// Exec profiles one command as a container of image: cmd runs in a fresh
// cgroup under cgroupParent, tracked before its first instruction, and
// its events go through the same tracker, registry and sink as a
// container's. It returns cmd's own end (from Wait) apart from the
// agent's errors, once everything cmd did is written.
func (a *Agent) Exec(ctx context.Context, cmd *exec.Cmd, cgroupParent string, image lifecycle.Image) (waitErr, err error) {
	if err := a.attribute(); err != nil {
		return nil, err
	}
	dir, id, err := a.hierarchy.Create(fmt.Sprintf("%s/exec-%d", cgroupParent, os.Getpid()))
	if err != nil {
		return nil, err
	}
	defer func() { _ = cgroups.Remove(dir) }()
	ctr := lifecycle.Container{
		ID:       fmt.Sprintf("exec-%d-%d", os.Getpid(), time.Now().UnixNano()),
		Runtime:  lifecycle.RuntimeExec,
		Image:    image,
		CgroupID: id,
	}
	// Probed before the command runs: a Go binary of the image's plan is
	// probed from its first instruction.
	root := "/"
	if cmd.SysProcAttr != nil {
		root = cmp.Or(cmd.SysProcAttr.Chroot, root)
	}
	a.funcs.start(ctr, root, dir)
	if err := a.tracker.Started(ctr); err != nil {
		return nil, err
	}
	// The command's end, not ctx, ends the pipeline: an interrupt reaches
	// the command, and what it did until then is still written.
	pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	done := make(chan error, 1)
	// The stop is queued once the sensor has drained and polled the
	// cgroup for the last time: stopping untracks it.
	var stopErr error
	go func() { done <- a.pipeline(pctx, nil, func() { stopErr = a.tracker.Stopped(ctr) }) }()
	// The command starts once the hit reader waits: a goroutine not run
	// yet reads the first call of a probed function milliseconds late,
	// and each call until then is a trap.
	select {
	case <-a.funcs.reading():
	case err := <-done:
		done <- err // the pipeline ended already: reported after the command
	}

	// A mount namespace of its own, as a container has: the sensor counts
	// nothing a task does in the host's (bpf/sensor/runtime.h).
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNS
	if err := a.hierarchy.Start(cmd, dir); err != nil {
		stop()
		return nil, errors.Join(err, <-done)
	}
	a.log.Debug("profiling", "pid", cmd.Process.Pid, logfields.CgroupID, id)
	waitExit(cmd.Process.Pid)
	waitErr = cmd.Wait()
	stop() // everything cmd did is in the ring buffer by now: drain it
	if err := errors.Join(<-done, stopErr); err != nil {
		return waitErr, fmt.Errorf("profiling %s: %w", cmp.Or(image.Name, image.Digest), err)
	}
	if a.collector != nil {
		a.log.Info("profile written", logfields.Image, image.Name, "digest", image.Digest)
	}
	return waitErr, nil
}

// Command prepares args as a command, chrooted into root when given, with
// /proc mounted there. The returned cleanup unmounts what was mounted.
func Command(root string, args []string) (*exec.Cmd, func(), error) {
	if root == "" {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		return cmd, func() {}, cmd.Err
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, nil, err
	}
	bin, err := lookPathIn(root, args[0])
	if err != nil {
		return nil, nil, err
	}
	cleanup, err := mountProc(root)
	if err != nil {
		return nil, nil, err
	}
	cmd := &exec.Cmd{Path: bin, Args: args, Dir: "/", Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	return cmd, cleanup, nil
}

// lookPathIn finds name the way a shell inside root would.
func lookPathIn(root, name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(filepath.Join(root, p)); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
		// a symlink inside root, e.g. a busybox applet: resolve it relative to root
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in %s", name, root)
}

// mountProc mounts proc at root/proc unless something is mounted there.
func mountProc(root string) (func(), error) {
	target := filepath.Join(root, "proc")
	if err := os.MkdirAll(target, 0o555); err != nil {
		return nil, fmt.Errorf("creating %s: %w", target, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err == nil && st.Type == unix.PROC_SUPER_MAGIC {
		return func() {}, nil
	}
	if err := unix.Mount("proc", target, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("mounting proc at %s: %w", target, err)
	}
	return func() { _ = unix.Unmount(target, unix.MNT_DETACH) }, nil
}

// waitExit waits for the child pid to exit, without reaping it, on the
// netpoller (its pidfd): a goroutine blocked in Wait's waitid holds its P,
// and with the sensor's reader holding the other of two, a function hit
// waits for sysmon to free one (up to 10 ms) while a hot planned function
// traps. Without a pidfd, Wait alone waits.
func waitExit(pid int) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		return err != nil || info.Signo != 0 // exited, or nothing to wait for here
	})
}
