package scanner

import (
	"path"
)

// addNpm: an installed package's package.json sits at the root of the
// package directory.
func (b *builder) addNpm(i int, locs []string) {
	for _, l := range locs {
		b.addDir(i, path.Dir(l))
	}
}

// addNpmLock: a package-lock, yarn, pnpm or bun lock entry owns
// node_modules/<name> beside the lock file, when it was installed.
func (b *builder) addNpmLock(i int, name string, locs []string) {
	for _, l := range locs {
		b.addDirIfExists(i, path.Join(path.Dir(l), "node_modules", name))
	}
}
