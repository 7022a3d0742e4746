// Package scanner joins an image's runtime profile with its SBOM (syft)
// and vulnerabilities (grype) and says, for every package and every
// vulnerability, whether it is in use, with the evidence.
package scanner

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
)

// Config configures a Scanner.
type Config struct {
	// CacheDir holds one directory per image manifest digest: the syft
	// JSON SBOM, the file→package index and the matches per database.
	CacheDir string
	DB       DBConfig
	Log      *slog.Logger
	// MaxInMemory bounds the images kept decoded in memory (default 64).
	MaxInMemory int
	// Plans is where the Go probe plans are published for the agents
	// (nil: not published, and Go verdicts stay at package level).
	Plans PlanStore
}

// Scanner catalogs images once per manifest digest and joins their
// cached SBOM and matches with runtime profiles.
type Scanner struct {
	cfg Config
	log *slog.Logger
	db  *DB

	mu     sync.Mutex
	images map[string]*image // by digest
	// catalogs serialises cataloguing of one digest.
	catalogs map[string]*sync.Mutex
	// published is the hash of the probe plan last written per digest.
	published map[string][sha256.Size]byte
}

// New returns a scanner over cfg's cache and database.
func New(cfg Config) (*Scanner, error) {
	if cfg.CacheDir == "" {
		return nil, errors.New("scanner: no cache directory")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.DB.Dir == "" {
		cfg.DB.Dir = filepath.Join(cfg.CacheDir, "db")
	}
	if cfg.MaxInMemory <= 0 {
		cfg.MaxInMemory = 64
	}
	if err := os.MkdirAll(filepath.Join(cfg.CacheDir, "images"), 0o755); err != nil {
		return nil, fmt.Errorf("creating cache directory: %w", err)
	}
	log := cfg.Log.With("component", "scanner")
	return &Scanner{cfg: cfg, log: log, db: OpenDB(cfg.DB, log), images: map[string]*image{}, catalogs: map[string]*sync.Mutex{}, published: map[string][sha256.Size]byte{}}, nil
}

// ErrPanic is returned when scanning an image panicked: whatever an
// image holds, its scan fails alone and the scanner goes on with others.
var ErrPanic = errors.New("scanner: scan panicked")

// recovered turns a panic of the scan of image that defers it into *err,
// logged with its stack (the one place it is known).
func (s *Scanner) recovered(err *error, image string) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("%w on %s: %v", ErrPanic, image, p)
		s.log.Error("scan panicked", "image", image, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	}
}

// DB is the scanner's vulnerability database.
func (s *Scanner) DB() *DB { return s.db }

// Close closes the database.
func (s *Scanner) Close() error { return s.db.Close() }
