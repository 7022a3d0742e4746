package scanner

import (
	"path"
	"strings"

	"github.com/anchore/syft/syft/pkg"
)

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

// pycSource maps a compiled module to the source the package owns:
// pkg/__pycache__/mod.cpython-311.pyc (and .opt-1.pyc) -> pkg/mod.py, and
// Python 2's mod.pyc beside mod.py.
func pycSource(p string) (string, bool) {
	if !strings.HasSuffix(p, ".pyc") {
		return "", false
	}
	dir, base := path.Split(p)
	if strings.HasSuffix(dir, "/__pycache__/") {
		mod, _, _ := strings.Cut(base, ".")
		return dir[:len(dir)-len("__pycache__/")] + mod + ".py", true
	}
	return strings.TrimSuffix(p, "c"), true
}
