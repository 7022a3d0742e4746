// Package api serves the verdicts over HTTP: the JSON API under /api/v1,
// the Sysdig-compatible runtimeimages endpoint for third-party scrapers,
// integration tokens, Prometheus metrics and the embedded web page.
package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// Reports computes the report of an image from its profile: the scanner.
type Reports interface {
	Report(ctx context.Context, digest string, p *store.Profile) (*scanner.Report, error)
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
	tokens  *Tokens
	admin   *Admin
	cache   *cache
	metrics *metrics
	handler http.Handler
	mux     *http.ServeMux

	limMu    sync.Mutex
	limiters map[string]*rate.Limiter
}

// New builds a server over cfg.Store.
func New(cfg Config) *Server {
	cfg.defaults()
	s := &Server{
		cfg: cfg, log: cfg.Log.With(logfields.Component, "api"),
		tokens: NewTokens(cfg.Store.Client()), admin: NewAdmin(cfg.AdminSecret),
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

// Tokens are the integration tokens the server checks.
func (s *Server) Tokens() *Tokens { return s.tokens }

// Run runs the background scanner until ctx is done.
func (s *Server) Run(ctx context.Context) { s.cache.run(ctx) }

// maxHeaderBytes bounds the request headers.
const maxHeaderBytes = 64 << 10

// Serve serves on ln (TLS when certFile and keyFile are set) and runs the
// background scanner, until ctx is done; then it shuts down gracefully.
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
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("loading TLS certificate: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
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

// access is who may call a route.
type access int

const (
	public access = iota // no credential
	reader               // an integration token or the admin credential
	admin                // the admin credential only
)

type route struct {
	method, path string
	access       access
	handle       func(w http.ResponseWriter, r *http.Request) error
}

func (rt route) pattern() string { return rt.method + " " + rt.path }

func (s *Server) routes() []route {
	return []route{
		{"GET", "/{$}", public, s.webIndex},
		{"GET", "/assets/{file}", public, s.webAsset},
		{"GET", "/healthz", public, s.healthz},
		{"GET", "/metrics", public, s.serveMetrics},
		{"GET", "/api/openapi.yaml", public, s.openAPI},
		{"GET", "/api/v1/images", reader, s.listImages},
		{"GET", "/api/v1/images/{ref}", reader, s.getImage},
		{"GET", "/api/v1/images/{ref}/sections/{section}", reader, s.getSection},
		{"GET", "/api/v1/images/{ref}/packages", reader, s.getPackages},
		{"GET", "/api/v1/images/{ref}/vulnerabilities", reader, s.getVulnerabilities},
		{"GET", "/api/v1/images/{ref}/openvex", reader, s.getOpenVEX},
		{"GET", "/api/v1/images/{ref}/cyclonedx", reader, s.getCycloneDX},
		// Enrich only reads the report and writes nothing, so an
		// integration token may call it.
		{"POST", "/api/v1/images/{ref}/enrich", reader, s.postEnrich},
		{"GET", "/api/v1/tokens", admin, s.listTokens},
		{"POST", "/api/v1/tokens", admin, s.createTokenHandler},
		{"POST", "/api/v1/tokens/{id}/renew", admin, s.renewToken},
		{"DELETE", "/api/v1/tokens/{id}", admin, s.deleteToken},
		{"GET", "/api/scanning/eveintegration/v2/runtimeimages", reader, s.runtimeImages},
	}
}

// httpError is an error with the status it answers.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func errorf(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // purls keep their & readable; answers are never HTML
	if err := enc.Encode(v); err != nil {
		code, buf = http.StatusInternalServerError, *bytes.NewBufferString(`{"error":"encoding the answer"}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// principal is who made a request; the secret never leaves auth.
type principal struct {
	admin bool
	id    string // token id, or "admin"
}

type ctxKey struct{}

// securityHeaders go on every answer. No Access-Control-* header is ever
// set: browsers then refuse cross-origin reads, which is what we want by
// default.
func securityHeaders(h http.Header) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
}

// outer turns the mux's own 404 and 405 answers into JSON errors and
// counts them.
func (s *Server) outer(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		h, _ := mux.Handler(r)
		rec := &headerRecorder{header: http.Header{}, code: http.StatusNotFound}
		h.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		msg := "no such route"
		if rec.code == http.StatusMethodNotAllowed {
			msg = "method not allowed"
		}
		if rec.code/100 == 3 { // the mux redirects unclean paths
			w.Header().Set("Location", rec.header.Get("Location"))
			msg = "moved"
		}
		writeError(w, rec.code, msg)
		s.metrics.requests.WithLabelValues("unmatched", fmt.Sprint(rec.code)).Inc()
	})
}

// headerRecorder keeps only the status and headers of an answer.
type headerRecorder struct {
	header http.Header
	code   int
	wrote  bool
}

func (h *headerRecorder) Header() http.Header { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) {
	h.wrote = true
	return len(b), nil
}
func (h *headerRecorder) WriteHeader(code int) {
	if !h.wrote {
		h.code, h.wrote = code, true
	}
}

// statusWriter remembers the status of an answer for metrics and logs.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// wrap authenticates, rate-limits, runs and accounts one route.
func (s *Server) wrap(rt route) http.Handler {
	name := rt.pattern()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		who, err := s.authorize(r, rt.access)
		var he *httpError
		if errors.As(err, &he) && he.code == http.StatusUnauthorized && !s.allow("unauthenticated "+clientHost(r)) {
			// Failed credentials share one budget per client address, so
			// that guessing the admin credential is slow.
			w.Header().Set("Retry-After", "1")
			err = errorf(http.StatusTooManyRequests, "too many failed credentials")
		}
		if err == nil {
			if who.id != "" && !s.allow(who.id) {
				w.Header().Set("Retry-After", "1")
				err = errorf(http.StatusTooManyRequests, "rate limit exceeded")
			} else {
				r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, who))
				err = s.recoverHandle(rt, sw, r)
			}
		}
		if err != nil {
			var mbe *http.MaxBytesError
			switch {
			case errors.As(err, &he):
				if he.code == http.StatusUnauthorized {
					sw.Header().Set("WWW-Authenticate", `Bearer realm="inuse"`)
				}
				writeError(sw, he.code, he.msg)
			case errors.As(err, &mbe):
				writeError(sw, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", mbe.Limit))
			case errors.Is(err, context.Canceled):
				sw.code = 499 // the client went away; nothing to write
			default:
				s.log.Error("request failed", "route", name, logfields.Error, err)
				writeError(sw, http.StatusInternalServerError, "internal error")
			}
		}
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		s.metrics.requests.WithLabelValues(name, fmt.Sprint(code)).Inc()
		s.metrics.duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		// The log line names the route and the token id: never the
		// Authorization header, the query's cursor or a body.
		s.log.Debug("request", "route", name, "code", code, "principal", who.id, "duration_ms", time.Since(start).Milliseconds())
	})
}

func (s *Server) recoverHandle(rt route, w http.ResponseWriter, r *http.Request) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			err = fmt.Errorf("panic in %s: %v", rt.pattern(), v)
		}
	}()
	return rt.handle(w, r)
}

// authorize checks the Bearer credential a route needs.
func (s *Server) authorize(r *http.Request, need access) (principal, error) {
	if need == public {
		return principal{}, nil
	}
	secret, ok := bearer(r)
	if !ok {
		return principal{}, errorf(http.StatusUnauthorized, "missing bearer token")
	}
	if s.admin.Match(secret) {
		return principal{admin: true, id: "admin"}, nil
	}
	tok, err := s.tokens.Verify(r.Context(), secret)
	switch {
	case errors.Is(err, ErrTokenExpired):
		return principal{}, errorf(http.StatusUnauthorized, "token expired")
	case errors.Is(err, ErrTokenInvalid):
		return principal{}, errorf(http.StatusUnauthorized, "invalid token")
	case err != nil:
		return principal{}, err
	}
	if need == admin {
		return principal{id: tok.ID}, errorf(http.StatusForbidden, "integration tokens are read-only and cannot manage tokens")
	}
	return principal{id: tok.ID}, nil
}

// clientHost is the address a request came from (no port). Behind a
// proxy all clients share the proxy's budget, which errs on the safe side.
func clientHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, secret, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	secret = strings.TrimSpace(secret)
	return secret, secret != ""
}

// allow takes one request from the rate limit of credential id.
func (s *Server) allow(id string) bool {
	s.limMu.Lock()
	defer s.limMu.Unlock()
	l := s.limiters[id]
	if l == nil {
		if len(s.limiters) > 10000 { // deleted tokens; bounded
			clear(s.limiters)
		}
		l = rate.NewLimiter(rate.Limit(s.cfg.RateLimit), s.cfg.RateBurst)
		s.limiters[id] = l
	}
	return l.Allow()
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Store.Ping(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "redis unreachable")
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}
