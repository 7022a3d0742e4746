package agent

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/collector"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/metrics"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/nri-plugin/plugin"
)

// scrape fetches /metrics from h over HTTP, as Prometheus does, and
// returns the families by name.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// value returns the value of the one sample of name whose labels include
// labels (name=value pairs); counters, gauges and histogram counts.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	require.True(t, ok, "no metric %s", name)
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no sample of %s with %v", name, labels)
	return 0
}

// The agent's metrics come from a real collector writing to a real Redis:
// events by kind and losses from the sensor side, flushes, their latency,
// failures while Redis is down, and the members kept pending meanwhile.
func TestAgentMetricsFromCollector(t *testing.T) {
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	log := slog.New(slog.DiscardHandler)

	m := &agentMetrics{nri: &plugin.Stats{}, flush: newFlushTimer(st), funcProbes: "perf_event",
		sensorFeatures: sensor.Features{Variant: sensor.VariantHashMap, CgroupState: "hash_map", PathWalk: "bpf_loop", Loader: "bpf_find_vma", FileReads: "probe_read"}}
	col := collector.New(log, m.flush, collector.Config{Node: "n1", FlushInterval: time.Hour})
	h, err := metrics.Handler(m.collector(col, nil))
	require.NoError(t, err)

	ctr := lifecycle.Container{ID: "c1", Image: lifecycle.Image{Name: "demo:1", Digest: "sha256:aa"}, CgroupID: 7}
	col.ContainerStarted(ctr)
	m.nri.Started.Add(1)
	m.nri.Connections.Add(1)
	m.refused(featureSeed)
	m.refused(featureSeed)
	emit := func(ev sensor.Event) { m.sensor.count(ev); col.Observe(ctr, ev) }
	for _, ev := range []sensor.Event{
		sensor.FileEvent{Header: sensor.Header{CgroupID: 7}, Path: "/etc/passwd", Access: sensor.AccessRead},
		sensor.FileEvent{Header: sensor.Header{CgroupID: 7}, Path: "/etc/hosts", Access: sensor.AccessRead},
		sensor.ExecEvent{Header: sensor.Header{CgroupID: 7}, Path: "/bin/sh"},
		sensor.SyscallEvent{CgroupID: 7, Numbers: []int{0}, Names: []string{"read"}},
		sensor.LossEvent{CgroupID: 7, Lost: 5, Total: 5},
	} {
		emit(ev)
	}

	before := scrape(t, h)
	require.NoError(t, col.Flush(t.Context()))
	after := scrape(t, h)
	srv.Stop()
	emit(sensor.FileEvent{Header: sensor.Header{CgroupID: 7}, Path: "/etc/group", Access: sensor.AccessRead})
	require.Error(t, col.Flush(t.Context()))
	down := scrape(t, h)

	for _, tc := range []struct {
		name   string
		fams   map[string]*dto.MetricFamily
		metric string
		labels []string
		want   float64
	}{
		{"files seen", before, "inuse_agent_sensor_events_total", []string{"kind", "file"}, 2},
		{"execs seen", before, "inuse_agent_sensor_events_total", []string{"kind", "exec"}, 1},
		{"net seen", before, "inuse_agent_sensor_events_total", []string{"kind", "net"}, 0},
		{"loss events", before, "inuse_agent_sensor_events_total", []string{"kind", "loss"}, 1},
		{"events lost in the kernel", before, "inuse_agent_sensor_lost_events_total", nil, 5},
		{"sensor variant", before, "inuse_agent_sensor_features", []string{"variant", "hash_map", "cgroup_state", "hash_map", "func_probes", "perf_event"}, 1},
		{"observations folded", before, "inuse_agent_collector_observations_total", nil, 5},
		// names, containers, nodes, workloads + 2 files, 1 exec, 1 syscall
		{"pending before the flush", before, "inuse_agent_collector_pending_members", nil, 8},
		{"running containers", before, "inuse_agent_collector_running_containers", nil, 1},
		{"no flush yet", before, "inuse_agent_collector_flush_duration_seconds", nil, 0},
		{"seeding refused", before, "inuse_agent_privilege_refusals_total", []string{"feature", "seed"}, 2},
		{"nri starts", before, "inuse_agent_discovery_handled_total", []string{"source", "nri", "result", "started"}, 1},
		{"flushed", after, "inuse_agent_collector_flushes_total", nil, 1},
		{"one flush timed", after, "inuse_agent_collector_flush_duration_seconds", nil, 1},
		{"nothing pending after the flush", after, "inuse_agent_collector_pending_members", nil, 0},
		{"no failure while up", after, "inuse_agent_collector_flush_failures_total", nil, 0},
		{"failure while redis is down", down, "inuse_agent_collector_flush_failures_total", nil, 1},
		{"failed flush timed too", down, "inuse_agent_collector_flush_duration_seconds", nil, 2},
		{"kept while redis is down", down, "inuse_agent_collector_pending_members", nil, 1},
		{"no guard pause", down, "inuse_agent_collector_guard_pauses_total", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, value(t, tc.fams, tc.metric, tc.labels...))
		})
	}
	// The process and Go runtime collectors are served beside ours.
	require.Contains(t, after, "go_goroutines")
	require.Contains(t, after, "process_resident_memory_bytes")
}

// Parts the agent does not run (no --redis, no dockerd) export nothing,
// rather than zeros that would look like a healthy idle part.
func TestAgentMetricsOnlyForRunningParts(t *testing.T) {
	h, err := metrics.Handler((&agentMetrics{}).collector(nil, nil))
	require.NoError(t, err)
	var got []string
	for name := range scrape(t, h) {
		if len(name) > len(namespace) && name[:len(namespace)] == namespace {
			got = append(got, name)
		}
	}
	// Refusals are the agent's own work (seeding runs with every source).
	want := []string{"inuse_agent_sensor_events_total", "inuse_agent_sensor_lost_events_total", "inuse_agent_privilege_refusals_total"}
	require.ElementsMatch(t, want, got, cmp.Diff(want, got))
}

// The type switch of count and the kinds labels agree.
func TestSensorCountskinds(t *testing.T) {
	s := &sensorCounts{}
	emit := s.count
	for _, ev := range []sensor.Event{
		sensor.FileEvent{}, sensor.ExecEvent{}, sensor.NetEvent{}, sensor.SyscallEvent{}, sensor.LossEvent{Lost: 3}, sensor.CgroupEvent{},
	} {
		t.Run(ev.Kind(), func(t *testing.T) {
			before := s.byKind[slices.Index(kinds, ev.Kind())].Load()
			emit(ev)
			require.Equal(t, before+1, s.byKind[slices.Index(kinds, ev.Kind())].Load())
		})
	}
	require.Equal(t, uint64(3), s.lost.Load())
	require.Zero(t, s.byKind[len(kinds)].Load(), "no known kind counted as other")
}
