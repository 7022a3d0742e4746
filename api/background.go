package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// cache holds what this replica knows of every image of the index: its
// last stamp, the workloads of its last profile read, and what the index
// views need of its report. The reports themselves are shared by every
// replica through Redis (shared.go); at most Config.ReportCache of them
// are kept in memory. Handlers read the cache; only the poller and the
// scan workers write it.
type cache struct {
	cfg     *Config
	log     *slog.Logger
	metrics *metrics
	// owner names this replica in the scan leases it takes.
	owner   string
	reports *reportLRU

	mu     sync.RWMutex
	images map[string]*entry
	// version counts the changes of images that runtimeimages shows
	// (workloads, reports, images gone); runtime is the sorted list of
	// its entries at runtimeVersion, kept until the next change, so that
	// paging through a large cluster does not sort it for every page.
	version        uint64
	runtime        []runtimeEntry
	runtimeVersion uint64
	// polled is closed and replaced after every poll, for tests and
	// waiters that want the next poll.
	polled chan struct{}
	queue  chan scanJob
}

// entry is one image in the cache.
type entry struct {
	stamp     store.Stamp
	workloads []store.Workload
	names     []string
	// reported says that a report is known, computed for reportFor:
	// in the LRU, or in Redis.
	reported  bool
	reportFor store.ReportStamp
	// inUse is the report's in-use packages as runtimeimages writes
	// them, encoded once per report rather than on every page.
	inUse    json.RawMessage
	verdicts map[scanner.Verdict]int
	scanning bool
	// err is the last scan failure; retryAt is when to try again.
	err     error
	retryAt time.Time
}

// scanJob is an image whose stored report is missing or stale, and the
// database build the poll saw.
type scanJob struct {
	digest, build string
}

func newCache(cfg *Config, log *slog.Logger, m *metrics) *cache {
	return &cache{
		cfg: cfg, log: log.With(logfields.Component, "api.scanner"), metrics: m,
		owner: replicaID(), reports: newReportLRU(cfg.ReportCache),
		images: map[string]*entry{}, polled: make(chan struct{}),
		// The queue holds each digest at most once (scanning marks it),
		// so its size bounds nothing that matters; a full queue waits
		// for the next poll.
		queue: make(chan scanJob, 1024),
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

// reportOf returns the report of digest and its status, reading it from
// Redis when the LRU does not hold it.
func (c *cache) reportOf(ctx context.Context, digest string) (*scanner.Report, reportStatus, error) {
	c.mu.RLock()
	e := c.images[digest]
	var (
		reported bool
		failure  error
	)
	if e != nil {
		reported, failure = e.reported, e.err
	}
	c.mu.RUnlock()
	switch {
	case reported:
		rep, err := c.report(ctx, digest)
		if err != nil {
			return nil, statusFailed, err
		}
		return rep, statusReady, nil
	case c.cfg.Reports == nil:
		return nil, statusUnavailable, nil
	case failure != nil:
		return nil, statusFailed, failure
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
// profiles whose stamp changed, takes the reports other replicas stored
// meanwhile, and queues the images whose stored report is missing or
// stale.
func (c *cache) poll(ctx context.Context) {
	now := time.Now()
	stamps, err := c.cfg.Store.Stamps(ctx, now, c.cfg.Learning)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("reading the image index", logfields.Error, err)
		}
		return
	}
	var build string
	if c.cfg.Reports != nil {
		// Without a database every scan fails, and says why.
		if build, err = c.cfg.Reports.DBBuild(ctx); err != nil {
			c.log.Debug("reading the vulnerability database build", logfields.Error, err)
		}
	}
	seen := make(map[string]bool, len(stamps))
	wants := map[string]store.ReportStamp{}
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
			p, err := c.cfg.Store.ProfileSections(ctx, st.Digest, now, c.cfg.Learning)
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
			c.version++
			c.mu.Unlock()
		}
		want := wantFor(st, build)
		c.mu.Lock()
		e.stamp = st
		// Queued images too: another replica may have stored their
		// report while they wait for a worker here.
		if c.cfg.Reports != nil && (!e.reported || !e.reportFor.Serves(want)) {
			wants[st.Digest] = want
		}
		c.mu.Unlock()
	}
	if len(wants) > 0 {
		c.refresh(ctx, wants, build, now)
	}
	c.mu.Lock()
	for d := range c.images {
		if !seen[d] {
			delete(c.images, d)
			c.reports.remove(d)
			c.version++
		}
	}
	c.metrics.setImages(c.images)
	close(c.polled)
	c.polled = make(chan struct{})
	c.mu.Unlock()
}

// wantFor is the stamp a report must serve for an image at st.
func wantFor(st store.Stamp, build string) store.ReportStamp {
	return store.ReportStamp{Revision: st.Revision, State: st.State, Confidence: st.Confidence, DBBuild: build}
}

// refresh takes the stored reports of the images whose report this
// replica lacks or holds stale (wants: the stamp each needs), and queues
// those whose stored report is not current either.
func (c *cache) refresh(ctx context.Context, wants map[string]store.ReportStamp, build string, now time.Time) {
	stored, err := c.cfg.Store.ReportStamps(ctx, slices.Collect(maps.Keys(wants)))
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("reading stored reports", logfields.Error, err)
		}
		return
	}
	for d, want := range wants {
		if s, ok := stored[d]; ok {
			c.mu.RLock()
			e := c.images[d]
			take := e != nil && (!e.reported || !e.reportFor.Serves(s))
			c.mu.RUnlock()
			if take {
				if _, err := c.load(ctx, d); err != nil {
					c.log.Warn("reading stored report", logfields.Image, d, logfields.Error, err)
				}
			}
			if s.Serves(want) {
				continue
			}
		}
		c.mu.Lock()
		if e := c.images[d]; e != nil && !e.scanning && !now.Before(e.retryAt) {
			select {
			case c.queue <- scanJob{digest: d, build: build}:
				e.scanning = true
			default:
			}
		}
		c.mu.Unlock()
	}
}

func (c *cache) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-c.queue:
			c.scanRecovered(ctx, job)
		}
	}
}

// ErrScanPanic is the error of an image whose scan panicked.
var ErrScanPanic = errors.New("api: scan panicked")

// scanRecovered scans job's image; a panic there (the scanner reads
// whatever images hold) is that image's error, retried after
// RetryAfter, and the worker goes on with the other images.
func (c *cache) scanRecovered(ctx context.Context, job scanJob) {
	defer func() {
		if p := recover(); p != nil {
			err := fmt.Errorf("%w: %v", ErrScanPanic, p)
			c.log.Error("scan panicked", logfields.Image, job.digest, logfields.Error, err, "stack", string(debug.Stack()))
			c.metrics.scansTotal.WithLabelValues("error").Inc()
			c.scanFailed(ctx, job.digest, err)
		}
	}()
	c.scan(ctx, job)
}

// setReport records rep, computed for stamp, as digest's report.
func (c *cache) setReport(digest string, stamp store.ReportStamp, rep *scanner.Report) {
	c.reports.put(digest, rep)
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.images[digest]
	if e == nil { // left the index meanwhile
		return
	}
	e.reported, e.reportFor = true, stamp
	e.inUse, e.verdicts = runtimePackagesJSON(runtimePackages(rep)), verdictCounts(rep)
	c.version++
	e.err, e.retryAt = nil, time.Time{}
	c.metrics.setImages(c.images)
}

// verdictCounts counts the vulnerability matches of rep by verdict.
func verdictCounts(rep *scanner.Report) map[scanner.Verdict]int {
	out := map[scanner.Verdict]int{}
	for _, v := range rep.Vulnerabilities {
		out[v.Verdict]++
	}
	return out
}

// runtimeEntry is one (image, workload) of the runtimeimages answer.
type runtimeEntry struct {
	key      string // digest "\n" workload member: the cursor order
	digest   string
	workload store.Workload
	kind     string // the workload's kind as Kubernetes spells it
	packages json.RawMessage
}

// runtimeEntries lists every (image, Kubernetes workload) whose image has
// a report, in cursor order. The list is shared by every caller until the
// cache changes: it must not be modified.
func (c *cache) runtimeEntries() []runtimeEntry {
	c.mu.RLock()
	if c.runtime != nil && c.runtimeVersion == c.version {
		defer c.mu.RUnlock()
		return c.runtime
	}
	version := c.version
	out := []runtimeEntry{}
	for d, e := range c.images {
		if !e.reported {
			continue
		}
		for _, w := range e.workloads {
			kind := kubernetesKinds[strings.ToLower(w.Kind)]
			if kind == "" {
				continue
			}
			out = append(out, runtimeEntry{key: d + "\n" + w.Member(), digest: d, workload: w, kind: kind, packages: e.inUse})
		}
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b runtimeEntry) int { return cmp.Compare(a.key, b.key) })
	c.mu.Lock()
	if c.version == version {
		c.runtime, c.runtimeVersion = out, version
	}
	c.mu.Unlock()
	return out
}
