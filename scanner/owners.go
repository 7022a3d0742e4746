package scanner

import (
	"encoding/json"
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
	// HasFiles is false when no path of the package could be found: its
	// verdict is then unknown whatever the profile says, since "nothing of
	// it loaded" would only mean "we could not tell".
	HasFiles bool `json:"has_files"`
}

// UnmarshalJSON also reads owners.json cached before HasFiles was named:
// without it, every package of an image catalogued then would be unknown.
func (p *OwnedPackage) UnmarshalJSON(b []byte) error {
	type plain OwnedPackage // without this method
	var v struct {
		plain
		Mapped bool `json:"mapped"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = OwnedPackage(v.plain)
	p.HasFiles = p.HasFiles || v.Mapped
	return nil
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
		b.addNpm(i, locs)
	case pkg.NpmPackageLockEntry, pkg.YarnLockEntry, pkg.PnpmLockEntry, pkg.BunLockEntry:
		b.addNpmLock(i, p.Name, locs)
	case pkg.JavaArchive:
		b.addJava(i, m, locs)
	case pkg.GolangBinaryBuildinfoEntry, pkg.RustBinaryAuditEntry, pkg.BinarySignature,
		pkg.ELFBinaryPackageNoteJSONPayload:
		b.addCompiledIn(i, locs)
	case pkg.RubyGemspec:
		b.addGem(i, m, locs)
	case pkg.PhpComposerInstalledEntry:
		b.addComposerInstalled(i, m, locs)
	case pkg.PhpComposerLockEntry:
		b.addComposerLock(i, m, locs)
	case pkg.DotnetDepsEntry:
		b.addDotnet(i, m, locs)
	case pkg.DotnetPortableExecutableEntry:
		b.addDotnetExecutable(i, locs)
	case pkg.FileOwner:
		b.addFileList(i, m)
	}
}

// addFile owns the file p resolves to: the rules that name one file (a jar,
// a deps.json assembly, a RECORD entry) mean the file behind any symlink.
func (b *builder) addFile(i int, p string) {
	canonical, _ := b.links.resolve(p)
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
	b.o.Packages[i].HasFiles = true
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
