package scanner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/cataloging"
	"github.com/anchore/syft/syft/cataloging/pkgcataloging"
	"github.com/anchore/syft/syft/format/syftjson"
	"github.com/anchore/syft/syft/linux"
	syftPkg "github.com/anchore/syft/syft/pkg"
	"github.com/anchore/syft/syft/sbom"
	"github.com/anchore/syft/syft/source"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/version"
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
}

// image is what the cache holds for one digest, decoded.
type image struct {
	meta    cacheMeta
	sbom    *sbom.SBOM
	raw     []byte // syft JSON, as grype reads it
	owners  *Owners
	pkgs    []Package // sorted, without verdicts
	distro  Distro
	matches map[time.Time][]Vulnerability // by database build time
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
)

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
	return &Scanner{cfg: cfg, log: log, db: OpenDB(cfg.DB, log), images: map[string]*image{}, catalogs: map[string]*sync.Mutex{}}, nil
}

// DB is the scanner's vulnerability database.
func (s *Scanner) DB() *DB { return s.db }

// Close closes the database.
func (s *Scanner) Close() error { return s.db.Close() }

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

// Catalog makes sure the SBOM of the image is cached and returns its
// manifest digest. The digest is read from the source before syft runs,
// so an image already cached costs no cataloguing.
func (s *Scanner) Catalog(ctx context.Context, spec SourceSpec) (string, error) {
	digest, err := peekDigest(ctx, spec)
	if err != nil {
		return "", fmt.Errorf("%s: %w", spec.userInput(), err)
	}
	if digest != "" && s.Cached(digest) {
		s.log.Debug("sbom cached", "digest", digest)
		return digest, nil
	}
	src, err := openSource(ctx, spec)
	if err != nil {
		return "", err
	}
	defer src.Close()
	if digest == "" {
		md, ok := src.Describe().Metadata.(source.ImageMetadata)
		if !ok || !store.ValidDigest(md.ManifestDigest) {
			return "", fmt.Errorf("reading manifest digest of %s: none in the source (give --image-digest)", spec.userInput())
		}
		digest = md.ManifestDigest
		if s.Cached(digest) {
			return digest, nil
		}
	}
	lock := s.catalogLock(digest)
	lock.Lock()
	defer lock.Unlock()
	if s.Cached(digest) { // another caller catalogued it meanwhile
		return digest, nil
	}
	start := time.Now()
	cfg := syft.DefaultCreateSBOMConfig().WithTool("inuse", version.Version)
	if spec.Kind == Rootfs {
		// a root filesystem is an image unpacked: catalog what is
		// installed, as for an image, not the lock files a source tree
		// would be read for
		cfg = cfg.WithCatalogerSelection(cataloging.NewSelectionRequest().WithDefaults(pkgcataloging.ImageTag))
	}
	sb, err := syft.CreateSBOM(ctx, src, cfg)
	if err != nil {
		return "", fmt.Errorf("cataloguing %s: %w", spec.userInput(), err)
	}
	name := spec.displayName()
	nameSource(sb, spec, digest)
	resolver, err := src.FileResolver(source.SquashedScope)
	if err != nil {
		return "", fmt.Errorf("reading image files: %w", err)
	}
	owners, err := BuildOwners(sb, resolver)
	if err != nil {
		return "", fmt.Errorf("indexing file owners: %w", err)
	}
	if err := s.write(digest, sb, owners, cacheMeta{
		Name: name, Digest: digest, Source: spec.userInput(), Created: time.Now().UTC(),
		Version: version.Version, Packages: sb.Artifacts.Packages.PackageCount(),
	}); err != nil {
		return "", err
	}
	s.log.Info("image catalogued", "digest", digest, "name", name,
		"packages", sb.Artifacts.Packages.PackageCount(), "duration", time.Since(start))
	return digest, nil
}

func (s *Scanner) catalogLock(digest string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.catalogs[digest]
	if !ok {
		l = &sync.Mutex{}
		s.catalogs[digest] = l
	}
	return l
}

// nameSource records the image's name in the SBOM. grype names the
// OpenVEX product of an image after its repo digests, and archives,
// layouts and images never pushed have none (or none with the digest the
// profile is keyed by): with name@digest there, `grype --vex` applies our
// statements to the SBOM.
func nameSource(sb *sbom.SBOM, spec SourceSpec, digest string) {
	name := spec.Name
	if name == "" && (spec.Kind == Docker || spec.Kind == Containerd) {
		name = spec.Ref
	}
	md, ok := sb.Source.Metadata.(source.ImageMetadata)
	if !ok {
		if name != "" {
			sb.Source.Name = name
		}
		return
	}
	if name != "" {
		sb.Source.Name = repoOf(name)
		ref := repoOf(name) + "@" + digest
		if !slices.Contains(md.RepoDigests, ref) {
			md.RepoDigests = append(md.RepoDigests, ref)
		}
		if strings.Contains(name[strings.LastIndex(name, "/")+1:], ":") && !slices.Contains(md.Tags, name) {
			md.Tags = append(md.Tags, name)
		}
	}
	if md.ManifestDigest == "" {
		md.ManifestDigest = digest
	}
	sb.Source.Metadata = md
}

// repoOf strips the tag and digest of an image reference.
func repoOf(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

// write stores one image's cache entry; it appears at once, complete, or
// not at all (a directory renamed into place).
func (s *Scanner) write(digest string, sb *sbom.SBOM, owners *Owners, meta cacheMeta) error {
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

// packages lists the SBOM's packages, sorted, and its distro.
func packages(sb *sbom.SBOM) ([]Package, Distro) {
	var out []Package
	for _, p := range sb.Artifacts.Packages.Sorted() {
		out = append(out, Package{
			ID: string(p.ID()), Name: p.Name, Version: p.Version, Type: string(p.Type),
			PURL: p.PURL, Arch: arch(p), OS: osPackage(p.Type),
		})
	}
	return out, distroOf(sb.Artifacts.LinuxDistribution)
}

func distroOf(r *linux.Release) Distro {
	if r == nil {
		return Distro{}
	}
	return Distro{ID: r.ID, Version: r.VersionID}
}

func osPackage(t syftPkg.Type) bool {
	switch t {
	case syftPkg.DebPkg, syftPkg.RpmPkg, syftPkg.ApkPkg, syftPkg.AlpmPkg, syftPkg.PortagePkg, syftPkg.NixPkg, syftPkg.KbPkg:
		return true
	}
	return false
}

func arch(p syftPkg.Package) string {
	switch m := p.Metadata.(type) {
	case syftPkg.DpkgDBEntry:
		return m.Architecture
	case syftPkg.RpmDBEntry:
		return m.Arch
	case syftPkg.ApkDBEntry:
		return m.Architecture
	case syftPkg.AlpmDBEntry:
		return m.Architecture
	}
	return ""
}

// SBOM returns the cached syft JSON of digest.
func (s *Scanner) SBOM(digest string) ([]byte, error) {
	im, err := s.load(digest)
	if err != nil {
		return nil, err
	}
	return im.raw, nil
}

// Matches returns the vulnerabilities of digest in the current database,
// matching once per database build and caching the result on disk.
func (s *Scanner) matches(ctx context.Context, digest string, im *image) ([]Vulnerability, error) {
	vp, built, err := s.db.provider()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	vs, ok := im.matches[built]
	s.mu.Unlock()
	if ok {
		return vs, nil
	}
	path := filepath.Join(s.dir(digest), fmt.Sprintf("matches-%d.json", built.UnixNano()))
	if err := readJSON(path, &vs); err == nil {
		s.mu.Lock()
		im.matches = map[time.Time][]Vulnerability{built: vs}
		s.mu.Unlock()
		return vs, nil
	}
	start := time.Now()
	vs, err = matchSBOM(ctx, vp, im.raw)
	if err != nil {
		return nil, err
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
	return vs, nil
}

// Report joins the cached SBOM and matches of digest with profile (nil:
// no profile yet). Only the verdicts are computed per call: call it
// whenever the profile's revision changes.
func (s *Scanner) Report(ctx context.Context, digest string, profile *store.Profile) (*Report, error) {
	im, err := s.load(digest)
	if err != nil {
		return nil, err
	}
	vulns, err := s.matches(ctx, digest, im)
	if err != nil {
		return nil, err
	}
	verdicts := im.owners.Verdicts(profile)
	rep := &Report{
		Name: im.meta.Name, Digest: digest, Distro: im.distro, GeneratedAt: time.Now().UTC(),
		Packages: make([]Package, len(im.pkgs)), Vulnerabilities: make([]Vulnerability, len(vulns)),
	}
	if profile != nil {
		rep.Profile = ProfileState{
			Found: true, State: string(profile.State), Confidence: string(profile.Confidence),
			Revision: profile.Meta.Revision, FirstSeen: profile.Meta.FirstSeen, LastSeen: profile.Meta.LastSeen,
		}
	}
	verdictOf := func(id string) PackageVerdict {
		if v, ok := verdicts[id]; ok && v.Verdict != "" {
			return v
		}
		return PackageVerdict{Verdict: Unknown}
	}
	for i, p := range im.pkgs {
		v := verdictOf(p.ID)
		p.Verdict, p.Evidence = v.Verdict, v.Evidence
		rep.Packages[i] = p
	}
	for i, v := range vulns {
		v.Verdict = verdictOf(v.PackageID).Verdict
		rep.Vulnerabilities[i] = v
	}
	sortVulnerabilities(rep.Vulnerabilities)
	rep.Summary = summarize(rep.Vulnerabilities)
	return rep, nil
}

// sortVulnerabilities orders by severity, then in use first, then id and
// package, so that the report is stable.
func sortVulnerabilities(vs []Vulnerability) {
	slices.SortStableFunc(vs, func(a, b Vulnerability) int {
		if d := SeverityRank(a.Severity) - SeverityRank(b.Severity); d != 0 {
			return d
		}
		if d := VerdictRank(a.Verdict) - VerdictRank(b.Verdict); d != 0 {
			return d
		}
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return strings.Compare(a.PackageName, b.PackageName)
	})
}

func summarize(vs []Vulnerability) Summary {
	sum := Summary{Total: len(vs), BySeverity: map[string]SeverityCount{}}
	for _, v := range vs {
		sc := sum.BySeverity[v.Severity]
		sc.Total++
		switch v.Verdict {
		case InUse:
			sum.InUse++
			sc.InUse++
		case NotObserved:
			sum.NotObserved++
		default:
			sum.Unknown++
		}
		sum.BySeverity[v.Severity] = sc
	}
	if sum.Total > 0 {
		// only what is known not to be used reduces the work
		sum.Reduction = float64(sum.NotObserved) * 100 / float64(sum.Total)
	}
	return sum
}
