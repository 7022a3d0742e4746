package api

import (
	"cmp"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/inuse-dev/inuse/scanner"
)

// reportFor returns the report of the image of the route, or the error
// that says why there is none yet. The report comes from the background
// scanner's cache: the profile itself is not read.
func (s *Server) reportFor(r *http.Request) (*scanner.Report, error) {
	digest, err := s.profiledDigest(r)
	if err != nil {
		return nil, err
	}
	exclude, err := s.excludesExecSessions(r)
	if err != nil {
		return nil, err
	}
	rep, status, err := s.cache.reportOf(r.Context(), digest)
	switch status {
	case statusReady:
		if exclude {
			return rep.WithoutExecSessions(), nil
		}
		return rep, nil
	case statusUnavailable:
		return nil, errorf(http.StatusNotImplemented, "this server has no scanner")
	case statusFailed:
		return nil, errorf(http.StatusServiceUnavailable, "scanning the image failed: %s", scanFailure(err))
	}
	return nil, errorf(http.StatusServiceUnavailable, "the image's report is not ready yet")
}

// execSessionsParam chooses whether what exec sessions loaded counts
// (include, exclude); the server's configuration decides without it.
const execSessionsParam = "exec_sessions"

// excludesExecSessions reads ?exec_sessions=.
func (s *Server) excludesExecSessions(r *http.Request) (bool, error) {
	switch v := r.URL.Query().Get(execSessionsParam); v {
	case "":
		return s.cfg.ExcludeExecSessions, nil
	case "include", "exclude":
		return v == "exclude", nil
	}
	return false, errorf(http.StatusBadRequest, "%s must be include or exclude", execSessionsParam)
}

// reportQuery is the query of a list drawn from a report: paging, a
// verdict filter and the route's own parameters.
type reportQuery struct {
	listQuery
	keep func(scanner.Verdict) bool
}

// parseReportList checks and reads the query of a report list.
func parseReportList(r *http.Request, known ...string) (reportQuery, error) {
	lq, err := parseList(r, append([]string{"verdict", "in_use", execSessionsParam}, known...)...)
	if err != nil {
		return reportQuery{}, err
	}
	keep, err := verdictFilter(lq.Values)
	if err != nil {
		return reportQuery{}, err
	}
	return reportQuery{listQuery: lq, keep: keep}, nil
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
	q, err := parseReportList(r, "type")
	if err != nil {
		return err
	}
	rep, err := s.reportFor(r)
	if err != nil {
		return err
	}
	var out []scanner.Package
	for _, p := range rep.Packages {
		if q.keep(p.Verdict) && (!q.Has("type") || p.Type == q.Get("type")) {
			out = append(out, p)
		}
	}
	writeJSON(w, http.StatusOK, slicePage(out, q.listQuery))
	return nil
}

func (s *Server) getVulnerabilities(w http.ResponseWriter, r *http.Request) error {
	q, err := parseReportList(r, "severity", "sort")
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
	rep, err := s.reportFor(r)
	if err != nil {
		return err
	}
	var out []scanner.Vulnerability
	for _, v := range rep.Vulnerabilities {
		if q.keep(v.Verdict) && (sevs == nil || slices.Contains(sevs, strings.ToLower(v.Severity))) {
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
	writeJSON(w, http.StatusOK, slicePage(out, q.listQuery))
	return nil
}
