package main

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// scannerFlags locate the SBOM cache and the vulnerability database.
var scannerFlags = []cli.Flag{
	&cli.StringFlag{Name: "cache-dir", EnvVars: []string{"INUSE_CACHE_DIR"}, Usage: "SBOM and match cache (default: $XDG_CACHE_HOME/inuse or ~/.cache/inuse)"},
	&cli.StringFlag{Name: "db-dir", EnvVars: []string{"INUSE_DB_DIR"}, Usage: "grype v6 vulnerability database root (default: <cache-dir>/db)"},
	&cli.DurationFlag{Name: "db-max-age", EnvVars: []string{"INUSE_DB_MAX_AGE"}, Usage: "refuse a vulnerability database built longer ago (0: any age)"},
}

// excludeExecSessionsFlag leaves what only exec sessions loaded out of
// the verdicts.
var excludeExecSessionsFlag = &cli.BoolFlag{
	Name: "exclude-exec-sessions", EnvVars: []string{"INUSE_EXCLUDE_EXEC_SESSIONS"},
	Usage: "what only exec sessions (docker exec, kubectl exec: a person's shell, not the workload's code path) loaded does not put a package in use",
}

// containerdFlags select the images of containerd: sources.
var containerdFlags = []cli.Flag{
	&cli.StringFlag{Name: "containerd-namespace", Value: scanner.DefaultContainerdNamespace, EnvVars: []string{"INUSE_CONTAINERD_NAMESPACE"}, Usage: "namespace of containerd: images"},
	// --containerd-socket and INUSE_CONTAINERD_SOCKET are the deprecated
	// spellings, kept for existing scripts.
	&cli.StringFlag{Name: "containerd-address", Aliases: []string{"containerd-socket"}, EnvVars: []string{"INUSE_CONTAINERD_ADDRESS", "INUSE_CONTAINERD_SOCKET"}, Usage: "containerd's socket (default: containerd's own default; --containerd-socket is deprecated)"},
}

// containerdSource sets where spec's containerd images are read from.
func containerdSource(c *cli.Context, spec *scanner.SourceSpec) {
	spec.ContainerdNamespace, spec.ContainerdAddress = c.String("containerd-namespace"), c.String("containerd-address")
}

func cacheDir(c *cli.Context) (string, error) {
	if d := c.String("cache-dir"); d != "" {
		return d, nil
	}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "inuse"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the cache directory (set --cache-dir or INUSE_CACHE_DIR): %w", err)
	}
	return filepath.Join(home, ".cache", "inuse"), nil
}

func scannerConfig(c *cli.Context) (scanner.Config, error) {
	dir, err := cacheDir(c)
	if err != nil {
		return scanner.Config{}, err
	}
	return scanner.Config{
		CacheDir: dir,
		DB:       scanner.DBConfig{Dir: cmp.Or(c.String("db-dir"), filepath.Join(dir, "db")), MaxAge: c.Duration("db-max-age")},
		Log:      cliapp.Logger(c),
	}, nil
}

var scanCommand = &cli.Command{
	Name:  "scan",
	Usage: "list an image's vulnerabilities with whether each is in use",
	ArgsUsage: "[IMAGE]   (an image of dockerd, docker:NAME, or containerd:NAME; " +
		"or one of --rootfs, --oci-archive, --oci-dir, --docker-archive)",
	Flags: slices.Concat([]cli.Flag{
		&cli.StringFlag{Name: "rootfs", Usage: "scan a root filesystem directory"},
		&cli.StringFlag{Name: "oci-archive", Usage: "scan an OCI archive (tar of an image layout)"},
		&cli.StringFlag{Name: "oci-dir", Usage: "scan an OCI image layout directory"},
		&cli.StringFlag{Name: "docker-archive", Usage: "scan a `docker save` tarball"},
		&cli.StringFlag{Name: "image-digest", EnvVars: []string{"INUSE_IMAGE_DIGEST"}, Usage: "the image's manifest digest, the profile key (default: read from the image)"},
		// --name is the deprecated spelling, kept for existing scripts.
		&cli.StringFlag{Name: "image-name", Aliases: []string{"name"}, Usage: "the image's name (repo:tag), recorded in the SBOM of archives and layouts (--name is deprecated)"},
		&cli.StringFlag{Name: "format", Value: "table", EnvVars: []string{"INUSE_FORMAT"}, Usage: "table, json, openvex or cyclonedx"},
		cliapp.RedisFlag,
		excludeExecSessionsFlag,
	}, containerdFlags, scannerFlags, cliapp.LearningFlags),
	Action: runScan,
}

// sourceSpec reads which image to scan from the arguments and flags.
func sourceSpec(c *cli.Context) (scanner.SourceSpec, error) {
	spec := scanner.SourceSpec{Digest: c.String("image-digest"), Name: c.String("image-name")}
	containerdSource(c, &spec)
	var kinds []string
	for flag, kind := range map[string]scanner.SourceKind{
		"rootfs": scanner.Rootfs, "oci-archive": scanner.OCIArchive, "oci-dir": scanner.OCIDir, "docker-archive": scanner.DockerArchive,
	} {
		if v := c.String(flag); v != "" {
			spec.Kind, spec.Ref = kind, v
			kinds = append(kinds, "--"+flag)
		}
	}
	if c.NArg() > 0 {
		ref := c.Args().First()
		spec.Kind, spec.Ref = scanner.Docker, ref
		for _, k := range []scanner.SourceKind{scanner.Docker, scanner.Containerd} {
			if r, ok := strings.CutPrefix(ref, string(k)+":"); ok {
				spec.Kind, spec.Ref = k, r
			}
		}
		kinds = append(kinds, "IMAGE")
	}
	if len(kinds) != 1 || c.NArg() > 1 {
		return spec, cli.Exit("scan needs exactly one of IMAGE, --rootfs, --oci-archive, --oci-dir or --docker-archive", 2)
	}
	return spec, nil
}

func runScan(c *cli.Context) error {
	spec, err := sourceSpec(c)
	if err != nil {
		return err
	}
	format := c.String("format")
	if !slices.Contains(scanner.Formats, format) {
		return cli.Exit(fmt.Sprintf("unknown --format %q (want %s)", format, strings.Join(scanner.Formats, ", ")), 2)
	}
	rep, err := report(c, spec)
	if err != nil {
		return err
	}
	if spec.Name != "" {
		rep.Name = spec.Name
	}
	return scanner.Write(c.App.Writer, rep, format)
}

// report catalogues the image (or finds it in the cache) and joins it with
// its profile.
func report(c *cli.Context, spec scanner.SourceSpec) (*scanner.Report, error) {
	cfg, err := scannerConfig(c)
	if err != nil {
		return nil, err
	}
	if c.String(cliapp.RedisFlag.Name) != "" {
		st, err := cliapp.OpenStore(c)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		cfg.Plans = st // the Go probe plans, for the agents
	}
	sc, err := scanner.New(cfg)
	if err != nil {
		return nil, err
	}
	defer sc.Close()
	digest, err := sc.Catalog(c.Context, spec)
	if err != nil {
		return nil, err
	}
	profile, err := readProfile(c, digest)
	if err != nil {
		return nil, err
	}
	rep, err := sc.Report(c.Context, digest, profile)
	if err == nil && c.Bool(excludeExecSessionsFlag.Name) {
		rep = rep.WithoutExecSessions()
	}
	return rep, err
}

// readProfile reads the image's profile when --redis is given; without a
// store, or while the store has no profile of the image, it is nil and
// every package is unknown.
func readProfile(c *cli.Context, digest string) (*store.Profile, error) {
	if c.String(cliapp.RedisFlag.Name) == "" {
		return nil, nil
	}
	st, err := cliapp.OpenStore(c)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	p, err := st.ProfileSections(c.Context, digest, time.Now(), cliapp.Learning(c), scanner.ProfileSections...)
	if errors.Is(err, store.ErrNotFound) {
		cliapp.Logger(c).Warn("no runtime profile of the image yet: every package is unknown", "digest", digest)
		return nil, nil
	}
	return p, err
}
