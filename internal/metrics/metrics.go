// Package metrics exposes the node agent's counters to Prometheus.
//
// The agent already counts what matters (collector.Stats, the registry's
// and the discovery sources' Stats); an AgentCollector reads them when
// Prometheus scrapes, so that the event path pays nothing for metrics.
// Two things have no counter of their own and are kept here: the sensor's
// events by kind (one atomic add per event, on the sensor's goroutine), and
// the flush latency histogram (one observation per flush, once a second).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/collector"
	"github.com/inuse-dev/inuse/dockerplugin"
	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/registry"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/nri-plugin/plugin"
)

const namespace = "inuse_agent"

// Kinds are the sensor's event kinds, in the order SensorCounts keeps
// them; anything else is counted as "other".
var Kinds = []string{"file", "exec", "net", "syscalls", "loss", "cgroup"}

// SensorCounts counts what the sensor emits. Its Wrap'd emit function runs
// on the sensor's goroutine only; Collect reads from another.
type SensorCounts struct {
	byKind [7]atomic.Uint64 // Kinds, then other
	lost   atomic.Uint64    // events the kernel dropped (ring buffer full), from loss events
}

// Wrap returns emit, counting each event first. A type switch, not
// Kind(): no string compares on the event path.
func (s *SensorCounts) Wrap(emit func(sensor.Event)) func(sensor.Event) {
	return func(ev sensor.Event) {
		i := len(Kinds) // other
		switch e := ev.(type) {
		case sensor.FileEvent:
			i = 0
		case sensor.ExecEvent:
			i = 1
		case sensor.NetEvent:
			i = 2
		case sensor.SyscallEvent:
			i = 3
		case sensor.LossEvent:
			i = 4
			s.lost.Add(e.Lost)
		case sensor.CgroupEvent:
			i = 5
		}
		s.byKind[i].Add(1)
		emit(ev)
	}
}

// FlushTimer wraps the collector's writer and times each flush: a
// histogram needs every flush, and the collector keeps only the last.
type FlushTimer struct {
	collector.Writer
	latency prometheus.Histogram
}

// NewFlushTimer times the writes of w.
func NewFlushTimer(w collector.Writer) *FlushTimer {
	return &FlushTimer{Writer: w, latency: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "collector", Name: "flush_duration_seconds",
		Help: "Time taken by one flush of the profile updates to Redis, successful or not.",
		// A flush is one script per image; 1 ms on loopback, far more
		// when Redis is remote, overloaded or away (the client times out).
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})}
}

// Apply implements collector.Writer.
func (f *FlushTimer) Apply(ctx context.Context, deltas map[string]*store.Delta, now time.Time, lc store.LearningConfig) (map[string]store.Meta, error) {
	start := time.Now()
	defer func() { f.latency.Observe(time.Since(start).Seconds()) }()
	return f.Writer.Apply(ctx, deltas, now, lc)
}

// Sources are the agent's parts whose counters are exported. Nil parts
// (no --redis, no NRI, no dockerd) export nothing. Set them before the
// first scrape: they are read without a lock.
type Sources struct {
	Sensor    *SensorCounts
	Collector *collector.Collector
	Flush     *FlushTimer
	Registry  *registry.Registry
	NRI       *plugin.Stats
	Docker    *dockerplugin.Stats
}

// AgentCollector is a prometheus.Collector over Sources.
type AgentCollector struct {
	src Sources
}

// NewAgentCollector returns a collector reading src at scrape time.
func NewAgentCollector(src Sources) *AgentCollector { return &AgentCollector{src: src} }

func desc(subsystem, name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, name), help, labels, nil)
}

var (
	sensorEvents = desc("sensor", "events_total", "Events the sensor emitted, by kind (file, exec, net, syscalls, loss, cgroup, other).", "kind")
	sensorLost   = desc("sensor", "lost_events_total", "Events the kernel could not write to the full ring buffer, as reported by loss events.")

	colObserved   = desc("collector", "observations_total", "Observations folded into image profiles.")
	colPaused     = desc("collector", "paused_observations_total", "Observations ignored while the resource guard paused profiling.")
	colOverflow   = desc("collector", "overflow_members_total", "Profile members dropped, and recorded as lost, because --max-pending was reached.")
	colFlushes    = desc("collector", "flushes_total", "Successful flushes to Redis.")
	colFailures   = desc("collector", "flush_failures_total", "Failed flushes to Redis; their updates are kept for the next.")
	colPauses     = desc("collector", "guard_pauses_total", "Times the resource guard paused profiling.")
	colPending    = desc("collector", "pending_members", "Profile members in memory waiting for the next flush.")
	colPendingImg = desc("collector", "pending_images", "Images with updates waiting for the next flush.")
	colImages     = desc("collector", "running_images", "Images with running containers.")
	colContainers = desc("collector", "running_containers", "Containers being profiled: started and not stopped.")

	regExpired    = desc("registry", "expired_cgroups_total", "Early-tracked cgroups that no runtime named within --hold: untracked, events dropped.")
	regDropped    = desc("registry", "dropped_events_total", "Events dropped: over the per-cgroup hold limit, or of an expired cgroup.")
	regUnresolved = desc("registry", "unresolved_containers_total", "Containers whose cgroup was neither found nor tracked early.")
	regNoDigest   = desc("registry", "no_digest_containers_total", "Containers not profiled because their image digest is unknown.")

	handlerEvents = desc("discovery", "handled_total",
		"Work done by the runtime handlers, by source (nri, docker) and result: started (tracked at start), synced (tracked at resync), failed, dropped (queue full), connections.",
		"source", "result")
)

// Describe implements prometheus.Collector.
func (a *AgentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		sensorEvents, sensorLost, colObserved, colPaused, colOverflow, colFlushes, colFailures, colPauses,
		colPending, colPendingImg, colImages, colContainers, regExpired, regDropped, regUnresolved, regNoDigest, handlerEvents,
	} {
		ch <- d
	}
	if a.src.Flush != nil {
		a.src.Flush.latency.Describe(ch)
	}
}

// Collect implements prometheus.Collector: it reads every source now.
func (a *AgentCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	if s := a.src.Sensor; s != nil {
		for i := range s.byKind {
			kind := "other"
			if i < len(Kinds) {
				kind = Kinds[i]
			}
			counter(sensorEvents, float64(s.byKind[i].Load()), kind)
		}
		counter(sensorLost, float64(s.lost.Load()))
	}
	if c := a.src.Collector; c != nil {
		st, g := c.Stats(), c.Gauges()
		counter(colObserved, float64(st.Events))
		counter(colPaused, float64(st.Paused))
		counter(colOverflow, float64(st.Overflow))
		counter(colFlushes, float64(st.Flushes))
		counter(colFailures, float64(st.Failures))
		counter(colPauses, float64(st.Pauses))
		gauge(colPending, float64(g.PendingMembers))
		gauge(colPendingImg, float64(g.PendingImages))
		gauge(colImages, float64(g.RunningImages))
		gauge(colContainers, float64(g.RunningContainers))
	}
	if a.src.Flush != nil {
		a.src.Flush.latency.Collect(ch)
	}
	if r := a.src.Registry; r != nil {
		st := r.Stats()
		counter(regExpired, float64(st.Expired))
		counter(regDropped, float64(st.Dropped))
		counter(regUnresolved, float64(st.Unresolved))
		counter(regNoDigest, float64(st.NoDigest))
	}
	if n := a.src.NRI; n != nil {
		counter(handlerEvents, float64(n.Started.Load()), "nri", "started")
		counter(handlerEvents, float64(n.Synced.Load()), "nri", "synced")
		counter(handlerEvents, float64(n.TrackFailures.Load()), "nri", "failed")
		counter(handlerEvents, float64(n.Dropped.Load()), "nri", "dropped")
		counter(handlerEvents, float64(n.Connections.Load()), "nri", "connections")
	}
	if d := a.src.Docker; d != nil {
		counter(handlerEvents, float64(d.Started.Load()), "docker", "started")
		counter(handlerEvents, float64(d.Failures.Load()), "docker", "failed")
		counter(handlerEvents, float64(d.Dropped.Load()), "docker", "dropped")
		counter(handlerEvents, float64(d.Connections.Load()), "docker", "connections")
	}
}

// Handler serves the agent's metrics, with the Go runtime's and the
// process's, on a registry of its own (never the global default).
func Handler(src Sources) (http.Handler, error) {
	reg := prometheus.NewRegistry()
	err := errors.Join(
		reg.Register(NewAgentCollector(src)),
		reg.Register(collectors.NewGoCollector()),
		reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})),
	)
	if err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), nil
}

// Serve serves /metrics on ln until ctx ends.
func Serve(ctx context.Context, log *slog.Logger, ln net.Listener, h http.Handler) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	})
	defer stop()
	log.With(logfields.Component, "metrics").Info("serving metrics", "address", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving metrics: %w", err)
	}
	return nil
}
