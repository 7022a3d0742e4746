package scanner

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/inuse-dev/inuse/internal/termsafe"
)

// verdictLabels are what the table shows in its In Use column.
var verdictLabels = map[Verdict]string{InUse: "yes", NotObserved: "no", Unknown: "?"}

// WriteTable writes the vulnerabilities with an In Use column, then the
// summary. Every string an image made (names, versions) is written
// escaped (termsafe.String): a terminal never gets its control sequences. A verdict found at function level says so: "yes (function)", a
// vulnerable function ran; "no (function)", the package ran but none of
// its vulnerable functions did.
func WriteTable(w io.Writer, rep *Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tVULNERABILITY\tPACKAGE\tVERSION\tFIXED IN\tIN USE")
	for _, v := range rep.Vulnerabilities {
		inUse := verdictLabels[v.Verdict]
		if v.Reachability == ReachFunctionExecuted || v.Reachability == ReachFunctionNotObserved {
			inUse += " (function)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", termsafe.String(v.Severity), termsafe.String(v.ID),
			termsafe.String(v.PackageName), termsafe.String(v.PackageVersion), termsafe.String(strings.Join(v.FixedIn, ",")), inUse)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	s := rep.Summary
	fmt.Fprintln(w)
	profile := "no profile (every package unknown)"
	if rep.Profile.Found {
		profile = fmt.Sprintf("%s, confidence %s, revision %d", termsafe.String(rep.Profile.State), termsafe.String(rep.Profile.Confidence), rep.Profile.Revision)
	}
	fmt.Fprintf(w, "image:      %s %s\nprofile:    %s\n", termsafe.String(rep.Name), termsafe.String(rep.Digest), profile)
	fmt.Fprintf(w, "total:      %d vulnerabilities, %d in use, %d not observed, %d unknown\n", s.Total, s.InUse, s.NotObserved, s.Unknown)
	fmt.Fprintf(w, "reduction:  %.1f%%\n", s.Reduction)
	sevs := make([]string, 0, len(s.BySeverity))
	for sev := range s.BySeverity {
		sevs = append(sevs, sev)
	}
	slices.SortFunc(sevs, func(a, b string) int { return SeverityRank(a) - SeverityRank(b) })
	for _, sev := range sevs {
		c := s.BySeverity[sev]
		fmt.Fprintf(w, "  %-10s %d total, %d in use\n", termsafe.String(sev)+":", c.Total, c.InUse)
	}
	return nil
}
