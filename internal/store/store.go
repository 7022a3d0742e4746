package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotFound is returned for an image without a profile.
var ErrNotFound = errors.New("store: no profile for this image")

// Store reads and writes profiles in Redis or Redis Cluster.
type Store struct {
	rdb    redis.UniversalClient
	limits Limits
}

// Open connects to the Redis at url: redis://host:port[/db] for one server,
// redis://host:port?addr=host2:port&addr=host3:port for a cluster.
func Open(rawURL string) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parsing redis URL: %w", err)
	}
	if u.Query().Has("addr") {
		opts, err := redis.ParseClusterURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("parsing redis cluster URL: %w", err)
		}
		opts.DialerRetries = failFastDials
		return &Store{rdb: redis.NewClusterClient(opts), limits: DefaultLimits}, nil
	}
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parsing redis URL: %w", err)
	}
	opts.DialerRetries = failFastDials
	opts.MaxRetries = failFastRetries
	return &Store{rdb: redis.NewClient(opts), limits: DefaultLimits}, nil
}

// A flush that cannot reach Redis fails fast: the collector keeps the
// deltas and tries again at the next flush, which is a retry already.
const (
	failFastDials   = 1
	failFastRetries = -1
)

// SetLimits sets the bounds that this store's writes keep profiles in;
// zero fields keep their defaults. Set it before writing.
func (s *Store) SetLimits(l Limits) { s.limits = l.orDefault() }

// Close closes the connections.
func (s *Store) Close() error { return s.rdb.Close() }

// Connect opens the store at rawURL and checks, within 5 s, that it answers.
func Connect(ctx context.Context, rawURL string) (*Store, error) {
	st, err := Open(rawURL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := st.Ping(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("connecting to redis: %w", err)
	}
	return st, nil
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// applyScript merges one delta into one image's keys, atomically (all keys
// share the image's hash tag). KEYS: meta, the plain sets, the folded
// hash, the sections, in ImageKeys.all order. ARGV: now, first, events,
// losses, partial, pauses, the section cap, the ceiling in bytes, the
// per-member overhead; then for each plain set a count and its members;
// then for each section its groups (sectionArgs): a fold field ("" for an
// exact section), the coarser field it gives way to when the folded hash
// holds cap fields, a count and (score, member) pairs. ZADD LT keeps the
// earliest first-seen time, so that replays and other nodes merge to the
// same result. A bounded section keeps at most cap members and counts the
// new members past it under the group's fold field; past the ceiling
// nothing new is stored, only counted, and the profile is truncated. The
// counts count reports: a file folded on two nodes counts twice. It returns the meta
// hash and the sizes of the containers and nodes sets.
var applyScript = redis.NewScript(`
local meta, folded = KEYS[1], KEYS[6]
local now, first = tonumber(ARGV[1]), tonumber(ARGV[2])
local cap, ceiling, overhead = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local bytes = tonumber(redis.call('HGET', meta, 'bytes') or '0')
local dropped = 0
local i = 10
for k = 2, 5 do -- the plain sets
  local n = tonumber(ARGV[i]); i = i + 1
  local s = i
  while s < i + n do
    local e = math.min(s + 999, i + n - 1)
    redis.call('SADD', KEYS[k], unpack(ARGV, s, e))
    s = e + 1
  end
  i = i + n
end
-- unseen counts the members of the pairs ARGV[s..e] that key does not hold.
local function unseen(key, s, e)
  local n = 0
  while s <= e do
    local c = math.min(s + 1999, e)
    local members = {}
    for j = s + 1, c, 2 do members[#members + 1] = ARGV[j] end
    for _, score in ipairs(redis.call('ZMSCORE', key, unpack(members))) do
      if not score then n = n + 1 end
    end
    s = c + 1
  end
  return n
end
-- zadd adds the pairs ARGV[s..e] to key a chunk at a time while the profile
-- is under its ceiling, and counts the new members past it as dropped.
local function zadd(key, s, e)
  local added = 0
  while s <= e do
    if bytes >= ceiling then
      dropped = dropped + unseen(key, s, e)
      break
    end
    -- no more members than fit below the ceiling, at a typical size
    local c = math.min(s + 1999, e, s + 2 * math.ceil((ceiling - bytes) / (overhead + 64)) - 1)
    local n = redis.call('ZADD', key, 'LT', unpack(ARGV, s, c))
    if n > 0 then
      local len = 0
      for j = s + 1, c, 2 do len = len + #ARGV[j] end
      bytes = bytes + n * (overhead + len * 2 / (c - s + 1))
    end
    added = added + n
    s = c + 1
  end
  return added
end
local added = 0
for k = 7, #KEYS do -- the sections
  local groups = tonumber(ARGV[i]); i = i + 1
  local card
  for g = 1, groups do
    local field, coarse, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]) * 2
    i = i + 3
    if field == '' then
      added = added + zadd(KEYS[k], i, i + n - 1)
    else
      card = card or redis.call('ZCARD', KEYS[k])
      local keep = math.min(math.max(cap - card, 0) * 2, n)
      local a = zadd(KEYS[k], i, i + keep - 1)
      card = card + a
      added = added + a
      if keep < n then
        local over = unseen(KEYS[k], i + keep, i + n - 1)
        if over > 0 then
          if redis.call('HEXISTS', folded, field) == 0 and redis.call('HLEN', folded) >= cap then
            field = coarse
          end
          if redis.call('HINCRBY', folded, field, over) == over then
            bytes = bytes + overhead + #field
            added = added + 1
          end
        end
      end
    end
    i = i + n
  end
end
redis.call('HSET', meta, 'bytes', math.floor(bytes))
if dropped > 0 then
  redis.call('HINCRBY', meta, 'dropped', dropped)
  redis.call('HSET', meta, 'truncated', 1)
end
local old = tonumber(redis.call('HGET', meta, 'first_seen') or '0')
if old == 0 or first < old then redis.call('HSET', meta, 'first_seen', first) end
old = tonumber(redis.call('HGET', meta, 'last_seen') or '0')
if now > old then redis.call('HSET', meta, 'last_seen', now) end
redis.call('HINCRBY', meta, 'events', ARGV[3])
redis.call('HINCRBY', meta, 'losses', ARGV[4])
redis.call('HINCRBY', meta, 'partial_containers', ARGV[5])
redis.call('HINCRBY', meta, 'guard_pauses', ARGV[6])
if added > 0 then
  redis.call('HINCRBY', meta, 'revision', 1)
  old = tonumber(redis.call('HGET', meta, 'last_new') or '0')
  if now > old then redis.call('HSET', meta, 'last_new', now) end
end
return {redis.call('HGETALL', meta), redis.call('SCARD', KEYS[3]), redis.call('SCARD', KEYS[4])}
`)

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
