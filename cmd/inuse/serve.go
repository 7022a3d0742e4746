package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/api"
	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/scanner"
)

var serveCommand = &cli.Command{
	Name:  "serve",
	Usage: "serve the API, the web page and the runtimeimages endpoint, and keep the reports up to date",
	Flags: slices.Concat([]cli.Flag{
		cliapp.RedisFlag,
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8080", EnvVars: []string{"INUSE_LISTEN"}, Usage: "address to listen on"},
		&cli.StringFlag{Name: "tls", Value: tlsOff, EnvVars: []string{"INUSE_TLS"}, Usage: "without --tls-cert: off (plain HTTP) or self-signed (HTTPS with a certificate generated on first start and kept in --data-dir)"},
		&cli.StringFlag{Name: "tls-cert", EnvVars: []string{"INUSE_TLS_CERT"}, Usage: "serve HTTPS with this certificate (PEM), read again when it changes; wins over --tls"},
		&cli.StringFlag{Name: "tls-key", EnvVars: []string{"INUSE_TLS_KEY"}, Usage: "the certificate's key (PEM)"},
		&cli.StringSliceFlag{Name: "tls-san", EnvVars: []string{"INUSE_TLS_SAN"}, Usage: "more names or IP addresses of the self-signed certificate (it always has the listen host, the host name, localhost and 127.0.0.1)"},
		&cli.StringFlag{Name: "data-dir", EnvVars: []string{"INUSE_DATA_DIR"}, Usage: "where serve keeps its self-signed certificate (default: $XDG_DATA_HOME/inuse or ~/.local/share/inuse)"},
		&cli.StringFlag{Name: "admin-token-file", EnvVars: []string{"INUSE_ADMIN_TOKEN_FILE"}, Usage: "file holding the admin credential (or set INUSE_ADMIN_TOKEN)"},
		&cli.StringFlag{Name: "cluster-name", EnvVars: []string{"INUSE_CLUSTER_NAME"}, Usage: "answer runtimeimages only for this clusterName (default: any)"},
		&cli.StringFlag{Name: "catalog-from", EnvVars: []string{"INUSE_CATALOG_FROM"}, Usage: "catalog images missing from the SBOM cache from docker or containerd (default: only images `inuse scan` cached)"},
		&cli.DurationFlag{Name: "poll-interval", Value: time.Second, EnvVars: []string{"INUSE_POLL_INTERVAL"}, Usage: "how often the background scanner reads the image index"},
		&cli.StringFlag{Name: "replica-id", EnvVars: []string{"INUSE_REPLICA_ID"}, Usage: "this replica's name in the scan leases it holds in Redis, e.g. the pod name (default: host name and a random suffix)"},
		&cli.IntFlag{Name: "report-cache", Value: 128, EnvVars: []string{"INUSE_REPORT_CACHE"}, Usage: "reports kept in memory; the others are read from Redis when asked for"},
		&cli.DurationFlag{Name: "scan-lease", Value: 30 * time.Second, EnvVars: []string{"INUSE_SCAN_LEASE"}, Usage: "how long a replica's claim on an image's scan lasts unless renewed (every third of it): the delay before another replica takes over from one that died"},
		&cli.Float64Flag{Name: "rate-limit", Value: 20, EnvVars: []string{"INUSE_RATE_LIMIT"}, Usage: "requests per second per token"},
		&cli.IntFlag{Name: "rate-burst", Value: 100, EnvVars: []string{"INUSE_RATE_BURST"}, Usage: "burst per token"},
		&cli.Int64Flag{Name: "memory-limit", Value: defaultMemoryLimit, EnvVars: []string{"INUSE_MEMORY_LIMIT"}, Usage: "soft limit of the Go runtime's memory in bytes (the collector works harder near it; GOMEMLIMIT wins; 0: none)"},
		excludeExecSessionsFlag,
	}, containerdFlags, scannerFlags, cliapp.LearningFlags),
	Action: runServe,
}

// adminSecret reads the admin credential: the file wins over the
// variable. Surrounding whitespace (a trailing newline) is not part of it.
func adminSecret(c *cli.Context) (string, error) {
	if f := c.String("admin-token-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("reading --admin-token-file: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", cli.Exit("--admin-token-file is empty", 2)
		}
		return s, nil
	}
	return strings.TrimSpace(os.Getenv("INUSE_ADMIN_TOKEN")), nil
}

// minAdminSecret keeps a guessable admin credential out of production.
const minAdminSecret = 16

// defaultMemoryLimit keeps a replica's resident memory near 256 MiB under
// a full cluster's load: without it, the collector lets the heap grow to
// twice what is live, on top of the ~100 MiB that syft and grype's code
// and tables take before any image.
const defaultMemoryLimit = 160 << 20

func runServe(c *cli.Context) error {
	log := cliapp.Logger(c)
	if limit := c.Int64("memory-limit"); limit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(limit)
	}
	secret, err := adminSecret(c)
	if err != nil {
		return err
	}
	if secret != "" && len(secret) < minAdminSecret {
		return cli.Exit(fmt.Sprintf("the admin credential must be at least %d characters", minAdminSecret), 2)
	}
	if secret == "" {
		log.Warn("no admin credential (--admin-token-file or INUSE_ADMIN_TOKEN): tokens are managed with `inuse token` only, and the web page cannot log in")
	}
	catalog := api.CatalogFallback{
		From:                scanner.SourceKind(c.String("catalog-from")),
		ContainerdNamespace: c.String("containerd-namespace"), ContainerdAddress: c.String("containerd-address"),
	}
	if err := catalog.Validate(); err != nil {
		return cli.Exit(fmt.Sprintf("--catalog-from: %v", err), 2)
	}
	if t := c.String("tls"); t != tlsOff && t != tlsSelfSigned {
		return cli.Exit(fmt.Sprintf("--tls (INUSE_TLS) must be %s or %s, not %q", tlsOff, tlsSelfSigned, t), 2)
	}
	st, err := cliapp.OpenStore(c)
	if err != nil {
		return err
	}
	defer st.Close()
	scfg, err := scannerConfig(c)
	if err != nil {
		return err
	}
	scfg.Plans = st // the Go probe plans, for the agents
	sc, err := scanner.New(scfg)
	if err != nil {
		return err
	}
	defer sc.Close()

	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	srv := api.New(api.Config{
		Store: st, Learning: cliapp.Learning(c), ExcludeExecSessions: c.Bool(excludeExecSessionsFlag.Name), AdminSecret: secret, ClusterName: c.String("cluster-name"), Log: log,
		Reports: api.ScannerReports(sc, catalog),
		Formats: api.Formats{
			OpenVEX:   func(w io.Writer, rep *scanner.Report) error { return scanner.Write(w, rep, "openvex") },
			CycloneDX: func(w io.Writer, rep *scanner.Report) error { return scanner.Write(w, rep, "cyclonedx") },
			Enrich:    scanner.Enrich,
		},
		PollInterval: c.Duration("poll-interval"), ReportCache: c.Int("report-cache"), ReplicaID: c.String("replica-id"), LeaseDuration: c.Duration("scan-lease"),
		RateLimit: c.Float64("rate-limit"), RateBurst: c.Int("rate-burst"),
	})
	certFile, keyFile := c.String("tls-cert"), c.String("tls-key")
	if certFile == "" && keyFile == "" && c.String("tls") == tlsSelfSigned {
		dir, err := dataDir(c)
		if err != nil {
			return err
		}
		if certFile, keyFile, err = api.SelfSigned(dir, selfSignedHosts(c)); err != nil {
			return err
		}
	}
	scheme := "http"
	if certFile != "" {
		scheme = "https"
	}
	log.Info("serving", "address", scheme+"://"+ln.Addr().String())
	return srv.Serve(c.Context, ln, certFile, keyFile)
}

// Values of --tls.
const (
	tlsOff        = "off"
	tlsSelfSigned = "self-signed"
)

func dataDir(c *cli.Context) (string, error) {
	if d := c.String("data-dir"); d != "" {
		return d, nil
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "inuse"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the data directory (set --data-dir): %w", err)
	}
	return filepath.Join(home, ".local", "share", "inuse"), nil
}

// selfSignedHosts are the names a new self-signed certificate is made
// for, besides localhost and 127.0.0.1: the listen host unless it is a
// wildcard, the host name (a pod's name in Kubernetes) and --tls-san.
func selfSignedHosts(c *cli.Context) []string {
	var hosts []string
	if h, _, err := net.SplitHostPort(c.String("listen")); err == nil && h != "" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
			hosts = append(hosts, h)
		}
	}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	return append(hosts, c.StringSlice("tls-san")...)
}
