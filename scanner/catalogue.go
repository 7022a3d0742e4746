package scanner

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/cataloging"
	"github.com/anchore/syft/syft/cataloging/pkgcataloging"
	"github.com/anchore/syft/syft/linux"
	syftPkg "github.com/anchore/syft/syft/pkg"
	"github.com/anchore/syft/syft/sbom"
	"github.com/anchore/syft/syft/source"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/version"
)

// Catalog makes sure the SBOM of the image is cached and returns its
// manifest digest. The digest is read from the source before syft runs,
// so an image already cached costs no cataloguing. A panic while
// cataloguing is its error (ErrPanic).
func (s *Scanner) Catalog(ctx context.Context, spec SourceSpec) (digest string, err error) {
	defer s.recovered(&err, spec.userInput())
	return s.catalog(ctx, spec)
}

func (s *Scanner) catalog(ctx context.Context, spec SourceSpec) (string, error) {
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
	goBins := indexGoBinaries(owners, resolver, s.log)
	if err := s.write(digest, sb, owners, goBins, cacheMeta{
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
