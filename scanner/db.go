package scanner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/anchore/clio"
	"github.com/anchore/grype/grype"
	v6 "github.com/anchore/grype/grype/db/v6"
	"github.com/anchore/grype/grype/db/v6/distribution"
	"github.com/anchore/grype/grype/db/v6/installation"
	"github.com/anchore/grype/grype/event"
	"github.com/anchore/grype/grype/vulnerability"
	"github.com/wagoodman/go-partybus"
	"github.com/wagoodman/go-progress"

	"github.com/inuse-dev/inuse/internal/version"
)

// DBConfig locates grype's v6 vulnerability database.
type DBConfig struct {
	// Dir is the database root: <Dir>/6/vulnerability.db, as grype lays
	// it out, so `GRYPE_DB_CACHE_DIR=<Dir> grype` reads the same one.
	Dir string
	// MaxAge refuses a database built longer ago; 0 accepts any age
	// (air-gapped installations import databases by hand).
	MaxAge time.Duration
	// UpdateURL is the listing `update` reads; "" is grype's default.
	UpdateURL string
	// UpdateTimeout bounds `update` as a whole.
	UpdateTimeout time.Duration
}

// DBStatus describes the installed database.
type DBStatus struct {
	Path          string    `json:"path"`
	SchemaVersion string    `json:"schema_version,omitempty"`
	Built         time.Time `json:"built,omitzero"`
	From          string    `json:"from,omitempty"`
	Valid         bool      `json:"valid"`
	Error         string    `json:"error,omitempty"`
	// GoSymbols is whether the database carries the vulnerable symbols of
	// Go vulnerabilities (the Go vulnerability database's records, GO-…):
	// without them every Go verdict stays at package level.
	GoSymbols bool `json:"go_symbols"`
}

// DB is grype's v6 database through grype's own curator.
type DB struct {
	cfg DBConfig
	log *slog.Logger

	mu    sync.Mutex
	stamp time.Time // mtime of import.json when vp was opened
	vp    vulnerability.Provider
	rdr   v6.Reader // the reader vp reads through
	built time.Time
}

// OpenDB returns the database of cfg; nothing is read until it is used.
func OpenDB(cfg DBConfig, log *slog.Logger) *DB {
	if cfg.UpdateTimeout == 0 {
		cfg.UpdateTimeout = 2 * time.Minute
	}
	return &DB{cfg: cfg, log: log}
}

func (d *DB) installConfig() installation.Config {
	return installation.Config{
		DBRootDir:          d.cfg.Dir,
		ValidateAge:        d.cfg.MaxAge > 0,
		MaxAllowedBuiltAge: d.cfg.MaxAge,
		ValidateChecksum:   true,
		// inuse decides when to update; no hidden checks
		UpdateCheckMaxFrequency: 0,
	}
}

func (d *DB) curator(timeout time.Duration) (v6.Curator, error) {
	dist := distribution.DefaultConfig()
	dist.ID = clio.Identification{Name: "inuse", Version: version.Version}
	dist.RequireUpdateCheck = true
	if d.cfg.UpdateURL != "" {
		dist.LatestURL = d.cfg.UpdateURL
	}
	if timeout > 0 {
		dist.CheckTimeout, dist.UpdateTimeout = timeout, timeout
	}
	client, err := distribution.NewClient(dist)
	if err != nil {
		return nil, fmt.Errorf("creating database client: %w", err)
	}
	c, err := installation.NewCurator(d.installConfig(), client)
	if err != nil {
		return nil, fmt.Errorf("creating database curator: %w", err)
	}
	return c, nil
}

// Status reads the installed database's description. It hashes the
// database to check it, so it is not for every request.
func (d *DB) Status() (DBStatus, error) {
	c, err := d.curator(0)
	if err != nil {
		return DBStatus{}, err
	}
	s := c.Status()
	st := DBStatus{Path: s.Path, SchemaVersion: s.SchemaVersion, Built: s.Built, From: s.From, Valid: s.Error == nil}
	if s.Error != nil {
		st.Error = s.Error.Error()
		return st, nil
	}
	rdr, err := c.Reader()
	if err != nil {
		return st, fmt.Errorf("opening vulnerability database: %w", err)
	}
	defer rdr.Close()
	st.GoSymbols, err = hasGoSymbols(rdr)
	return st, err
}

// Import installs a database from a file (vulnerability.db or a grype
// archive) or a URL, reporting progress to w (nil: none).
func (d *DB) Import(ctx context.Context, ref string, w io.Writer) error {
	if abs, err := filepath.Abs(ref); err == nil && !isURL(ref) {
		ref = abs
	}
	return d.withProgress(ctx, w, d.cfg.UpdateTimeout, func(c v6.Curator) error {
		if err := c.Import(ref); err != nil {
			return fmt.Errorf("importing vulnerability database %s: %w", ref, err)
		}
		return nil
	})
}

// Update installs the newest database from the update listing.
func (d *DB) Update(ctx context.Context, w io.Writer) (bool, error) {
	url := d.cfg.UpdateURL
	if url == "" {
		url = distribution.DefaultConfig().LatestURL
	}
	var updated bool
	err := d.withProgress(ctx, w, d.cfg.UpdateTimeout, func(c v6.Curator) error {
		var err error
		updated, err = c.Update()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("updating vulnerability database from %s (offline? use `inuse db import FILE`): %w", url, err)
	}
	return updated, nil
}

// ErrDBTimeout is returned when an update or import outlives its bound.
var ErrDBTimeout = errors.New("scanner: vulnerability database operation timed out")

// withProgress runs op (grype's curator blocks without a context) bounded
// by timeout and ctx, printing grype's progress events to w.
func (d *DB) withProgress(ctx context.Context, w io.Writer, timeout time.Duration, op func(v6.Curator) error) error {
	c, err := d.curator(timeout)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if w != nil {
		bus := partybus.NewBus()
		sub := bus.Subscribe(event.UpdateVulnerabilityDatabase)
		grype.SetBus(bus)
		stop, shown := make(chan struct{}), make(chan struct{})
		go func() { showProgress(w, sub.Events(), stop); close(shown) }()
		// grype publishes on its bus unchecked, so a bus without
		// subscribers replaces ours (never nil)
		defer func() { close(stop); <-shown; _ = sub.Unsubscribe(); grype.SetBus(partybus.NewBus()) }()
	}
	done := make(chan error, 1)
	go func() { done <- op(c) }()
	select {
	case err := <-done:
		d.invalidate()
		return err
	case <-ctx.Done():
		// the curator goroutine is left to its own client timeouts
		return fmt.Errorf("%w after %s", ErrDBTimeout, timeout)
	}
}

// showProgress prints the stage and progress of grype's database events
// on one line that it rewrites, until stop.
func showProgress(w io.Writer, events <-chan partybus.Event, stop <-chan struct{}) {
	var sp progress.StagedProgressable
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := ""
	show := func() {
		if sp == nil {
			return
		}
		pct := 0.0
		if size := sp.Size(); size > 0 {
			pct = 100 * float64(sp.Current()) / float64(size)
		}
		line := fmt.Sprintf("\rvulnerability database: %-20s %3.0f%%", sp.Stage(), pct)
		if line != last {
			fmt.Fprint(w, line)
			last = line
		}
	}
	for {
		select {
		case <-stop:
			show()
			if last != "" {
				fmt.Fprintln(w)
			}
			return
		case e, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if v, ok := e.Value.(progress.StagedProgressable); ok {
				sp = v
			}
		case <-tick.C:
		}
		show()
	}
}

func (d *DB) invalidate() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stamp = time.Time{}
}

// provider returns the open database and its build time, reopening it
// when an import replaced it (import.json changes with every install).
func (d *DB) provider() (vulnerability.Provider, time.Time, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ic := d.installConfig()
	fi, err := os.Stat(filepath.Join(ic.DBDirectoryPath(), "import.json"))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("no vulnerability database in %s (run `inuse db import FILE` or `inuse db update`): %w", d.cfg.Dir, err)
	}
	if d.vp != nil && fi.ModTime().Equal(d.stamp) {
		return d.vp, d.built, nil
	}
	c, err := d.curator(0)
	if err != nil {
		return nil, time.Time{}, err
	}
	s := c.Status()
	if s.Error != nil {
		return nil, time.Time{}, fmt.Errorf("loading vulnerability database: %w", s.Error)
	}
	rdr, err := c.Reader()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("opening vulnerability database: %w", err)
	}
	if d.vp != nil {
		_ = d.vp.Close()
	}
	d.vp, d.rdr, d.built, d.stamp = v6.NewVulnerabilityProvider(rdr), rdr, s.Built, fi.ModTime()
	return d.vp, d.built, nil
}

// Build names the installed database's build (its build time), opening
// it if needed: a report depends on it, so a new build makes every report
// stale.
func (d *DB) Build() (string, error) {
	_, built, err := d.provider()
	if err != nil {
		return "", err
	}
	return built.UTC().Format(time.RFC3339), nil
}

// Close closes the open database.
func (d *DB) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.vp == nil {
		return nil
	}
	err := d.vp.Close()
	d.vp = nil
	return err
}

func isURL(ref string) bool {
	for i, r := range ref {
		switch {
		case r == ':':
			return i > 0 && len(ref) > i+2 && ref[i+1:i+3] == "//"
		case r < 'a' || r > 'z':
			if r < 'A' || r > 'Z' {
				return false
			}
		}
	}
	return false
}
