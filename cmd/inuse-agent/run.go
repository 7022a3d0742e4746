package main

import (
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/agent"
	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/nri-plugin/plugin"
)

var runCommand = &cli.Command{
	Name:  "run",
	Usage: "the node daemon: sensor, container discovery (containerd NRI, Docker) and collector",
	Description: "Tracks every container from its first instruction and folds what it loads into its\n" +
		"image's profile in --redis. Without --redis, attributed events are written as JSON lines.",
	Flags: slices.Concat([]cli.Flag{
		&cli.StringFlag{Name: "nri-socket", Value: plugin.DefaultSocket, EnvVars: []string{"INUSE_NRI_SOCKET"}, Usage: "containerd's NRI socket (empty: no NRI)"},
		&cli.StringFlag{Name: "nri-plugin-index", EnvVars: []string{"INUSE_NRI_PLUGIN_INDEX"}, Usage: "NRI plugin index (default " + plugin.DefaultIndex + ")"},
		&cli.StringFlag{Name: "containerd-address", Value: plugin.DefaultContainerdAddress, EnvVars: []string{"INUSE_CONTAINERD_ADDRESS"}, Usage: "containerd's socket, for image digests that NRI does not carry (containerd before 2.4)"},
		&cli.BoolFlag{Name: "docker", Value: true, EnvVars: []string{"INUSE_DOCKER"}, Usage: "follow dockerd (found through DOCKER_HOST or the default socket) when it answers"},
		&cli.StringSliceFlag{Name: "early-cgroup-prefix", EnvVars: []string{"INUSE_EARLY_CGROUP_PREFIX"}, Usage: "track new cgroups under this cgroup2 path at creation (default: Docker's when --docker)"},
		&cli.DurationFlag{Name: "hold", Value: time.Minute, EnvVars: []string{"INUSE_HOLD"}, Usage: "how long events of a cgroup wait for its container to be named"},
		&cli.StringFlag{Name: "metrics-listen", EnvVars: []string{"INUSE_METRICS_LISTEN"}, Usage: "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9090 (empty: off)"},
		outputFlag,
	}, sensorFlags, storeFlags),
	Action: func(c *cli.Context) error {
		cfg := agentConfig(c)
		cfg.EarlyPrefixes = c.StringSlice("early-cgroup-prefix")
		cfg.Hold = c.Duration("hold")
		cfg.NRI = agent.NRIConfig{
			Socket:            c.String("nri-socket"),
			Required:          c.IsSet("nri-socket") || plugin.LaunchedByRuntime(),
			Index:             c.String("nri-plugin-index"),
			ContainerdAddress: c.String("containerd-address"),
		}
		cfg.Docker = c.Bool("docker")
		cfg.MetricsListen = c.String("metrics-listen")
		a, err := openAgent(c, cfg)
		if err != nil {
			return err
		}
		defer a.Close()
		return a.Run(c.Context)
	},
}

// openAgent prepares the kernel and opens the agent.
func openAgent(c *cli.Context, cfg agent.Config) (*agent.Agent, error) {
	log := cliapp.Logger(c)
	if err := prepareKernel(log); err != nil {
		return nil, err
	}
	return agent.Open(c.Context, log, cfg)
}
