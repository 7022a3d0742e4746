package store

import (
	"cmp"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
)

// Limits bound what one image's profile holds in Redis, so that a
// container touching millions of files cannot grow it without end. The
// image's own files are kept one by one, since verdicts need each of them;
// they are bounded only by the ceiling.
type Limits struct {
	// SectionCap is the most members a bounded section keeps: the runtime
	// sections, Drift, the ports and the syscalls. Past it, new members are
	// counted in the Folded hash under their directory ("/tmp/cache/*"),
	// or under "*" for ports and syscalls. The Folded hash itself keeps at
	// most SectionCap patterns; past them, members count under their top
	// directory ("/tmp/**").
	SectionCap int64
	// MaxBytes is the ceiling of the profile's estimated Redis memory,
	// over every section. Past it, new members are counted, not stored,
	// and the profile is truncated: it can no longer show that something
	// was not used.
	MaxBytes int64
}

// DefaultLimits keep a profile within a few megabytes of Redis memory.
var DefaultLimits = Limits{SectionCap: 4096, MaxBytes: 4 << 20}

func (l Limits) orDefault() Limits {
	if l.SectionCap <= 0 {
		l.SectionCap = DefaultLimits.SectionCap
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultLimits.MaxBytes
	}
	return l
}

// memberOverhead estimates what Redis spends on one sorted-set member
// besides its bytes (skiplist node, dict entry, allocator rounding); the
// ceiling is checked against this estimate, kept in the meta hash.
const memberOverhead = 96

// Bounded reports whether the section keeps at most Limits.SectionCap
// members, and folds the rest.
func (s Section) Bounded() bool {
	_, bounded := foldUnder(s, "")
	return bounded
}

// foldUnder returns the pattern that a member of a bounded section folds
// into past the cap, and false for a section kept exactly.
func foldUnder(sec Section, member string) (string, bool) {
	switch sec {
	case RuntimeFilesRead, RuntimeFilesWritten, RuntimeDirsRead, RuntimeDirsWritten:
		return path.Join(path.Dir(member), "*"), true
	case Drift:
		d := ParseDrift(member)
		return DriftMember(d.How, d.Origin, path.Join(path.Dir(d.Path), "*")), true
	case TCPIn, TCPOut, UDPIn, UDPOut, Syscalls:
		return "*", true
	}
	return "", false
}

// coarse is the pattern a fold pattern gives way to when the Folded hash
// is full: its top directory ("/tmp/cache/*" becomes "/tmp/**").
func coarse(pattern string) string {
	head, p := "", pattern
	if i := strings.LastIndexByte(pattern, '|'); i >= 0 { // a Drift pattern
		head, p = pattern[:i+1], pattern[i+1:]
	}
	top, _, nested := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	if !strings.HasPrefix(p, "/") || !nested {
		return pattern
	}
	return head + "/" + top + "/**"
}

// DriftEntry is one member of Drift.
type DriftEntry struct {
	How    string `json:"how"`    // exec or mapped
	Origin string `json:"origin"` // container or volume
	Path   string `json:"path"`
}

// DriftMember is the member of Drift for a file that did not come with the
// image (origin) and was executed or mapped (how).
func DriftMember(how, origin, p string) string { return how + "|" + origin + "|" + p }

// ParseDrift decodes a member of Drift.
func ParseDrift(member string) DriftEntry {
	how, rest, _ := strings.Cut(member, "|")
	origin, p, _ := strings.Cut(rest, "|")
	return DriftEntry{How: how, Origin: origin, Path: p}
}

// FoldedPattern is a pattern that stands for members a section did not
// keep one by one, and how many.
type FoldedPattern struct {
	Section Section `json:"section"`
	Pattern string  `json:"pattern"`
	Count   int64   `json:"count"`
}

func foldedField(sec Section, pattern string) string { return string(sec) + "|" + pattern }

// parseFolded turns the Folded hash into patterns, by section and pattern.
func parseFolded(h map[string]string) []FoldedPattern {
	out := make([]FoldedPattern, 0, len(h))
	for field, v := range h {
		sec, pattern, _ := strings.Cut(field, "|")
		var n int64
		_, _ = fmt.Sscan(v, &n)
		out = append(out, FoldedPattern{Section: Section(sec), Pattern: pattern, Count: n})
	}
	slices.SortFunc(out, func(a, b FoldedPattern) int {
		return cmp.Or(cmp.Compare(a.Section, b.Section), cmp.Compare(a.Pattern, b.Pattern))
	})
	return out
}

// sectionArgs appends one section of d to the update script's arguments:
// the number of groups, then per group its fold field ("" for an exact
// section) and the coarser field it gives way to, its size and its
// (score, member) pairs. Members of a bounded
// section are grouped by the pattern they fold into, so that the script
// folds what is past the cap with one count per pattern.
func sectionArgs(args []any, sec Section, members map[string]int64) []any {
	if !sec.Bounded() {
		args = append(args, 1, "", "", len(members))
		for m, ms := range members {
			args = append(args, ms, m)
		}
		return args
	}
	groups := map[string][]string{}
	for m := range members {
		pattern, _ := foldUnder(sec, m)
		groups[pattern] = append(groups[pattern], m)
	}
	args = append(args, len(groups))
	for _, pattern := range slices.Sorted(maps.Keys(groups)) {
		ms := groups[pattern]
		if pattern == "" {
			args = append(args, "", "", len(ms))
		} else {
			args = append(args, foldedField(sec, pattern), foldedField(sec, coarse(pattern)), len(ms))
		}
		for _, m := range ms {
			args = append(args, members[m], m)
		}
	}
	return args
}
