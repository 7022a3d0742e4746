package scanner

import "github.com/anchore/syft/syft/pkg"

// addFileList: packages whose manager lists their files (dpkg, apk, rpm,
// alpm, portage, conda, nix, JVM installations...) own those files.
func (b *builder) addFileList(i int, m pkg.FileOwner) {
	for _, f := range m.OwnedFiles() {
		b.addListedFile(i, absolute(f))
	}
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
