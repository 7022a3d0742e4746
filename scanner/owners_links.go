package scanner

import (
	"context"
	"path"
	"strings"

	"github.com/anchore/syft/syft/file"
)

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
