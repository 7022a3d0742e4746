package api

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/inuse-dev/inuse/internal/logfields"
)

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
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			err = fmt.Errorf("panic in %s: %v", rt.pattern(), v)
		}
	}()
	return rt.handle(w, r)
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

// acceptsGzip tells whether an Accept-Encoding header takes gzip: listed
// (or *) without q=0.
func acceptsGzip(h http.Header) bool {
	for _, field := range h.Values("Accept-Encoding") {
		for coding := range strings.SplitSeq(field, ",") {
			name, params, _ := strings.Cut(coding, ";")
			name = strings.ToLower(strings.TrimSpace(name))
			if name != "gzip" && name != "x-gzip" && name != "*" {
				continue
			}
			q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q=")
			if !ok {
				return true
			}
			if v, err := strconv.ParseFloat(q, 64); err == nil && v > 0 {
				return true
			}
		}
	}
	return false
}

// gzipWriter encodes an answer with gzip; Close ends the stream.
type gzipWriter struct {
	http.ResponseWriter
	gz    *gzip.Writer
	wrote bool
}

// gzipped wraps w so that the answer written through it is gzip-encoded.
func gzipped(w http.ResponseWriter) *gzipWriter {
	return &gzipWriter{ResponseWriter: w, gz: gzip.NewWriter(w)}
}

func (g *gzipWriter) WriteHeader(code int) {
	g.wrote = true
	g.Header().Set("Content-Encoding", "gzip")
	g.Header().Del("Content-Length")
	g.ResponseWriter.WriteHeader(code)
}

func (g *gzipWriter) Write(b []byte) (int, error) {
	if !g.wrote {
		g.WriteHeader(http.StatusOK)
	}
	return g.gz.Write(b)
}

// Close flushes the gzip stream; its error is the client's going away,
// which the answer's status already accounts for.
func (g *gzipWriter) Close() { g.gz.Close() }
