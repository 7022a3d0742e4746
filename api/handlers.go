package api

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// Paging of the /api/v1 lists.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// page is the envelope of a paginated list.
type page[T any] struct {
	Items  []T   `json:"items"`
	Total  int64 `json:"total"`
	Offset int64 `json:"offset"`
	Limit  int64 `json:"limit"`
}

// paging reads offset and limit.
func paging(q url.Values) (offset, limit int64, err error) {
	limit = defaultLimit
	if v := q.Get("limit"); v != "" || q.Has("limit") {
		limit, err = strconv.ParseInt(v, 10, 64)
		if err != nil || limit < 1 || limit > maxLimit {
			return 0, 0, errorf(http.StatusBadRequest, "limit must be an integer from 1 to %d", maxLimit)
		}
	}
	if v := q.Get("offset"); v != "" || q.Has("offset") {
		offset, err = strconv.ParseInt(v, 10, 64)
		if err != nil || offset < 0 || offset > 1<<40 {
			return 0, 0, errorf(http.StatusBadRequest, "offset must be a non-negative integer")
		}
	}
	return offset, limit, nil
}

// slicePage pages a list held in memory.
func slicePage[T any](all []T, offset, limit int64) page[T] {
	n := int64(len(all))
	lo := min(offset, n)
	hi := min(lo+limit, n)
	items := all[lo:hi]
	if items == nil {
		items = []T{}
	}
	return page[T]{Items: items, Total: n, Offset: offset, Limit: limit}
}

// query parses the query strictly: a malformed one is a 400, not
// silently dropped pairs.
func query(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "malformed query string")
	}
	return q, nil
}

// only lets through the query parameters a route knows: a typo such as
// ?severty=high fails instead of silently returning everything.
func only(r *http.Request, known ...string) (url.Values, error) {
	q, err := query(r)
	if err != nil {
		return nil, err
	}
	for k := range q {
		if !slices.Contains(known, k) {
			return nil, errorf(http.StatusBadRequest, "unknown query parameter %q", truncate(k, 40))
		}
	}
	return q, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// ReportSummary is what an image's listing says of its report.
type ReportSummary struct {
	GeneratedAt     time.Time       `json:"generated_at"`
	Distro          scanner.Distro  `json:"distro"`
	Packages        int             `json:"packages"`
	PackagesInUse   int             `json:"packages_in_use"`
	Vulnerabilities scanner.Summary `json:"vulnerabilities"`
	// InUsePercent is the share of vulnerabilities in use.
	InUsePercent float64 `json:"in_use_percent"`
}

// ImageSummary is one image of the images list.
type ImageSummary struct {
	store.Summary
	ReportStatus string         `json:"report_status"`
	ReportError  string         `json:"report_error,omitempty"`
	Report       *ReportSummary `json:"report,omitempty"`
}

func summarize(rep *scanner.Report) *ReportSummary {
	if rep == nil {
		return nil
	}
	rs := &ReportSummary{GeneratedAt: rep.GeneratedAt, Distro: rep.Distro, Packages: len(rep.Packages), Vulnerabilities: rep.Summary}
	for _, p := range rep.Packages {
		if p.Verdict == scanner.InUse {
			rs.PackagesInUse++
		}
	}
	if rep.Summary.Total > 0 {
		rs.InUsePercent = float64(rep.Summary.InUse) * 100 / float64(rep.Summary.Total)
	}
	return rs
}

func (s *Server) imageSummary(sum store.Summary) ImageSummary {
	rep, status, err := s.cache.reportOf(sum.Digest)
	out := ImageSummary{Summary: sum, ReportStatus: string(status), Report: summarize(rep)}
	if err != nil {
		out.ReportError = scanFailure(err)
	}
	if out.Names == nil {
		out.Names = []string{}
	}
	return out
}

// scanFailure is what a client learns of a failed scan: its message, cut
// short (it names the image and the step, nothing secret).
func scanFailure(err error) string { return truncate(err.Error(), 300) }

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) error {
	q, err := only(r, "offset", "limit")
	if err != nil {
		return err
	}
	offset, limit, err := paging(q)
	if err != nil {
		return err
	}
	sums, total, err := s.cfg.Store.ImagesPage(r.Context(), offset, limit, time.Now(), s.cfg.Learning)
	if err != nil {
		return err
	}
	items := make([]ImageSummary, 0, len(sums))
	for _, sum := range sums {
		items = append(items, s.imageSummary(sum))
	}
	writeJSON(w, http.StatusOK, page[ImageSummary]{Items: items, Total: total, Offset: offset, Limit: limit})
	return nil
}

// profileOf resolves the {ref} of a route (a digest, or a name the store
// has seen) and reads its profile.
func (s *Server) profileOf(r *http.Request) (*store.Profile, error) {
	ref := r.PathValue("ref")
	if ref == "" || len(ref) > 512 || !utf8Printable(ref) {
		return nil, errorf(http.StatusBadRequest, "bad image reference")
	}
	digest, err := s.cfg.Store.Resolve(r.Context(), ref)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errorf(http.StatusNotFound, "no profile for image %s", truncate(ref, 100))
	}
	if err != nil {
		return nil, err
	}
	p, err := s.cfg.Store.Profile(r.Context(), digest, time.Now(), s.cfg.Learning)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errorf(http.StatusNotFound, "no profile for image %s", truncate(ref, 100))
	}
	return p, err
}

func utf8Printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			return false
		}
	}
	return true
}

// reportFor returns the report of the image of the route, or the error
// that says why there is none yet.
func (s *Server) reportFor(r *http.Request) (*store.Profile, *scanner.Report, error) {
	p, err := s.profileOf(r)
	if err != nil {
		return nil, nil, err
	}
	rep, status, err := s.cache.reportOf(p.Digest)
	switch status {
	case statusReady:
		return p, rep, nil
	case statusUnavailable:
		return nil, nil, errorf(http.StatusNotImplemented, "this server has no scanner")
	case statusFailed:
		return nil, nil, errorf(http.StatusServiceUnavailable, "scanning the image failed: %s", scanFailure(err))
	}
	return nil, nil, errorf(http.StatusServiceUnavailable, "the image's report is not ready yet")
}

// ImageDetail is one image: its profile summary and its report summary.
type ImageDetail struct {
	Digest     string           `json:"digest"`
	Names      []string         `json:"names"`
	State      store.State      `json:"learning_state"`
	Confidence store.Confidence `json:"confidence"`
	Meta       store.Meta       `json:"meta"`
	Workloads  []store.Workload `json:"workloads"`
	Nodes      []string         `json:"nodes"`
	// Sections counts the members of each profile section.
	Sections     map[store.Section]int `json:"sections"`
	ReportStatus string                `json:"report_status"`
	ReportError  string                `json:"report_error,omitempty"`
	Report       *ReportSummary        `json:"report,omitempty"`
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request) error {
	if _, err := only(r); err != nil {
		return err
	}
	p, err := s.profileOf(r)
	if err != nil {
		return err
	}
	rep, status, rerr := s.cache.reportOf(p.Digest)
	d := ImageDetail{
		Digest: p.Digest, Names: nonNil(p.Names), State: p.State, Confidence: p.Confidence, Meta: p.Meta,
		Workloads: nonNil(p.Workloads), Nodes: nonNil(p.NodeNames), Sections: map[store.Section]int{},
		ReportStatus: string(status), Report: summarize(rep),
	}
	if rerr != nil {
		d.ReportError = scanFailure(rerr)
	}
	for _, sec := range store.Sections {
		d.Sections[sec] = len(p.Sections[sec])
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *Server) getSection(w http.ResponseWriter, r *http.Request) error {
	q, err := only(r, "offset", "limit")
	if err != nil {
		return err
	}
	offset, limit, err := paging(q)
	if err != nil {
		return err
	}
	sec := store.Section(r.PathValue("section"))
	if !slices.Contains(store.Sections, sec) {
		return errorf(http.StatusNotFound, "no section %q (want one of %s)", truncate(string(sec), 40), sectionNames())
	}
	p, err := s.profileOf(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, slicePage(p.Sections[sec], offset, limit))
	return nil
}

func sectionNames() string {
	var names []string
	for _, s := range store.Sections {
		names = append(names, string(s))
	}
	return strings.Join(names, ", ")
}

// verdictFilter reads ?verdict= and ?in_use=.
func verdictFilter(q url.Values) (func(scanner.Verdict) bool, error) {
	keep := func(scanner.Verdict) bool { return true }
	if q.Has("verdict") {
		want := scanner.Verdict(q.Get("verdict"))
		if !slices.Contains([]scanner.Verdict{scanner.InUse, scanner.NotObserved, scanner.Unknown}, want) {
			return nil, errorf(http.StatusBadRequest, "verdict must be in_use, not_observed or unknown")
		}
		prev := keep
		keep = func(v scanner.Verdict) bool { return prev(v) && v == want }
	}
	if q.Has("in_use") {
		inUse, err := strconv.ParseBool(q.Get("in_use"))
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "in_use must be true or false")
		}
		prev := keep
		keep = func(v scanner.Verdict) bool { return prev(v) && (v == scanner.InUse) == inUse }
	}
	return keep, nil
}

func (s *Server) getPackages(w http.ResponseWriter, r *http.Request) error {
	q, err := only(r, "offset", "limit", "verdict", "in_use", "type")
	if err != nil {
		return err
	}
	offset, limit, err := paging(q)
	if err != nil {
		return err
	}
	keep, err := verdictFilter(q)
	if err != nil {
		return err
	}
	_, rep, err := s.reportFor(r)
	if err != nil {
		return err
	}
	var out []scanner.Package
	for _, p := range rep.Packages {
		if keep(p.Verdict) && (!q.Has("type") || p.Type == q.Get("type")) {
			out = append(out, p)
		}
	}
	writeJSON(w, http.StatusOK, slicePage(out, offset, limit))
	return nil
}

func (s *Server) getVulnerabilities(w http.ResponseWriter, r *http.Request) error {
	q, err := only(r, "offset", "limit", "verdict", "in_use", "severity", "sort")
	if err != nil {
		return err
	}
	offset, limit, err := paging(q)
	if err != nil {
		return err
	}
	keep, err := verdictFilter(q)
	if err != nil {
		return err
	}
	var sevs []string
	if q.Has("severity") {
		for sev := range strings.SplitSeq(q.Get("severity"), ",") {
			sev = strings.ToLower(strings.TrimSpace(sev))
			if !slices.Contains(scanner.Severities, sev) {
				return errorf(http.StatusBadRequest, "severity must be a comma-separated list of critical, high, medium, low, negligible, unknown")
			}
			sevs = append(sevs, sev)
		}
	}
	order := q.Get("sort")
	if !slices.Contains([]string{"", "severity", "-severity", "id"}, order) {
		return errorf(http.StatusBadRequest, "sort must be severity, -severity or id")
	}
	_, rep, err := s.reportFor(r)
	if err != nil {
		return err
	}
	var out []scanner.Vulnerability
	for _, v := range rep.Vulnerabilities {
		if keep(v.Verdict) && (sevs == nil || slices.Contains(sevs, strings.ToLower(v.Severity))) {
			out = append(out, v)
		}
	}
	byID := func(a, b scanner.Vulnerability) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.PackageName, b.PackageName), cmp.Compare(a.PackageVersion, b.PackageVersion))
	}
	switch order {
	case "", "severity": // most severe first, then in use first
		slices.SortStableFunc(out, func(a, b scanner.Vulnerability) int {
			return cmp.Or(cmp.Compare(scanner.SeverityRank(a.Severity), scanner.SeverityRank(b.Severity)), cmp.Compare(scanner.VerdictRank(a.Verdict), scanner.VerdictRank(b.Verdict)), byID(a, b))
		})
	case "-severity":
		slices.SortStableFunc(out, func(a, b scanner.Vulnerability) int {
			return cmp.Or(cmp.Compare(scanner.SeverityRank(b.Severity), scanner.SeverityRank(a.Severity)), byID(a, b))
		})
	case "id":
		slices.SortStableFunc(out, byID)
	}
	writeJSON(w, http.StatusOK, slicePage(out, offset, limit))
	return nil
}

// render answers a document in a format, buffered so that a failure is
// still a clean JSON error.
func (s *Server) render(w http.ResponseWriter, r *http.Request, name, ctype string, f func(io.Writer, *scanner.Report) error) error {
	if _, err := only(r); err != nil {
		return err
	}
	if f == nil {
		return errorf(http.StatusNotImplemented, "this server cannot write %s", name)
	}
	_, rep, err := s.reportFor(r)
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
	if _, err := only(r); err != nil {
		return err
	}
	if s.cfg.Formats.Enrich == nil {
		return errorf(http.StatusNotImplemented, "this server cannot enrich documents")
	}
	_, rep, err := s.reportFor(r)
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

// decodeBody reads a bounded JSON body into v, strictly.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, "send application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errorf(http.StatusBadRequest, "bad JSON body: %s", truncate(err.Error(), 200))
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "bad JSON body: more than one value")
	}
	return nil
}

// TokenRequest creates or renews a token.
type TokenRequest struct {
	Name    string `json:"name,omitempty"`
	Expires string `json:"expires"`
}

// CreatedToken is a new token with its secret: the only time it is shown.
type CreatedToken struct {
	Token
	Secret string `json:"secret"`
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	if _, err := only(r); err != nil {
		return err
	}
	toks, err := s.tokens.List(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string][]Token{"items": toks})
	return nil
}

func (s *Server) createTokenHandler(w http.ResponseWriter, r *http.Request) error {
	var req TokenRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	if !ValidTokenName(req.Name) {
		return errorf(http.StatusBadRequest, "name must be 1 to %d printable characters", MaxTokenName)
	}
	if _, err := ExpiryAfter(time.Now(), req.Expires); err != nil {
		return errorf(http.StatusBadRequest, "expires must be one of %s", strings.Join(Expiries, ", "))
	}
	tok, secret, err := s.tokens.Create(r.Context(), req.Name, req.Expires)
	if err != nil {
		return err
	}
	s.log.Info("token created", "token_id", tok.ID, "token_name", tok.Name, "expires", tok.Expires)
	writeJSON(w, http.StatusCreated, CreatedToken{Token: tok, Secret: secret})
	return nil
}

// validID is the shape of token ids: 16 hex digits.
func validID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for _, r := range id {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

func (s *Server) renewToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if !validID(id) {
		return errorf(http.StatusNotFound, "no such token")
	}
	var req TokenRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	if req.Name != "" {
		return errorf(http.StatusBadRequest, "renew takes only expires")
	}
	if _, err := ExpiryAfter(time.Now(), req.Expires); err != nil {
		return errorf(http.StatusBadRequest, "expires must be one of %s", strings.Join(Expiries, ", "))
	}
	tok, err := s.tokens.Renew(r.Context(), id, req.Expires)
	if errors.Is(err, ErrTokenNotFound) {
		return errorf(http.StatusNotFound, "no such token")
	}
	if err != nil {
		return err
	}
	s.log.Info("token renewed", "token_id", tok.ID, "expires", tok.Expires)
	writeJSON(w, http.StatusOK, tok)
	return nil
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if !validID(id) {
		return errorf(http.StatusNotFound, "no such token")
	}
	err := s.tokens.Delete(r.Context(), id)
	if errors.Is(err, ErrTokenNotFound) {
		return errorf(http.StatusNotFound, "no such token")
	}
	if err != nil {
		return err
	}
	s.log.Info("token deleted", "token_id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
