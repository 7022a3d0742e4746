package scanner

import (
	"path"

	"github.com/anchore/syft/syft/pkg"
)

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
