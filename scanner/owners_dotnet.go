package scanner

import (
	"path"
	"strings"

	"github.com/anchore/syft/syft/pkg"
)

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

// addDotnetExecutable: a portable executable syft read on its own is the
// assembly the runtime loads.
func (b *builder) addDotnetExecutable(i int, locs []string) {
	for _, l := range locs {
		b.addFile(i, l)
	}
}
