package scanner

import (
	"context"
	"errors"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/anchore/syft/syft/artifact"
	"github.com/anchore/syft/syft/file"
	"github.com/anchore/syft/syft/pkg"
	"github.com/anchore/syft/syft/sbom"
)

// Owners says which package owns which canonical in-image path: the path
// the kernel reports once every symlink is resolved. It is built once per
// SBOM and cached beside it as JSON, so its fields are exported; the maps
// hold indices into Packages to keep the cached form small.
type Owners struct {
	// Packages lists every package of the SBOM, in syft's sorted order.
	Packages []OwnedPackage `json:"packages"`
	// Files maps a file to the packages it puts in use when it is executed,
	// opened for reading or mapped executable.
	Files map[string][]int `json:"files,omitempty"`
	// Dirs maps a directory to the packages that own every file beneath it
	// (npm, gems, Composer, Python top-level packages). The deepest owned
	// directory of a path wins, so a nested node_modules package does not
	// put its parent in use.
	Dirs map[string][]int `json:"dirs,omitempty"`
	// Binaries maps an executable to the packages compiled into it (Go
	// modules, Rust crates, classified binaries): only executing or mapping
	// it loads them, reading it (a scanner, a checksum) does not.
	Binaries map[string][]int `json:"binaries,omitempty"`
}

// OwnedPackage is one package of Owners.
type OwnedPackage struct {
	// ID is syft's package id.
	ID string `json:"id"`
	// Type is syft's package type.
	Type string `json:"type"`
	// Mapped is false when no path of the package could be found: its
	// verdict is then unknown whatever the profile says, since "nothing of
	// it loaded" would only mean "we could not tell".
	Mapped bool `json:"mapped"`
}

// ownerKind is the table a path goes into.
type ownerKind int

const (
	kindFile ownerKind = iota
	kindDir
	kindBinary
)

// builder collects ownership while BuildOwners runs.
type builder struct {
	o        *Owners
	resolver file.Resolver
	links    *linkResolver
	// viaLink holds files a package owns only through a symlink (libfoo-dev's
	// libfoo.so -> libfoo.so.1.2, owned by libfoo1): they count only when no
	// package owns the target itself, so the -dev package is not put in use
	// by its runtime library being loaded.
	viaLink map[string][]int
}

// BuildOwners indexes which package owns which canonical in-image path.
// Built once per SBOM at catalog time; JSON-serialisable so that it is
// cached beside the SBOM.
func BuildOwners(s *sbom.SBOM, resolver file.Resolver) (*Owners, error) {
	if s == nil {
		return nil, errors.New("building owners: no SBOM")
	}
	if resolver == nil {
		return nil, errors.New("building owners: no file resolver")
	}
	if s.Artifacts.Packages == nil {
		// An image without packages: nothing to own.
		return &Owners{}, nil
	}
	b := &builder{
		o: &Owners{
			Files:    map[string][]int{},
			Dirs:     map[string][]int{},
			Binaries: map[string][]int{},
		},
		resolver: resolver,
		links:    newLinkResolver(resolver),
		viaLink:  map[string][]int{},
	}
	pkgs := s.Artifacts.Packages.Sorted()
	index := make(map[artifact.ID]int, len(pkgs))
	for i, p := range pkgs {
		index[p.ID()] = i
		b.o.Packages = append(b.o.Packages, OwnedPackage{ID: string(p.ID()), Type: string(p.Type)})
	}
	for i, p := range pkgs {
		b.addPackage(i, p)
	}
	// syft's contains relationships (package -> file, built from the same
	// file lists through the resolver, so already symlink-resolved) add what
	// a cataloger knew and the rules above do not.
	for _, r := range s.Relationships {
		if r.Type != artifact.ContainsRelationship {
			continue
		}
		p, c, ok := packageAndFile(r)
		if !ok {
			continue
		}
		if i, ok := index[p.ID()]; ok {
			b.addViaLink(i, absolute(c.RealPath))
		}
	}
	for p, ids := range b.viaLink {
		if _, ok := b.o.Files[p]; !ok {
			for _, i := range ids {
				b.put(kindFile, p, i)
			}
		}
	}
	return b.o, nil
}

// packageAndFile returns the package and the file of a contains
// relationship, in either direction.
func packageAndFile(r artifact.Relationship) (pkg.Package, file.Coordinates, bool) {
	if p, ok := r.From.(pkg.Package); ok {
		if c, ok := r.To.(file.Coordinates); ok {
			return p, c, true
		}
	}
	if p, ok := r.To.(pkg.Package); ok {
		if c, ok := r.From.(file.Coordinates); ok {
			return p, c, true
		}
	}
	return pkg.Package{}, file.Coordinates{}, false
}

// addPackage applies the rule of the package's ecosystem.
func (b *builder) addPackage(i int, p pkg.Package) {
	locs := locationPaths(p)
	switch m := p.Metadata.(type) {
	case pkg.PythonPackage:
		b.addPython(i, m, locs)
	case pkg.NpmPackage:
		// package.json sits at the root of the package directory.
		for _, l := range locs {
			b.addDir(i, path.Dir(l))
		}
	case pkg.NpmPackageLockEntry, pkg.YarnLockEntry, pkg.PnpmLockEntry, pkg.BunLockEntry:
		for _, l := range locs {
			b.addDirIfExists(i, path.Join(path.Dir(l), "node_modules", p.Name))
		}
	case pkg.JavaArchive:
		// A nested archive is loaded through the outer one, the only file
		// the kernel sees: the first element of the virtual path.
		if outer, _, _ := strings.Cut(m.VirtualPath, ":"); outer != "" {
			b.addFile(i, absolute(outer))
		}
		for _, l := range locs {
			b.addFile(i, l)
		}
	case pkg.GolangBinaryBuildinfoEntry, pkg.RustBinaryAuditEntry, pkg.BinarySignature,
		pkg.ELFBinaryPackageNoteJSONPayload:
		for _, l := range locs {
			b.addBinary(i, l)
		}
	case pkg.RubyGemspec:
		b.addGem(i, m, locs)
	case pkg.PhpComposerInstalledEntry:
		// vendor/composer/installed.json lists the packages of vendor/.
		for _, l := range locs {
			b.addDirIfExists(i, path.Join(path.Dir(path.Dir(l)), m.Name))
		}
	case pkg.PhpComposerLockEntry:
		for _, l := range locs {
			b.addDirIfExists(i, path.Join(path.Dir(l), "vendor", m.Name))
		}
	case pkg.DotnetDepsEntry:
		b.addDotnet(i, m, locs)
	case pkg.DotnetPortableExecutableEntry:
		for _, l := range locs {
			b.addFile(i, l)
		}
	case pkg.FileOwner:
		// dpkg, apk, rpm, alpm, portage, conda, nix, JVM installations...
		for _, f := range m.OwnedFiles() {
			b.addListedFile(i, absolute(f))
		}
	}
}

// addPython: RECORD (or installed-files.txt) paths are relative to
// site-packages, the parent of the .dist-info or .egg-info directory;
// without them, the top-level modules named in top_level.txt.
func (b *builder) addPython(i int, m pkg.PythonPackage, locs []string) {
	site := m.SitePackagesRootPath
	if site == "" {
		site = pythonSite(locs)
	}
	if site == "" {
		return
	}
	site = absolute(site)
	for _, f := range m.Files {
		if f.Path == "" {
			continue
		}
		p := f.Path
		if !path.IsAbs(p) {
			p = path.Join(site, p)
		}
		b.addFile(i, p)
	}
	if len(m.Files) > 0 {
		return
	}
	for _, top := range m.TopLevelPackages {
		top = strings.TrimSpace(top)
		if top == "" {
			continue
		}
		b.addDirIfExists(i, path.Join(site, top))
		b.addFile(i, path.Join(site, top+".py"))
		// Extension modules: six.cpython-311-x86_64-linux-gnu.so, _cffi.abi3.so.
		if found, err := b.resolver.FilesByGlob(path.Join(site, top+".*.so")); err == nil {
			for _, l := range found {
				b.addFile(i, l.RealPath)
			}
		}
	}
}

// pythonSite is the directory holding the package's .dist-info or
// .egg-info (a directory, or a single PKG-INFO-like file).
func pythonSite(locs []string) string {
	for _, l := range locs {
		for d := l; d != "/" && d != "."; d = path.Dir(d) {
			if strings.HasSuffix(d, ".dist-info") || strings.HasSuffix(d, ".egg-info") {
				return path.Dir(d)
			}
		}
	}
	return ""
}

// addGem: specifications/<name>-<version>.gemspec sits beside
// gems/<name>-<version>/ (GEM_HOME, and Debian's rubygems-integration).
func (b *builder) addGem(i int, m pkg.RubyGemspec, locs []string) {
	name, version := m.Name, m.Version
	for _, l := range locs {
		spec := path.Dir(l)
		if path.Base(spec) == "default" {
			// Default gems: specifications/default/json-2.6.3.gemspec.
			spec = path.Dir(spec)
		}
		if path.Base(spec) == "specifications" {
			home := path.Dir(spec)
			b.addDirIfExists(i, path.Join(home, "gems", name+"-"+version))
			continue
		}
		// A gemspec inside the gem's own directory (bundler's path and git
		// sources, vendored gems).
		b.addDirIfExists(i, path.Dir(l))
	}
}

// addDotnet: the assemblies of a deps.json library are <name>.dll beside
// the deps.json (a published application), plus any portable executable
// syft read for it.
func (b *builder) addDotnet(i int, m pkg.DotnetDepsEntry, locs []string) {
	for _, l := range locs {
		if !strings.HasSuffix(l, ".deps.json") {
			b.addFile(i, l)
			continue
		}
		dir := path.Dir(l)
		b.addFileIfExists(i, path.Join(dir, m.Name+".dll"))
		for exe := range m.Executables {
			b.addFileIfExists(i, path.Join(dir, path.Base(exe)))
		}
	}
}

// addFile owns the file p resolves to: the rules that name one file (a jar,
// a deps.json assembly, a RECORD entry) mean the file behind any symlink.
func (b *builder) addFile(i int, p string) {
	canonical, _ := b.links.resolve(p)
	b.put(kindFile, canonical, i)
}

// addListedFile owns an entry of a package manager's file list: a symlink
// entry owns its target only when no package lists the target itself.
func (b *builder) addListedFile(i int, p string) {
	canonical, wasLink := b.links.resolve(p)
	if wasLink {
		b.addViaLink(i, canonical)
		return
	}
	b.put(kindFile, canonical, i)
}

func (b *builder) addViaLink(i int, canonical string) {
	if !slices.Contains(b.viaLink[canonical], i) {
		b.viaLink[canonical] = append(b.viaLink[canonical], i)
	}
}

func (b *builder) addFileIfExists(i int, p string) {
	if b.resolver.HasPath(p) {
		b.addFile(i, p)
	}
}

func (b *builder) addBinary(i int, p string) {
	canonical, _ := b.links.resolve(p)
	b.put(kindBinary, canonical, i)
}

func (b *builder) addDir(i int, p string) {
	canonical, _ := b.links.resolve(p)
	b.put(kindDir, canonical, i)
}

func (b *builder) addDirIfExists(i int, p string) {
	if b.resolver.HasPath(p) {
		b.addDir(i, p)
	}
}

func (b *builder) put(kind ownerKind, p string, i int) {
	m := b.o.Files
	switch kind {
	case kindDir:
		m = b.o.Dirs
	case kindBinary:
		m = b.o.Binaries
	}
	if !slices.Contains(m[p], i) {
		m[p] = append(m[p], i)
	}
	b.o.Packages[i].Mapped = true
}

// locationPaths are the in-image paths syft found the package by.
func locationPaths(p pkg.Package) []string {
	var out []string
	for _, l := range p.Locations.ToSlice() {
		if l.RealPath != "" {
			out = append(out, absolute(l.RealPath))
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// absolute makes a package manager's root-relative path (apk lists
// "usr/lib/libz.so.1") absolute and clean.
func absolute(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return path.Clean(p)
}

// maxLinkHops bounds symlink chains, as the kernel's 40 (ELOOP).
const maxLinkHops = 40

// linkResolver resolves paths through the image's symlinks, read once from
// the resolver, the way the kernel does at open: every directory component
// is followed (usr-merge: /lib -> usr/lib), and so is the last one.
type linkResolver struct {
	links map[string]string
	dirs  map[string]string
}

func newLinkResolver(r file.Resolver) *linkResolver {
	lr := &linkResolver{links: map[string]string{}, dirs: map[string]string{"/": "/"}}
	// The contract of BuildOwners has no context: building happens once at
	// catalog time and the channel is drained to its end.
	for loc := range r.AllLocations(context.TODO()) {
		md, err := r.FileMetadataByLocation(loc)
		if err != nil {
			// An unreadable entry cannot be a symlink we could follow.
			continue
		}
		// Hard links are not followed: the kernel reports the path that
		// was opened, which is as real as the other. The type is compared
		// by name so as not to import stereoscope beside syft in go.mod.
		if md.Type.String() != "SymbolicLink" || md.LinkDestination == "" {
			continue
		}
		p := absolute(loc.RealPath)
		dest := md.LinkDestination
		// A directory source reports host paths: the link's own
		// (md.Path) and its target, already resolved under the root.
		// Taking the root off both gives in-image paths; an image
		// reports in-image paths and a raw target, and the root is "".
		if hostRoot, ok := strings.CutSuffix(md.Path, p); ok && hostRoot != "" {
			if rel, ok := strings.CutPrefix(dest, hostRoot); ok && (rel == "" || rel[0] == '/') {
				dest = absolute(rel)
			}
		}
		if !path.IsAbs(dest) {
			dest = path.Join(path.Dir(p), dest)
		}
		lr.links[p] = path.Clean(dest)
	}
	return lr
}

// resolve returns the canonical form of p, and whether its last component
// was a symlink.
func (lr *linkResolver) resolve(p string) (string, bool) {
	p = absolute(p)
	wasLink := false
	for hops := 0; hops < maxLinkHops; hops++ {
		p = path.Join(lr.dir(path.Dir(p), 0), path.Base(p))
		dest, ok := lr.links[p]
		if !ok {
			return p, wasLink
		}
		wasLink = true
		p = dest
	}
	return p, wasLink
}

// dir resolves a directory, memoised: an image has few distinct ones.
func (lr *linkResolver) dir(d string, depth int) string {
	if c, ok := lr.dirs[d]; ok {
		return c
	}
	if depth > maxLinkHops {
		return d
	}
	c := path.Join(lr.dir(path.Dir(d), depth+1), path.Base(d))
	for hops := 0; hops < maxLinkHops; hops++ {
		dest, ok := lr.links[c]
		if !ok {
			break
		}
		c = path.Join(lr.dir(path.Dir(dest), depth+1), path.Base(dest))
	}
	lr.dirs[d] = c
	return c
}
