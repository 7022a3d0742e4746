package store

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The runtime index is what the Sysdig-compatible runtimeimages endpoint
// pages through: one entry per (image, workload) of the images that have
// a report, with the report's in-use packages as that endpoint writes
// them. It lives in Redis, not in the replicas' memory, so that a
// replica's memory does not grow with the fleet. Its entries are spread
// over RuntimeShards shards by image digest; each shard is a sorted set
// of entry keys (all of score 0, so in byte order) and two hashes (the
// packages and the version of each image) under one hash tag, so that a
// Redis Cluster spreads the shards over its masters and one script
// updates an image's entries at once.

// RuntimeShards is the number of shards of the runtime index.
const RuntimeShards = 8

// runtimeShard is the shard of digest.
func runtimeShard(digest string) int {
	h := fnv.New32a()
	h.Write([]byte(digest))
	return int(h.Sum32() % RuntimeShards)
}

// RuntimeIndexKeys names the keys of one shard of the runtime index.
type RuntimeIndexKeys struct{ shard int }

// RuntimeIndex returns the keys of the shard that holds digest.
func RuntimeIndex(digest string) RuntimeIndexKeys {
	return RuntimeIndexKeys{shard: runtimeShard(digest)}
}

func (k RuntimeIndexKeys) key(suffix string) string {
	return fmt.Sprintf("%s{runtime:%d}:%s", Prefix, k.shard, suffix)
}

// Entries is the sorted set of entry keys: digest "\n" workload member.
func (k RuntimeIndexKeys) Entries() string { return k.key("entries") }

// Packages maps a digest to its in-use packages (JSON).
func (k RuntimeIndexKeys) Packages() string { return k.key("packages") }

// Versions maps a digest to what its entries were computed from.
func (k RuntimeIndexKeys) Versions() string { return k.key("versions") }

// RuntimeKey is the key of the entry of (digest, w), the cursor order.
func RuntimeKey(digest string, w Workload) string { return digest + "\n" + w.Member() }

// setRuntimeScript replaces the entries of one image (ARGV[1]) with
// ARGV[6...] and its packages with ARGV[3], unless its version is already
// ARGV[2]; with no entries it removes the image. ARGV[4] and ARGV[5]
// bound the image's keys in the sorted set.
var setRuntimeScript = redis.NewScript(`
if ARGV[2] ~= '' and redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then return 0 end
redis.call('ZREMRANGEBYLEX', KEYS[1], ARGV[4], ARGV[5])
if #ARGV < 6 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 1
end
local batch = {}
for i = 6, #ARGV do
  batch[#batch + 1] = 0
  batch[#batch + 1] = ARGV[i]
  if #batch >= 1000 then
    redis.call('ZADD', KEYS[1], unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('ZADD', KEYS[1], unpack(batch)) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
`)

// SetRuntimeImage makes the runtime entries of digest one per workload of
// workloads, each with packages, in one script: a page read meanwhile
// sees the old entries or the new ones. version names what they were
// computed from (the report and the workloads): when the index already
// holds that version, nothing is written, so that every replica may make
// the same change. It reports whether it wrote.
func (s *Store) SetRuntimeImage(ctx context.Context, digest, version string, workloads []Workload, packages []byte) (bool, error) {
	if version == "" || len(workloads) == 0 {
		return false, fmt.Errorf("indexing %s: a version and a workload are required", digest)
	}
	args := []any{digest, version, packages, "[" + digest + "\n", "(" + digest + "\x0b"}
	for _, w := range workloads {
		args = append(args, RuntimeKey(digest, w))
	}
	return s.runRuntimeScript(ctx, digest, args)
}

// RemoveRuntimeImage removes the runtime entries of digest.
func (s *Store) RemoveRuntimeImage(ctx context.Context, digest string) error {
	_, err := s.runRuntimeScript(ctx, digest, []any{digest, "", "", "[" + digest + "\n", "(" + digest + "\x0b"})
	return err
}

func (s *Store) runRuntimeScript(ctx context.Context, digest string, args []any) (bool, error) {
	k := RuntimeIndex(digest)
	n, err := setRuntimeScript.Run(ctx, s.rdb, []string{k.Entries(), k.Packages(), k.Versions()}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("indexing %s: %w", digest, err)
	}
	return n == 1, nil
}

// RuntimeEntry is one entry of the runtime index.
type RuntimeEntry struct {
	Key      string
	Digest   string
	Workload Workload
	Packages []byte
}

// RuntimePage returns the entries of the runtime index after the key
// after ("" for the first page), at most limit of them, and the key to
// read the next page after ("" on the last page). Entries are in key order, so that a cursor holds while images
// come and go: an entry present for the whole walk is returned exactly
// once. Two pipelined round trips: the keys of every shard, then the
// packages of the page's images.
func (s *Store) RuntimePage(ctx context.Context, after string, limit int) ([]RuntimeEntry, string, error) {
	start := "-"
	if after != "" {
		start = "(" + after
	}
	cmds := make([]*redis.StringSliceCmd, RuntimeShards)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range RuntimeShards {
			cmds[i] = p.ZRangeArgs(ctx, redis.ZRangeArgs{
				Key: RuntimeIndexKeys{shard: i}.Entries(), Start: start, Stop: "+", ByLex: true, Count: int64(limit) + 1,
			})
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("reading the runtime index: %w", err)
	}
	var keys []string
	for _, c := range cmds {
		keys = append(keys, c.Val()...)
	}
	slices.SortFunc(keys, strings.Compare)
	var next string
	if len(keys) > limit {
		keys = keys[:limit]
		next = keys[limit-1]
	}
	out := make([]RuntimeEntry, 0, len(keys))
	var digests []string
	for _, key := range keys {
		d, member, ok := strings.Cut(key, "\n")
		if !ok {
			continue
		}
		if len(digests) == 0 || digests[len(digests)-1] != d {
			digests = append(digests, d)
		}
		out = append(out, RuntimeEntry{Key: key, Digest: d, Workload: ParseWorkload(member)})
	}
	pkgs, err := s.runtimePackages(ctx, digests)
	if err != nil {
		return nil, "", err
	}
	for i := range out {
		out[i].Packages = pkgs[out[i].Digest]
	}
	// An image removed between the two reads has no packages: left out.
	out = slices.DeleteFunc(out, func(e RuntimeEntry) bool { return e.Packages == nil })
	return out, next, nil
}

// runtimePackages reads the packages of digests, one HMGET per shard.
func (s *Store) runtimePackages(ctx context.Context, digests []string) (map[string][]byte, error) {
	vals, err := s.runtimeFields(ctx, digests, RuntimeIndexKeys.Packages)
	if err != nil {
		return nil, fmt.Errorf("reading the runtime index's packages: %w", err)
	}
	out := make(map[string][]byte, len(vals))
	for d, v := range vals {
		out[d] = []byte(v)
	}
	return out, nil
}

// RuntimeVersions reads the version of the runtime entries of digests
// (one HMGET per shard, pipelined); an image without entries is missing.
func (s *Store) RuntimeVersions(ctx context.Context, digests []string) (map[string]string, error) {
	out, err := s.runtimeFields(ctx, digests, RuntimeIndexKeys.Versions)
	if err != nil {
		return nil, fmt.Errorf("reading the runtime index's versions: %w", err)
	}
	return out, nil
}

// runtimeFields reads the fields of digests in the per-shard hash that
// hash names, one HMGET per shard, pipelined; a missing field is left out.
func (s *Store) runtimeFields(ctx context.Context, digests []string, hash func(RuntimeIndexKeys) string) (map[string]string, error) {
	byShard := map[int][]string{}
	for _, d := range digests {
		byShard[runtimeShard(d)] = append(byShard[runtimeShard(d)], d)
	}
	type read struct {
		digests []string
		cmd     *redis.SliceCmd
	}
	var reads []read
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for shard, ds := range byShard {
			reads = append(reads, read{ds, p.HMGet(ctx, hash(RuntimeIndexKeys{shard: shard}), ds...)})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(digests))
	for _, r := range reads {
		for i, v := range r.cmd.Val() {
			if s, ok := v.(string); ok {
				out[r.digests[i]] = s
			}
		}
	}
	return out, nil
}

// RuntimeCount counts the entries of the runtime index.
func (s *Store) RuntimeCount(ctx context.Context) (int64, error) {
	cmds := make([]*redis.IntCmd, RuntimeShards)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range RuntimeShards {
			cmds[i] = p.ZCard(ctx, RuntimeIndexKeys{shard: i}.Entries())
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("counting the runtime index: %w", err)
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}
