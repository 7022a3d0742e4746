package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Resolve turns an image reference (a digest, or a name the store has seen)
// into a digest.
func (s *Store) Resolve(ctx context.Context, ref string) (string, error) {
	if ValidDigest(ref) {
		return ref, nil
	}
	d, err := s.rdb.HGet(ctx, NamesKey, ref).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("%w: %s", ErrNotFound, ref)
	}
	if err != nil {
		return "", fmt.Errorf("resolving image %s: %w", ref, err)
	}
	return d, nil
}

// Profile reads the whole profile of one image.
func (s *Store) Profile(ctx context.Context, digest string, now time.Time, lc LearningConfig) (*Profile, error) {
	return s.ProfileSections(ctx, digest, now, lc, Sections...)
}

// ProfileSections reads one image's profile with only the sections named
// (the others are left out of Profile.Sections), so that a reader that
// needs the image's loaded files does not read everything else.
func (s *Store) ProfileSections(ctx context.Context, digest string, now time.Time, lc LearningConfig, secs ...Section) (*Profile, error) {
	keys := Keys(digest)
	var (
		meta, folded *redis.MapStringStringCmd
		members      = map[Set]*redis.StringSliceCmd{}
		sections     = map[Section]*redis.ZSliceCmd{}
	)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		meta = p.HGetAll(ctx, keys.Meta())
		folded = p.HGetAll(ctx, keys.Folded())
		for _, set := range sets {
			members[set] = p.SMembers(ctx, keys.Set(set))
		}
		for _, sec := range secs {
			sections[sec] = p.ZRangeWithScores(ctx, keys.Section(sec), 0, -1)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading profile %s: %w", digest, err)
	}
	h := meta.Val()
	if len(h) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, digest)
	}
	sorted := func(set Set) []string { return slices.Sorted(slices.Values(members[set].Val())) }
	p := &Profile{
		Digest: digest, Names: sorted(Names), Containers: sorted(Containers), NodeNames: sorted(Nodes),
		Sections: map[Section][]Entry{},
	}
	for _, m := range sorted(Workloads) {
		p.Workloads = append(p.Workloads, ParseWorkload(m))
	}
	p.Meta = parseMeta(h, int64(len(p.Containers)), int64(len(p.NodeNames)))
	p.State = p.Meta.State(now, lc)
	p.Confidence = p.Meta.Confidence(now, lc)
	for sec, z := range sections {
		p.Sections[sec] = entries(z.Val())
	}
	p.foldExecSessions()
	p.Folded = parseFolded(folded.Val())
	return p, nil
}

// foldExecSessions adds to each section read what only exec sessions put
// there, and leaves in ExecSessions just those members.
func (p *Profile) foldExecSessions() {
	sessions, ok := p.Sections[ExecSessions]
	if !ok {
		return
	}
	workloads := maps.Clone(p.Sections) // sorted by value, as read
	only := sessions[:0]
	added := map[Section]bool{}
	for _, e := range sessions {
		sec, value, ok := ParseSectionMember(e.Value)
		workload, read := workloads[sec]
		if !ok || !read {
			continue
		}
		if _, found := slices.BinarySearchFunc(workload, value, func(e Entry, v string) int { return strings.Compare(e.Value, v) }); found {
			continue // the workload's too
		}
		p.Sections[sec] = append(p.Sections[sec], Entry{Value: value, FirstSeen: e.FirstSeen})
		added[sec] = true
		only = append(only, e)
	}
	for sec := range added {
		slices.SortFunc(p.Sections[sec], func(a, b Entry) int { return strings.Compare(a.Value, b.Value) })
	}
	p.Sections[ExecSessions] = only
}

// entries are the members of a section, by value.
func entries(zs []redis.Z) []Entry {
	out := make([]Entry, 0, len(zs))
	for _, z := range zs {
		v, _ := z.Member.(string)
		out = append(out, Entry{Value: v, FirstSeen: time.UnixMilli(int64(z.Score))})
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Value, b.Value) })
	return out
}

// Exists reports whether the image with this digest has a profile,
// without reading it.
func (s *Store) Exists(ctx context.Context, digest string) (bool, error) {
	n, err := s.rdb.Exists(ctx, Keys(digest).Meta()).Result()
	if err != nil {
		return false, fmt.Errorf("reading profile %s: %w", digest, err)
	}
	return n > 0, nil
}

// SectionSizes counts the members of every section of one image's profile.
func (s *Store) SectionSizes(ctx context.Context, digest string) (map[Section]int64, error) {
	cards := map[Section]*redis.IntCmd{}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, sec := range Sections {
			cards[sec] = p.ZCard(ctx, Keys(digest).Section(sec))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("counting profile %s: %w", digest, err)
	}
	out := make(map[Section]int64, len(cards))
	for sec, c := range cards {
		out[sec] = c.Val()
	}
	return out, nil
}

// Entries reads one section of one image's profile, by value.
func (s *Store) Entries(ctx context.Context, digest string, sec Section) ([]Entry, error) {
	keys := Keys(digest)
	var (
		exists  *redis.IntCmd
		members *redis.ZSliceCmd
	)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		exists = p.Exists(ctx, keys.Meta())
		members = p.ZRangeWithScores(ctx, keys.Section(sec), 0, -1)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading profile %s: %w", digest, err)
	}
	if exists.Val() == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, digest)
	}
	return entries(members.Val()), nil
}

// Images lists the profiled images, most recently seen first.
func (s *Store) Images(ctx context.Context, now time.Time, lc LearningConfig) ([]ProfileStats, error) {
	out, _, err := s.ImagesPage(ctx, 0, -1, now, lc)
	return out, err
}

// ImagesPage lists at most limit images (all with limit < 0) from offset
// on, most recently seen first, and the number of images in the index.
func (s *Store) ImagesPage(ctx context.Context, offset, limit int64, now time.Time, lc LearningConfig) ([]ProfileStats, int64, error) {
	var (
		total *redis.IntCmd
		page  *redis.StringSliceCmd
	)
	stop := int64(-1)
	if limit >= 0 {
		stop = offset + limit - 1
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		total = p.ZCard(ctx, ImagesKey)
		if limit != 0 {
			page = p.ZRevRange(ctx, ImagesKey, offset, stop)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("listing images: %w", err)
	}
	var digests []string
	if page != nil {
		digests = page.Val()
	}
	out, err := s.summaries(ctx, digests, now, lc)
	return out, total.Val(), err
}

func (s *Store) summaries(ctx context.Context, digests []string, now time.Time, lc LearningConfig) ([]ProfileStats, error) {
	out := make([]ProfileStats, 0, len(digests))
	for _, d := range digests {
		keys := Keys(d)
		var (
			meta                   *redis.MapStringStringCmd
			names                  *redis.StringSliceCmd
			containers, nodes, nfs *redis.IntCmd
		)
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			meta = p.HGetAll(ctx, keys.Meta())
			names = p.SMembers(ctx, keys.Set(Names))
			containers = p.SCard(ctx, keys.Set(Containers))
			nodes = p.SCard(ctx, keys.Set(Nodes))
			nfs = p.ZCard(ctx, keys.Section(FilesRead))
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading image %s: %w", d, err)
		}
		m := parseMeta(meta.Val(), containers.Val(), nodes.Val())
		out = append(out, ProfileStats{
			Digest: d, Names: slices.Sorted(slices.Values(names.Val())), LastSeen: m.LastSeen,
			State: m.State(now, lc), Confidence: m.Confidence(now, lc), Revision: m.Revision, Files: nfs.Val(),
		})
	}
	return out, nil
}

// Stamp is what changes when an image's profile or state changes: a
// reader that keeps the last stamp of each image knows, with one cheap
// round trip, which profiles to read again.
type Stamp struct {
	Digest     string
	LastSeen   time.Time
	Revision   int64
	Workloads  int64
	State      State
	Confidence Confidence
}

// Stamps returns the stamp of every image of the index, in one pipelined
// round trip after the index read.
func (s *Store) Stamps(ctx context.Context, now time.Time, lc LearningConfig) ([]Stamp, error) {
	digests, err := s.rdb.ZRevRange(ctx, ImagesKey, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	type cmds struct {
		meta                         *redis.MapStringStringCmd
		containers, nodes, workloads *redis.IntCmd
	}
	cs := make([]cmds, len(digests))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, d := range digests {
			keys := Keys(d)
			cs[i] = cmds{
				meta: p.HGetAll(ctx, keys.Meta()), containers: p.SCard(ctx, keys.Set(Containers)),
				nodes: p.SCard(ctx, keys.Set(Nodes)), workloads: p.SCard(ctx, keys.Set(Workloads)),
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading image stamps: %w", err)
	}
	out := make([]Stamp, 0, len(digests))
	for i, d := range digests {
		m := parseMeta(cs[i].meta.Val(), cs[i].containers.Val(), cs[i].nodes.Val())
		out = append(out, Stamp{
			Digest: d, LastSeen: m.LastSeen, Revision: m.Revision, Workloads: cs[i].workloads.Val(),
			State: m.State(now, lc), Confidence: m.Confidence(now, lc),
		})
	}
	return out, nil
}
