package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/cataloging"

	"github.com/inuse-dev/inuse/scanner"
	"github.com/inuse-dev/inuse/scanner/vulndbtest"
)

// The images the replicas scan are generated, not pulled: each image of
// the fleet gets a Debian 12 root holding only dpkg's records (os-release,
// the status file and each package's file list) of one package per
// library name its files use, which owns those libraries. Its profile's
// reads and maps then put packages in use, as on a real image, and half
// of them are older than the fixed version of an advisory.

// packageName is the Debian package that owns the libraries named after w.
func packageName(w string) string { return "lib" + w }

// fixedMinor is the first fixed version's minor of every advisory: a
// package whose minor is below it is affected.
const fixedMinor = 10

// advisories has one advisory per library name, for the database the
// replicas match against.
func advisories() []vulndbtest.Advisory {
	out := make([]vulndbtest.Advisory, 0, len(words))
	for i, w := range words {
		out = append(out, vulndbtest.Advisory{
			ID: fmt.Sprintf("CVE-2099-%04d", i+1), Severity: []string{"critical", "high", "medium", "low"}[i%4],
			Package: packageName(w), Ecosystem: "deb", VersionFormat: "deb", OS: &vulndbtest.Bookworm,
			Constraint: fmt.Sprintf("< 1.%d-1", fixedMinor), Fixed: fmt.Sprintf("1.%d-1", fixedMinor),
		})
	}
	return out
}

// libraryWord is the word a library's name (lib<word><number>, without
// lib) starts with: the longest one followed by digits only, since words
// such as bz2 end in digits too.
func libraryWord(name string) string {
	best := ""
	for _, w := range words {
		rest, ok := strings.CutPrefix(name, w)
		if ok && len(w) > len(best) && strings.Trim(rest, "0123456789") == "" {
			best = w
		}
	}
	return best
}

// writeRootfs writes image i's root into dir, which must be empty.
func (f fleet) writeRootfs(i int, img image, dir string) error {
	owned := map[string][]string{} // package: its files, relative to /
	for _, fl := range img.files {
		lib, ok := strings.CutPrefix(fl.path, "/usr/lib/x86_64-linux-gnu/lib")
		if fl.kind != library || !ok {
			continue
		}
		w := libraryWord(lib[:strings.Index(lib, ".so")])
		owned[packageName(w)] = append(owned[packageName(w)], strings.TrimPrefix(fl.path, "/"))
	}
	info := filepath.Join(dir, "var/lib/dpkg/info")
	if err := os.MkdirAll(info, 0o755); err != nil {
		return err
	}
	var status strings.Builder
	for _, name := range slices.Sorted(maps.Keys(owned)) {
		minor := (i + len(name)) % (2 * fixedMinor)
		fmt.Fprintf(&status, "Package: %s\nStatus: install ok installed\nPriority: optional\nSection: libs\n"+
			"Installed-Size: 100\nMaintainer: Fleet <fleet@example.com>\nArchitecture: amd64\nVersion: 1.%d-1\n"+
			"Description: the %s library\n\n", name, minor, name)
		var sums strings.Builder
		for _, p := range owned[name] {
			fmt.Fprintf(&sums, "%032x  %s\n", len(p), p)
		}
		if err := os.WriteFile(filepath.Join(info, name+".md5sums"), []byte(sums.String()), 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "var/lib/dpkg/status"), []byte(status.String()), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		return err
	}
	osRelease := "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n" +
		"VERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n"
	return os.WriteFile(filepath.Join(dir, "etc/os-release"), []byte(osRelease), 0o644)
}

// catalog puts every image's SBOM into the scanner cache under cacheDir,
// as `inuse scan --rootfs ROOT --image-digest DIGEST` would, workers at
// a time; each root is written into scratch and removed once catalogued.
func (f fleet) catalog(ctx context.Context, cacheDir, scratch string, workers int) error {
	sc, err := scanner.New(scanner.Config{CacheDir: cacheDir})
	if err != nil {
		return err
	}
	defer sc.Close()
	// syft builds its license scanner (seconds of CPU) for every SBOM
	// unless the context carries one: build it once for every image.
	ctx, err = syft.SetContextLicenseScanner(ctx, cataloging.DefaultLicenseConfig())
	if err != nil {
		return err
	}
	next := make(chan int)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range next {
				if errs[w] != nil {
					continue
				}
				img := f.image(i)
				dir := filepath.Join(scratch, fmt.Sprintf("rootfs-%d", i))
				err := f.writeRootfs(i, img, dir)
				if err == nil {
					_, err = sc.Catalog(ctx, scanner.SourceSpec{Kind: scanner.Rootfs, Ref: dir, Digest: img.digest, Name: img.name})
				}
				if rerr := os.RemoveAll(dir); err == nil {
					err = rerr
				}
				if err != nil {
					errs[w] = fmt.Errorf("cataloguing image %d: %w", i, err)
				}
			}
		})
	}
	for i := range f.Images {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
