package plugin

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DefaultContainerdAddress is containerd's socket.
const DefaultContainerdAddress = "/run/containerd/containerd.sock"

// CRIImages finds image digests through the CRI image service of the
// runtime's socket, for runtimes whose NRI events carry no image (NRI
// before containerd 2.4). Answers are cached by image name.
type CRIImages struct {
	conn   *grpc.ClientConn
	images cri.ImageServiceClient
	cache  sync.Map // image name -> digest
}

// NewCRIImages connects lazily to the CRI socket at address.
func NewCRIImages(address string) (*CRIImages, error) {
	conn, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connecting to CRI at %s: %w", address, err)
	}
	return &CRIImages{conn: conn, images: cri.NewImageServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *CRIImages) Close() error { return c.conn.Close() }

// lookupBudget bounds a lookup inside an NRI handler, which must answer
// the runtime within its 2 s budget.
const lookupBudget = 500 * time.Millisecond

// Digest returns the manifest digest of a pulled image (from its repo
// digests), else the image id.
func (c *CRIImages) Digest(ctx context.Context, image string) (string, error) {
	if d, ok := c.cache.Load(image); ok {
		return d.(string), nil
	}
	ctx, cancel := context.WithTimeout(ctx, lookupBudget)
	defer cancel()
	resp, err := c.images.ImageStatus(ctx, &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: image}})
	if err != nil {
		return "", fmt.Errorf("looking up image %s: %w", image, err)
	}
	img := resp.GetImage()
	if img == nil {
		return "", fmt.Errorf("looking up image %s: not found", image)
	}
	digest := img.GetId()
	for _, rd := range img.GetRepoDigests() {
		if _, d, ok := strings.Cut(rd, "@"); ok {
			digest = d
			break
		}
	}
	c.cache.Store(image, digest)
	return digest, nil
}
