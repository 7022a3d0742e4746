package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The scanner tells the agent which functions of an image's Go binaries are
// vulnerable, and where they are, through one hash per image: the probe
// plan. The agent reads it and answers in two sections of the profile:
// Functions (a planned function ran) and Probed (every probe of a binary's
// plan was in place before one of its processes ran its code).

// GoPlan is the hash of the image's probe plan: field = absolute path of a
// Go binary inside the image, value = the JSON of its GoPlan.
func (k ImageKeys) GoPlan() string { return k.key("goplan") }

// GoPlan is where to probe one Go binary.
type GoPlan struct {
	// BuildID is the binary's Go build id (.note.go.buildid). The agent
	// compares it with the id of the file a process executes, and does not
	// probe a file with another build: the plan's offsets are for this one.
	BuildID string    `json:"build_id"`
	Probes  []GoProbe `json:"probes"`
	// Since is when a plan with these probes was first written for this
	// build (unix ms, set by WriteGoPlans, kept while the probes stay the
	// same). A Probed member scored before it vouches for an older plan,
	// so the scanner does not take it for this one.
	Since int64 `json:"since,omitempty"`
}

// GoProbe is one probe point of a vulnerable function: its entry, or the
// first instruction of one place where it was inlined into a caller.
type GoProbe struct {
	// Offset is the file offset of the instruction, as a uprobe takes it.
	Offset uint64 `json:"offset"`
	// Symbol is the function as "<import path>.<symbol>", the symbol as
	// the Go vulnerability database names it (a method as Type.Method,
	// whatever its receiver; no type parameters), e.g.
	// golang.org/x/text/language.ParseAcceptLanguage or
	// net/http.conn.serve. Several probes (entry, inlined copies, generic
	// shapes) may share one.
	Symbol string `json:"symbol"`
	// Inlined is set on a probe at an inlined instance (not the entry).
	Inlined bool `json:"inlined,omitempty"`
	// Vulns are the ids of the vulnerabilities whose vulnerable symbols
	// include Symbol.
	Vulns []string `json:"vulns"`
}

// FunctionMember is the member of Functions for symbol run by the binary at
// path.
func FunctionMember(path, symbol string) string { return path + "|" + symbol }

// ProbedMember is the member of Probed for the binary at path with this
// build id.
func ProbedMember(path, buildID string) string { return path + "|" + buildID }

// SplitMember splits a Functions or Probed member into the binary's path
// and the symbol or build id (neither of which holds a '|').
func SplitMember(member string) (path, value string, ok bool) {
	i := strings.LastIndexByte(member, '|')
	if i < 0 {
		return "", "", false
	}
	return member[:i], member[i+1:], true
}

// WriteGoPlans replaces the probe plan of the image with plans (by binary
// path), in one transaction; no plans deletes it. It sets each plan's
// Since: kept from the stored plan of the same build with the same
// probes, now otherwise.
func (s *Store) WriteGoPlans(ctx context.Context, digest string, plans map[string]GoPlan) error {
	old, err := s.GoPlans(ctx, digest)
	if err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	fields := make([]any, 0, 2*len(plans))
	for path, p := range plans {
		p.Since = now
		if o, ok := old[path]; ok && o.BuildID == p.BuildID && slices.EqualFunc(o.Probes, p.Probes, sameProbe) {
			p.Since = o.Since
		}
		b, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("encoding the probe plan of %s: %w", path, err)
		}
		fields = append(fields, path, b)
	}
	key := Keys(digest).GoPlan()
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		if len(fields) > 0 {
			p.HSet(ctx, key, fields...)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing the probe plan of %s: %w", digest, err)
	}
	return nil
}

func sameProbe(a, b GoProbe) bool {
	return a.Offset == b.Offset && a.Symbol == b.Symbol && a.Inlined == b.Inlined && slices.Equal(a.Vulns, b.Vulns)
}

// GoPlans reads the probe plan of the image, by binary path; an image
// without a plan has none.
func (s *Store) GoPlans(ctx context.Context, digest string) (map[string]GoPlan, error) {
	h, err := s.rdb.HGetAll(ctx, Keys(digest).GoPlan()).Result()
	if err != nil {
		return nil, fmt.Errorf("reading the probe plan of %s: %w", digest, err)
	}
	plans := make(map[string]GoPlan, len(h))
	for path, v := range h {
		var p GoPlan
		if err := json.Unmarshal([]byte(v), &p); err != nil {
			return nil, fmt.Errorf("decoding the probe plan of %s in %s: %w", path, digest, err)
		}
		plans[path] = p
	}
	return plans, nil
}
