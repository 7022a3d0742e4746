package scanner

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/inuse-dev/inuse/internal/store"
)

// Reachability says at which level a vulnerability's verdict was found.
type Reachability string

// Reachabilities.
const (
	// ReachFunctionExecuted: a vulnerable function of the vulnerability
	// ran (Go: a probe of the plan was hit).
	ReachFunctionExecuted Reachability = "function_executed"
	// ReachFunctionNotObserved: the package is in use, but every process
	// of its binaries ran with probes on all the vulnerable functions and
	// none was hit, in a done profile.
	ReachFunctionNotObserved Reachability = "function_not_observed"
	// ReachPackage: the package's verdict (no symbol data, not probed).
	ReachPackage Reachability = "package"
)

// FunctionEvidence is a vulnerable function that ran.
type FunctionEvidence struct {
	Binary    string    `json:"binary"`
	Symbol    string    `json:"symbol"`
	FirstSeen time.Time `json:"first_seen"`
}

// PlanStore is where the scanner publishes the Go probe plans that agents
// read, and reads them back (store.Store).
type PlanStore interface {
	WriteGoPlans(ctx context.Context, digest string, plans map[string]store.GoPlan) error
	GoPlans(ctx context.Context, digest string) (map[string]store.GoPlan, error)
}

// goPlan is the probe plan of an image for the matches of one database
// build, and the Go binaries (with a function table) of each package.
type goPlan struct {
	built time.Time
	plans map[string]store.GoPlan
	bins  map[string][]string // package id -> binary paths
}

// goPlanFor returns the image's probe plan for vulns, the matches of the
// database built at built, computing it once per build: the function
// tables are read only when a vulnerability names symbols.
func (s *Scanner) goPlanFor(digest string, im *image, built time.Time, vulns []Vulnerability) (*goPlan, error) {
	s.mu.Lock()
	gp := im.goPlan
	s.mu.Unlock()
	if gp != nil && gp.built.Equal(built) {
		return gp, nil
	}
	gp = &goPlan{built: built, plans: map[string]store.GoPlan{}, bins: map[string][]string{}}
	if slices.ContainsFunc(vulns, func(v Vulnerability) bool { return len(v.Symbols) > 0 }) {
		gbs, err := s.goBinaries(digest)
		if err != nil {
			return nil, err
		}
		gp.bins = goBinariesOf(im.owners, gbs)
		gp.plans = goPlans(gbs, gp.bins, vulns)
	}
	s.mu.Lock()
	im.goPlan = gp
	s.mu.Unlock()
	return gp, nil
}

// goBinariesOf maps each package id to the Go binaries with a function
// table it is compiled into.
func goBinariesOf(owners *Owners, gbs map[string]GoBinary) map[string][]string {
	out := map[string][]string{}
	for path, idx := range owners.Binaries {
		if _, ok := gbs[path]; !ok {
			continue
		}
		for _, i := range idx {
			id := owners.Packages[i].ID
			out[id] = append(out[id], path)
		}
	}
	for _, paths := range out {
		slices.Sort(paths)
	}
	return out
}

// goPlans is the probe plan for vulns: every Go binary that a
// vulnerability with symbols is compiled into gets the entries and
// inlined copies of those symbols; a binary that links none of them gets
// an empty plan, which still lets the agent vouch that none ran.
func goPlans(gbs map[string]GoBinary, bins map[string][]string, vulns []Vulnerability) map[string]store.GoPlan {
	type key struct {
		path    string
		offset  uint64
		inlined bool
		sym     string
	}
	probes := map[key][]string{}
	plans := map[string]store.GoPlan{}
	for _, v := range vulns {
		if len(v.Symbols) == 0 {
			continue
		}
		for _, path := range bins[v.PackageID] {
			gb := gbs[path]
			plans[path] = store.GoPlan{BuildID: gb.BuildID, Probes: []store.GoProbe{}}
			for _, sym := range v.Symbols {
				pts := gb.Funcs[sym]
				for i, offs := range [][]uint64{pts.Entries, pts.Inlined} {
					for _, off := range offs {
						k := key{path, off, i == 1, sym}
						if !slices.Contains(probes[k], v.ID) {
							probes[k] = append(probes[k], v.ID)
						}
					}
				}
			}
		}
	}
	for k, ids := range probes {
		p := plans[k.path]
		slices.Sort(ids)
		p.Probes = append(p.Probes, store.GoProbe{Offset: k.offset, Symbol: k.sym, Inlined: k.inlined, Vulns: ids})
		plans[k.path] = p
	}
	for path, p := range plans {
		slices.SortFunc(p.Probes, func(a, b store.GoProbe) int {
			return cmp.Or(cmp.Compare(a.Offset, b.Offset), cmp.Compare(a.Symbol, b.Symbol))
		})
		plans[path] = p
	}
	return plans
}

// publishGoPlans writes the image's plan when it differs from what this
// scanner last wrote, and returns the stored plan (with its since); nil
// without a plan store.
func (s *Scanner) publishGoPlans(ctx context.Context, digest string, plans map[string]store.GoPlan) (map[string]store.GoPlan, error) {
	if s.cfg.Plans == nil {
		return nil, nil
	}
	b, err := json.Marshal(plans)
	if err != nil {
		return nil, fmt.Errorf("encoding the probe plan: %w", err)
	}
	sum := sha256.Sum256(b)
	s.mu.Lock()
	last, ok := s.published[digest]
	s.mu.Unlock()
	if !ok || last != sum {
		// An empty plan replaces one this scanner wrote; with none written
		// there is nothing to probe and nothing of ours to replace.
		if len(plans) > 0 || ok {
			if err := s.cfg.Plans.WriteGoPlans(ctx, digest, plans); err != nil {
				return nil, err
			}
		}
		s.mu.Lock()
		s.published[digest] = sum
		s.mu.Unlock()
	}
	return s.cfg.Plans.GoPlans(ctx, digest)
}

// reachability refines the verdicts of vulns that have Go symbols with
// what the agent's probes saw (the Functions and Probed sections); pkgs
// holds the package verdicts.
func reachability(vulns []Vulnerability, pkgs map[string]PackageVerdict, bins map[string][]string, stored map[string]store.GoPlan, p *store.Profile) {
	if p == nil {
		return
	}
	fns := entriesByValue(p.Sections[store.Functions])
	probed := entriesByValue(p.Sections[store.Probed])
	execs := entriesByValue(p.Sections[store.Exec])
	seeded := entriesByValue(p.Sections[store.Seeded])
	for i := range vulns {
		v := &vulns[i]
		if len(v.Symbols) == 0 {
			continue
		}
		for _, path := range bins[v.PackageID] {
			for _, sym := range v.Symbols {
				if e, ok := fns[store.FunctionMember(path, sym)]; ok {
					v.Functions = append(v.Functions, FunctionEvidence{Binary: path, Symbol: sym, FirstSeen: e.FirstSeen})
				}
			}
		}
		if len(v.Functions) > 0 {
			slices.SortFunc(v.Functions, func(a, b FunctionEvidence) int { return a.FirstSeen.Compare(b.FirstSeen) })
			v.Reachability, v.Verdict = ReachFunctionExecuted, InUse
			continue
		}
		pv := pkgs[v.PackageID]
		if p.State != store.Done || pv.Verdict != InUse {
			continue
		}
		// Every binary of the package that ran must have run under the
		// current plan's probes from its first process on.
		vouched := 0
		for _, ev := range pv.Evidence {
			plan, ok := stored[ev.Path]
			pr, probedOK := probed[store.ProbedMember(ev.Path, plan.BuildID)]
			ex, execOK := execs[ev.Path]
			_, wasSeeded := seeded[store.SectionMember(store.Exec, ev.Path)]
			if !ok || !probedOK || wasSeeded || pr.FirstSeen.UnixMilli() < plan.Since || execOK && pr.FirstSeen.After(ex.FirstSeen) {
				vouched = -1
				break
			}
			vouched++
		}
		if vouched > 0 {
			v.Reachability, v.Verdict = ReachFunctionNotObserved, NotObserved
		}
	}
}

func entriesByValue(es []store.Entry) map[string]store.Entry {
	m := make(map[string]store.Entry, len(es))
	for _, e := range es {
		m[e.Value] = e
	}
	return m
}
