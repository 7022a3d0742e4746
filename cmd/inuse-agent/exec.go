package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/store"
)

var execCommand = &cli.Command{
	Name:      "exec",
	Usage:     "profile one command in a fresh cgroup, tracked before it runs",
	ArgsUsage: "-- CMD [ARGS...]",
	Description: "Without --redis the events are written as JSON lines. With --redis they are folded\n" +
		"into the profile of --image in the store, as a container of that image would be.",
	Flags: slices.Concat([]cli.Flag{
		&cli.StringFlag{Name: "root", EnvVars: []string{"INUSE_ROOT"}, Usage: "run CMD chrooted into this root file system directory, with /proc mounted there"},
		&cli.StringFlag{Name: "cgroup-parent", Value: "inuse", EnvVars: []string{"INUSE_CGROUP_PARENT"}, Usage: "cgroup under which the command's cgroup is created"},
		&cli.StringFlag{Name: "image", EnvVars: []string{"INUSE_IMAGE"}, Usage: "image name the command's profile belongs to (with --redis)"},
		&cli.StringFlag{Name: "image-digest", EnvVars: []string{"INUSE_IMAGE_DIGEST"}, Usage: "manifest digest of the image (default: a stable id derived from --root)"},
		outputFlag,
	}, sensorFlags, storeFlags),
	Action: func(c *cli.Context) error {
		if c.NArg() == 0 {
			return cli.Exit("exec needs a command: inuse-agent exec [--root DIR] -- CMD [ARGS...]", 2)
		}
		log := cliapp.Logger(c)
		col, st, err := openCollector(c)
		if err != nil {
			return err
		}
		if st != nil {
			defer st.Close()
			if c.String("image") == "" {
				return cli.Exit("exec --redis needs --image NAME: the image the profile belongs to", 2)
			}
		}
		s, h, err := openSensor(c, log)
		if err != nil {
			return err
		}
		defer s.Close()
		out, err := openOutput(c)
		if err != nil {
			return err
		}
		defer out.Close()

		cmd, cleanup, err := command(c.String("root"), c.Args().Slice())
		if err != nil {
			return err
		}
		defer cleanup()

		name := fmt.Sprintf("%s/exec-%d", c.String("cgroup-parent"), os.Getpid())
		dir, id, err := h.Create(name)
		if err != nil {
			return err
		}
		defer func() { _ = cgroups.Remove(dir) }()
		if err := s.Track(id); err != nil {
			return err
		}
		defer func() { _ = s.Untrack(id) }()

		lines := &jsonLines{enc: json.NewEncoder(out)}
		emit := lines.emit
		var ctr lifecycle.Container
		if col != nil {
			if ctr, err = execContainer(c, id); err != nil {
				return err
			}
			col.ContainerStarted(ctr)
			emit = func(e sensor.Event) { col.Observe(ctr, e) }
			if c.IsSet("output") {
				emit = func(e sensor.Event) { col.Observe(ctr, e); lines.emit(e) }
			}
		}
		ctx, stop := context.WithCancel(context.WithoutCancel(c.Context))
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx, emit) }()

		if err := h.Start(cmd, dir); err != nil {
			stop()
			<-done
			return err
		}
		log.Debug("profiling", "pid", cmd.Process.Pid, "cgroup_id", id)
		waitErr := cmd.Wait()
		// Everything CMD did is in the ring buffer by now: drain it.
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		if lines.err != nil {
			return lines.err
		}
		if col != nil {
			col.ContainerStopped(ctr)
			if err := col.Flush(context.WithoutCancel(c.Context)); err != nil {
				return fmt.Errorf("writing the profile of %s: %w", ctr.Image.Name, err)
			}
			log.Info("profile written", "image", ctr.Image.Name, "digest", ctr.Image.Digest)
		}
		return exitStatus(waitErr)
	},
}

// execContainer describes the profiled command as a container of --image.
func execContainer(c *cli.Context, cgroupID uint64) (lifecycle.Container, error) {
	digest := c.String("image-digest")
	if digest == "" {
		var err error
		if digest, err = rootfsDigest(cmp.Or(c.String("root"), "/")); err != nil {
			return lifecycle.Container{}, err
		}
	}
	if !store.ValidDigest(digest) {
		return lifecycle.Container{}, cli.Exit(fmt.Sprintf("--image-digest %q is not a digest (sha256:<hex>)", digest), 2)
	}
	return lifecycle.Container{
		ID:       fmt.Sprintf("exec-%d-%d", os.Getpid(), time.Now().UnixNano()),
		Runtime:  lifecycle.RuntimeExec,
		Image:    lifecycle.Image{Name: c.String("image"), Digest: digest},
		CgroupID: cgroupID,
	}, nil
}

// command prepares CMD, chrooted into root when given. The returned cleanup
// unmounts what was mounted for it.
func command(root string, args []string) (*exec.Cmd, func(), error) {
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

// exitStatus turns CMD's end into inuse-agent's exit status.
func exitStatus(err error) error {
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return cli.Exit("", 128+int(ws.Signal()))
		}
		return cli.Exit("", exitErr.ExitCode())
	}
	return err
}
