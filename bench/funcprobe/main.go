// Command funcprobe measures what a function probe costs a Go program that
// calls a planned function in a hot loop: 10,000,000 calls of vulnlib.Parse
// (bench/funcprobe/gofunc) run untraced, tracked (through agent.Exec, the
// pipeline of inuse-agent exec, in this process, as an image without a
// plan: the sensor alone) and probed (as an image whose plan, in a
// redis-server, probes Parse and the inlined Count). The agent removes a
// probe after its first hit, so a probed program pays the traps until then
// and afterwards runs as tracked. Rounds rotate the order; each run's loop
// time, the time of its first tenth and the traps it took (counted in BPF)
// are printed, then the medians of the loop and of its last nine tenths.
//
// A handful of traps is far below the loop's noise, so their cost is
// measured apart: the probe program stays on Parse for a short loop
// (-trap-calls), every call a trap, in a cgroup whose call marked the probe
// done (the traps between a first hit and the detach), in a tracked cgroup
// of another image (the probe stays armed: the program's full path, which
// every trap took before the done flag) and in an untracked one. The cost
// per trap is the loop's time over that of an unprobed copy of the target
// (another inode, so no probe), run in the same rounds, divided by the
// traps.
//
// Run as root: go run ./bench/funcprobe
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/inuse-dev/inuse/agent"
	"github.com/inuse-dev/inuse/bench/funcprobe/gofunc"
	"github.com/inuse-dev/inuse/bpf/funcprobe"
	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/store"
)

const (
	digest = "sha256:f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0"
	noPlan = "sha256:0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"
	// cgroupParent holds the runs' cgroups, as inuse-agent exec's default.
	cgroupParent = "inuse"
)

func main() {
	calls := flag.Int("calls", 10_000_000, "calls of the planned function per run")
	rounds := flag.Int("rounds", 7, "runs per configuration")
	trapCalls := flag.Int("trap-calls", 20_000, "calls of the planned function per run that measures the cost per trap")
	flag.Parse()
	if err := run(*calls, *rounds, *trapCalls); err != nil {
		fmt.Fprintln(os.Stderr, "funcprobe:", err)
		os.Exit(1)
	}
}

// timing is what the target prints: the loop's time and that of its last
// nine tenths.
type timing struct{ total, tail time.Duration }

func run(calls, rounds, trapCalls int) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("lifting the memlock limit: %w", err)
	}
	dir, err := os.MkdirTemp("", "inuse-bench-funcprobe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, plan, err := gofunc.Build(dir, false)
	if err != nil {
		return err
	}
	url, stop, err := startRedis(dir)
	if err != nil {
		return err
	}
	defer stop()
	ctx := context.Background()
	st, err := store.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.WriteGoPlans(ctx, digest, map[string]store.GoPlan{bin: plan}); err != nil {
		return err
	}
	fmt.Printf("%d calls of %s, %d rounds; plan: %d probes\n", calls, gofunc.Planned[0], rounds, len(plan.Probes))
	h, err := cgroups.Detect()
	if err != nil {
		return err
	}
	// The untraced run gets a fresh cgroup beside the ones the traced runs
	// get, so that CPU shares treat both alike.
	cgroup, _, err := h.Create(fmt.Sprintf("%s/untraced-%d", cgroupParent, os.Getpid()))
	if err != nil {
		return err
	}
	defer func() { _ = cgroups.Remove(cgroup) }()

	// untraced: no agent; tracked: the agent runs the target as a
	// container of an image without a plan (the sensor's cost alone);
	// probed: of the image whose plan probes Parse.
	runs := map[string][]timing{}
	var traps []uint64
	modes := []string{"untraced", "tracked", "probed"}
	for r := range rounds {
		// Rotate which goes first, so that drift hits all alike.
		for i := range modes {
			mode := modes[(r+i)%len(modes)]
			var t timing
			var n uint64
			var err error
			switch mode {
			case "untraced":
				t, err = untracedRun(h, cgroup, bin, calls)
			case "tracked":
				t, _, err = tracedRun(ctx, url, bin, calls, noPlan)
			case "probed":
				t, n, err = tracedRun(ctx, url, bin, calls, digest)
				traps = append(traps, n)
			}
			if err != nil {
				return err
			}
			runs[mode] = append(runs[mode], t)
			fmt.Printf("round %d %-8s loop %7.2f ms, first tenth %6.2f ms, %d traps\n", r, mode, ms(t.total), ms(t.total-t.tail), n)
		}
	}
	p, err := st.Profile(ctx, digest, time.Now(), store.DefaultLearning)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(p.Sections[store.Functions], func(e store.Entry) bool {
		return e.Value == store.FunctionMember(bin, gofunc.Planned[0])
	}) {
		return errors.New("the traced runs did not record the planned function")
	}
	report := func(what string, pick func(timing) time.Duration) {
		u, t, p := median(runs["untraced"], pick), median(runs["tracked"], pick), median(runs["probed"], pick)
		fmt.Printf("%-22s untraced %7.2f ms  tracked %7.2f ms (%.4fx)  probed %7.2f ms (%.4fx untraced, %.4fx tracked)\n",
			what, ms(u), ms(t), float64(t)/float64(u), ms(p), float64(p)/float64(u), float64(p)/float64(t))
	}
	report("whole loop", func(t timing) time.Duration { return t.total })
	report("after the first tenth", func(t timing) time.Duration { return t.tail })
	slices.Sort(traps)
	fmt.Printf("traps per probed run: min %d, median %d, max %d\n", traps[0], traps[len(traps)/2], traps[len(traps)-1])
	return trapCosts(h, cgroup, bin, plan, trapCalls, rounds)
}

// trapCosts measures the cost of one trap of Parse's probe, by the state
// of the cgroup that calls it, over rounds that rotate the order; the
// untraced runs are in untracedDir.
func trapCosts(h cgroups.Hierarchy, untracedDir, bin string, plan store.GoPlan, calls, rounds int) error {
	unprobed := bin + "-unprobed"
	if err := copyFile(bin, unprobed); err != nil {
		return err
	}
	s, err := sensor.Open(slog.New(slog.DiscardHandler), sensor.Config{})
	if err != nil {
		return err
	}
	defer s.Close()
	tracking, err := s.Tracking()
	if err != nil {
		return err
	}
	p, err := funcprobe.Open(tracking)
	if err != nil {
		return err
	}
	defer p.Close()
	// owner 1 is the probe's; owner 2 another image's.
	dirs := map[string]string{"untraced": untracedDir, "untracked": untracedDir}
	for i, mode := range []string{"done", "armed"} {
		dir, id, err := h.Create(fmt.Sprintf("%s/trapcost-%s-%d", cgroupParent, mode, os.Getpid()))
		if err != nil {
			return err
		}
		defer func() { _ = cgroups.Remove(dir) }()
		if err := errors.Join(s.Track(id), p.Own(id, uint32(i+1))); err != nil {
			return err
		}
		dirs[mode] = dir
	}
	exe, err := link.OpenExecutable(bin)
	if err != nil {
		return err
	}
	var offsets, cookies []uint64
	for _, pr := range plan.Probes {
		if pr.Symbol == gofunc.Planned[0] {
			offsets, cookies = append(offsets, pr.Offset), append(cookies, funcprobe.Cookie(1, 1))
		}
	}
	links, err := p.Attach(exe, offsets, cookies)
	if err != nil {
		return err
	}
	defer func() {
		for _, l := range links {
			_ = l.Close()
		}
	}()
	loops := map[string][]time.Duration{}
	modes := []string{"untraced", "done", "armed", "untracked"}
	fmt.Printf("cost per trap: %d calls of %s per run, every call a trap\n", calls, gofunc.Planned[0])
	for r := range rounds {
		for i := range modes {
			mode := modes[(r+i)%len(modes)]
			target := bin
			if mode == "untraced" {
				target = unprobed
			}
			before, err := p.Traps()
			if err != nil {
				return err
			}
			t, err := untracedRun(h, dirs[mode], target, calls)
			if err != nil {
				return err
			}
			after, err := p.Traps()
			if err != nil {
				return err
			}
			want := uint64(calls)
			if mode == "untraced" {
				want = 0
			}
			if n := after - before; n != want {
				return fmt.Errorf("%s run: %d traps for %d calls", mode, n, calls)
			}
			loops[mode] = append(loops[mode], t.total)
		}
	}
	base := medianOf(loops["untraced"])
	fmt.Printf("untraced loop: median %.3f ms\n", ms(base))
	for _, mode := range modes[1:] {
		costs := make([]time.Duration, len(loops[mode]))
		for i, d := range loops[mode] {
			costs[i] = (d - base) / time.Duration(calls)
		}
		slices.Sort(costs)
		fmt.Printf("cost per trap, %-9s median %6.2f µs (min %.2f, max %.2f)\n", mode, us(medianOf(costs)), us(costs[0]), us(costs[len(costs)-1]))
	}
	return nil
}

// tracedRun runs the target through a fresh agent, as inuse-agent exec
// does, and returns its timing and the traps the probes took.
func tracedRun(ctx context.Context, url, bin string, calls int, digest string) (timing, uint64, error) {
	a, err := agent.Open(ctx, slog.New(slog.DiscardHandler), agent.Config{Redis: url})
	if err != nil {
		return timing{}, 0, err
	}
	defer a.Close()
	cmd := exec.Command(bin, "bench", strconv.Itoa(calls))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	waitErr, err := a.Exec(ctx, cmd, cgroupParent, lifecycle.Image{Name: "bench/funcprobe:1", Digest: digest})
	if err = cmp.Or(err, waitErr); err != nil {
		return timing{}, 0, err
	}
	n, err := a.FunctionProbeTraps()
	if err != nil {
		return timing{}, 0, err
	}
	t, err := parse(out.String())
	return t, n, err
}

// untracedRun runs the target untraced, in the cgroup at dir.
func untracedRun(h cgroups.Hierarchy, dir, bin string, calls int) (timing, error) {
	cmd := exec.Command(bin, "bench", strconv.Itoa(calls))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := h.Start(cmd, dir); err != nil {
		return timing{}, err
	}
	if err := cmd.Wait(); err != nil {
		return timing{}, fmt.Errorf("running the target: %w", err)
	}
	return parse(out.String())
}

func parse(out string) (timing, error) {
	f := strings.Fields(out)
	if len(f) != 3 {
		return timing{}, fmt.Errorf("unexpected target output %q", out)
	}
	total, err1 := strconv.ParseInt(f[0], 10, 64)
	tail, err2 := strconv.ParseInt(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return timing{}, fmt.Errorf("unexpected target output %q: %w", out, err)
	}
	return timing{time.Duration(total), time.Duration(tail)}, nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// startRedis runs a redis-server on a unix socket in dir.
func startRedis(dir string) (string, func(), error) {
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command("redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--dir", dir, "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("starting redis-server (make deps installs it): %w", err)
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	for range 100 {
		if _, err := os.Stat(sock); err == nil {
			return "unix://" + sock, stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return "", nil, errors.New("redis-server did not open its socket")
}

func median(ts []timing, pick func(timing) time.Duration) time.Duration {
	d := make([]time.Duration, len(ts))
	for i, t := range ts {
		d[i] = pick(t)
	}
	return medianOf(d)
}

func medianOf(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
