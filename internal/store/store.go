package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
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
func Open(rawURL string, opts ...Option) (*Store, error) {
	rdb, err := client(rawURL)
	if err != nil {
		return nil, err
	}
	s := &Store{rdb: rdb, limits: DefaultLimits}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

func client(rawURL string) (redis.UniversalClient, error) {
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
		return redis.NewClusterClient(opts), nil
	}
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parsing redis URL: %w", err)
	}
	opts.DialerRetries = failFastDials
	opts.MaxRetries = failFastRetries
	return redis.NewClient(opts), nil
}

// A flush that cannot reach Redis fails fast: the collector keeps the
// deltas and tries again at the next flush, which is a retry already.
const (
	failFastDials   = 1
	failFastRetries = -1
)

// Option configures a Store at Open or Connect.
type Option func(*Store)

// WithLimits sets the bounds that the store's writes keep profiles in;
// zero fields keep their defaults (DefaultLimits without it).
func WithLimits(l Limits) Option { return func(s *Store) { s.limits = l.orDefault() } }

// Close closes the connections.
func (s *Store) Close() error { return s.rdb.Close() }

// Connect opens the store at rawURL and checks, within 5 s, that it answers.
func Connect(ctx context.Context, rawURL string, opts ...Option) (*Store, error) {
	st, err := Open(rawURL, opts...)
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
