package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// CatalogFallback says where the background scanner catalogues an image
// that is missing from the SBOM cache: from the local runtime named by
// From, or, with From empty, nowhere: the image then waits until `inuse
// scan` caches it.
type CatalogFallback struct {
	From                scanner.SourceKind // docker, containerd or empty
	ContainerdNamespace string
	ContainerdAddress   string // containerd's socket; empty for containerd's default
}

// Validate checks From.
func (f CatalogFallback) Validate() error {
	if f.From != "" && f.From != scanner.Docker && f.From != scanner.Containerd {
		return fmt.Errorf("want docker or containerd, not %q", f.From)
	}
	return nil
}

// ScannerReports computes reports with sc, cataloguing the images missing
// from its SBOM cache as fallback (which must be valid) says.
func ScannerReports(sc *scanner.Scanner, fallback CatalogFallback) Reports {
	return &scannerReports{sc: sc, fallback: fallback}
}

type scannerReports struct {
	sc       *scanner.Scanner
	fallback CatalogFallback
}

// catalogTimeout bounds cataloguing one name of an image.
const catalogTimeout = 10 * time.Minute

func (r *scannerReports) Report(ctx context.Context, digest string, p *store.Profile) (*scanner.Report, error) {
	if !r.sc.Cached(digest) {
		if err := r.catalog(ctx, digest, p.Names); err != nil {
			return nil, err
		}
	}
	return r.sc.Report(ctx, digest, p)
}

func (r *scannerReports) DBBuild(context.Context) (string, error) { return r.sc.DB().Build() }

// catalog puts digest in the SBOM cache from the fallback runtime, trying
// each name the image runs under until one works.
func (r *scannerReports) catalog(ctx context.Context, digest string, names []string) error {
	from := r.fallback.From
	if from == "" {
		return fmt.Errorf("%s is not in the SBOM cache: run `inuse scan` on it, or serve with --catalog-from", digest)
	}
	var errs []error
	for _, name := range names {
		ctx, cancel := context.WithTimeout(ctx, catalogTimeout)
		_, err := r.sc.Catalog(ctx, scanner.SourceSpec{
			Kind: from, Ref: name, Digest: digest, Name: name,
			ContainerdNamespace: r.fallback.ContainerdNamespace, ContainerdAddress: r.fallback.ContainerdAddress,
		})
		cancel()
		if err == nil {
			break
		}
		errs = append(errs, fmt.Errorf("cataloguing %s: %w", name, err))
	}
	if !r.sc.Cached(digest) {
		return errors.Join(append(errs, fmt.Errorf("%s could not be catalogued from %s", digest, from))...)
	}
	return nil
}
