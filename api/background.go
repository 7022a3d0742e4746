package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// cache holds what this replica knows of every image of the index: its
// last stamp and the stamp and verdict counts of its report, a few
// hundred bytes an image. The reports themselves are shared by every
// replica through Redis (shared.go); at most Config.ReportCache of them
// are kept in memory. What runtimeimages pages through (every image's
// workloads and in-use packages) is the runtime index in Redis
// (store.RuntimePage), written by the poller when an image's report or
// workloads change. Handlers read the cache; only the poller and the
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
	// polled is closed and replaced after every poll, for tests and
	// waiters that want the next poll.
	polled chan struct{}
	queue  chan scanJob
}

// entry is one image in the cache.
type entry struct {
	stamp store.Stamp
	// reported says that a report is known, computed for reportFor:
	// in the LRU, or in Redis.
	reported  bool
	reportFor store.ReportStamp
	// indexed is the version of the image's entries in the runtime
	// index as this replica last wrote or found them ("" for none).
	indexed  string
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
		owner: cmp.Or(cfg.ReplicaID, replicaID()), reports: newReportLRU(cfg.ReportCache),
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
	// The workloads read in this poll, for the runtime index.
	workloads := map[string][]store.Workload{}
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
			workloads[st.Digest] = p.Workloads
			c.mu.Lock()
			if e = c.images[st.Digest]; e == nil {
				e = &entry{}
				c.images[st.Digest] = e
			}
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
	c.index(ctx, workloads, now)
	c.mu.Lock()
	var gone []string
	for d := range c.images {
		if !seen[d] {
			delete(c.images, d)
			c.reports.remove(d)
			gone = append(gone, d)
		}
	}
	c.mu.Unlock()
	for _, d := range gone {
		if err := c.cfg.Store.RemoveRuntimeImage(ctx, d); err != nil && ctx.Err() == nil {
			c.log.Warn("removing an image from the runtime index", logfields.Image, d, logfields.Error, err)
		}
	}
	c.mu.Lock()
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
	e.verdicts = verdictCounts(rep)
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

// runtimeVersion names what an image's runtime entries are computed
// from: its report and its workloads.
func runtimeVersion(e *entry) string {
	return e.reportFor.String() + "|" + strconv.FormatInt(e.stamp.Workloads, 10)
}

// index writes to the runtime index the images whose report or workloads
// changed since this replica last indexed them (workloads: those read in
// this poll). Every replica does it for the changes it sees; the store
// writes a version once, and an image whose version the index holds
// already (another replica wrote it, or this one before a restart) costs
// one field of one pipelined read, not its report.
func (c *cache) index(ctx context.Context, workloads map[string][]store.Workload, now time.Time) {
	type job struct{ digest, version string }
	var jobs []job
	c.mu.RLock()
	for d, e := range c.images {
		if !e.reported {
			continue
		}
		if v := runtimeVersion(e); v != e.indexed {
			jobs = append(jobs, job{d, v})
		}
	}
	c.mu.RUnlock()
	if len(jobs) == 0 {
		return
	}
	digests := make([]string, len(jobs))
	for i, j := range jobs {
		digests[i] = j.digest
	}
	stored, err := c.cfg.Store.RuntimeVersions(ctx, digests)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("reading the runtime index", logfields.Error, err)
		}
		return
	}
	for _, j := range jobs {
		if ctx.Err() != nil {
			return
		}
		if stored[j.digest] == j.version {
			c.indexed(j.digest, j.version)
			continue
		}
		ws, ok := workloads[j.digest]
		if !ok {
			p, err := c.cfg.Store.ProfileSections(ctx, j.digest, now, c.cfg.Learning)
			if err != nil {
				c.log.Warn("reading profile", logfields.Image, j.digest, logfields.Error, err)
				continue
			}
			ws = p.Workloads
		}
		// runtimeimages lists Kubernetes workloads only.
		kube := slices.DeleteFunc(slices.Clone(ws), func(w store.Workload) bool { return kubernetesKinds[strings.ToLower(w.Kind)] == "" })
		if len(kube) == 0 {
			err = c.cfg.Store.RemoveRuntimeImage(ctx, j.digest)
		} else {
			var rep *scanner.Report
			if rep, err = c.report(ctx, j.digest); err == nil {
				_, err = c.cfg.Store.SetRuntimeImage(ctx, j.digest, j.version, kube, runtimePackagesJSON(runtimePackages(rep)))
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("indexing an image for runtimeimages", logfields.Image, j.digest, logfields.Error, err)
			}
			continue
		}
		c.indexed(j.digest, j.version)
	}
}

// indexed records that the runtime index holds version of digest.
func (c *cache) indexed(digest, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.images[digest]; e != nil && runtimeVersion(e) == version {
		e.indexed = version
	}
}
