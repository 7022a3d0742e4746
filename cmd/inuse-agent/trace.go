package main

import (
	"github.com/urfave/cli/v2"
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
		cfg := agentConfig(c)
		cfg.HostProcesses = true // any cgroup, not only containers'
		a, err := openAgent(c, cfg)
		if err != nil {
			return err
		}
		defer a.Close()
		return a.Trace(c.Context, c.String("cgroup"))
	},
}
