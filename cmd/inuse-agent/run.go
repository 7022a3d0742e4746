package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/collector"
	"github.com/inuse-dev/inuse/dockerplugin"
	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/metrics"
	"github.com/inuse-dev/inuse/internal/registry"
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
	Action: runAgentDaemon,
}

func runAgentDaemon(c *cli.Context) error {
	log := cliapp.Logger(c)
	// Listen first: a busy port fails the start, not a scrape later.
	var metricsLn net.Listener
	if addr := c.String("metrics-listen"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listening for metrics (--metrics-listen, INUSE_METRICS_LISTEN): %w", err)
		}
		defer ln.Close()
		metricsLn = ln
	}
	src := metrics.Sources{Sensor: &metrics.SensorCounts{}}
	col, st, err := openCollector(c, func(w collector.Writer) collector.Writer {
		src.Flush = metrics.NewFlushTimer(w)
		return src.Flush
	})
	if err != nil {
		return err
	}
	src.Collector = col
	var sink collector.Sink = col
	if st != nil {
		defer st.Close()
	} else {
		out, err := openOutput(c)
		if err != nil {
			return err
		}
		defer out.Close()
		sink = &jsonSink{w: out}
	}

	prefixes := c.StringSlice("early-cgroup-prefix")
	if len(prefixes) == 0 && c.Bool("docker") {
		prefixes = dockerplugin.EarlyPrefixes
	}
	s, h, err := openSensor(c, log, func(cfg *sensor.Config) { cfg.EarlyPrefixes = prefixes })
	if err != nil {
		return err
	}
	defer s.Close()

	reg := registry.New(log, sink, s, registry.Config{Hold: c.Duration("hold")})
	src.Registry = reg
	lifecycleEvents := make(chan lifecycle.Event, 4096)
	g, ctx := errgroup.WithContext(c.Context)
	// Discovery sources: each only tracks and enqueues.
	if socket := c.String("nri-socket"); socket != "" {
		if _, err := os.Stat(socket); err == nil || c.IsSet("nri-socket") || plugin.LaunchedByRuntime() {
			p := plugin.New(log, s, h, lifecycleEvents)
			src.NRI = &p.Stats
			if addr := c.String("containerd-address"); addr != "" {
				images, err := plugin.NewCRIImages(addr)
				if err != nil {
					return err
				}
				defer images.Close()
				p.Images = images
			}
			g.Go(func() error { return p.Run(ctx, plugin.Options{Socket: socket, Index: c.String("nri-plugin-index")}) })
		} else {
			log.Info("no NRI socket: not following containerd", "socket", socket)
		}
	}
	if c.Bool("docker") {
		if d, err := dockerplugin.New(log, h, s, lifecycleEvents); err != nil {
			log.Warn("not following docker", "error", err)
		} else if err := d.Ping(ctx); err != nil {
			log.Info("dockerd does not answer: not following docker", "error", err)
			d.Close()
		} else {
			defer d.Close()
			src.Docker = &d.Stats
			g.Go(func() error { return d.Run(ctx) })
		}
	}
	g.Go(func() error {
		for {
			select {
			case ev := <-lifecycleEvents:
				reg.Handle(ev)
			case <-ctx.Done():
				return nil
			}
		}
	})
	g.Go(func() error {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				reg.Expire(now)
			case <-ctx.Done():
				return nil
			}
		}
	})
	// The sensor drains what the kernel wrote before it returns; the
	// collector's final flush then writes it.
	sensorDone := make(chan struct{})
	g.Go(func() error {
		defer close(sensorDone)
		err := s.Run(ctx, src.Sensor.Wrap(reg.Observe))
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	})
	if col != nil {
		g.Go(func() error {
			<-sensorDone
			return col.Flush(context.WithoutCancel(ctx))
		})
		g.Go(func() error { return col.Run(ctx) })
	}
	if metricsLn != nil {
		// Every source is set by now: scrapes read them without a lock.
		h, err := metrics.Handler(src)
		if err != nil {
			return err
		}
		g.Go(func() error { return metrics.Serve(ctx, log, metricsLn, h) })
	}
	log.Info("agent running", "early_prefixes", prefixes)
	return g.Wait()
}

// jsonSink writes attributed observations as JSON lines: the agent's
// output when it has no store.
type jsonSink struct {
	mu sync.Mutex
	w  io.Writer
}

func (j *jsonSink) write(v any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if b, err := json.Marshal(v); err == nil {
		fmt.Fprintf(j.w, "%s\n", b)
	}
}

func (j *jsonSink) ContainerStarted(c lifecycle.Container) {
	j.write(struct {
		Started lifecycle.Container `json:"started"`
	}{c})
}

func (j *jsonSink) Observe(c lifecycle.Container, ev sensor.Event) {
	j.write(struct {
		Container lifecycle.Container `json:"container"`
		Event     sensor.Event        `json:"event"`
	}{c, ev})
}

func (j *jsonSink) ContainerStopped(c lifecycle.Container) {
	j.write(struct {
		Stopped lifecycle.Container `json:"stopped"`
	}{c})
}
