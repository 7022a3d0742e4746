package scanner

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anchore/syft/syft/format/syftjson"
	"github.com/anchore/syft/syft/sbom"

	"github.com/inuse-dev/inuse/internal/store"
)

// image is what the cache holds for one digest, decoded.
type image struct {
	meta    cacheMeta
	sbom    *sbom.SBOM
	raw     []byte // syft JSON, as grype reads it
	owners  *Owners
	pkgs    []Package // sorted, without verdicts
	distro  Distro
	matches map[time.Time][]Vulnerability // by database build time
	// goPlan is the probe plan for the matches of one database build.
	goPlan *goPlan
}

// cacheMeta is meta.json of a cached image.
type cacheMeta struct {
	Name     string    `json:"name"`
	Digest   string    `json:"digest"`
	Source   string    `json:"source"`
	Created  time.Time `json:"created"`
	Version  string    `json:"inuse_version"`
	Packages int       `json:"packages"`
}

// Cache file names, in <CacheDir>/images/<algo>/<hex>/.
const (
	sbomFile   = "sbom.syft.json"
	ownersFile = "owners.json"
	metaFile   = "meta.json"
	goBinsFile = "gobinaries.json.gz"
)

func (s *Scanner) dir(digest string) string {
	algo, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(s.cfg.CacheDir, "images", algo, hex)
}

// Cached reports whether the SBOM of digest is in the cache.
func (s *Scanner) Cached(digest string) bool {
	if !store.ValidDigest(digest) {
		return false
	}
	_, err := os.Stat(filepath.Join(s.dir(digest), metaFile))
	return err == nil
}

// write stores one image's cache entry; it appears at once, complete, or
// not at all (a directory renamed into place).
func (s *Scanner) write(digest string, sb *sbom.SBOM, owners *Owners, goBins map[string]GoBinary, meta cacheMeta) error {
	dir := s.dir(digest)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("creating cache directory: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".tmp-")
	if err != nil {
		return fmt.Errorf("creating cache entry: %w", err)
	}
	defer os.RemoveAll(tmp)
	var buf bytes.Buffer
	if err := syftjson.NewFormatEncoder().Encode(&buf, *sb); err != nil {
		return fmt.Errorf("encoding sbom: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, sbomFile), buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing sbom cache: %w", err)
	}
	if err := writeGzipJSON(filepath.Join(tmp, goBinsFile), goBins); err != nil {
		return err
	}
	for name, v := range map[string]any{ownersFile: owners, metaFile: meta} {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	_ = os.RemoveAll(dir) // a stale or partial entry
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("installing cache entry: %w", err)
	}
	return nil
}

// ErrNotCached is returned for a digest whose SBOM is not in the cache.
var ErrNotCached = errors.New("scanner: image not catalogued")

// load returns the decoded cache entry of digest.
func (s *Scanner) load(digest string) (*image, error) {
	s.mu.Lock()
	im, ok := s.images[digest]
	s.mu.Unlock()
	if ok {
		return im, nil
	}
	dir := s.dir(digest)
	var meta cacheMeta
	if err := readJSON(filepath.Join(dir, metaFile), &meta); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", ErrNotCached, digest)
		}
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, sbomFile))
	if err != nil {
		return nil, fmt.Errorf("reading sbom cache: %w", err)
	}
	sb, _, _, err := syftjson.NewFormatDecoder().Decode(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("decoding sbom cache: %w", err)
	}
	owners := &Owners{}
	if err := readJSON(filepath.Join(dir, ownersFile), owners); err != nil {
		return nil, err
	}
	im = &image{meta: meta, sbom: sb, raw: raw, owners: owners, matches: map[time.Time][]Vulnerability{}}
	im.pkgs, im.distro = packages(sb)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.images) >= s.cfg.MaxInMemory {
		for d := range s.images { // any one: the cache on disk stays
			delete(s.images, d)
			break
		}
	}
	s.images[digest] = im
	return im, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", filepath.Base(path), err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding %s: %w", filepath.Base(path), err)
	}
	return nil
}

func writeGzipJSON(path string, v any) error {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(v); err != nil {
		return fmt.Errorf("encoding %s: %w", filepath.Base(path), err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("compressing %s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	return nil
}

// goBinaries reads the cached function tables of the image's Go binaries;
// none for an image catalogued before they were read.
func (s *Scanner) goBinaries(digest string) (map[string]GoBinary, error) {
	f, err := os.Open(filepath.Join(s.dir(digest), goBinsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", goBinsFile, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", goBinsFile, err)
	}
	var bins map[string]GoBinary
	if err := json.NewDecoder(zr).Decode(&bins); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", goBinsFile, err)
	}
	return bins, nil
}

// SBOM returns the cached syft JSON of digest.
func (s *Scanner) SBOM(digest string) ([]byte, error) {
	im, err := s.load(digest)
	if err != nil {
		return nil, err
	}
	return im.raw, nil
}

// matches returns the vulnerabilities of digest in the current database,
// matching once per database build and caching the result on disk.
func (s *Scanner) matches(ctx context.Context, digest string, im *image) ([]Vulnerability, time.Time, error) {
	vp, built, err := s.db.provider()
	if err != nil {
		return nil, built, err
	}
	s.mu.Lock()
	vs, ok := im.matches[built]
	s.mu.Unlock()
	if ok {
		return vs, built, nil
	}
	// v2: with the Go symbols of the matches
	path := filepath.Join(s.dir(digest), fmt.Sprintf("matches-%d.v2.json", built.UnixNano()))
	if err := readJSON(path, &vs); err == nil {
		s.mu.Lock()
		im.matches = map[time.Time][]Vulnerability{built: vs}
		s.mu.Unlock()
		return vs, built, nil
	}
	start := time.Now()
	vs, err = matchSBOM(ctx, vp, im.raw)
	if err != nil {
		return nil, built, err
	}
	if err := s.db.goSymbols(vs); err != nil {
		return nil, built, err
	}
	s.log.Info("vulnerabilities matched", "digest", digest, "matches", len(vs), "db_built", built, "duration", time.Since(start))
	if b, err := json.Marshal(vs); err == nil {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err == nil {
			_ = os.Rename(tmp, path)
		}
	}
	s.mu.Lock()
	im.matches = map[time.Time][]Vulnerability{built: vs}
	s.mu.Unlock()
	return vs, built, nil
}
