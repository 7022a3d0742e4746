package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/cliapp"
)

var traceCommand = &cli.Command{
	Name:      "trace",
	Usage:     "print the events of one cgroup as JSON lines until interrupted",
	ArgsUsage: " ",
	Flags: append([]cli.Flag{
		&cli.StringFlag{Name: "cgroup", Required: true, EnvVars: []string{"INUSE_CGROUP"}, Usage: "cgroup path (/docker/ID, as in /proc/PID/cgroup) or its directory under /sys/fs/cgroup"},
		outputFlag,
	}, sensorFlags...),
	Action: func(c *cli.Context) error {
		log := cliapp.Logger(c)
		s, h, err := openSensor(c, log)
		if err != nil {
			return err
		}
		defer s.Close()
		dir := h.Path(c.String("cgroup"))
		id, err := cgroups.ID(dir)
		if err != nil {
			return err
		}
		if err := s.Track(id); err != nil {
			return err
		}
		out, err := openOutput(c)
		if err != nil {
			return err
		}
		defer out.Close()
		log.Info("tracing", "cgroup_path", dir, "cgroup_id", id)
		lines := &jsonLines{enc: json.NewEncoder(out)}
		err = s.Run(c.Context, lines.emit)
		if errors.Is(err, c.Context.Err()) {
			err = nil
		}
		if err != nil {
			return fmt.Errorf("tracing %s: %w", dir, err)
		}
		return lines.err
	},
}
