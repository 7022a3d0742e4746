package scanner

import (
	"archive/tar"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/source"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/distribution/reference"
	dockerclient "github.com/docker/docker/client"

	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/store"
)

// SourceKind is where an image is read from.
type SourceKind string

// Source kinds; each is a stereoscope/syft scheme.
const (
	Docker        SourceKind = "docker"         // an image of the local dockerd
	Containerd    SourceKind = "containerd"     // an image of a containerd namespace
	OCIArchive    SourceKind = "oci-archive"    // a tar of an OCI image layout
	OCIDir        SourceKind = "oci-dir"        // an OCI image layout directory
	DockerArchive SourceKind = "docker-archive" // a `docker save` tarball
	Rootfs        SourceKind = "dir"            // a root filesystem directory
)

// SourceSpec names one image to catalog.
type SourceSpec struct {
	Kind SourceKind
	// Ref is the image reference (Docker, Containerd) or the path.
	Ref string
	// Digest overrides the manifest digest read from the source.
	Digest string
	// Name is the image name (repo:tag) to report, and to record in the
	// SBOM for sources that carry none (archives, layouts, directories).
	Name string
	// ContainerdNamespace and ContainerdAddress select the containerd
	// images; empty means k8s.io and containerd's default socket.
	ContainerdNamespace string
	ContainerdAddress   string
}

// DefaultContainerdNamespace is the namespace Kubernetes images live in.
const DefaultContainerdNamespace = "k8s.io"

func (s SourceSpec) userInput() string { return string(s.Kind) + ":" + s.Ref }

// displayName is the name a report carries for the image.
func (s SourceSpec) displayName() string {
	if s.Name != "" {
		return s.Name
	}
	switch s.Kind {
	case Docker, Containerd:
		return s.Ref
	}
	return filepath.Base(s.Ref)
}

// peekDigest reads the image's manifest digest without cataloguing, so
// that a cached SBOM is found before syft runs. "" means the digest is
// only known once the source is open (containerd, docker-archive).
func peekDigest(ctx context.Context, s SourceSpec) (string, error) {
	if s.Digest != "" {
		if !store.ValidDigest(s.Digest) {
			return "", fmt.Errorf("image digest %q is not a digest (sha256:<hex>)", s.Digest)
		}
		return s.Digest, nil
	}
	switch s.Kind {
	case OCIArchive:
		return ociArchiveDigest(s.Ref)
	case OCIDir:
		f, err := os.Open(filepath.Join(s.Ref, "index.json"))
		if err != nil {
			return "", fmt.Errorf("reading oci layout index: %w", err)
		}
		defer f.Close()
		return indexDigest(f)
	case Rootfs:
		return lifecycle.RootfsDigest(s.Ref)
	case Docker:
		return dockerDigest(ctx, s.Ref)
	case Containerd:
		return containerdDigest(ctx, s)
	}
	return "", nil
}

// ociArchiveDigest reads index.json out of an OCI archive: the digest of
// the manifest (or index) it names is what a runtime would report.
func ociArchiveDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("opening oci archive: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading oci archive %s: no index.json", path)
		}
		if err != nil {
			return "", fmt.Errorf("reading oci archive: %w", err)
		}
		if strings.TrimPrefix(filepath.Clean(h.Name), "./") == "index.json" {
			return indexDigest(tr)
		}
	}
}

func indexDigest(r io.Reader) (string, error) {
	var index struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.NewDecoder(io.LimitReader(r, 4<<20)).Decode(&index); err != nil {
		return "", fmt.Errorf("decoding oci index: %w", err)
	}
	if len(index.Manifests) == 0 || !store.ValidDigest(index.Manifests[0].Digest) {
		return "", errors.New("decoding oci index: no manifest digest")
	}
	return index.Manifests[0].Digest, nil
}

// dockerDigest asks dockerd for the image's repo digest, else its id: the
// same choice the agent's Docker listener makes, so both find one profile.
func dockerDigest(ctx context.Context, ref string) (string, error) {
	cli, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation())
	if err != nil {
		return "", fmt.Errorf("connecting to docker: %w", err)
	}
	defer cli.Close()
	img, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	for _, rd := range img.RepoDigests {
		if _, d, ok := strings.Cut(rd, "@"); ok {
			return d, nil
		}
	}
	return img.ID, nil
}

// containerdDigest asks containerd for the image's target digest in its
// namespace: what NRI and `ctr images ls` report, so the agent's profile
// key. stereoscope exports the image again, which changes its manifest
// digest, so the opened source cannot tell it.
func containerdDigest(ctx context.Context, s SourceSpec) (string, error) {
	addr := cmp.Or(s.ContainerdAddress, defaults.DefaultAddress)
	c, err := containerd.New(addr, containerd.WithDefaultNamespace(cmp.Or(s.ContainerdNamespace, DefaultContainerdNamespace)))
	if err != nil {
		return "", fmt.Errorf("connecting to containerd at %s: %w", addr, err)
	}
	defer c.Close()
	ref := s.Ref
	if named, err := reference.ParseNormalizedNamed(ref); err == nil {
		ref = reference.TagNameOnly(named).String() // nginx -> docker.io/library/nginx:latest, as containerd names it
	}
	img, err := c.GetImage(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("looking up image %s in containerd: %w", ref, err)
	}
	return img.Target().Digest.String(), nil
}

// openSource opens the image with syft's providers.
func openSource(ctx context.Context, s SourceSpec) (source.Source, error) {
	if s.Kind == Containerd {
		// stereoscope's containerd provider reads its namespace and socket
		// from the environment only.
		if err := os.Setenv("CONTAINERD_NAMESPACE", cmp.Or(s.ContainerdNamespace, DefaultContainerdNamespace)); err != nil {
			return nil, err
		}
		if s.ContainerdAddress != "" {
			if err := os.Setenv("CONTAINERD_ADDRESS", s.ContainerdAddress); err != nil {
				return nil, err
			}
		}
	}
	provider := string(s.Kind)
	if s.Kind == Rootfs {
		provider = "local-directory" // the "dir" tag also names oci-dir
	}
	cfg := syft.DefaultGetSourceConfig().WithSources(provider)
	if s.Kind == Rootfs {
		// the directory is the image's root: paths in the SBOM are then
		// the paths a container sees, as the profile records them.
		cfg = cfg.WithBasePath(s.Ref)
	}
	src, err := syft.GetSource(ctx, s.Ref, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", s.userInput(), err)
	}
	return src, nil
}
