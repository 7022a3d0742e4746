package api

import (
	"bytes"
	"compress/gzip"
	"container/list"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// Replicas of serve share their work through Redis: each image's report
// is stored once (store.SaveReport, gzipped JSON), and the replica that
// computes it holds the image's scan lease (store.TakeLease) meanwhile,
// renewing it; a replica that dies loses the lease when it expires, and
// another one takes the work at its next poll.

// replicaID names this replica in the leases it holds: the host name (a
// pod's name) and a random suffix, since two servers may share a host.
func replicaID() string {
	host, _ := os.Hostname()
	return host + "-" + rand.Text()[:8]
}

// scan computes the report of job's image, if this replica gets its
// lease and the stored report is not current, and stores it.
func (c *cache) scan(ctx context.Context, job scanJob) {
	d := job.digest
	c.mu.RLock()
	e := c.images[d]
	current := e != nil && e.reported && e.reportFor.Serves(wantFor(e.stamp, job.build))
	c.mu.RUnlock()
	if current { // a poll took another replica's report while the job waited
		c.doneScanning(d, nil)
		return
	}
	got, err := c.cfg.Store.TakeLease(ctx, d, c.owner, c.cfg.LeaseDuration)
	if err != nil || !got {
		// Another replica scans it: its report is taken at a later poll.
		if err != nil && ctx.Err() == nil {
			c.log.Warn("taking a scan lease", logfields.Image, d, logfields.Error, err)
		}
		c.doneScanning(d, nil)
		return
	}
	scanCtx, stop := context.WithCancel(ctx)
	defer stop()
	go c.renew(scanCtx, stop, d)

	start := time.Now()
	p, err := c.cfg.Store.ProfileSections(scanCtx, d, start, c.cfg.Learning, scanner.ProfileSections...)
	if err != nil {
		c.scanFailed(ctx, d, err)
		return
	}
	stamp := store.ReportStamp{Revision: p.Meta.Revision, State: p.State, Confidence: p.Confidence, DBBuild: job.build}
	// Another replica may have stored it between the poll and the lease.
	if stored, err := c.cfg.Store.ReportStamps(scanCtx, []string{d}); err == nil && stored[d].Serves(stamp) {
		if err := c.cfg.Store.ReleaseLease(scanCtx, d, c.owner); err != nil {
			c.log.Warn("releasing a scan lease", logfields.Image, d, logfields.Error, err)
		}
		_, err := c.load(scanCtx, d)
		c.doneScanning(d, err)
		return
	}
	rep, err := c.cfg.Reports.Report(scanCtx, d, p)
	result := "ok"
	if err != nil {
		result = "error"
	}
	c.metrics.scans.WithLabelValues(result).Observe(time.Since(start).Seconds())
	c.metrics.scansTotal.WithLabelValues(result).Inc()
	if err != nil {
		c.scanFailed(ctx, d, err)
		return
	}
	data, err := encodeReport(rep)
	if err == nil {
		err = c.cfg.Store.SaveReport(ctx, d, c.owner, stamp, data)
	}
	if err != nil {
		// The report is right for this replica; another one stores its own.
		c.log.Warn("storing a report", logfields.Image, d, logfields.Error, err)
	}
	c.setReport(d, stamp, rep)
	c.mu.Lock()
	if e := c.images[d]; e != nil {
		e.scanning = false
	}
	c.mu.Unlock()
	c.log.Debug("scanned image", logfields.Image, d, "revision", p.Meta.Revision, "duration_ms", time.Since(start).Milliseconds())
}

// renew extends the lease of digest every third of its duration until
// ctx is done; a lease lost (expired and taken) stops the scan.
func (c *cache) renew(ctx context.Context, stop context.CancelFunc, digest string) {
	t := time.NewTicker(c.cfg.LeaseDuration / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, err := c.cfg.Store.RenewLease(ctx, digest, c.owner, c.cfg.LeaseDuration)
		if err == nil && !ok {
			c.log.Warn("scan lease lost: another replica scans the image", logfields.Image, digest)
			stop()
			return
		}
	}
}

// scanFailed records a failed scan. Stopped (ctx done), the replica keeps
// its lease until it expires, as a replica that died would; otherwise it
// gives the lease back, so that a replica which can catalog the image
// may take it.
func (c *cache) scanFailed(ctx context.Context, digest string, err error) {
	if ctx.Err() != nil {
		return
	}
	if rerr := c.cfg.Store.ReleaseLease(ctx, digest, c.owner); rerr != nil {
		c.log.Warn("releasing a scan lease", logfields.Image, digest, logfields.Error, rerr)
	}
	c.log.Warn("scanning image", logfields.Image, digest, logfields.Error, err)
	c.doneScanning(digest, err)
}

// doneScanning ends a scan attempt without a report of its own; err, when
// set, is the failure to show and retry after RetryAfter.
func (c *cache) doneScanning(digest string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.images[digest]
	if e == nil {
		return
	}
	e.scanning = false
	if err != nil {
		e.err, e.retryAt = err, time.Now().Add(c.cfg.RetryAfter)
		c.metrics.setImages(c.images)
	}
}

// report returns digest's report from the LRU, or from Redis.
func (c *cache) report(ctx context.Context, digest string) (*scanner.Report, error) {
	if rep := c.reports.get(digest); rep != nil {
		return rep, nil
	}
	return c.load(ctx, digest)
}

// load reads digest's stored report and makes it this replica's.
func (c *cache) load(ctx context.Context, digest string) (*scanner.Report, error) {
	stamp, data, err := c.cfg.Store.LoadReport(ctx, digest)
	if errors.Is(err, store.ErrNotFound) {
		// Gone from Redis (flushed): the next poll computes it again.
		c.mu.Lock()
		if e := c.images[digest]; e != nil {
			e.reported = false
		}
		c.mu.Unlock()
	}
	if err != nil {
		return nil, err
	}
	rep, err := decodeReport(data, maxReport)
	if err != nil {
		return nil, fmt.Errorf("reading report %s: %w", digest, err)
	}
	c.setReport(digest, stamp, rep)
	return rep, nil
}

// encodeReport is a report as stored: gzipped JSON (reports are lists of
// package names, versions and ids, which shrink several times).
func encodeReport(rep *scanner.Report) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(rep); err != nil {
		return nil, fmt.Errorf("encoding report: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing report: %w", err)
	}
	return buf.Bytes(), nil
}

// maxReport bounds a stored report once decompressed: a report of
// thousands of packages and vulnerabilities is a few MB of JSON, and
// whoever writes to Redis must not make a replica inflate a gzip bomb.
const maxReport = 64 << 20

// ErrReportTooLarge is returned for a stored report that decompresses to
// more than its limit.
var ErrReportTooLarge = errors.New("api: stored report too large")

func decodeReport(data []byte, limit int64) (*scanner.Report, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decompressing: %w", err)
	}
	r := &cappedReader{r: zr, limit: limit}
	var rep scanner.Report
	if err := json.NewDecoder(r).Decode(&rep); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	// The whole stream, so that a truncated value fails its checksum.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, fmt.Errorf("decompressing: %w", err)
	}
	return &rep, nil
}

// cappedReader reads r until more than limit bytes came, then fails with
// ErrReportTooLarge.
type cappedReader struct {
	r           io.Reader
	read, limit int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.read > c.limit {
		return 0, fmt.Errorf("%w: more than %d bytes decompressed", ErrReportTooLarge, c.limit)
	}
	if int64(len(p)) > c.limit-c.read+1 {
		p = p[:c.limit-c.read+1]
	}
	n, err := c.r.Read(p)
	if c.read += int64(n); c.read > c.limit {
		return n, fmt.Errorf("%w: more than %d bytes decompressed", ErrReportTooLarge, c.limit)
	}
	return n, err
}

// reportLRU keeps the reports used last, at most size of them.
type reportLRU struct {
	size  int
	mu    sync.Mutex
	order *list.List // of *lruItem, most recent first
	items map[string]*list.Element
}

type lruItem struct {
	digest string
	rep    *scanner.Report
}

func newReportLRU(size int) *reportLRU {
	return &reportLRU{size: size, order: list.New(), items: map[string]*list.Element{}}
}

func (l *reportLRU) get(digest string) *scanner.Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	el := l.items[digest]
	if el == nil {
		return nil
	}
	l.order.MoveToFront(el)
	return el.Value.(*lruItem).rep
}

func (l *reportLRU) put(digest string, rep *scanner.Report) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el := l.items[digest]; el != nil {
		el.Value.(*lruItem).rep = rep
		l.order.MoveToFront(el)
		return
	}
	l.items[digest] = l.order.PushFront(&lruItem{digest: digest, rep: rep})
	for l.order.Len() > l.size {
		old := l.order.Remove(l.order.Back()).(*lruItem)
		delete(l.items, old.digest)
	}
}

func (l *reportLRU) remove(digest string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el := l.items[digest]; el != nil {
		l.order.Remove(el)
		delete(l.items, digest)
	}
}
