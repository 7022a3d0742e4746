package collector

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// GuardConfig sets the agent's resource budget. Profiling pauses while the
// agent's own CPU or memory use is over budget, and resumes after the
// cool-down once it is back under. Each pause is recorded in the profiles
// being built and lowers their confidence.
type GuardConfig struct {
	// MaxCPU is the share of one core the agent may use (0.5 = 50 %); 0: no limit.
	MaxCPU float64
	// MaxRSSBytes is the resident memory the agent may use; 0: no limit.
	MaxRSSBytes uint64
	// Interval between two measurements. Zero means one second.
	Interval time.Duration
	// CoolDown is the least time a pause lasts. Zero means 30 seconds.
	CoolDown time.Duration
}

// guard measures the agent process and flips the paused flag.
type guard struct {
	cfg     GuardConfig
	onPause func()
	pause   atomic.Bool
	pauses  atomic.Int64
}

func newGuard(cfg GuardConfig, onPause func()) *guard {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.CoolDown <= 0 {
		cfg.CoolDown = 30 * time.Second
	}
	return &guard{cfg: cfg, onPause: onPause}
}

func (g *guard) paused() bool { return g.pause.Load() }

// start runs the measurements until ctx ends or the returned stop is called.
func (g *guard) start(ctx context.Context) (stop func()) {
	if g.cfg.MaxCPU <= 0 && g.cfg.MaxRSSBytes == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	go g.loop(ctx)
	return cancel
}

func (g *guard) loop(ctx context.Context) {
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	lastCPU, _ := cpuTime()
	lastAt := time.Now()
	var pausedAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cpu, err := cpuTime()
			rss, err2 := rssBytes()
			if err != nil || err2 != nil {
				continue
			}
			share := (cpu - lastCPU).Seconds() / now.Sub(lastAt).Seconds()
			lastCPU, lastAt = cpu, now
			over := g.cfg.MaxCPU > 0 && share > g.cfg.MaxCPU || g.cfg.MaxRSSBytes > 0 && rss > g.cfg.MaxRSSBytes
			switch {
			case over && !g.pause.Load():
				g.pause.Store(true)
				g.pauses.Add(1)
				pausedAt = now
				g.onPause()
			case !over && g.pause.Load() && now.Sub(pausedAt) >= g.cfg.CoolDown:
				g.pause.Store(false)
			}
		}
	}
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc.
const clockTicks = 100

// cpuTime is the user+system CPU time of this process.
func cpuTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields start after its ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("parsing /proc/self/stat: %q", s)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/self/stat: %q", s)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// rssBytes is the resident set size of this process.
func rssBytes() (uint64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(b))
	if len(fields) < 2 {
		return 0, fmt.Errorf("parsing /proc/self/statm: %q", b)
	}
	pages, err := strconv.ParseUint(fields[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing /proc/self/statm: %w", err)
	}
	return pages * uint64(os.Getpagesize()), nil
}
