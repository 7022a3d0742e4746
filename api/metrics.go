package api

import (
	"net/http"
	"sync"
	"time"

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
	// scansTotal counts the reports this replica computed: with several
	// replicas, their sum is the scans of the deployment.
	scansTotal *prometheus.CounterVec
	images     *prometheus.GaugeVec
	verdicts   *prometheus.GaugeVec
	// mismatches counts runtimeimages requests for another cluster's name;
	// the name is not a label, since any client chooses it.
	mismatches prometheus.Counter
	handler    http.Handler

	mismatchMu     sync.Mutex
	mismatchLogged map[string]time.Time // cluster name: when last logged
}

// mismatchLogEvery is how often one wrong clusterName is logged: a scraper
// polls every few minutes, and each poll is a few requests.
const mismatchLogEvery = time.Minute

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
		scansTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inuse_scans_total", Help: "Reports this replica computed (and stored for every replica), by result.",
		}, []string{"result"}),
		images: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inuse_images", Help: "Images of the profile index, by report status.",
		}, []string{"report"}),
		verdicts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inuse_vulnerabilities", Help: "Vulnerability matches of every reported image, by verdict.",
		}, []string{"verdict"}),
		mismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "inuse_api_runtimeimages_cluster_mismatch_total",
			Help: "runtimeimages requests whose clusterName is not --cluster-name, answered with no entry.",
		}),
		mismatchLogged: map[string]time.Time{},
	}
	m.reg.MustRegister(m.requests, m.duration, m.scans, m.scansTotal, m.images, m.verdicts, m.mismatches,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

// clusterMismatch counts a runtimeimages request for cluster, another
// cluster's name, and tells whether to log it: once a minute per name, so
// that a misconfigured integration shows in the log without flooding it.
func (m *metrics) clusterMismatch(cluster string, now time.Time) (log bool) {
	m.mismatches.Inc()
	m.mismatchMu.Lock()
	defer m.mismatchMu.Unlock()
	if now.Sub(m.mismatchLogged[cluster]) < mismatchLogEvery {
		return false
	}
	if len(m.mismatchLogged) >= 1000 { // names are the clients' choice; bounded
		clear(m.mismatchLogged)
	}
	m.mismatchLogged[cluster] = now
	return true
}

// setImages recomputes the image and verdict gauges; the cache's lock is held.
func (m *metrics) setImages(images map[string]*entry) {
	counts := map[string]int{"ready": 0, "pending": 0, "failed": 0}
	verdicts := map[scanner.Verdict]int{scanner.InUse: 0, scanner.NotObserved: 0, scanner.Unknown: 0}
	for _, e := range images {
		switch {
		case e.reported:
			counts["ready"]++
			for v, n := range e.verdicts {
				verdicts[v] += n
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
