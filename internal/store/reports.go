package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The serve replicas share their reports and their scan work through two
// keys per image, beside its profile (same hash tag, same Cluster slot):
// the report, computed once in the whole deployment, and the lease of the
// replica computing it.

// Report is the hash of the image's last report: FieldReportFor and
// FieldReportData.
func (k ImageKeys) Report() string { return k.key("report") }

// ScanLease is the string naming the replica that computes the image's
// report; it expires unless renewed.
func (k ImageKeys) ScanLease() string { return k.key("scan") }

// Fields of the report hash.
const (
	FieldReportFor  = "for"  // the ReportStamp the report was computed for
	FieldReportData = "data" // the report, compressed by its writer
)

// ReportStamp is what a report depends on: the profile's revision, its
// learning state and confidence, and the vulnerability database build.
// A stored report is current while its stamp equals the one computed from
// the profile now.
type ReportStamp struct {
	Revision   int64
	State      State
	Confidence Confidence
	DBBuild    string
}

// Serves reports whether a report computed for r is current for a
// profile that needs want: same revision, state and confidence, and the
// same database build or a newer one (builds are RFC 3339 UTC times, in
// the order of their strings), so that replicas whose databases differ
// for a while take the newer build's reports instead of scanning in turn.
func (r ReportStamp) Serves(want ReportStamp) bool {
	return r.Revision == want.Revision && r.State == want.State && r.Confidence == want.Confidence && r.DBBuild >= want.DBBuild
}

// String is the stamp as stored: revision|state|confidence|build.
func (r ReportStamp) String() string {
	return fmt.Sprintf("%d|%s|%s|%s", r.Revision, r.State, r.Confidence, r.DBBuild)
}

// parseReportStamp reads String's form; a malformed value is the zero
// stamp, which no profile has, so the report is recomputed.
func parseReportStamp(s string) ReportStamp {
	parts := strings.SplitN(s, "|", 4)
	if len(parts) != 4 {
		return ReportStamp{}
	}
	rev, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return ReportStamp{}
	}
	return ReportStamp{Revision: rev, State: State(parts[1]), Confidence: Confidence(parts[2]), DBBuild: parts[3]}
}

// ReportStamps reads the stamps of the stored reports of digests, in one
// pipelined round trip; an image without a stored report is missing from
// the answer.
func (s *Store) ReportStamps(ctx context.Context, digests []string) (map[string]ReportStamp, error) {
	cmds := make([]*redis.StringCmd, len(digests))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, d := range digests {
			cmds[i] = p.HGet(ctx, Keys(d).Report(), FieldReportFor)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading report stamps: %w", err)
	}
	out := make(map[string]ReportStamp, len(digests))
	for i, d := range digests {
		if v, err := cmds[i].Result(); err == nil {
			out[d] = parseReportStamp(v)
		}
	}
	return out, nil
}

// LoadReport reads the stored report of digest: its stamp and its data
// as the writer gave them. ErrNotFound when there is none.
func (s *Store) LoadReport(ctx context.Context, digest string) (ReportStamp, []byte, error) {
	v, err := s.rdb.HMGet(ctx, Keys(digest).Report(), FieldReportFor, FieldReportData).Result()
	if err != nil {
		return ReportStamp{}, nil, fmt.Errorf("reading report %s: %w", digest, err)
	}
	stamp, ok1 := v[0].(string)
	data, ok2 := v[1].(string)
	if !ok1 || !ok2 {
		return ReportStamp{}, nil, fmt.Errorf("%w: no report of %s", ErrNotFound, digest)
	}
	return parseReportStamp(stamp), []byte(data), nil
}

// ErrLeaseLost is returned by SaveReport when the lease expired and
// another replica may have taken it: the report is not written.
var ErrLeaseLost = errors.New("store: scan lease lost")

// TakeLease gives the scan lease of digest to owner for ttl, unless
// another owner holds it (SET NX PX).
func (s *Store) TakeLease(ctx context.Context, digest, owner string, ttl time.Duration) (bool, error) {
	ok, err := s.rdb.SetNX(ctx, Keys(digest).ScanLease(), owner, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("taking the scan lease of %s: %w", digest, err)
	}
	return ok, nil
}

// renewScript extends the lease KEYS[1] by ARGV[2] ms if ARGV[1] holds it.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// RenewLease extends owner's lease of digest to ttl from now; false when
// owner no longer holds it.
func (s *Store) RenewLease(ctx context.Context, digest, owner string, ttl time.Duration) (bool, error) {
	n, err := renewScript.Run(ctx, s.rdb, []string{Keys(digest).ScanLease()}, owner, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("renewing the scan lease of %s: %w", digest, err)
	}
	return n == 1, nil
}

// releaseScript deletes the lease KEYS[1] if ARGV[1] holds it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// ReleaseLease gives up owner's lease of digest, if owner still holds it.
func (s *Store) ReleaseLease(ctx context.Context, digest, owner string) error {
	if err := releaseScript.Run(ctx, s.rdb, []string{Keys(digest).ScanLease()}, owner).Err(); err != nil {
		return fmt.Errorf("releasing the scan lease of %s: %w", digest, err)
	}
	return nil
}

// saveScript writes the report hash KEYS[2] and deletes the lease KEYS[1]
// if ARGV[1] still holds it: a replica whose lease expired mid-scan never
// overwrites the report of the replica that took the work over.
var saveScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
redis.call('DEL', KEYS[1])
return 1
`)

// SaveReport stores the report of digest (data, computed for stamp) and
// releases owner's lease, in one script; ErrLeaseLost when owner no
// longer holds the lease.
func (s *Store) SaveReport(ctx context.Context, digest, owner string, stamp ReportStamp, data []byte) error {
	keys := Keys(digest)
	n, err := saveScript.Run(ctx, s.rdb, []string{keys.ScanLease(), keys.Report()},
		owner, FieldReportFor, stamp.String(), FieldReportData, data).Int()
	if err != nil {
		return fmt.Errorf("storing report %s: %w", digest, err)
	}
	if n == 0 {
		return fmt.Errorf("storing report %s: %w", digest, ErrLeaseLost)
	}
	return nil
}
