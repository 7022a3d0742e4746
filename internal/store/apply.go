package store

import (
	"context"
	_ "embed" // apply.lua
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// applySource is the update script: it merges one delta into one image's
// keys, atomically (all keys share the image's hash tag). Its header says
// what it takes and returns.
//
//go:embed apply.lua
var applySource string

var applyScript = redis.NewScript(applySource)

// Apply merges deltas (by image digest) into the store with one pipelined
// round trip for the updates and one for the derived state, and returns
// the resulting meta of each image. On error nothing is known to be
// written: the caller keeps the deltas and applies them again later, which
// the set semantics make safe for members (an image written before the
// error has its counters, events and losses, added again).
func (s *Store) Apply(ctx context.Context, deltas map[string]*Delta, now time.Time, lc LearningConfig) (map[string]Meta, error) {
	digests := make([]string, 0, len(deltas))
	for d := range deltas {
		digests = append(digests, d)
	}
	slices.Sort(digests)
	nowMS := now.UnixMilli()
	cmds := make([]*redis.Cmd, len(digests))
	run := func(which []int, eval func(ctx context.Context, c redis.Scripter, keys []string, args ...any) *redis.Cmd) error {
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range which {
				cmds[i] = eval(ctx, p, Keys(digests[i]).all(), scriptArgs(deltas[digests[i]], nowMS, s.limits)...)
			}
			return nil
		})
		return err
	}
	all := make([]int, len(digests))
	for i := range all {
		all[i] = i
	}
	err := run(all, applyScript.EvalSha)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Send again only what the server did not know the script for:
		// another writer may have loaded it meanwhile, and the images
		// updated since must not have their counters added twice.
		var again []int
		for i, c := range cmds {
			switch {
			case c.Err() == nil:
			case redis.HasErrorPrefix(c.Err(), "NOSCRIPT"):
				again = append(again, i)
			default:
				return nil, fmt.Errorf("applying profile updates: %w", c.Err())
			}
		}
		err = run(again, applyScript.Eval)
	}
	if err != nil {
		return nil, fmt.Errorf("applying profile updates: %w", err)
	}

	metas := map[string]Meta{}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, digest := range digests {
			m, err := parseScriptResult(cmds[i])
			if err != nil {
				return err
			}
			metas[digest] = m
			keys := Keys(digest)
			p.HSet(ctx, keys.Meta(), FieldLearningState, string(m.State(now, lc)), FieldConfidence, string(m.Confidence(now, lc)))
			p.ZAddGT(ctx, ImagesKey, redis.Z{Score: float64(m.LastSeen.UnixMilli()), Member: digest})
			for name := range deltas[digest].Sets[Names] {
				p.HSet(ctx, NamesKey, name, digest)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("updating profile state: %w", err)
	}
	return metas, nil
}

func scriptArgs(d *Delta, now int64, l Limits) []any {
	first := int64(math.MaxInt64)
	for _, m := range d.Sections {
		for _, ms := range m {
			first = min(first, ms)
		}
	}
	if first == math.MaxInt64 {
		first = now
	}
	args := []any{now, first, d.Events, d.Losses, d.PartialContainers, d.GuardPauses, l.SectionCap, l.MaxBytes, memberOverhead}
	for _, set := range sets {
		args = append(args, len(d.Sets[set]))
		for v := range d.Sets[set] {
			args = append(args, v)
		}
	}
	for _, sec := range applyOrder {
		args = sectionArgs(args, sec, d.Sections[sec])
	}
	return args
}

func parseScriptResult(cmd *redis.Cmd) (Meta, error) {
	res, err := cmd.Slice()
	if err != nil {
		return Meta{}, fmt.Errorf("applying profile update: %w", err)
	}
	if len(res) != 3 {
		return Meta{}, fmt.Errorf("applying profile update: unexpected reply %v", res)
	}
	flat, _ := res[0].([]any)
	h := map[string]string{}
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		v, _ := flat[i+1].(string)
		h[k] = v
	}
	containers, _ := res[1].(int64)
	nodes, _ := res[2].(int64)
	return parseMeta(h, containers, nodes), nil
}
