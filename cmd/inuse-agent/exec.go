package main

import (
	"cmp"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/agent"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/store"
)

var execCommand = &cli.Command{
	Name:      "exec",
	Usage:     "profile one command in a fresh cgroup, tracked before it runs",
	ArgsUsage: "-- CMD [ARGS...]",
	Description: "Without --redis the events are written as JSON lines. With --redis they are folded\n" +
		"into the profile of --image-name in the store, as a container of that image would be.",
	Flags: slices.Concat([]cli.Flag{
		&cli.StringFlag{Name: "root", EnvVars: []string{"INUSE_ROOT"}, Usage: "run CMD chrooted into this root file system directory, with /proc mounted there"},
		&cli.StringFlag{Name: "cgroup-parent", Value: "inuse", EnvVars: []string{"INUSE_CGROUP_PARENT"}, Usage: "cgroup under which the command's cgroup is created"},
		&cli.StringFlag{Name: "image-name", Aliases: []string{"image"}, EnvVars: []string{"INUSE_IMAGE_NAME", "INUSE_IMAGE"}, Usage: "image name the command's profile belongs to (with --redis; --image is a deprecated spelling)"},
		&cli.StringFlag{Name: "image-digest", EnvVars: []string{"INUSE_IMAGE_DIGEST"}, Usage: "manifest digest of the image (default: a stable id derived from --root)"},
		execOutputFlag,
	}, sensorFlags, storeFlags),
	Action: func(c *cli.Context) error {
		if c.NArg() == 0 {
			return cli.Exit("exec needs a command: inuse-agent exec [--root DIR] -- CMD [ARGS...]", 2)
		}
		cfg := agentConfig(c)
		if cfg.Redis == "" && cfg.Output == "" {
			return cli.Exit("exec writes its events to -o FILE (or folds them into --redis): its command's output keeps stdout (-o - shares it, and a command writing with sendfile can overwrite events)", 2)
		}
		if cfg.Redis != "" && c.String("image-name") == "" {
			return cli.Exit("exec --redis needs --image-name NAME: the image the profile belongs to", 2)
		}
		image, err := execImage(c)
		if err != nil {
			return err
		}
		a, err := openAgent(c, cfg)
		if err != nil {
			return err
		}
		defer a.Close()
		cmd, cleanup, err := agent.Command(c.String("root"), c.Args().Slice())
		if err != nil {
			return err
		}
		defer cleanup()
		waitErr, err := a.Exec(c.Context, cmd, c.String("cgroup-parent"), image)
		if err != nil {
			return err
		}
		return exitStatus(waitErr)
	},
}

// execImage names the image the profiled command belongs to.
func execImage(c *cli.Context) (lifecycle.Image, error) {
	digest := c.String("image-digest")
	if digest == "" {
		var err error
		if digest, err = lifecycle.RootfsDigest(cmp.Or(c.String("root"), "/")); err != nil {
			return lifecycle.Image{}, err
		}
	}
	if !store.ValidDigest(digest) {
		return lifecycle.Image{}, cli.Exit(fmt.Sprintf("--image-digest %q is not a digest (sha256:<hex>)", digest), 2)
	}
	return lifecycle.Image{Name: c.String("image-name"), Digest: digest}, nil
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
