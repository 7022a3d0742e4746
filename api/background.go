package api

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// cache holds what the background scanner knows of every image of the
// index: its last stamp, the workloads of its last profile read, and its
// report. Handlers read it; only the poller and the scan workers write.
type cache struct {
	cfg     *Config
	log     *slog.Logger
	metrics *metrics

	mu     sync.RWMutex
	images map[string]*entry
	// ready is closed and replaced after every poll, for tests and
	// waiters that want the next poll.
	polled chan struct{}
	queue  chan string
}

// entry is one image in the cache.
type entry struct {
	stamp     store.Stamp
	workloads []store.Workload
	names     []string
	// The report and the stamp it was computed for.
	report    *scanner.Report
	reportFor store.Stamp
	inUse     []runtimePackage
	scanning  bool
	// err is the last scan failure; retryAt is when to try again.
	err     error
	retryAt time.Time
}

func newCache(cfg *Config, log *slog.Logger, m *metrics) *cache {
	return &cache{
		cfg: cfg, log: log.With(logfields.Component, "api.scanner"), metrics: m,
		images: map[string]*entry{}, polled: make(chan struct{}),
		// The queue holds each digest at most once (scanning marks it),
		// so its size bounds nothing that matters; a full queue waits
		// for the next poll.
		queue: make(chan string, 1024),
	}
}

// reportStatus says where an image's report is.
type reportStatus string

const (
	statusReady       reportStatus = "ready"
	statusPending     reportStatus = "pending"
	statusFailed      reportStatus = "failed"
	statusUnavailable reportStatus = "unavailable" // no scanner configured
)

// reportOf returns the report of digest and its status.
func (c *cache) reportOf(digest string) (*scanner.Report, reportStatus, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e := c.images[digest]
	switch {
	case e != nil && e.report != nil:
		return e.report, statusReady, nil
	case c.cfg.Reports == nil:
		return nil, statusUnavailable, nil
	case e != nil && e.err != nil:
		return nil, statusFailed, e.err
	}
	return nil, statusPending, nil
}

// run polls the index every PollInterval and runs the scan workers, until
// ctx is done.
func (c *cache) run(ctx context.Context) {
	var wg sync.WaitGroup
	if c.cfg.Reports != nil {
		for range c.cfg.ScanWorkers {
			wg.Go(func() { c.worker(ctx) })
		}
	}
	t := time.NewTicker(c.cfg.PollInterval)
	defer t.Stop()
	for {
		c.poll(ctx)
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
		}
	}
}

// waitPoll returns after the next complete poll, or when ctx is done.
func (c *cache) waitPoll(ctx context.Context) {
	c.mu.RLock()
	ch := c.polled
	c.mu.RUnlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// poll reads the stamps of every image (one round trip), reads again the
// profiles whose stamp changed, and queues the images whose report is
// missing or stale.
func (c *cache) poll(ctx context.Context) {
	now := time.Now()
	stamps, err := c.cfg.Store.Stamps(ctx, now, c.cfg.Learning)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("reading the image index", logfields.Error, err)
		}
		return
	}
	seen := make(map[string]bool, len(stamps))
	for _, st := range stamps {
		seen[st.Digest] = true
		c.mu.RLock()
		e := c.images[st.Digest]
		var old store.Stamp
		if e != nil {
			old = e.stamp
		}
		c.mu.RUnlock()
		if e == nil || old.Workloads != st.Workloads {
			// Names and workloads come from the profile; sections are
			// read again by the scan.
			p, err := c.cfg.Store.Profile(ctx, st.Digest, now, c.cfg.Learning)
			if err != nil {
				c.log.Warn("reading profile", logfields.Image, st.Digest, logfields.Error, err)
				continue
			}
			c.mu.Lock()
			if e = c.images[st.Digest]; e == nil {
				e = &entry{}
				c.images[st.Digest] = e
			}
			e.workloads, e.names = p.Workloads, p.Names
			c.mu.Unlock()
		}
		c.mu.Lock()
		e.stamp = st
		stale := e.report == nil || changed(e.reportFor, st)
		due := !e.scanning && stale && !now.Before(e.retryAt) && c.cfg.Reports != nil
		if due {
			select {
			case c.queue <- st.Digest:
				e.scanning = true
			default:
			}
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	for d := range c.images {
		if !seen[d] {
			delete(c.images, d)
		}
	}
	c.metrics.setImages(c.images)
	close(c.polled)
	c.polled = make(chan struct{})
	c.mu.Unlock()
}

// changed reports whether a report computed for stamp a is stale at b:
// the profile grew, or its learning state or confidence moved (which
// turns unknown verdicts into not_observed ones).
func changed(a, b store.Stamp) bool {
	return a.Revision != b.Revision || a.State != b.State || a.Confidence != b.Confidence
}

func (c *cache) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-c.queue:
			c.scan(ctx, d)
		}
	}
}

// scan computes the report of digest from its current profile.
func (c *cache) scan(ctx context.Context, digest string) {
	now := time.Now()
	start := now
	p, err := c.cfg.Store.Profile(ctx, digest, now, c.cfg.Learning)
	var rep *scanner.Report
	if err == nil {
		rep, err = c.cfg.Reports.Report(ctx, digest, p)
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	c.metrics.scans.WithLabelValues(result).Observe(time.Since(start).Seconds())
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.images[digest]
	if e == nil { // left the index meanwhile
		return
	}
	e.scanning = false
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		e.err, e.retryAt = err, time.Now().Add(c.cfg.RetryAfter)
		c.log.Warn("scanning image", logfields.Image, digest, logfields.Error, err)
		return
	}
	e.err, e.retryAt = nil, time.Time{}
	e.report = rep
	e.reportFor = store.Stamp{Digest: digest, Revision: p.Meta.Revision, State: p.State, Confidence: p.Confidence}
	e.inUse = runtimePackages(rep)
	e.workloads, e.names = p.Workloads, p.Names
	c.metrics.setImages(c.images)
	c.log.Debug("scanned image", logfields.Image, digest, "revision", p.Meta.Revision, "duration_ms", time.Since(start).Milliseconds())
}

// runtimeEntry is one (image, workload) of the runtimeimages answer.
type runtimeEntry struct {
	key      string // digest "\n" workload member: the cursor order
	digest   string
	workload store.Workload
	packages []runtimePackage
}

// runtimeEntries lists every (image, workload) whose image has a report,
// in cursor order.
func (c *cache) runtimeEntries() []runtimeEntry {
	c.mu.RLock()
	var out []runtimeEntry
	for d, e := range c.images {
		if e.report == nil {
			continue
		}
		for _, w := range e.workloads {
			out = append(out, runtimeEntry{key: d + "\n" + w.Member(), digest: d, workload: w, packages: e.inUse})
		}
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b runtimeEntry) int { return cmp.Compare(a.key, b.key) })
	return out
}
