package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/scanner/vulndbtest"
)

// adminSecret is the replicas' admin credential, which the benchmark pages
// runtimeimages with.
const adminSecret = "fleet-benchmark-admin-credential"

// replicaProc is one `inuse serve` process.
type replicaProc struct {
	name, base, logPath string
	cmd                 *exec.Cmd
	exited              chan error
}

// startReplica starts `inuse serve` over redisURL, with the scanner cache
// and database the fixtures were written to.
func startReplica(bin, root, redisURL, name string) (*replicaProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	r := &replicaProc{name: name, base: "http://" + addr, logPath: filepath.Join(root, name+".log"), exited: make(chan error, 1)}
	logf, err := os.Create(r.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	r.cmd = exec.Command(bin, "--log-level", "warn", "serve", "--redis", redisURL, "--listen", addr,
		"--admin-token-file", filepath.Join(root, "admin"), "--cache-dir", filepath.Join(root, "cache"),
		"--db-dir", filepath.Join(root, "db"), "--rate-limit", "1000000", "--rate-burst", "1000000",
		// No Go soft limit: the RSS measured is what the replica needs.
		"--memory-limit", "0")
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { r.exited <- r.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(r.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		select {
		case err := <-r.exited:
			r.exited <- err
			return nil, fmt.Errorf("%s exited: %w (log %s)", name, err, r.logPath)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("%s did not answer /healthz (log %s)", name, r.logPath)
		}
	}
}

// stop ends the replica as an orchestrator would (SIGTERM), once.
func (r *replicaProc) stop() {
	if r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
	r.cmd.Process = nil
}

// metric reads one series of the replica's /metrics; absent is 0.
func (r *replicaProc) metric(series string) (float64, error) {
	resp, err := http.Get(r.base + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("reading the metrics of %s: %w", r.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("reading the metrics of %s: %w", r.name, err)
	}
	return max(testutil.MetricValue(string(body), series), 0), nil
}

// memory is the replica's peak and current resident set, in bytes, from
// /proc/PID/status.
func (r *replicaProc) memory() (hwm, rss int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		field, value, _ := strings.Cut(sc.Text(), ":")
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		switch {
		case field != "VmHWM" && field != "VmRSS":
			continue
		case err != nil:
			return 0, 0, fmt.Errorf("reading %s of %s: %w", field, r.name, err)
		case field == "VmHWM":
			hwm = kb << 10
		default:
			rss = kb << 10
		}
	}
	return hwm, rss, sc.Err()
}

// runtimePage is what the benchmark reads of a runtimeimages answer.
type runtimePage struct {
	Page struct {
		Returned int    `json:"returned"`
		Next     string `json:"next"`
	} `json:"page"`
	Data []struct {
		ImageID      string            `json:"imageID"`
		WorkloadName string            `json:"workloadName"`
		Packages     []json.RawMessage `json:"packages"`
	} `json:"data"`
}

// paging is one walk through every runtimeimages entry of a replica.
type paging struct {
	pages []time.Duration // each request until its body was read
	// wall is the whole walk, with the client's decoding of every page.
	wall                 time.Duration
	entries, inUse, imgs int
}

// pageThrough reads every runtimeimages page of the replica, limit entries
// at a time, as a scraper does (gzip asked for, as Go's client does).
func (r *replicaProc) pageThrough(limit int) (paging, error) {
	var p paging
	images := map[string]bool{}
	cursor := ""
	start := time.Now()
	for {
		req, err := http.NewRequest("GET", fmt.Sprintf("%s/api/scanning/eveintegration/v2/runtimeimages?limit=%d&cursor=%s", r.base, limit, cursor), nil)
		if err != nil {
			return p, err
		}
		req.Header.Set("Authorization", "Bearer "+adminSecret)
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return p, fmt.Errorf("runtimeimages of %s: %w", r.name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		p.pages = append(p.pages, time.Since(t0))
		if err != nil {
			return p, fmt.Errorf("runtimeimages of %s: %w", r.name, err)
		}
		if resp.StatusCode != http.StatusOK {
			return p, fmt.Errorf("runtimeimages of %s: %s: %s", r.name, resp.Status, body)
		}
		var page runtimePage
		if err := json.Unmarshal(body, &page); err != nil {
			return p, fmt.Errorf("runtimeimages of %s: %w", r.name, err)
		}
		for _, e := range page.Data {
			images[e.ImageID] = true
			p.inUse += len(e.Packages)
		}
		p.entries += len(page.Data)
		if page.Page.Next == "" {
			break
		}
		cursor = page.Page.Next
	}
	p.wall, p.imgs = time.Since(start), len(images)
	return p, nil
}

// percentile is the q-quantile of ds (nearest rank).
func percentile(ds []time.Duration, q float64) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// serveFleet runs two `inuse serve` replicas over the cluster the fleet
// wrote, with the scanner on over generated images, and reports how long
// until every image has a report on both, the scans of each (their sum
// must be one per image and revision), runtimeimages paging and each
// replica's memory.
func serveFleet(ctx context.Context, f fleet, root, clusterURL string, cst *store.Store, rdb redis.UniversalClient, limit int) error {
	bin, err := testutil.Build(root, "github.com/inuse-dev/inuse/cmd/inuse")
	if err != nil {
		return err
	}
	dbFile, err := vulndbtest.Write(filepath.Join(root, "build-db"), advisories())
	if err != nil {
		return err
	}
	if out, err := exec.Command(bin, "--log-level", "warn", "db", "import", "--db-dir", filepath.Join(root, "db"), dbFile).CombinedOutput(); err != nil {
		return fmt.Errorf("importing the database: %w: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(root, "admin"), []byte(adminSecret), 0o600); err != nil {
		return err
	}
	catalogStart := time.Now()
	if err := f.catalog(ctx, filepath.Join(root, "cache"), root, 2); err != nil {
		return err
	}
	fmt.Printf("fixtures: %d images catalogued into the replicas' SBOM cache in %.1f s (setup, not measured)\n",
		f.Images, time.Since(catalogStart).Seconds())

	// Every image has one revision: the agents finished before the replicas start.
	stamps, err := cst.Stamps(ctx, time.Now(), store.DefaultLearning)
	if err != nil {
		return err
	}
	if len(stamps) != f.Images {
		return fmt.Errorf("the index lists %d images, the fleet ran %d", len(stamps), f.Images)
	}

	start := time.Now()
	var replicas []*replicaProc
	defer func() {
		for _, r := range replicas {
			r.stop()
		}
	}()
	for _, name := range []string{"replica-a", "replica-b"} {
		r, err := startReplica(bin, root, clusterURL, name)
		if err != nil {
			return err
		}
		replicas = append(replicas, r)
	}
	if err := waitReports(replicas, f.Images, 30*time.Minute); err != nil {
		return err
	}
	reported := time.Since(start)

	var scans []int
	sum := 0
	for _, r := range replicas {
		n, err := r.metric(`inuse_scans_total{result="ok"}`)
		if err != nil {
			return err
		}
		scans = append(scans, int(n))
		sum += int(n)
	}
	digests := make([]string, len(stamps))
	for i, st := range stamps {
		digests[i] = st.Digest
	}
	stored, err := cst.ReportStamps(ctx, digests)
	if err != nil {
		return err
	}
	for _, st := range stamps {
		if got := stored[st.Digest]; got.Revision != st.Revision {
			return fmt.Errorf("image %s: the stored report is for revision %d, the profile is at %d", st.Digest, got.Revision, st.Revision)
		}
	}
	if sum != len(stamps) {
		return fmt.Errorf("the replicas scanned %d times (%v) for %d (image, revision) pairs", sum, scans, len(stamps))
	}

	reportBytes, err := reportMemory(ctx, rdb, digests)
	if err != nil {
		return err
	}

	var walks []paging
	for _, r := range replicas {
		p, err := r.pageThrough(limit)
		if err != nil {
			return err
		}
		if p.entries != f.Containers || p.imgs != f.Images {
			return fmt.Errorf("runtimeimages of %s listed %d entries of %d images, the fleet runs %d containers of %d images",
				r.name, p.entries, p.imgs, f.Containers, f.Images)
		}
		walks = append(walks, p)
	}

	fmt.Printf("serve: 2 inuse serve replicas over the cluster, scanner on (%d generated images)\n", f.Images)
	fmt.Printf("reports: every image reported on both replicas %.1f s after they started\n", reported.Seconds())
	fmt.Printf("memory of a stored report: %.1f KiB per image (MEMORY USAGE of inuse:{D}:report, mean)\n", reportBytes/1024)
	fmt.Printf("scans: %v per replica, sum %d = %d (image, revision) pairs: each scanned exactly once\n", scans, sum, len(stamps))
	for _, r := range replicas {
		secs, err := r.metric(`inuse_scan_duration_seconds_sum{result="ok"}`)
		if err != nil {
			return err
		}
		n, err := r.metric(`inuse_scan_duration_seconds_count{result="ok"}`)
		if err != nil {
			return err
		}
		fmt.Printf("scan %s: %.0f ms per scan (mean of inuse_scan_duration_seconds)\n", r.name, 1000*secs/max(n, 1))
	}
	for i, r := range replicas {
		p := walks[i]
		hwm, rss, err := r.memory()
		if err != nil {
			return err
		}
		var requests time.Duration
		for _, d := range p.pages {
			requests += d
		}
		fmt.Printf("runtimeimages %s: %d entries (%d in-use packages) in %d pages of %d: requests %.2f s in all, p50 %.1f ms, p99 %.1f ms, max %.1f ms (walk with the client's decoding %.2f s)\n",
			r.name, p.entries, p.inUse, len(p.pages), limit, requests.Seconds(),
			float64(percentile(p.pages, 0.5).Microseconds())/1000, float64(percentile(p.pages, 0.99).Microseconds())/1000,
			float64(slices.Max(p.pages).Microseconds())/1000, p.wall.Seconds())
		heap, err := r.metric("go_memstats_heap_inuse_bytes")
		if err != nil {
			return err
		}
		goSys, err := r.metric("go_memstats_sys_bytes")
		if err != nil {
			return err
		}
		fmt.Printf("memory %s: VmHWM %.0f MiB, VmRSS %.0f MiB (Go heap in use %.0f MiB, Go runtime %.0f MiB in all)\n",
			r.name, float64(hwm)/(1<<20), float64(rss)/(1<<20), heap/(1<<20), goSys/(1<<20))
	}
	return nil
}

// reportMemory is the mean MEMORY USAGE of the images' stored reports.
func reportMemory(ctx context.Context, rdb redis.UniversalClient, digests []string) (float64, error) {
	cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, d := range digests {
			p.MemoryUsage(ctx, store.Keys(d).Report(), 0)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("memory usage of the reports: %w", err)
	}
	var sum int64
	for _, cmd := range cmds {
		sum += cmd.(*redis.IntCmd).Val()
	}
	return float64(sum) / float64(len(digests)), nil
}

// waitReports waits until every replica says that images have a report
// (inuse_images{report="ready"}), and fails when a scan fails or a replica
// exits.
func waitReports(replicas []*replicaProc, images int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		done := true
		for _, r := range replicas {
			select {
			case err := <-r.exited:
				r.exited <- err
				return fmt.Errorf("%s exited: %w (log %s)", r.name, err, r.logPath)
			default:
			}
			failed, err := r.metric(`inuse_images{report="failed"}`)
			if err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("%s failed to scan %.0f images (log %s)", r.name, failed, r.logPath)
			}
			ready, err := r.metric(`inuse_images{report="ready"}`)
			if err != nil {
				return err
			}
			done = done && int(ready) == images
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("not every image has a report on both replicas")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
