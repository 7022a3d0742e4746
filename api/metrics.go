package api

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/inuse-dev/inuse/scanner"
)

// metrics of one server, in its own registry: two servers in one test
// process do not collide.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	scans    *prometheus.HistogramVec
	images   *prometheus.GaugeVec
	verdicts *prometheus.GaugeVec
	handler  http.Handler
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inuse_api_requests_total", Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "inuse_api_request_duration_seconds", Help: "HTTP request durations by route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"route"}),
		scans: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "inuse_scan_duration_seconds", Help: "Durations of the background scanner's report computations, by result.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 9),
		}, []string{"result"}),
		images: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inuse_images", Help: "Images of the profile index, by report status.",
		}, []string{"report"}),
		verdicts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inuse_vulnerabilities", Help: "Vulnerability matches of every reported image, by verdict.",
		}, []string{"verdict"}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.scans, m.images, m.verdicts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

// setImages recomputes the image and verdict gauges; the cache's lock is held.
func (m *metrics) setImages(images map[string]*entry) {
	counts := map[string]int{"ready": 0, "pending": 0, "failed": 0}
	verdicts := map[scanner.Verdict]int{scanner.InUse: 0, scanner.NotObserved: 0, scanner.Unknown: 0}
	for _, e := range images {
		switch {
		case e.report != nil:
			counts["ready"]++
			for _, v := range e.report.Vulnerabilities {
				verdicts[v.Verdict]++
			}
		case e.err != nil:
			counts["failed"]++
		default:
			counts["pending"]++
		}
	}
	for k, n := range counts {
		m.images.WithLabelValues(k).Set(float64(n))
	}
	for k, n := range verdicts {
		m.verdicts.WithLabelValues(string(k)).Set(float64(n))
	}
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	s.metrics.handler.ServeHTTP(w, r)
	return nil
}
