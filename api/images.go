package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// ReportSummary is what an image's listing says of its report.
type ReportSummary struct {
	GeneratedAt     time.Time                   `json:"generated_at"`
	Distro          scanner.Distro              `json:"distro"`
	Packages        int                         `json:"packages"`
	PackagesInUse   int                         `json:"packages_in_use"`
	Vulnerabilities scanner.VulnerabilityCounts `json:"vulnerabilities"`
	// InUsePercent is the share of vulnerabilities in use.
	InUsePercent float64 `json:"in_use_percent"`
}

// ImageSummary is one image of the images list.
type ImageSummary struct {
	store.ProfileStats
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

func (s *Server) imageSummary(ctx context.Context, stats store.ProfileStats) ImageSummary {
	rep, status, err := s.cache.reportOf(ctx, stats.Digest)
	if rep != nil && s.cfg.ExcludeExecSessions {
		rep = rep.WithoutExecSessions()
	}
	out := ImageSummary{ProfileStats: stats, ReportStatus: string(status), Report: summarize(rep)}
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
	q, err := parseList(r)
	if err != nil {
		return err
	}
	stats, total, err := s.cfg.Store.ImagesPage(r.Context(), q.offset, q.limit, time.Now(), s.cfg.Learning)
	if err != nil {
		return err
	}
	items := make([]ImageSummary, 0, len(stats))
	for _, st := range stats {
		items = append(items, s.imageSummary(r.Context(), st))
	}
	writeJSON(w, http.StatusOK, pageOf(items, total, q))
	return nil
}

// refDigest resolves the {ref} of a route (a digest, or a name the store
// has seen) to a digest.
func (s *Server) refDigest(r *http.Request) (string, error) {
	ref := r.PathValue("ref")
	if ref == "" || len(ref) > 512 || !utf8Printable(ref) {
		return "", errorf(http.StatusBadRequest, "bad image reference")
	}
	digest, err := s.cfg.Store.Resolve(r.Context(), ref)
	if errors.Is(err, store.ErrNotFound) {
		return "", noProfile(ref)
	}
	return digest, err
}

// profiledDigest is refDigest for the routes that answer without reading
// the profile: it checks only that there is one.
func (s *Server) profiledDigest(r *http.Request) (string, error) {
	digest, err := s.refDigest(r)
	if err != nil {
		return "", err
	}
	ok, err := s.cfg.Store.Exists(r.Context(), digest)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", noProfile(r.PathValue("ref"))
	}
	return digest, nil
}

func noProfile(ref string) error {
	return errorf(http.StatusNotFound, "no profile for image %s", truncate(ref, 100))
}

func utf8Printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			return false
		}
	}
	return true
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
	Sections map[store.Section]int `json:"sections"`
	// Folded are the patterns that bounded sections count members under
	// past their cap (see meta.truncated for the profile's ceiling).
	Folded       []store.FoldedPattern `json:"folded"`
	ReportStatus string                `json:"report_status"`
	ReportError  string                `json:"report_error,omitempty"`
	Report       *ReportSummary        `json:"report,omitempty"`
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request) error {
	if _, err := only(r); err != nil {
		return err
	}
	digest, err := s.refDigest(r)
	if err != nil {
		return err
	}
	p, err := s.cfg.Store.ProfileSections(r.Context(), digest, time.Now(), s.cfg.Learning)
	if errors.Is(err, store.ErrNotFound) {
		return noProfile(r.PathValue("ref"))
	}
	if err != nil {
		return err
	}
	sizes, err := s.cfg.Store.SectionSizes(r.Context(), digest)
	if err != nil {
		return err
	}
	rep, status, rerr := s.cache.reportOf(r.Context(), p.Digest)
	if rep != nil && s.cfg.ExcludeExecSessions {
		rep = rep.WithoutExecSessions()
	}
	d := ImageDetail{
		Digest: p.Digest, Names: nonNil(p.Names), State: p.State, Confidence: p.Confidence, Meta: p.Meta,
		Workloads: nonNil(p.Workloads), Nodes: nonNil(p.NodeNames), Sections: map[store.Section]int{}, Folded: nonNil(p.Folded),
		ReportStatus: string(status), Report: summarize(rep),
	}
	if rerr != nil {
		d.ReportError = scanFailure(rerr)
	}
	for sec, n := range sizes {
		d.Sections[sec] = int(n)
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) getSection(w http.ResponseWriter, r *http.Request) error {
	q, err := parseList(r)
	if err != nil {
		return err
	}
	sec := store.Section(r.PathValue("section"))
	if !slices.Contains(store.Sections, sec) {
		return errorf(http.StatusNotFound, "no section %q (want one of %s)", truncate(string(sec), 40), sectionNames())
	}
	digest, err := s.refDigest(r)
	if err != nil {
		return err
	}
	entries, err := s.cfg.Store.Entries(r.Context(), digest, sec)
	if errors.Is(err, store.ErrNotFound) {
		return noProfile(r.PathValue("ref"))
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, slicePage(entries, q))
	return nil
}

func sectionNames() string {
	var names []string
	for _, s := range store.Sections {
		names = append(names, string(s))
	}
	return strings.Join(names, ", ")
}
