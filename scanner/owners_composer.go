package scanner

import (
	"path"

	"github.com/anchore/syft/syft/pkg"
)

// addComposerInstalled: vendor/composer/installed.json lists the packages
// of vendor/.
func (b *builder) addComposerInstalled(i int, m pkg.PhpComposerInstalledEntry, locs []string) {
	for _, l := range locs {
		b.addDirIfExists(i, path.Join(path.Dir(path.Dir(l)), m.Name))
	}
}

// addComposerLock: a composer.lock entry owns vendor/<name> beside the
// lock file, when it was installed.
func (b *builder) addComposerLock(i int, m pkg.PhpComposerLockEntry, locs []string) {
	for _, l := range locs {
		b.addDirIfExists(i, path.Join(path.Dir(l), "vendor", m.Name))
	}
}
