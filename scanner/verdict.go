package scanner

import (
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/inuse-dev/inuse/internal/store"
)

// Verdict says whether a package is used at runtime.
type Verdict string

// Verdicts.
const (
	// InUse: a file the package owns was executed, opened or mapped.
	InUse Verdict = "in_use"
	// NotObserved: the profile is done and nothing of the package loaded.
	NotObserved Verdict = "not_observed"
	// Unknown: nothing of it loaded yet while the profile still learns, or
	// no reliable file mapping for this kind of package.
	Unknown Verdict = "unknown"
)

// VerdictRank puts in-use findings first within a severity.
func VerdictRank(v Verdict) int {
	switch v {
	case InUse:
		return 0
	case Unknown:
		return 1
	}
	return 2
}

// How a file was loaded.
type How string

// Ways a file is loaded, named as the profile sections they come from.
const (
	// HowExec: executed (a binary, a #! script, the ELF loader).
	HowExec How = "exec"
	// HowRead: a regular file opened for reading.
	HowRead How = "read"
	// HowMapped: mapped executable (a shared library, dlopen).
	HowMapped How = "mapped"
)

// SourceProc is the Source of evidence that the agent read from /proc:
// the file was loaded by a process that ran before its container was
// tracked, so it was first seen when the agent started, not when it
// happened.
const SourceProc = "proc"

// SourceExecSession is the Source of evidence that only exec sessions
// (docker exec, kubectl exec) gave: real use, but maybe a person's
// debugging rather than the workload's code path.
const SourceExecSession = "exec_session"

// Evidence is one loaded file that puts a package in use.
type Evidence struct {
	Path      string    `json:"path"`
	How       How       `json:"how"`
	FirstSeen time.Time `json:"first_seen"`
	// Source is SourceProc for a file read from /proc, SourceExecSession
	// for one only exec sessions loaded; empty for one the sensor saw the
	// workload load.
	Source string `json:"source,omitempty"`
}

// PackageVerdict is the verdict of one package and the loaded files that
// support it.
type PackageVerdict struct {
	Verdict  Verdict
	Evidence []Evidence
	// WithoutExecSessions is the verdict without exec sessions' evidence,
	// when it differs.
	WithoutExecSessions Verdict
}

// loadSections are the sections that load a file, and how. Writes and
// directory reads are left out on purpose: writing a log under a package's
// directory or listing it runs none of its code.
var loadSections = []struct {
	section store.Section
	how     How
}{
	{store.Exec, HowExec},
	{store.Mapped, HowMapped},
	{store.FilesRead, HowRead},
}

// Verdicts gives every package id of the SBOM its verdict and evidence
// from the profile; p == nil means no profile yet (all unknown).
func (o *Owners) Verdicts(p *store.Profile) map[string]PackageVerdict {
	evidence := make([][]Evidence, len(o.Packages))
	if p != nil {
		dirs := o.dirIndex()
		sources := map[string]string{}
		for _, s := range []struct {
			section store.Section
			source  string
		}{{store.Seeded, SourceProc}, {store.ExecSessions, SourceExecSession}} {
			for _, e := range p.Sections[s.section] {
				sources[e.Value] = s.source
			}
		}
		for _, ls := range loadSections {
			for _, e := range p.Sections[ls.section] {
				source := sources[store.SectionMember(ls.section, e.Value)]
				o.match(e, ls.how, dirs, func(i int, canonical string) {
					evidence[i] = append(evidence[i], Evidence{Path: canonical, How: ls.how, FirstSeen: e.FirstSeen, Source: source})
				})
			}
		}
	}
	out := make(map[string]PackageVerdict, len(o.Packages))
	for i, op := range o.Packages {
		// Still learning, events lost, no profile, or no file mapping
		// for this package: absence of evidence says nothing yet.
		absent := Unknown
		if p != nil && p.State == store.Done && op.HasFiles {
			absent = NotObserved
		}
		if len(evidence[i]) == 0 {
			out[op.ID] = PackageVerdict{Verdict: absent}
			continue
		}
		v := PackageVerdict{Verdict: InUse, Evidence: tidy(evidence[i])}
		if !slices.ContainsFunc(v.Evidence, func(e Evidence) bool { return e.Source != SourceExecSession }) {
			v.WithoutExecSessions = absent
		}
		out[op.ID] = v
	}
	return out
}

// match calls hit for every package that one loaded file puts in use: a
// map lookup for the file (and, for a .pyc, its source), one for the
// binary, and a walk down the path's parents.
func (o *Owners) match(e store.Entry, how How, dirs map[string]bool, hit func(i int, p string)) {
	p := path.Clean(e.Value)
	for _, i := range o.Files[p] {
		hit(i, p)
	}
	if src, ok := pycSource(p); ok {
		for _, i := range o.Files[src] {
			hit(i, p)
		}
	}
	if how != HowRead {
		for _, i := range o.Binaries[p] {
			hit(i, p)
		}
	}
	// Top-down through the directories that are owned or lead to one, so
	// that a path outside every package directory costs one lookup; the
	// deepest owner wins: node_modules/a/node_modules/b/x.js is b's, not a's.
	deepest := ""
	for i := 1; i < len(p); {
		j := strings.IndexByte(p[i:], '/')
		if j < 0 {
			break
		}
		d := p[:i+j]
		owned, ok := dirs[d]
		if !ok {
			break
		}
		if owned {
			deepest = d
		}
		i += j + 1
	}
	if deepest != "" {
		for _, i := range o.Dirs[deepest] {
			hit(i, p)
		}
	}
}

// dirIndex holds every owned directory (true) and each of its ancestors
// (false), for the top-down walk of match.
func (o *Owners) dirIndex() map[string]bool {
	idx := make(map[string]bool, 4*len(o.Dirs))
	for d := range o.Dirs {
		idx[d] = true
		for a := path.Dir(d); a != "/" && a != "."; a = path.Dir(a) {
			if _, ok := idx[a]; !ok {
				idx[a] = false
			}
		}
	}
	return idx
}

// tidy sorts evidence by first sight and drops repeats of the same file
// loaded the same way.
func tidy(ev []Evidence) []Evidence {
	sort.Slice(ev, func(a, b int) bool {
		if !ev[a].FirstSeen.Equal(ev[b].FirstSeen) {
			return ev[a].FirstSeen.Before(ev[b].FirstSeen)
		}
		if ev[a].Path != ev[b].Path {
			return ev[a].Path < ev[b].Path
		}
		return ev[a].How < ev[b].How
	})
	out := ev[:0]
	seen := make(map[Evidence]struct{}, len(ev))
	for _, e := range ev {
		k := Evidence{Path: e.Path, How: e.How}
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		out = append(out, e)
	}
	return out
}
