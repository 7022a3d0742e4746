package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/scanner"
)

// maxEnrichInput bounds the report enrich reads.
const maxEnrichInput = 256 << 20

var enrichCommand = &cli.Command{
	Name:      "enrich",
	Usage:     "annotate a grype, Trivy or CycloneDX JSON report with whether each finding is in use",
	ArgsUsage: "REPORT (a file, or - for stdin)",
	Flags: slices.Concat([]cli.Flag{
		// --image is the deprecated spelling, kept for existing scripts: it
		// is a SOURCE here, a NAME elsewhere.
		&cli.StringFlag{Name: "source", Aliases: []string{"image"}, Required: true, Usage: "the scanned image: as for scan (docker:NAME, containerd:NAME), or rootfs:DIR, oci-archive:FILE, oci-dir:DIR, docker-archive:FILE (--image is deprecated)"},
		&cli.StringFlag{Name: "image-digest", EnvVars: []string{"INUSE_IMAGE_DIGEST"}, Usage: "the image's manifest digest (default: read from the image)"},
		cliapp.RedisFlag,
		excludeExecSessionsFlag,
	}, containerdFlags, scannerFlags, cliapp.LearningFlags),
	Action: func(c *cli.Context) error {
		if c.NArg() != 1 {
			return cli.Exit("enrich needs one REPORT", 2)
		}
		spec := enrichSource(c)
		var in io.Reader = os.Stdin
		if name := c.Args().First(); name != "-" {
			f, err := os.Open(name)
			if err != nil {
				return fmt.Errorf("opening report: %w", err)
			}
			defer f.Close()
			in = f
		}
		rep, err := report(c, spec)
		if err != nil {
			return err
		}
		out, err := scanner.Enrich(io.LimitReader(in, maxEnrichInput), rep)
		if err != nil {
			return err
		}
		_, err = c.App.Writer.Write(out)
		return err
	},
}

// enrichSource reads which image the report was made of from the flags.
func enrichSource(c *cli.Context) scanner.SourceSpec {
	spec := sourceOf(c.String("source"))
	spec.Digest = c.String("image-digest")
	containerdSource(c, &spec)
	return spec
}

// sourceOf reads an image source given as KIND:REF; a bare name is a
// dockerd image.
func sourceOf(ref string) scanner.SourceSpec {
	kinds := map[string]scanner.SourceKind{
		"docker": scanner.Docker, "containerd": scanner.Containerd, "rootfs": scanner.Rootfs, "dir": scanner.Rootfs,
		"oci-archive": scanner.OCIArchive, "oci-dir": scanner.OCIDir, "docker-archive": scanner.DockerArchive,
	}
	for prefix, kind := range kinds {
		if r, ok := strings.CutPrefix(ref, prefix+":"); ok {
			return scanner.SourceSpec{Kind: kind, Ref: r}
		}
	}
	return scanner.SourceSpec{Kind: scanner.Docker, Ref: ref}
}
