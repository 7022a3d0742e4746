// Package agent is the node agent's pipeline, in the order data flows:
//
//	sensor (bpf/sensor)          what tracked cgroups open, execute, map, connect, call
//	  -> tracker (tracker.go)    the one place where cgroups are tracked and untracked
//	  -> registry                attributes each event to its container
//	  -> sink                    the collector (profiles in Redis) or JSON lines
//
// Discovery sources (the NRI plugin, the Docker listener, inuse-agent
// exec) only describe containers and hand them to the tracker. The agent
// owns every part it opens and closes them in reverse order; on shutdown
// the sensor drains what the kernel already wrote, the lifecycle queue is
// emptied, and only then does the collector write its final flush.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/collector"
	"github.com/inuse-dev/inuse/dockerplugin"
	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/metrics"
	"github.com/inuse-dev/inuse/internal/registry"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/nri-plugin/plugin"
)

// Config is everything the agent is told; the commands fill it from flags.
type Config struct {
	// CgroupV1Controller keys containers by their cgroup in this v1
	// hierarchy; empty: cgroup2 when mounted.
	CgroupV1Controller string
	// RingBufferBytes sizes the sensor's ring buffer (0: its default).
	RingBufferBytes uint32
	// BTF is a file of kernel types for the CO-RE relocations of the
	// sensor and the function probes (sensor.LoadBTF); empty: the running
	// kernel's.
	BTF string
	// EarlyPrefixes are cgroup2 paths under which new cgroups are tracked
	// by the kernel at creation; empty with Docker: Docker's.
	EarlyPrefixes []string
	// HostProcesses counts what tasks in the host's mount namespace do
	// (trace follows any cgroup); otherwise they are an OCI runtime at
	// work, not a container (bpf/sensor/runtime.h).
	HostProcesses bool
	// Hold is how long events of an unnamed cgroup wait for its container.
	Hold time.Duration

	// Redis names the profile store; empty: no store, JSON lines only.
	Redis string
	// Collector tunes the folding into profiles (with Redis).
	Collector collector.Config
	// Limits bound each image's profile in Redis (zero fields: defaults).
	Limits store.Limits
	// Probes bound the function probes of each binary and image (zero
	// fields: defaults).
	Probes ProbeLimits
	// Output is where JSON lines go: a file, "-" for stdout, or empty
	// for none.
	Output string

	// NRI follows containerd.
	NRI NRIConfig
	// Docker follows dockerd when it answers.
	Docker bool
	// MetricsListen serves Prometheus metrics at this address; empty: off.
	MetricsListen string
}

// NRIConfig is how the agent reaches containerd.
type NRIConfig struct {
	// Socket is containerd's NRI socket; empty: no NRI.
	Socket string
	// Required connects (and retries) even when Socket does not exist
	// yet: it was named explicitly, or the runtime launched the agent.
	Required bool
	// Index orders the plugin among NRI plugins.
	Index string
	// ContainerdAddress is containerd's socket, for image digests that
	// NRI does not carry (containerd before 2.4); empty: none.
	ContainerdAddress string
}

// Agent is one node agent: its sensor, tracker, registry and sink.
type Agent struct {
	log       *slog.Logger
	cfg       Config
	hierarchy cgroups.Hierarchy
	sensor    *sensor.Sensor
	tracker   *tracker
	registry  *registry.Registry[sensor.Event]
	store     *store.Store         // nil without Redis
	collector *collector.Collector // nil without Redis
	output    *jsonLines           // nil without Output
	funcs     *funcProbes          // nil without Redis, or when the kernel refuses uprobes
	metrics   *agentMetrics
	metricsLn net.Listener // nil without MetricsListen
	closers   []func() error
	seeding   sync.WaitGroup // seeds of running containers in flight
}

// Open loads the sensor and connects to the store; nothing is tracked yet.
// The caller has lifted the memlock limit (the binary does, once).
func Open(ctx context.Context, log *slog.Logger, cfg Config) (_ *Agent, err error) {
	a := &Agent{log: log, cfg: cfg, metrics: &agentMetrics{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.Close())
		}
	}()
	if a.cfg.MetricsListen != "" {
		// Listen first: a busy port fails the start, not a scrape later.
		if a.metricsLn, err = net.Listen("tcp", a.cfg.MetricsListen); err != nil {
			return nil, fmt.Errorf("listening for metrics: %w", err)
		}
		a.closers = append(a.closers, a.metricsLn.Close)
	}
	if a.hierarchy, err = hierarchy(cfg.CgroupV1Controller); err != nil {
		return nil, err
	}
	log.Debug("keying cgroups", "hierarchy", a.hierarchy.String())
	if len(a.cfg.EarlyPrefixes) == 0 && cfg.Docker {
		a.cfg.EarlyPrefixes = dockerplugin.EarlyPrefixes
	}
	scfg := sensor.Config{CgroupV1Controller: a.hierarchy.Controller, RingBufferBytes: cfg.RingBufferBytes, EarlyPrefixes: a.cfg.EarlyPrefixes}
	if cfg.BTF != "" {
		if scfg.KernelBTF, err = sensor.LoadBTF(cfg.BTF); err != nil {
			return nil, err
		}
	}
	if !cfg.HostProcesses {
		if scfg.HostMountNS, err = sensor.HostMountNamespace(); err != nil {
			return nil, err
		}
	}
	if a.sensor, err = sensor.Open(log, scfg); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.sensor.Close)
	a.metrics.sensorFeatures = a.sensor.Features()

	if cfg.Redis != "" {
		if a.store, err = store.Connect(ctx, cfg.Redis, store.WithLimits(cfg.Limits)); err != nil {
			return nil, err
		}
		a.closers = append(a.closers, a.store.Close)
		ccfg := cfg.Collector
		if ccfg.Node == "" {
			if ccfg.Node, err = os.Hostname(); err != nil {
				return nil, fmt.Errorf("naming this node: %w", err)
			}
		}
		a.metrics.flush = newFlushTimer(a.store)
		a.collector = collector.New(log, a.metrics.flush, ccfg)
		// Function-level reachability is an addition: without it, Go
		// binaries stay at package level.
		if a.funcs, err = openFuncProbes(log, a.sensor, a.hierarchy, a.store.GoPlans, cfg.Hold, cfg.Probes); err != nil {
			log.Warn("not probing Go functions", logfields.Error, err)
		} else {
			a.metrics.funcs = &a.funcs.stats
			a.closers = append(a.closers, a.funcs.Close)
			a.metrics.funcProbes = a.funcs.probe.AttachMode()
		}
	}
	a.tracker = newTracker(log, a.sensor)
	return a, nil
}

// attribute opens the output and sets up the registry, which hands what
// it attributes to the collector, the output, or both.
func (a *Agent) attribute() error {
	var sinks []registry.Sink[sensor.Event]
	if a.collector != nil {
		sinks = append(sinks, a.collector)
	}
	if a.cfg.Output != "" {
		out, err := openOutput(a.cfg.Output)
		if err != nil {
			return err
		}
		a.closers = append(a.closers, out.Close)
		a.output = newJSONLines(out)
		sinks = append(sinks, a.output)
	}
	if a.funcs != nil {
		sinks = append(sinks, funcSink{a.funcs, a.hierarchy})
	}
	a.registry = registry.New(a.log, fanOut(sinks), a.tracker, registry.Config{Hold: a.cfg.Hold})
	a.registry.RecordLosses(lossEvent)
	if a.funcs != nil {
		a.funcs.emit = a.registry.Observe
	}
	return nil
}

// Close closes what Open opened, in reverse order.
func (a *Agent) Close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	a.closers = nil
	return errors.Join(errs...)
}

// Run is the node daemon: it follows the runtimes and profiles their
// containers until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.attribute(); err != nil {
		return err
	}
	var sources []func(context.Context) error
	if nri := a.cfg.NRI; nri.Socket != "" {
		if _, err := os.Stat(nri.Socket); err == nil || nri.Required {
			p := plugin.New(a.log, a.Tracker(), a.hierarchy)
			a.metrics.nri = &p.Stats
			if nri.ContainerdAddress != "" {
				images, err := plugin.NewCRIImages(nri.ContainerdAddress)
				if err != nil {
					return err
				}
				defer images.Close()
				p.Images = images
			}
			sources = append(sources, func(ctx context.Context) error {
				return p.Run(ctx, plugin.Options{Socket: nri.Socket, Index: nri.Index})
			})
		} else {
			a.log.Info("no NRI socket: not following containerd", "socket", nri.Socket)
		}
	}
	if a.cfg.Docker {
		if d, err := dockerplugin.New(a.log, a.hierarchy, a.Tracker()); err != nil {
			a.log.Warn("not following docker", logfields.Error, err)
		} else if err := d.Ping(ctx); err != nil {
			a.log.Info("dockerd does not answer: not following docker", logfields.Error, err)
			d.Close()
		} else {
			defer d.Close()
			a.metrics.docker = &d.Stats
			sources = append(sources, d.Run)
		}
	}
	if a.metricsLn != nil {
		h, err := metrics.Handler(a.metrics.collector(a.collector, a.registry))
		if err != nil {
			return err
		}
		sources = append(sources, func(ctx context.Context) error { return metrics.Serve(ctx, a.log, a.metricsLn, h) })
	}
	a.log.Info("agent running", "early_prefixes", a.cfg.EarlyPrefixes)
	return a.pipeline(ctx, sources, nil)
}

// pipeline runs the sensor, the lifecycle pump, the expiry of unnamed
// cgroups, the collector and the given sources until ctx ends, then shuts
// down in order: the sensor drains what the kernel wrote (and polls the
// syscalls of the cgroups still tracked), drained runs, the pump empties
// the lifecycle queue, seeds in flight end, and the collector's final
// flush writes it all.
func (a *Agent) pipeline(ctx context.Context, sources []func(context.Context) error, drained func()) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, run := range sources {
		g.Go(func() error { return run(ctx) })
	}
	sensorDone, funcsDone, pumpDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	g.Go(func() error {
		defer close(pumpDone)
		a.tracker.pump(ctx, a.apply)
		<-sensorDone // what is still queued is applied after the last events
		<-funcsDone
		if drained != nil {
			drained()
		}
		a.tracker.drain(a.apply)
		a.seeding.Wait()
		a.funcs.wait()
		return nil
	})
	g.Go(func() error {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				a.registry.Expire(now)
			case <-ctx.Done():
				return nil
			}
		}
	})
	g.Go(func() error {
		defer close(sensorDone)
		err := a.sensor.Run(ctx, a.observe)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	})
	g.Go(func() error {
		defer close(funcsDone)
		err := a.funcs.run(ctx)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	})
	if a.collector != nil {
		g.Go(func() error { return a.collector.Run(ctx) })
		g.Go(func() error {
			<-pumpDone
			return a.collector.Flush(context.WithoutCancel(ctx))
		})
	}
	err := g.Wait()
	if a.output != nil {
		err = cmp.Or(err, a.output.err())
	}
	return err
}

// apply hands a lifecycle event to the registry. A container that ran
// before it was tracked (found at a resync) is seeded from /proc, apart
// from the queue: what its processes loaded already is in use at once.
func (a *Agent) apply(ev lifecycle.Event) {
	a.registry.Handle(ev)
	c := ev.Container
	if ev.Kind != lifecycle.Started || !c.Partial || c.CgroupID == 0 {
		return
	}
	if _, ok := a.registry.Container(c.CgroupID); !ok {
		return // not profiled (no digest)
	}
	a.seeding.Add(1)
	go func() {
		defer a.seeding.Done()
		a.seed(c)
	}()
}

// observe is the sensor's emit function: every event passes here once.
func (a *Agent) observe(ev sensor.Event) {
	a.metrics.sensor.count(ev)
	if e, ok := ev.(sensor.ExecEvent); ok {
		a.funcs.exec(e)
	}
	if c, ok := ev.(sensor.CgroupEvent); ok {
		// Tracked by the kernel at creation: the tracker adopts it, and
		// the registry waits for a runtime to name it.
		a.tracker.adopt(c.CgroupID)
		a.registry.CgroupCreated(c.CgroupID, c.Path)
		return
	}
	a.registry.Observe(ev)
}

// lossEvent records n events of a cgroup lost before its container was
// known: its image's profile is incomplete, never not observed.
func lossEvent(cgroupID, n uint64) sensor.Event {
	return sensor.LossEvent{CgroupID: cgroupID, Lost: n}
}

func hierarchy(v1Controller string) (cgroups.Hierarchy, error) {
	if v1Controller != "" {
		return cgroups.V1Controller(v1Controller)
	}
	return cgroups.Detect()
}

func openOutput(name string) (io.WriteCloser, error) {
	if name == "-" {
		return nopCloser{os.Stdout}, nil
	}
	f, err := os.Create(name)
	if err != nil {
		return nil, fmt.Errorf("opening output: %w", err)
	}
	return f, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// Tracker is where a discovery source hands its containers; Run gives it
// to the NRI plugin and the Docker listener, and a caller that discovers
// containers itself (a benchmark, a test) uses it while Run runs.
func (a *Agent) Tracker() lifecycle.Tracker {
	return probingTracker{tracker: a.tracker, funcs: a.funcs, hierarchy: a.hierarchy}
}
