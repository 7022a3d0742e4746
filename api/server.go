// Package api serves the verdicts over HTTP: the JSON API under /api/v1,
// the Sysdig-compatible runtimeimages endpoint for third-party scrapers,
// integration tokens, Prometheus metrics and the embedded web page.
//
// The files follow a request: routes.go is the table of every route;
// middleware.go and auth.go wrap each one (security headers, credentials,
// rate limits, logs, metrics, panics); then one file per resource
// (images.go, report.go, exports.go, tokens.go, runtimeimages.go, web.go,
// health.go, metrics.go), with respond.go and paging.go shared by them.
// The report routes answer from what background.go keeps: it polls the
// store and computes each image's report with the Reports of the Config,
// catalog.go's in a server; shared.go stores the reports in Redis and
// leases the scans, so that replicas share both.
package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// Reports computes the report of an image from its profile: the scanner
// (ScannerReports).
type Reports interface {
	Report(ctx context.Context, digest string, p *store.Profile) (*scanner.Report, error)
	// DBBuild names the vulnerability database build the reports are
	// matched against: a report is current for one build.
	DBBuild(ctx context.Context) (string, error)
}

// Formats renders reports in the formats other tools read. A nil func
// makes its endpoint answer 501.
type Formats struct {
	OpenVEX   func(w io.Writer, rep *scanner.Report) error
	CycloneDX func(w io.Writer, rep *scanner.Report) error
	// Enrich reads a document (an SBOM or a vulnerability report of the
	// image) and returns it with the verdicts added.
	Enrich func(r io.Reader, rep *scanner.Report) ([]byte, error)
}

// Config configures a Server.
type Config struct {
	Store    *store.Store
	Learning store.LearningConfig
	// ExcludeExecSessions leaves what only exec sessions (docker exec,
	// kubectl exec) loaded out of the reports, unless a request asks for
	// it (?exec_sessions=include).
	ExcludeExecSessions bool
	// Reports may be nil: images are then listed without verdicts.
	Reports Reports
	Formats Formats
	// AdminSecret is the admin credential; empty disables admin requests.
	AdminSecret string
	// ClusterName, when set, is the only clusterName runtimeimages
	// answers for; other names get an empty page.
	ClusterName string
	Log         *slog.Logger

	// PollInterval is how often the background scanner reads the image
	// index (1 s).
	PollInterval time.Duration
	// ScanWorkers bounds concurrent scans (2).
	ScanWorkers int
	// RetryAfter is how long a failed scan waits before it is tried
	// again (1 min).
	RetryAfter time.Duration
	// ReportCache bounds the reports kept in memory (128); the others
	// are read again from Redis when asked for.
	ReportCache int
	// ReplicaID names this replica in the scan leases it holds (default:
	// the host name and a random suffix).
	ReplicaID string
	// LeaseDuration is how long a replica holds an image's scan lease
	// without renewing it (30 s); it renews every third of it, and a
	// replica that dies loses the lease when it expires.
	LeaseDuration time.Duration
	// RateLimit is the requests per second one credential may make, and
	// RateBurst the burst (20/s, 100).
	RateLimit float64
	RateBurst int
	// MaxBodyBytes bounds JSON request bodies (64 KiB); MaxEnrichBytes
	// bounds the documents posted to enrich (32 MiB).
	MaxBodyBytes   int64
	MaxEnrichBytes int64
	// Timeouts of the HTTP server (10 s to read the headers, 60 s the
	// request, 120 s to write the answer, 120 s idle).
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
}

func (c *Config) defaults() {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.ScanWorkers <= 0 {
		c.ScanWorkers = 2
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = time.Minute
	}
	if c.ReportCache <= 0 {
		c.ReportCache = 128
	}
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = 30 * time.Second
	}
	if c.RateLimit <= 0 {
		c.RateLimit = 20
	}
	if c.RateBurst <= 0 {
		c.RateBurst = 100
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.MaxEnrichBytes <= 0 {
		c.MaxEnrichBytes = 32 << 20
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 60 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 120 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 120 * time.Second
	}
}

// Server is the HTTP API. Build it with New, run its background scanner
// with Run and serve Handler (or call Serve, which does both).
type Server struct {
	cfg     Config
	log     *slog.Logger
	tokens  *store.Tokens
	admin   *Admin
	cache   *cache
	metrics *metrics
	handler http.Handler
	mux     *http.ServeMux
	// tls is the certificate Serve presents; nil over plain HTTP.
	tls *certFiles

	limMu    sync.Mutex
	limiters map[string]*rate.Limiter
}

// New builds a server over cfg.Store.
func New(cfg Config) *Server {
	cfg.defaults()
	s := &Server{
		cfg: cfg, log: cfg.Log.With(logfields.Component, "api"),
		tokens: store.NewTokens(cfg.Store), admin: NewAdmin(cfg.AdminSecret),
		limiters: map[string]*rate.Limiter{},
	}
	s.metrics = newMetrics()
	s.cache = newCache(&s.cfg, s.log, s.metrics)
	s.mux = http.NewServeMux()
	for _, rt := range s.routes() {
		s.mux.Handle(rt.pattern(), s.wrap(rt))
	}
	s.handler = s.outer(s.mux)
	return s
}

// Handler serves every route.
func (s *Server) Handler() http.Handler { return s.handler }

// Run runs the background scanner until ctx is done.
func (s *Server) Run(ctx context.Context) { s.cache.run(ctx) }

// maxHeaderBytes bounds the request headers.
const maxHeaderBytes = 64 << 10

// Serve serves on ln (TLS when certFile and keyFile are set, reading them
// again when they change) and runs the background scanner, until ctx is
// done; then it shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener, certFile, keyFile string) error {
	srv := &http.Server{
		// The timeouts keep a slow or stuck client from holding a
		// connection; writes get the longest, for large reports.
		Handler: s.handler, ReadHeaderTimeout: s.cfg.ReadHeaderTimeout, ReadTimeout: s.cfg.ReadTimeout,
		WriteTimeout: s.cfg.WriteTimeout, IdleTimeout: s.cfg.IdleTimeout, MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	if (certFile == "") != (keyFile == "") {
		return errors.New("api: TLS needs both a certificate and a key")
	}
	if certFile != "" {
		files, err := loadCertFiles(certFile, keyFile, s.log)
		if err != nil {
			return err
		}
		// Set before serving: handlers only read it.
		s.tls = files
		srv.TLSConfig = &tls.Config{GetCertificate: files.getCertificate, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(runCtx) })
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = srv.Shutdown(shutCtx)
		cancel()
		<-errc
	}
	stopRun()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}
