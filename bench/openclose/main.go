// Command openclose measures what the sensor costs a process that opens
// and closes one file in a loop, in four configurations measured in the
// same run: untraced (no program loaded), floor (an empty program on the
// sensor's sys_exit hook), untracked (sensor loaded, process not tracked)
// and tracked, the last two for each build of the sensor asked for
// (-variants; default: the one the kernel gets). Configurations alternate
// round by round so that drift of the machine hits all alike; the median of
// each is printed as a ratio against untraced, with the spread of the
// ratios of the rounds. It also measures how fast user space reads and
// decodes events.
//
// Run as root: go run ./bench/openclose
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/bpf/emptyprobe"
	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/cgroups"
)

const workerEnv = "INUSE_BENCH_WORKER"

func main() {
	if mode := os.Getenv(workerEnv); mode != "" {
		if err := worker(mode, os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		return
	}
	ops := flag.Int("ops", 1_000_000, "open+close pairs per measurement")
	rounds := flag.Int("rounds", 7, "measurements per configuration")
	events := flag.Int("events", 200_000, "unique files for the decode-rate measurement (0: none)")
	variants := flag.String("variants", "", "comma-separated sensor builds to measure side by side (cgroup_storage, hash_map, legacy); empty: the kernel's")
	flag.Parse()
	var vs []sensor.Variant
	for v := range strings.SplitSeq(*variants, ",") {
		if v != "" {
			vs = append(vs, sensor.Variant(v))
		}
	}
	if err := run(*ops, *rounds, *events, vs); err != nil {
		fmt.Fprintln(os.Stderr, "openclose:", err)
		os.Exit(1)
	}
}

// worker runs in the measured cgroup. "openclose N FILE" prints ns per
// open+close pair; "create N DIR" creates N files.
func worker(mode string, args []string) error {
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	switch mode {
	case "openclose":
		start := time.Now()
		for range n {
			fd, err := unix.Open(args[1], unix.O_RDONLY, 0)
			if err != nil {
				return err
			}
			unix.Close(fd)
		}
		fmt.Println(float64(time.Since(start).Nanoseconds()) / float64(n))
		return nil
	case "create":
		for i := range n {
			fd, err := unix.Open(filepath.Join(args[1], strconv.Itoa(i)), unix.O_CREAT|unix.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			unix.Close(fd)
		}
		return nil
	}
	return fmt.Errorf("unknown mode %q", mode)
}

type bench struct {
	h      cgroups.Hierarchy
	self   string
	dir    string
	target string
}

// inCgroup runs a worker in the cgroup directory cg and returns its output.
func (b *bench) inCgroup(cg, mode string, args ...string) (string, error) {
	cmd := exec.Command(b.self, args...)
	cmd.Env = append(os.Environ(), workerEnv+"="+mode)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := b.h.Start(cmd, cg); err != nil {
		return "", err
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("worker %s: %w", mode, err)
	}
	return strings.TrimSpace(out.String()), nil
}

func (b *bench) openClose(cg string, ops int) (float64, error) {
	out, err := b.inCgroup(cg, "openclose", strconv.Itoa(ops), b.target)
	if err != nil {
		return 0, err
	}
	return strconv.ParseFloat(out, 64)
}

func run(ops, rounds, events int, variants []sensor.Variant) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	h, err := cgroups.Detect()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "inuse-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{h: h, self: self, dir: dir, target: filepath.Join(dir, "target")}
	if err := os.WriteFile(b.target, []byte("x"), 0o644); err != nil {
		return err
	}
	name := fmt.Sprintf("inuse-bench-%d", os.Getpid())
	trackedDir, trackedID, err := h.Create(name + "/tracked")
	if err != nil {
		return err
	}
	untrackedDir, _, err := h.Create(name + "/untracked")
	if err != nil {
		return err
	}
	defer func() {
		_ = cgroups.Remove(trackedDir)
		_ = cgroups.Remove(untrackedDir)
		_ = cgroups.Remove(h.Path(name))
	}()
	log := slog.New(slog.DiscardHandler)

	type config struct {
		name string
		note string
		run  func() (float64, error)
	}
	configs := []config{
		{"untraced", "no BPF program loaded", func() (float64, error) { return b.openClose(untrackedDir, ops) }},
		{"floor", "empty program on sys_exit", func() (float64, error) {
			p, err := emptyprobe.Open()
			if err != nil {
				return 0, err
			}
			defer p.Close()
			return b.openClose(untrackedDir, ops)
		}},
	}
	if len(variants) == 0 {
		variants = []sensor.Variant{""}
	}
	for _, v := range variants {
		cfg := sensor.Config{CgroupV1Controller: h.Controller, Variant: v}
		suffix := ""
		if v != "" {
			suffix = "/" + string(v)
		}
		configs = append(configs, config{"untracked" + suffix, "sensor loaded, process not tracked", func() (float64, error) {
			s, err := sensor.Open(log, cfg)
			if err != nil {
				return 0, err
			}
			defer s.Close()
			return b.openClose(untrackedDir, ops)
		}}, config{"tracked" + suffix, "sensor loaded, process tracked", func() (float64, error) {
			s, err := sensor.Open(log, cfg)
			if err != nil {
				return 0, err
			}
			defer s.Close()
			if err := s.Track(trackedID); err != nil {
				return 0, err
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx, func(sensor.Event) {}) }()
			ns, err := b.openClose(trackedDir, ops)
			cancel()
			<-done
			return ns, err
		}})
	}
	if bt, err := exec.LookPath("bpftrace"); err == nil {
		configs = append(configs, config{"bpftrace", "peer: bpftrace counting the tracked cgroup's openat exits", func() (float64, error) {
			return b.underBpftrace(bt, trackedID, trackedDir, ops)
		}})
	} else {
		fmt.Fprintln(os.Stderr, "bpftrace not installed: no peer measurement (make bench installs it)")
	}
	// The first run of the loop is cold (page cache, dentries, the
	// worker's pages): it is not measured.
	if _, err := b.openClose(untrackedDir, ops); err != nil {
		return fmt.Errorf("warming up: %w", err)
	}
	results := make([][]float64, len(configs))
	for r := range rounds {
		for i, c := range configs {
			ns, err := c.run()
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			results[i] = append(results[i], ns)
		}
		fmt.Fprintf(os.Stderr, "round %d/%d done\n", r+1, rounds)
	}

	fmt.Printf("open+close of one file, %d pairs per run, median of %d runs per configuration\n", ops, rounds)
	fmt.Printf("%-24s %10s %8s  %-15s  %s\n", "config", "ns/pair", "ratio", "round ratios", "")
	base := median(results[0])
	for i, c := range configs {
		m := median(results[i])
		// Each round against the untraced run of the same round.
		ratios := make([]float64, len(results[i]))
		for r, ns := range results[i] {
			ratios[r] = ns / results[0][r]
		}
		fmt.Printf("%-24s %10.1f %7.3fx  %.3f-%.3f    %s\n", c.name, m, m/base, slices.Min(ratios), slices.Max(ratios), c.note)
	}

	if events == 0 {
		return nil
	}
	rate, err := decodeRate(b, log, h, trackedDir, trackedID, events)
	if err != nil {
		return fmt.Errorf("decode rate: %w", err)
	}
	fmt.Printf("events read from the ring buffer and decoded: %.0f per second (%d unique file events)\n", rate, events)
	return nil
}

// underBpftrace measures the loop in a cgroup that bpftrace filters on,
// the way one would trace a container with it.
func (b *bench) underBpftrace(bin string, id uint64, cg string, ops int) (float64, error) {
	prog := fmt.Sprintf("tracepoint:syscalls:sys_exit_openat /cgroup == %d/ { @opens = count(); }", id)
	cmd := exec.Command(bin, "-e", prog)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	// bpftrace prints "Attaching N probes..." once its programs are attached.
	buf := make([]byte, 256)
	if _, err := stdout.Read(buf); err != nil {
		return 0, fmt.Errorf("waiting for bpftrace: %w", err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return b.openClose(cg, ops)
}

// decodeRate fills the ring buffer with unique file events while nothing
// reads it, then times reading and decoding them all.
func decodeRate(b *bench, log *slog.Logger, h cgroups.Hierarchy, cg string, id uint64, n int) (float64, error) {
	s, err := sensor.Open(log, sensor.Config{CgroupV1Controller: h.Controller, RingBufferBytes: 128 << 20})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	if err := s.Track(id); err != nil {
		return 0, err
	}
	files := filepath.Join(b.dir, "files")
	if err := os.Mkdir(files, 0o755); err != nil {
		return 0, err
	}
	if _, err := b.inCgroup(cg, "create", strconv.Itoa(n), files); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got, lost := 0, uint64(0)
	var start time.Time
	var elapsed time.Duration
	err = s.Run(ctx, func(e sensor.Event) {
		switch ev := e.(type) {
		case sensor.FileEvent:
			if got == 0 {
				start = time.Now()
			}
			if strings.HasPrefix(ev.Path, files+"/") {
				got++
				if got == n {
					elapsed = time.Since(start)
					cancel()
				}
			}
		case sensor.LossEvent:
			lost += ev.Lost
			cancel()
		}
	})
	if lost > 0 {
		return 0, fmt.Errorf("%d events lost: enlarge the ring buffer", lost)
	}
	if got != n {
		return 0, fmt.Errorf("read %d of %d events: %w", got, n, err)
	}
	return float64(n) / elapsed.Seconds(), nil
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}
