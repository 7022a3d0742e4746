package agent

import (
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/collector"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/metrics"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/nri-plugin/plugin"
)

// What counting events by kind adds to the event path: the same fold,
// direct and counted first, in one run; and the counting alone
// (around an emit that does nothing). The event repeats, so the fold is its
// cheapest (a member already pending) and the counter's share the largest.
func BenchmarkEventPath(b *testing.B) {
	log := slog.New(slog.DiscardHandler)
	ctr := lifecycle.Container{ID: "c1", Image: lifecycle.Image{Digest: "sha256:aa"}}
	var ev sensor.Event = sensor.FileEvent{Path: "/usr/lib/libc.so.6", Access: sensor.AccessRead}
	for _, tc := range []struct {
		name       string
		fold, wrap bool
	}{{"fold", true, false}, {"fold-counted", true, true}, {"nothing", false, false}, {"nothing-counted", false, true}} {
		b.Run(tc.name, func(b *testing.B) {
			col := collector.New(log, nil, collector.Config{Node: "n"})
			emit := func(sensor.Event) {}
			if tc.fold {
				emit = func(ev sensor.Event) { col.Observe(ctr, ev) }
			}
			if tc.wrap {
				counts, next := &sensorCounts{}, emit
				emit = func(ev sensor.Event) { counts.count(ev); next(ev) }
			}
			for b.Loop() {
				emit(ev)
			}
		})
	}
}

// One scrape of /metrics with every source set, over HTTP.
func BenchmarkScrape(b *testing.B) {
	srv := redistest.Start(b)
	st, err := store.Open(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	m := &agentMetrics{nri: &plugin.Stats{}, flush: newFlushTimer(st)}
	h, err := metrics.Handler(m.collector(collector.New(log, m.flush, collector.Config{Node: "n"}), nil))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
