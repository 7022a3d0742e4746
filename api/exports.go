package api

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"github.com/inuse-dev/inuse/scanner"
)

// render answers a document in a format, buffered so that a failure is
// still a clean JSON error.
func (s *Server) render(w http.ResponseWriter, r *http.Request, name, ctype string, f func(io.Writer, *scanner.Report) error) error {
	if _, err := only(r, execSessionsParam); err != nil {
		return err
	}
	if f == nil {
		return errorf(http.StatusNotImplemented, "this server cannot write %s", name)
	}
	rep, err := s.reportFor(r)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := f(&buf, rep); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	w.Header().Set("Content-Type", ctype)
	w.Write(buf.Bytes())
	return nil
}

func (s *Server) getOpenVEX(w http.ResponseWriter, r *http.Request) error {
	return s.render(w, r, "OpenVEX", "application/json", s.cfg.Formats.OpenVEX)
}

func (s *Server) getCycloneDX(w http.ResponseWriter, r *http.Request) error {
	return s.render(w, r, "CycloneDX", "application/vnd.cyclonedx+json", s.cfg.Formats.CycloneDX)
}

func (s *Server) postEnrich(w http.ResponseWriter, r *http.Request) error {
	if _, err := only(r, execSessionsParam); err != nil {
		return err
	}
	if s.cfg.Formats.Enrich == nil {
		return errorf(http.StatusNotImplemented, "this server cannot enrich documents")
	}
	rep, err := s.reportFor(r)
	if err != nil {
		return err
	}
	// Read the whole bounded body first: an over-long body is a 413, not
	// a parse error deep in the enricher.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxEnrichBytes))
	if err != nil {
		return err
	}
	if len(body) == 0 {
		return errorf(http.StatusBadRequest, "empty body: post the document to enrich")
	}
	out, err := s.cfg.Formats.Enrich(bytes.NewReader(body), rep)
	if err != nil {
		// The enricher fails on documents it cannot read: the client's.
		return errorf(http.StatusUnprocessableEntity, "enriching the document: %s", truncate(err.Error(), 300))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
	return nil
}
