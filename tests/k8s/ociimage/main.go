// Command ociimage packs a root directory as a one-layer image archive
// (docker save format, which `ctr images import` takes), as the tests pack
// their images with go-containerregistry: the cluster script imports the
// images it needs with it and pulls nothing from a registry.
//
//	ociimage -root DIR -ref REF -o FILE [-user UID:GID] [-- CMD...]
package main

import (
	"archive/tar"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "ociimage: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	root := flag.String("root", "", "the image's root file system")
	ref := flag.String("ref", "", "the image's reference")
	out := flag.String("o", "", "the archive to write")
	user := flag.String("user", "", "the image's user (uid:gid); empty: root")
	flag.Parse()
	if *root == "" || *ref == "" || *out == "" {
		return fmt.Errorf("-root, -ref and -o are required")
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return tarDir(*root), nil })
	if err != nil {
		return fmt.Errorf("packing %s: %w", *root, err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = flag.Args()
	cf.Config.User = *user
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	tag, err := name.NewTag(*ref)
	if err != nil {
		return fmt.Errorf("parsing %s: %w", *ref, err)
	}
	return tarball.WriteToFile(*out, tag, img)
}

// tarDir streams dir as a tar archive, owners and modes kept.
func tarDir(dir string) io.ReadCloser {
	r, w := io.Pipe()
	go func() {
		tw := tar.NewWriter(w)
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(dir, path)
			if err != nil || rel == "." {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			link := ""
			if info.Mode()&fs.ModeSymlink != 0 {
				if link, err = os.Readlink(path); err != nil {
					return err
				}
			}
			hdr, err := tar.FileInfoHeader(info, link)
			if err != nil {
				return err
			}
			hdr.Name = rel
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if !info.Mode().IsRegular() {
				return nil
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		})
		if err == nil {
			err = tw.Close()
		}
		w.CloseWithError(err)
	}()
	return r
}
