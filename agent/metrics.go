package agent

import (
	"cmp"
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/collector"
	"github.com/inuse-dev/inuse/dockerplugin"
	"github.com/inuse-dev/inuse/internal/registry"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/nri-plugin/plugin"
)

const namespace = "inuse_agent"

// kinds are the sensor's event kinds, in the order sensorCounts keeps
// them; anything else is counted as "other".
var kinds = []string{"file", "exec", "net", "syscalls", "loss", "cgroup"}

// sensorCounts counts what the sensor emits. count runs on the sensor's
// goroutine only; Collect reads from another.
type sensorCounts struct {
	byKind [7]atomic.Uint64 // kinds, then other
	lost   atomic.Uint64    // events the kernel dropped (ring buffer full), from loss events
}

// count counts one event. A type switch, not Kind(): no string compares
// on the event path.
func (s *sensorCounts) count(ev sensor.Event) {
	i := len(kinds) // other
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
}

// The features whose refusals agentMetrics counts, in its order.
const (
	featureSeed = iota
)

var features = []string{"seed"}

// refused counts one refusal of feature; nil-safe.
func (m *agentMetrics) refused(feature int) {
	if m != nil {
		m.refusals[feature].Add(1)
	}
}

// flushTimer wraps the collector's writer and times each flush: a
// histogram needs every flush, and the collector keeps only the last.
type flushTimer struct {
	collector.Writer
	latency prometheus.Histogram
}

// newFlushTimer times the writes of w.
func newFlushTimer(w collector.Writer) *flushTimer {
	return &flushTimer{Writer: w, latency: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "collector", Name: "flush_duration_seconds",
		Help: "Time taken by one flush of the profile updates to Redis, successful or not.",
		// A flush is one script per image; 1 ms on loopback, far more
		// when Redis is remote, overloaded or away (the client times out).
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})}
}

// Apply implements collector.Writer.
func (f *flushTimer) Apply(ctx context.Context, deltas map[string]*store.Delta, now time.Time, lc store.LearningConfig) (map[string]store.Meta, error) {
	start := time.Now()
	defer func() { f.latency.Observe(time.Since(start).Seconds()) }()
	return f.Writer.Apply(ctx, deltas, now, lc)
}

// agentMetrics are the counters that the agent keeps itself: the
// sensor's events by kind and the flush latency. The other parts count
// their own work; the agent reads them when Prometheus scrapes, so that
// the event path pays nothing for metrics.
type agentMetrics struct {
	sensor sensorCounts
	// refusals counts, by feature (features), the work the kernel refused
	// for lack of privilege: a process's /proc files read for seeding.
	refusals [1]atomic.Uint64
	// sensorFeatures is the sensor variant the kernel loaded; funcProbes
	// how Go functions are probed (uprobe_multi, perf_event, off).
	sensorFeatures sensor.Features
	funcProbes     string
	flush          *flushTimer   // nil without Redis
	nri            *plugin.Stats // nil when not following containerd
	docker         *dockerplugin.Stats
	funcs          *probeStats // nil without function probes
}

// collector returns the agent's prometheus.Collector: it reads every
// part's counters at scrape time. Parts the agent does not run (no
// --redis, no NRI, no dockerd) export nothing.
func (m *agentMetrics) collector(col *collector.Collector, reg *registry.Registry[sensor.Event]) prometheus.Collector {
	return &agentCollector{m: m, col: col, reg: reg}
}

// agentCollector is a prometheus.Collector over the agent's parts.
type agentCollector struct {
	m   *agentMetrics
	col *collector.Collector // nil without Redis
	reg *registry.Registry[sensor.Event]
}

func desc(subsystem, name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, name), help, labels, nil)
}

var (
	sensorEvents = desc("sensor", "events_total", "Events the sensor emitted, by kind (file, exec, net, syscalls, loss, cgroup, other).", "kind")
	sensorLost   = desc("sensor", "lost_events_total", "Events the kernel could not write to the full ring buffer, as reported by loss events.")
	sensorFeats  = desc("sensor", "features",
		"Always 1: the sensor variant this kernel loaded (cgroup_storage, hash_map, legacy) and what it runs with: where tracked cgroups keep their state, how paths are walked, how an exec's ELF loader is found, how files are read, how Go functions are probed.",
		"variant", "cgroup_state", "path_walk", "loader", "file_reads", "func_probes")

	colObserved   = desc("collector", "observations_total", "Observations folded into image profiles.")
	colPaused     = desc("collector", "paused_observations_total", "Observations ignored while the resource guard paused profiling.")
	colOverflow   = desc("collector", "overflow_members_total", "Profile members dropped, and recorded as lost, because --max-pending was reached.")
	colFlushes    = desc("collector", "flushes_total", "Successful flushes to Redis.")
	colFailures   = desc("collector", "flush_failures_total", "Failed flushes to Redis; their updates are kept for the next.")
	colPauses     = desc("collector", "guard_pauses_total", "Times the resource guard paused profiling.")
	colPending    = desc("collector", "pending_members", "Profile members in memory waiting for the next flush.")
	colPendingB   = desc("collector", "pending_bytes", "Estimated memory of the profile members waiting for the next flush.")
	colPendingImg = desc("collector", "pending_images", "Images with updates waiting for the next flush.")
	colImages     = desc("collector", "running_images", "Images with running containers.")
	colContainers = desc("collector", "running_containers", "Containers being profiled: started and not stopped.")

	regExpired    = desc("registry", "expired_cgroups_total", "Early-tracked cgroups that no runtime named within --hold: untracked, events dropped.")
	regDropped    = desc("registry", "dropped_events_total", "Events dropped: over the per-cgroup hold limit, or of an expired cgroup.")
	regUnresolved = desc("registry", "unresolved_containers_total", "Containers whose cgroup was neither found nor tracked early.")
	regNoDigest   = desc("registry", "no_digest_containers_total", "Containers not profiled because their image digest is unknown.")

	refusals = desc("", "privilege_refusals_total",
		"Work the kernel refused to the agent for lack of privilege, by feature: seed (a running container's process whose /proc files could not be read). Non-zero means the feature does less than it should: grant what docs/install.md lists.",
		"feature")
	funcRefused = desc("funcprobe", "refused_total",
		"Planned binaries (or plan paths) not probed, by reason: file (not a regular file of the container's own root within the size cap, or of another build), path (a plan path not absolute and clean), cap (over --max-probes-per-binary or --max-probes-per-image), deadline (a container's probing ran out of time).",
		"reason")
	funcDroppedHits = desc("funcprobe", "dropped_hits_total", "Function probe hits of cgroups not named yet dropped over the cap; recorded as lost in the image's profile once named.")

	handlerEvents = desc("discovery", "handled_total",
		"Work done by the runtime handlers, by source (nri, docker) and result: started (tracked at start), synced (tracked at resync), failed, dropped (queue full), connections.",
		"source", "result")
)

// Describe implements prometheus.Collector.
func (a *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		sensorEvents, sensorLost, sensorFeats, colObserved, colPaused, colOverflow, colFlushes, colFailures, colPauses,
		colPending, colPendingB, colPendingImg, colImages, colContainers, regExpired, regDropped, regUnresolved, regNoDigest, refusals, handlerEvents,
		funcRefused, funcDroppedHits,
	} {
		ch <- d
	}
	if a.m.flush != nil {
		a.m.flush.latency.Describe(ch)
	}
}

// Collect implements prometheus.Collector: it reads every source now.
func (a *agentCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	for i := range a.m.sensor.byKind {
		kind := "other"
		if i < len(kinds) {
			kind = kinds[i]
		}
		counter(sensorEvents, float64(a.m.sensor.byKind[i].Load()), kind)
	}
	counter(sensorLost, float64(a.m.sensor.lost.Load()))
	for i, f := range features {
		counter(refusals, float64(a.m.refusals[i].Load()), f)
	}
	if f := a.m.sensorFeatures; f.Variant != "" {
		ch <- prometheus.MustNewConstMetric(sensorFeats, prometheus.GaugeValue, 1,
			string(f.Variant), f.CgroupState, f.PathWalk, f.Loader, f.FileReads, cmp.Or(a.m.funcProbes, "off"))
	}
	if c := a.col; c != nil {
		st, g := c.Stats(), c.Gauges()
		counter(colObserved, float64(st.Events))
		counter(colPaused, float64(st.Paused))
		counter(colOverflow, float64(st.Overflow))
		counter(colFlushes, float64(st.Flushes))
		counter(colFailures, float64(st.Failures))
		counter(colPauses, float64(st.Pauses))
		gauge(colPending, float64(g.PendingMembers))
		gauge(colPendingB, float64(g.PendingBytes))
		gauge(colPendingImg, float64(g.PendingImages))
		gauge(colImages, float64(g.RunningImages))
		gauge(colContainers, float64(g.RunningContainers))
	}
	if a.m.flush != nil {
		a.m.flush.latency.Collect(ch)
	}
	if r := a.reg; r != nil {
		st := r.Stats()
		counter(regExpired, float64(st.Expired))
		counter(regDropped, float64(st.Dropped))
		counter(regUnresolved, float64(st.Unresolved))
		counter(regNoDigest, float64(st.NoDigest))
	}
	if f := a.m.funcs; f != nil {
		counter(funcRefused, float64(f.refusedFiles.Load()), "file")
		counter(funcRefused, float64(f.refusedPaths.Load()), "path")
		counter(funcRefused, float64(f.refusedCaps.Load()), "cap")
		counter(funcRefused, float64(f.deadlines.Load()), "deadline")
		counter(funcDroppedHits, float64(f.droppedHits.Load()))
	}
	if n := a.m.nri; n != nil {
		counter(handlerEvents, float64(n.Started.Load()), "nri", "started")
		counter(handlerEvents, float64(n.Synced.Load()), "nri", "synced")
		counter(handlerEvents, float64(n.TrackFailures.Load()), "nri", "failed")
		counter(handlerEvents, float64(n.Dropped.Load()), "nri", "dropped")
		counter(handlerEvents, float64(n.Connections.Load()), "nri", "connections")
	}
	if d := a.m.docker; d != nil {
		counter(handlerEvents, float64(d.Started.Load()), "docker", "started")
		counter(handlerEvents, float64(d.Failures.Load()), "docker", "failed")
		counter(handlerEvents, float64(d.Dropped.Load()), "docker", "dropped")
		counter(handlerEvents, float64(d.Connections.Load()), "docker", "connections")
	}
}
