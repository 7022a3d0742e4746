// Command nginx measures what inuse costs a real workload: nginx from
// Debian's nginx-light, in the project's debootstrapped bookworm root,
// serving one small static file on loopback to wrk, in four modes
// measured in the same run: untraced (nginx chrooted into the root, no
// agent), floor (untraced under an empty program on the agent's sys_exit
// hook), tracked (nginx run by `inuse-agent exec --root`) and untracked
// (nginx untraced while `inuse-agent run` runs on the machine). Modes
// alternate round by round so that drift of the machine hits all alike;
// the median of each is printed as a ratio against untraced, with the
// agent process's own CPU time over the measured run.
//
// Run as root, with wrk installed: go run ./bench/nginx
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf/rlimit"

	"github.com/inuse-dev/inuse/agent"
	"github.com/inuse-dev/inuse/bpf/emptyprobe"
	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/scanner/scannertest"
)

// rootName keys the cached root: bump it to rebuild.
const rootName = "bookworm-nginx-v1"

// digest names the image of the tracked nginx: a fixed one spares
// `inuse-agent exec` hashing the root on every round.
const digest = "sha256:0000000000000000000000000000000000000000000000000000000000000001"

type config struct {
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	connections int
	threads     int
	size        int
}

func main() {
	var cfg config
	flag.IntVar(&cfg.rounds, "rounds", 11, "measurements per mode")
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "wrk run per measurement")
	flag.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured wrk run before each measurement")
	flag.IntVar(&cfg.connections, "connections", 16, "wrk connections")
	flag.IntVar(&cfg.threads, "threads", 1, "wrk threads")
	flag.IntVar(&cfg.size, "size", 1024, "bytes of the static file served")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "nginx:", err)
		os.Exit(1)
	}
}

// result is one wrk measurement, and the CPU spent meanwhile.
type result struct {
	rps      float64
	p99      time.Duration
	requests int
	// CPU time per request of nginx (master and workers) and of wrk: unlike
	// requests/s, barely moved by what else runs on the machine.
	nginxCPU, wrkCPU time.Duration
	agentCPU         float64 // share of one core, 0 without an agent
}

type mode struct {
	name, what string
	serve      func() (server, error)
}

// server is a running mode: agentPID is the agent's (0 for none).
type server struct {
	stop     func() error
	agentPID int
}

func run(log *slog.Logger, cfg config) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: nginx is chrooted and the agent loads BPF programs")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return fmt.Errorf("wrk is missing (apt-get install wrk): %w", err)
	}
	cached, err := scannertest.CachedDebianRoot(log, rootName, "nginx-light")
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "inuse-bench-nginx-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	agentBin, err := testutil.Build(tmp, "github.com/inuse-dev/inuse/cmd/inuse-agent")
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	root, err := serveRoot(cached, port, cfg.size)
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	h, err := cgroups.Detect()
	if err != nil {
		return err
	}
	// The untraced nginx gets a fresh cgroup beside the ones `inuse-agent
	// exec` creates (under "inuse"), so that CPU shares treat the modes alike.
	cgroup, _, err := h.Create(fmt.Sprintf("inuse/bench-nginx-%d", os.Getpid()))
	if err != nil {
		return err
	}
	defer func() { _ = cgroups.Remove(cgroup) }()
	b := &bench{h: h, cgroup: cgroup, root: root, agent: agentBin, addr: fmt.Sprintf("127.0.0.1:%d", port)}
	modes := []mode{
		{"untraced", "nginx chrooted, no agent", b.untraced},
		{"floor", "nginx chrooted, an empty program on sys_exit", b.floor},
		{"tracked", "nginx run by inuse-agent exec --root", b.tracked},
		{"untracked", "nginx chrooted while inuse-agent run runs", b.untracked},
	}
	url := "http://" + b.addr + "/index.html"
	results := make([][]result, len(modes))
	for r := range cfg.rounds {
		// Each round starts with the next mode, so none always follows another.
		for i := range modes {
			m := (r + i) % len(modes)
			res, err := b.measure(modes[m], wrk, url, cfg)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r, modes[m].name, err)
			}
			fmt.Fprintf(os.Stderr, "round %d %-10s %9.0f req/s  p99 %-9v CPU/request nginx %v wrk %v  agent %.1f%% of a core\n",
				r, modes[m].name, res.rps, res.p99, res.nginxCPU, res.wrkCPU, 100*res.agentCPU)
			results[m] = append(results[m], res)
		}
	}

	fmt.Printf("nginx-light, %d-byte static file on loopback, wrk -t%d -c%d -d%s, median of %d runs per mode\n",
		cfg.size, cfg.threads, cfg.connections, cfg.duration, cfg.rounds)
	fmt.Printf("%-10s %9s %7s %9s %7s %11s %7s %9s %7s %6s\n", "mode", "req/s", "ratio", "p99", "ratio", "nginx CPU/r", "ratio", "wrk CPU/r", "ratio", "agent")
	rps := func(r result) float64 { return r.rps }
	p99 := func(r result) float64 { return float64(r.p99) }
	nginxCPU := func(r result) float64 { return float64(r.nginxCPU) }
	wrkCPU := func(r result) float64 { return float64(r.wrkCPU) }
	for i, m := range modes {
		// A ratio is the median of the rounds' ratios: each round's
		// untraced run is the baseline nearest in time.
		ratio := func(f func(result) float64) float64 {
			v := make([]float64, len(results[i]))
			for r, res := range results[i] {
				v[r] = f(res) / f(results[0][r])
			}
			return mid(v)
		}
		fmt.Printf("%-10s %9.0f %6.3fx %9s %6.3fx %11s %6.3fx %9s %6.3fx %5.1f%%  %s\n", m.name,
			median(results[i], rps), ratio(rps),
			time.Duration(median(results[i], p99)).Round(time.Microsecond), ratio(p99),
			time.Duration(median(results[i], nginxCPU)), ratio(nginxCPU),
			time.Duration(median(results[i], wrkCPU)), ratio(wrkCPU),
			100*median(results[i], func(r result) float64 { return r.agentCPU }), m.what)
	}
	fmt.Println("CPU/r: CPU time per request (user+system); ratio: median over the rounds of mode / untraced in the round;")
	fmt.Println("agent: the agent's CPU over the run, share of one core")
	return nil
}

type bench struct {
	h                         cgroups.Hierarchy
	cgroup, root, agent, addr string
}

// measure serves in mode m, warms up and runs wrk once.
func (b *bench) measure(m mode, wrk, url string, cfg config) (result, error) {
	srv, err := m.serve()
	if err != nil {
		return result{}, err
	}
	res, err := func() (result, error) {
		if err := waitListening(b.addr, 30*time.Second); err != nil {
			return result{}, err
		}
		if _, err := runWrk(wrk, url, cfg.threads, cfg.connections, cfg.warmup); err != nil {
			return result{}, err
		}
		nginx, err := b.nginxPIDs()
		if err != nil {
			return result{}, err
		}
		nginx0, err := cpuTime(nginx...)
		if err != nil {
			return result{}, err
		}
		agent0, err := cpuTime(srv.agentPID)
		if err != nil {
			return result{}, err
		}
		start := time.Now()
		res, err := runWrk(wrk, url, cfg.threads, cfg.connections, cfg.duration)
		if err != nil {
			return result{}, err
		}
		agent1, err := cpuTime(srv.agentPID)
		if err != nil {
			return result{}, err
		}
		res.agentCPU = float64(agent1-agent0) / float64(time.Since(start))
		nginx1, err := cpuTime(nginx...)
		res.nginxCPU = (nginx1 - nginx0) / time.Duration(res.requests)
		return res, err
	}()
	return res, errors.Join(err, srv.stop())
}

// cpuTime is the user+system time of processes pids themselves (not of
// the children they reaped: the tracked nginx is the agent's child); pid
// 0 counts nothing.
func cpuTime(pids ...int) (time.Duration, error) {
	var ticks int64
	for _, pid := range pids {
		if pid == 0 {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// Fields after the command name, which ends at the last ')': utime
		// and stime are the 12th and 13th, in clock ticks (100 per second on Linux).
		fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
		if len(fields) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: %q", pid, raw)
		}
		for _, f := range fields[11:13] {
			n, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
			}
			ticks += n
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// nginxPIDs are nginx's master, named in its pid file, and its workers.
func (b *bench) nginxPIDs() ([]int, error) {
	master, err := b.masterPID()
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", master, master))
	if err != nil {
		return nil, fmt.Errorf("nginx's workers: %w", err)
	}
	pids := []int{master}
	for _, f := range strings.Fields(string(raw)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("nginx's workers: %w", err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

func (b *bench) masterPID() (int, error) {
	raw, err := os.ReadFile(filepath.Join(b.root, "run/inuse-bench.pid"))
	if err != nil {
		return 0, fmt.Errorf("reading nginx's pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return 0, fmt.Errorf("nginx's pid file: %w", err)
	}
	return pid, nil
}

// nginxArgs run nginx in the foreground with the benchmark's config.
var nginxArgs = []string{"nginx", "-c", "/etc/nginx/inuse-bench.conf", "-g", "daemon off;"}

// untraced runs nginx the way `inuse-agent exec --root` would, without
// the agent: agent.Command chroots it and mounts /proc, and it starts in
// a cgroup of its own.
func (b *bench) untraced() (server, error) {
	cmd, cleanup, err := agent.Command(b.root, nginxArgs)
	if err != nil {
		return server{}, err
	}
	cmd.Stdin, cmd.Stdout = nil, nil
	if err := b.h.Start(cmd, b.cgroup); err != nil {
		cleanup()
		return server{}, fmt.Errorf("starting nginx: %w", err)
	}
	return server{stop: func() error {
		defer cleanup()
		return b.stopNginx(cmd)
	}}, nil
}

// floor runs nginx untraced while an empty program hooks sys_exit, the
// agent's hook: what any syscall tracepoint costs, before our code runs.
func (b *bench) floor() (server, error) {
	p, err := emptyprobe.Open()
	if err != nil {
		return server{}, err
	}
	nginx, err := b.untraced()
	if err != nil {
		return server{}, errors.Join(err, p.Close())
	}
	return server{stop: func() error { return errors.Join(nginx.stop(), p.Close()) }}, nil
}

// tracked runs nginx under `inuse-agent exec`, events written to /dev/null.
func (b *bench) tracked() (server, error) {
	cmd := exec.Command(b.agent, append([]string{"exec", "--root", b.root, "-o", os.DevNull, "--image-digest", digest, "--"}, nginxArgs...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return server{}, fmt.Errorf("starting inuse-agent exec: %w", err)
	}
	return server{stop: func() error { return b.stopNginx(cmd) }, agentPID: cmd.Process.Pid}, nil
}

// untracked starts `inuse-agent run`, waits until it runs, then nginx
// untraced; the stop ends both.
func (b *bench) untracked() (server, error) {
	cmd := exec.Command(b.agent, "run", "-o", os.DevNull, "--nri-socket", "", "--docker=false")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return server{}, err
	}
	if err := cmd.Start(); err != nil {
		return server{}, fmt.Errorf("starting inuse-agent run: %w", err)
	}
	stopAgent := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("inuse-agent run: %w", err)
		}
		return nil
	}
	if err := waitRunning(stderr); err != nil {
		return server{}, errors.Join(err, stopAgent())
	}
	nginx, err := b.untraced()
	if err != nil {
		return server{}, errors.Join(err, stopAgent())
	}
	return server{stop: func() error { return errors.Join(nginx.stop(), stopAgent()) }, agentPID: cmd.Process.Pid}, nil
}

// waitRunning reads the agent's log until it says it runs, then keeps
// draining it so that the agent never blocks on a full pipe.
func waitRunning(stderr io.Reader) error {
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "agent running") {
			go func() { _, _ = io.Copy(io.Discard, stderr) }()
			return nil
		}
	}
	return fmt.Errorf("inuse-agent run ended before running: %w", sc.Err())
}

// stopNginx sends the master (named in its pid file: under `inuse-agent
// exec` cmd is the agent) a fast shutdown and waits for cmd.
func (b *bench) stopNginx(cmd *exec.Cmd) error {
	pid, err := b.masterPID()
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping nginx: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(cmd.Path), err)
	}
	return nil
}

// serveRoot links the cached root into a copy next to it (hard links: the
// cache is never written) and adds the config and the file to serve, as
// new files only.
func serveRoot(cached string, port, size int) (string, error) {
	root, err := os.MkdirTemp(filepath.Dir(cached), "nginx-")
	if err != nil {
		return "", err
	}
	if err := os.Remove(root); err != nil {
		return "", err
	}
	if out, err := exec.Command("cp", "-al", cached, root).CombinedOutput(); err != nil {
		return "", fmt.Errorf("linking %s: %w: %s", cached, err, out)
	}
	conf := fmt.Sprintf(`user www-data;
worker_processes 1;
pid /run/inuse-bench.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
	access_log off;
	sendfile on;
	keepalive_requests 100000000;
	server {
		listen 127.0.0.1:%d;
		root /srv/inuse-bench;
	}
}
`, port)
	if err := os.WriteFile(filepath.Join(root, "etc/nginx/inuse-bench.conf"), []byte(conf), 0o644); err != nil {
		return root, err
	}
	if err := os.MkdirAll(filepath.Join(root, "srv/inuse-bench"), 0o755); err != nil {
		return root, err
	}
	return root, os.WriteFile(filepath.Join(root, "srv/inuse-bench/index.html"), []byte(strings.Repeat("x", size)), 0o644)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nginx not listening on %s after %s: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	rpsLine      = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	requestsLine = regexp.MustCompile(`(?m)^\s+([0-9]+) requests in `)
	p99Line      = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s)\s*$`)
)

// runWrk runs wrk and reads requests/s, the p99 latency and the requests
// from its report; wrkCPU is its own CPU time per request.
func runWrk(wrk, url string, threads, connections int, d time.Duration) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, wrk, "--latency", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(connections),
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	if strings.Contains(string(out), "Non-2xx") || strings.Contains(string(out), "Socket errors") {
		return result{}, fmt.Errorf("wrk saw errors: %s", out)
	}
	rps, p99, requests := rpsLine.FindSubmatch(out), p99Line.FindSubmatch(out), requestsLine.FindSubmatch(out)
	if rps == nil || p99 == nil || requests == nil {
		return result{}, fmt.Errorf("wrk's report not understood: %s", out)
	}
	var res result
	if res.rps, err = strconv.ParseFloat(string(rps[1]), 64); err != nil {
		return result{}, err
	}
	if res.p99, err = time.ParseDuration(string(p99[1]) + string(p99[2])); err != nil {
		return result{}, err
	}
	if res.requests, err = strconv.Atoi(string(requests[1])); err != nil || res.requests == 0 {
		return result{}, fmt.Errorf("wrk's report: %d requests: %w", res.requests, err)
	}
	res.wrkCPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()) / time.Duration(res.requests)
	return res, nil
}

// median is the median of f over rs.
func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return mid(v)
}

// mid sorts v and returns its middle (the upper one of an even count).
func mid(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}
