package scanner

import (
	"strings"

	"github.com/anchore/syft/syft/pkg"
)

// addJava: a nested archive is loaded through the outer one, the only file
// the kernel sees: the first element of the virtual path.
func (b *builder) addJava(i int, m pkg.JavaArchive, locs []string) {
	if outer, _, _ := strings.Cut(m.VirtualPath, ":"); outer != "" {
		b.addFile(i, absolute(outer))
	}
	for _, l := range locs {
		b.addFile(i, l)
	}
}
