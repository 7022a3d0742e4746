// Command agentrss measures the resident memory of the agent (sensor,
// 100 tracked cgroups, collector writing to a real redis-server)
// after a workload ran in every cgroup, against the same process before
// the sensor was loaded.
//
// Run as root: go run ./bench/agentrss
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf/rlimit"

	"github.com/inuse-dev/inuse/agent"
	"github.com/inuse-dev/inuse/collector"
	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/store"
)

func main() {
	n := flag.Int("cgroups", 100, "tracked cgroups")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "agentrss:", err)
		os.Exit(1)
	}
}

func rssMiB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func run(n int) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	runtime.GC()
	before := rssMiB()

	redisURL, stopRedis, err := startRedis()
	if err != nil {
		return err
	}
	defer stopRedis()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := agent.Open(ctx, slog.New(slog.DiscardHandler), agent.Config{Redis: redisURL, Collector: collector.Config{Node: "bench"}})
	if err != nil {
		return err
	}
	defer a.Close()
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()

	h, err := cgroups.Detect()
	if err != nil {
		return err
	}
	parent := fmt.Sprintf("inuse-bench-rss-%d", os.Getpid())
	var dirs []string
	defer func() {
		for _, d := range dirs {
			_ = cgroups.Remove(d)
		}
		_ = cgroups.Remove(h.Path(parent))
	}()
	for i := range n {
		dir, id, err := h.Create(fmt.Sprintf("%s/c%03d", parent, i))
		if err != nil {
			return err
		}
		dirs = append(dirs, dir)
		// Ten images, ten containers each, handed over as a discovery
		// source does.
		ctr := lifecycle.Container{ID: fmt.Sprintf("c%03d", i), Runtime: lifecycle.RuntimeExec, CgroupID: id,
			Image: lifecycle.Image{Name: fmt.Sprintf("bench/img%d", i%10), Digest: fmt.Sprintf("sha256:%064d", i%10)}}
		if err := a.Tracker().Started(ctr); err != nil {
			return err
		}
	}
	for _, dir := range dirs {
		cmd := exec.Command("sh", "-c", "ls -l /usr/lib/x86_64-linux-gnu >/dev/null; cat /etc/os-release >/dev/null")
		if err := h.Start(cmd, dir); err != nil {
			return err
		}
		if err := cmd.Wait(); err != nil {
			return err
		}
	}
	time.Sleep(2 * time.Second) // a flush and a poll of the syscall bitmaps
	runtime.GC()
	after := rssMiB()
	cancel()
	if err := <-runDone; err != nil {
		return err
	}
	events, err := foldedEvents(redisURL, 10)
	if err != nil {
		return err
	}
	fmt.Printf("agent with %d tracked cgroups, %d events folded into 10 image profiles\n", n, events)
	fmt.Printf("RSS before loading the sensor: %6.1f MiB\n", before)
	fmt.Printf("RSS with the agent running:    %6.1f MiB (+%.1f MiB, %.2fx)\n", after, after-before, after/before)
	return nil
}

// foldedEvents adds up the events of the bench's image profiles.
func foldedEvents(url string, images int) (int64, error) {
	st, err := store.Open(url)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	var n int64
	for i := range images {
		p, err := st.Profile(context.Background(), fmt.Sprintf("sha256:%064d", i), time.Now(), store.DefaultLearning)
		if err != nil {
			return 0, err
		}
		n += p.Meta.Events
	}
	return n, nil
}

// startRedis runs a redis-server on a free loopback port.
func startRedis() (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("starting redis-server: %w", err)
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	url := fmt.Sprintf("redis://127.0.0.1:%d", port)
	for range 100 {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return url, stop, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	return "", nil, fmt.Errorf("redis-server did not start")
}
