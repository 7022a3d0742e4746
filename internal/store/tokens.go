package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Token errors.
var (
	// ErrTokenInvalid is a secret that matches no token.
	ErrTokenInvalid = errors.New("store: invalid token")
	// ErrTokenExpired is a secret of a token whose expiry has passed.
	ErrTokenExpired = errors.New("store: token expired")
	// ErrTokenNotFound is an id that names no token.
	ErrTokenNotFound = errors.New("store: no such token")
	// ErrBadExpiry is an expiry other than 1mo, 3mo, 6mo or 1y.
	ErrBadExpiry = errors.New("store: expiry must be 1mo, 3mo, 6mo or 1y")
)

// secretPrefix marks inuse secrets, so that secret scanners can find
// leaked ones.
const secretPrefix = "inuse_"

// Expiries are the lifetimes a token may have.
var Expiries = []string{"1mo", "3mo", "6mo", "1y"}

// ExpiryAfter returns when a token created or renewed at now with the
// lifetime spec (1mo, 3mo, 6mo or 1y) expires.
func ExpiryAfter(now time.Time, spec string) (time.Time, error) {
	switch spec {
	case "1mo":
		return now.AddDate(0, 1, 0), nil
	case "3mo":
		return now.AddDate(0, 3, 0), nil
	case "6mo":
		return now.AddDate(0, 6, 0), nil
	case "1y":
		return now.AddDate(1, 0, 0), nil
	}
	return time.Time{}, fmt.Errorf("%w, not %q", ErrBadExpiry, spec)
}

// Token is an integration token as listed: never its secret.
type Token struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	LastUsed time.Time `json:"last_used,omitzero"`
}

// tokenRecord is a token as stored.
type tokenRecord struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Hash    string    `json:"sha256"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// Tokens keeps integration tokens in Redis. Nothing is cached: every
// check reads Redis, so a token deleted through one replica of the API is
// refused by all of them at the next request.
type Tokens struct {
	rdb redis.UniversalClient
	now func() time.Time

	mu      sync.Mutex
	touched map[string]time.Time // id -> last time this process wrote last_used
}

// lastUsedEvery bounds how often one process writes a token's last use:
// a scraper paging through thousands of entries would otherwise write
// Redis on every request.
const lastUsedEvery = 10 * time.Second

// NewTokens keeps tokens beside the profiles of s. A Tokens remembers when
// this process last recorded each token's use, so a process keeps one.
func NewTokens(s *Store) *Tokens {
	return &Tokens{rdb: s.rdb, now: time.Now, touched: map[string]time.Time{}}
}

// ValidTokenID reports whether id has the shape of a token id: 16
// lowercase hex digits.
func ValidTokenID(id string) bool { return len(id) == 16 && lowerHex(id) }

// MaxTokenName bounds a token's name.
const MaxTokenName = 100

// ValidTokenName reports whether name is acceptable: 1 to MaxTokenName
// printable characters.
func ValidTokenName(name string) bool {
	if name == "" || len(name) > MaxTokenName {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			return false
		}
	}
	return true
}

// Create makes a token and returns it with its secret, which is not kept.
func (t *Tokens) Create(ctx context.Context, name, expiry string) (Token, string, error) {
	if !ValidTokenName(name) {
		return Token{}, "", fmt.Errorf("store: token name must be 1 to %d printable characters", MaxTokenName)
	}
	now := t.now().UTC().Truncate(time.Second)
	expires, err := ExpiryAfter(now, expiry)
	if err != nil {
		return Token{}, "", err
	}
	var idb [8]byte
	var sec [32]byte
	rand.Read(idb[:]) // crypto/rand.Read never fails (Go 1.24+)
	rand.Read(sec[:])
	secret := secretPrefix + base64.RawURLEncoding.EncodeToString(sec[:])
	rec := tokenRecord{ID: hex.EncodeToString(idb[:]), Name: name, Hash: hashSecret(secret), Created: now, Expires: expires}
	js, err := json.Marshal(rec)
	if err != nil {
		return Token{}, "", fmt.Errorf("encoding token: %w", err)
	}
	_, err = t.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, TokensKey, rec.ID, js)
		p.HSet(ctx, TokenHashesKey, rec.Hash, rec.ID)
		return nil
	})
	if err != nil {
		return Token{}, "", fmt.Errorf("storing token: %w", err)
	}
	return rec.public(time.Time{}), secret, nil
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func (r tokenRecord) public(lastUsed time.Time) Token {
	return Token{ID: r.ID, Name: r.Name, Created: r.Created, Expires: r.Expires, LastUsed: lastUsed}
}

// List returns every token, expired ones too (to renew or delete), by
// creation time.
func (t *Tokens) List(ctx context.Context) ([]Token, error) {
	var recs *redis.MapStringStringCmd
	var used *redis.MapStringStringCmd
	_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		recs = p.HGetAll(ctx, TokensKey)
		used = p.HGetAll(ctx, TokenLastUsedKey)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	out := []Token{}
	for _, js := range recs.Val() {
		var r tokenRecord
		if err := json.Unmarshal([]byte(js), &r); err != nil {
			return nil, fmt.Errorf("decoding token: %w", err)
		}
		out = append(out, r.public(parseMS(used.Val()[r.ID])))
	}
	slices.SortFunc(out, func(a, b Token) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func parseMS(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func (t *Tokens) get(ctx context.Context, id string) (tokenRecord, error) {
	js, err := t.rdb.HGet(ctx, TokensKey, id).Result()
	if errors.Is(err, redis.Nil) {
		return tokenRecord{}, fmt.Errorf("%w: %s", ErrTokenNotFound, id)
	}
	if err != nil {
		return tokenRecord{}, fmt.Errorf("reading token: %w", err)
	}
	var r tokenRecord
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		return tokenRecord{}, fmt.Errorf("decoding token: %w", err)
	}
	return r, nil
}

// Renew sets the expiry of token id to expiry from now.
func (t *Tokens) Renew(ctx context.Context, id, expiry string) (Token, error) {
	expires, err := ExpiryAfter(t.now().UTC().Truncate(time.Second), expiry)
	if err != nil {
		return Token{}, err
	}
	// WATCH makes a renew racing a delete fail instead of resurrecting
	// the record.
	var out Token
	err = t.rdb.Watch(ctx, func(tx *redis.Tx) error {
		r, err := t.get(ctx, id)
		if err != nil {
			return err
		}
		r.Expires = expires
		js, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encoding token: %w", err)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, TokensKey, r.ID, js)
			return nil
		})
		out = r.public(time.Time{})
		return err
	}, TokensKey)
	if err != nil {
		return Token{}, fmt.Errorf("renewing token: %w", err)
	}
	return out, nil
}

// Delete revokes token id at once.
func (t *Tokens) Delete(ctx context.Context, id string) error {
	r, err := t.get(ctx, id)
	if err != nil {
		return err
	}
	_, err = t.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, TokenHashesKey, r.Hash)
		p.HDel(ctx, TokensKey, r.ID)
		p.HDel(ctx, TokenLastUsedKey, r.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("deleting token: %w", err)
	}
	return nil
}

// Verify returns the token whose secret this is, if it has not expired,
// and records its use.
func (t *Tokens) Verify(ctx context.Context, secret string) (Token, error) {
	if !strings.HasPrefix(secret, secretPrefix) {
		return Token{}, ErrTokenInvalid
	}
	h := hashSecret(secret)
	id, err := t.rdb.HGet(ctx, TokenHashesKey, h).Result()
	if errors.Is(err, redis.Nil) {
		return Token{}, ErrTokenInvalid
	}
	if err != nil {
		return Token{}, fmt.Errorf("checking token: %w", err)
	}
	r, err := t.get(ctx, id)
	if errors.Is(err, ErrTokenNotFound) {
		return Token{}, ErrTokenInvalid // deleted between the two reads
	}
	if err != nil {
		return Token{}, err
	}
	// The index lookup found the hash already; comparing again in
	// constant time guards against a corrupt or tampered index.
	if subtle.ConstantTimeCompare([]byte(r.Hash), []byte(h)) != 1 {
		return Token{}, ErrTokenInvalid
	}
	now := t.now()
	if !now.Before(r.Expires) {
		return Token{}, fmt.Errorf("%w: %s", ErrTokenExpired, r.ID)
	}
	t.touch(ctx, r.ID, now)
	return r.public(time.Time{}), nil
}

// touch records a use of id, at most every lastUsedEvery per process. A
// failure to record it does not refuse the request.
func (t *Tokens) touch(ctx context.Context, id string, now time.Time) {
	t.mu.Lock()
	if now.Sub(t.touched[id]) < lastUsedEvery {
		t.mu.Unlock()
		return
	}
	if len(t.touched) > 10000 { // deleted tokens' entries; bounded
		clear(t.touched)
	}
	t.touched[id] = now
	t.mu.Unlock()
	_ = t.rdb.HSet(ctx, TokenLastUsedKey, id, now.UnixMilli()).Err()
}
