package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/bpf/funcprobe"
	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner/gosym"
)

// planTimeout bounds reading an image's probe plan from Redis;
// startTimeout while a runtime waits for the container to start (NRI's
// hooks time out after 2 s).
const (
	planTimeout  = 5 * time.Second
	startTimeout = 500 * time.Millisecond
	// planBackoff is how long after a failed read of a plan a starting
	// container is not held for its plan: Redis is away, and the
	// background read after the start will do.
	planBackoff = 10 * time.Second
)

// funcProbes puts the Go probe plans of tracked images (store.GoPlan, made
// by the scanner) into the kernel as entry uprobes, and turns their first
// hit per image, binary and symbol into a FunctionEvent, detaching the
// probes of that symbol. Uprobes hang off a file's inode, for every process
// that maps it; the program reports only tracked cgroups, and the hit's
// cgroup names the image. The probes of a binary are shared by the
// containers of its image and go with the last of them. A nil *funcProbes
// (no Redis, or a kernel without uprobes) does nothing.
type funcProbes struct {
	log   *slog.Logger
	probe *funcprobe.Probe
	plans func(ctx context.Context, digest string) (map[string]store.GoPlan, error)
	// emit hands an event to the registry, like the sensor's.
	emit       func(sensor.Event)
	work       sync.WaitGroup // attaches in flight
	planFailed atomic.Int64   // unix ns of the last failed read of a plan

	mu       sync.Mutex
	cookie   uint64 // last cookie given to a probe
	cgroups  map[uint64]*probedCgroup
	binaries map[binaryKey]*probedBinary
	points   map[uint64]*probePoint // by cookie
	// hit holds (image, binary, symbol) already reported: not probed again.
	hit map[functionKey]bool
}

// probedCgroup is a tracked container of an image with a plan.
type probedCgroup struct {
	digest   string
	plans    map[string]store.GoPlan // by path inside the image
	binaries map[binaryKey]bool      // acquired, released when it stops
}

// binaryKey names a binary of an image by its build: the build id is what
// the plan's offsets are valid for.
type binaryKey struct{ digest, path, buildID string }

// functionKey is one planned function of a binary of an image.
type functionKey struct{ digest, path, symbol string }

// probedBinary is the probes of one binary, shared by the containers of its
// image.
type probedBinary struct {
	key  binaryKey
	refs int
	// ready is CLOCK_MONOTONIC (ns) when every probe of the plan was in
	// place; 0 when one failed. An exec after it ran nothing unprobed.
	ready  uint64
	probed bool // ProbedEvent emitted
	points map[uint64]*probePoint
}

type probePoint struct {
	bin    *probedBinary
	symbol string
	link   link.Link
}

// openFuncProbes loads the function probe program on the sensor's tracked
// cgroups; plans reads an image's probe plan.
func openFuncProbes(log *slog.Logger, s *sensor.Sensor, plans func(context.Context, string) (map[string]store.GoPlan, error)) (*funcProbes, error) {
	tracking, err := s.Tracking()
	if err != nil {
		return nil, err
	}
	p, err := funcprobe.Open(tracking)
	if err != nil {
		return nil, err
	}
	return &funcProbes{
		log:      log.With(logfields.Component, "funcprobe"),
		probe:    p,
		plans:    plans,
		cgroups:  map[uint64]*probedCgroup{},
		binaries: map[binaryKey]*probedBinary{},
		points:   map[uint64]*probePoint{},
		hit:      map[functionKey]bool{},
	}, nil
}

// Close detaches every probe and frees the program.
func (f *funcProbes) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, b := range f.binaries {
		errs = append(errs, f.detach(b, "")...)
	}
	return errors.Join(append(errs, f.probe.Close())...)
}

// run reads hits until ctx ends, then what the kernel wrote until then.
func (f *funcProbes) run(ctx context.Context) error {
	if f == nil {
		return nil
	}
	return f.probe.Run(ctx, f.onHit)
}

// wait waits for the attaches in flight.
func (f *funcProbes) wait() {
	if f != nil {
		f.work.Wait()
	}
}

// started probes the binaries of a container's image plan, in the
// background: the container is running already, or about to. cgroupDir
// finds its root file system through its processes; without it, only its
// exec events do.
func (f *funcProbes) started(c lifecycle.Container, cgroupDir string) {
	cg := f.track(c)
	if cg == nil {
		return
	}
	f.work.Add(1)
	go func() {
		defer f.work.Done()
		f.load(c, cg, f.roots(c, cgroupDir), planTimeout)
	}()
}

// starting probes the binaries of the plan of a container about to start
// before it returns, through the processes of cgroupDir (the runtime's,
// which has entered the container's root): its first instruction runs
// probed. The plan's read is bounded by the time a runtime waits.
func (f *funcProbes) starting(c lifecycle.Container, cgroupDir string) {
	if f == nil || time.Since(time.Unix(0, f.planFailed.Load())) < planBackoff {
		return
	}
	if cg := f.track(c); cg != nil {
		f.load(c, cg, f.roots(c, cgroupDir), startTimeout)
	}
}

// start probes the binaries of a container's image plan found under root
// (its root directory as this process sees it) before it returns: called
// before the container's first process runs, every probe is in place for
// its first instruction.
func (f *funcProbes) start(c lifecycle.Container, root string) {
	if cg := f.track(c); cg != nil {
		f.load(c, cg, []string{root}, planTimeout)
	}
}

// roots lists the root directories of the processes of cgroupDir.
func (f *funcProbes) roots(c lifecycle.Container, cgroupDir string) []string {
	if cgroupDir == "" {
		return nil
	}
	pids, err := cgroupPIDs(cgroupDir)
	if err != nil {
		f.log.Debug("finding the root of a container", logfields.ContainerID, c.ID, logfields.Error, err)
	}
	roots := make([]string, 0, len(pids))
	for _, pid := range pids {
		roots = append(roots, "/proc/"+strconv.Itoa(pid)+"/root")
	}
	return roots
}

// track registers a container of an image, so that its exec events and
// hits are known to be its own, before its plan is read.
func (f *funcProbes) track(c lifecycle.Container) *probedCgroup {
	if f == nil || c.CgroupID == 0 || c.Image.Digest == "" {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cg, ok := f.cgroups[c.CgroupID]
	if !ok {
		cg = &probedCgroup{digest: c.Image.Digest, binaries: map[binaryKey]bool{}}
		f.cgroups[c.CgroupID] = cg
	}
	return cg
}

// load reads the plan of cg's image once and probes each planned binary
// not probed yet for it that one of roots holds.
func (f *funcProbes) load(c lifecycle.Container, cg *probedCgroup, roots []string, timeout time.Duration) {
	var plans map[string]store.GoPlan
	f.mu.Lock()
	planned := cg.plans != nil
	f.mu.Unlock()
	if !planned {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var err error
		if plans, err = f.plans(ctx, cg.digest); err != nil {
			f.planFailed.Store(time.Now().UnixNano())
			f.log.Warn("reading the probe plan", logfields.Image, cg.digest, logfields.Error, err)
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cgroups[c.CgroupID] != cg {
		return // stopped meanwhile
	}
	if cg.plans == nil {
		cg.plans = plans
		if cg.plans == nil {
			cg.plans = map[string]store.GoPlan{}
		}
	}
	for path, plan := range cg.plans {
		if cg.binaries[binaryKey{cg.digest, path, plan.BuildID}] {
			continue
		}
		for _, root := range roots {
			file := filepath.Join(root, path)
			if _, err := os.Stat(file); err == nil {
				f.acquire(cg, path, plan, file)
				break
			}
		}
	}
}

// stopped releases the probes of a container that went.
func (f *funcProbes) stopped(c lifecycle.Container) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cg, ok := f.cgroups[c.CgroupID]
	if !ok {
		return
	}
	delete(f.cgroups, c.CgroupID)
	for key := range cg.binaries {
		b := f.binaries[key]
		if b.refs--; b.refs > 0 {
			continue
		}
		delete(f.binaries, key)
		if err := errors.Join(f.detach(b, "")...); err != nil {
			f.log.Warn("detaching function probes", logfields.Path, key.path, logfields.Error, err)
		}
	}
}

// exec sees a process of a tracked cgroup execute a file. A planned binary
// whose probes were all in place before the exec is probed: every call of
// a planned function of this process will be seen. One not probed yet (a
// binary outside the root the container started with) is probed now,
// through the process's root, for its next calls and processes.
func (f *funcProbes) exec(ev sensor.ExecEvent) {
	if f == nil || ev.Role != sensor.RoleBinary || ev.Seeded {
		return
	}
	f.mu.Lock()
	cg, ok := f.cgroups[ev.CgroupID]
	plan, planned := store.GoPlan{}, false
	if ok {
		plan, planned = cg.plans[ev.Path]
	}
	if !planned {
		f.mu.Unlock()
		return
	}
	key := binaryKey{cg.digest, ev.Path, plan.BuildID}
	if !cg.binaries[key] {
		f.mu.Unlock()
		// Attaching is slow next to the event path: not on the sensor's reader.
		f.work.Add(1)
		go func() {
			defer f.work.Done()
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.cgroups[ev.CgroupID] == cg && !cg.binaries[key] {
				f.acquire(cg, ev.Path, plan, filepath.Join("/proc", strconv.Itoa(int(ev.PID)), "root", ev.Path))
			}
		}()
		return
	}
	b := f.binaries[key]
	probed := b.ready != 0 && b.ready < ev.Monotonic && !b.probed
	b.probed = b.probed || probed
	f.mu.Unlock()
	if probed {
		f.emit(funcprobe.ProbedEvent{Header: ev.Header, Binary: ev.Path, BuildID: plan.BuildID})
	}
}

// acquire probes the binary file (the planned path as this process reaches
// it) for cg, or shares the probes its image has on it; f.mu is held. A
// file of another build than the plan's is not probed: the offsets are not
// its own.
func (f *funcProbes) acquire(cg *probedCgroup, path string, plan store.GoPlan, file string) {
	key := binaryKey{cg.digest, path, plan.BuildID}
	if b, ok := f.binaries[key]; ok {
		b.refs++
		cg.binaries[key] = true
		return
	}
	id, err := gosym.ReadBuildID(file)
	if err != nil {
		f.log.Debug("reading the build id of a planned binary", logfields.Path, path, logfields.Error, err)
		return
	}
	if id != plan.BuildID {
		f.log.Info("not probing a binary of another build than planned", logfields.Path, path, logfields.Image, cg.digest,
			"build_id", id, "planned", plan.BuildID)
		return
	}
	exe, err := link.OpenExecutable(file)
	if err != nil {
		f.log.Warn("probing a binary", logfields.Path, path, logfields.Error, err)
		return
	}
	b := &probedBinary{key: key, refs: 1, points: map[uint64]*probePoint{}}
	complete := true
	for _, p := range plan.Probes {
		if f.hit[functionKey{key.digest, path, p.Symbol}] {
			continue // reported already
		}
		f.cookie++
		l, err := f.probe.Attach(exe, p.Offset, f.cookie)
		if err != nil {
			f.log.Warn("probing a function", logfields.Path, path, "symbol", p.Symbol, logfields.Error, err)
			complete = false
			continue
		}
		pt := &probePoint{bin: b, symbol: p.Symbol, link: l}
		b.points[f.cookie] = pt
		f.points[f.cookie] = pt
	}
	if complete {
		b.ready = monotonicNow()
	}
	f.binaries[key] = b
	cg.binaries[key] = true
	f.log.Debug("probed a binary", logfields.Path, path, logfields.Image, cg.digest, logfields.Count, len(b.points), "complete", complete)
}

// onHit turns the first hit of a planned function in an image into a
// FunctionEvent and detaches that function's probes in the binary.
func (f *funcProbes) onHit(h funcprobe.Hit) {
	f.mu.Lock()
	pt, ok := f.points[h.Cookie]
	cg := f.cgroups[h.CgroupID]
	if !ok || cg == nil || cg.digest != pt.bin.key.digest {
		// Detached already, or another image's probe on a shared file.
		f.mu.Unlock()
		return
	}
	key := pt.bin.key
	f.hit[functionKey{key.digest, key.path, pt.symbol}] = true
	errs := f.detach(pt.bin, pt.symbol)
	f.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		f.log.Warn("detaching a function probe", logfields.Path, key.path, "symbol", pt.symbol, logfields.Error, err)
	}
	f.emit(funcprobe.FunctionEvent{
		Header: sensor.Header{CgroupID: h.CgroupID, PID: h.PID, Monotonic: h.Monotonic},
		Binary: key.path, Symbol: pt.symbol,
	})
}

// detach closes the probes of b for symbol, or all of them when symbol is
// empty; f.mu is held.
func (f *funcProbes) detach(b *probedBinary, symbol string) []error {
	var errs []error
	for cookie, pt := range b.points {
		if symbol != "" && pt.symbol != symbol {
			continue
		}
		errs = append(errs, pt.link.Close())
		delete(b.points, cookie)
		delete(f.points, cookie)
	}
	return errs
}

func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// probingTracker is the tracker as discovery sources hold it: a container
// about to start (not Partial) has the probes of its image's plan in place
// before Started returns, so that when the runtime waits for it
// (containerd's NRI StartContainer runs before the container's process
// does) its process runs probed from the first instruction.
type probingTracker struct {
	*tracker
	funcs     *funcProbes
	hierarchy cgroups.Hierarchy
}

// Started implements lifecycle.Tracker.
func (t probingTracker) Started(c lifecycle.Container) error {
	if err := t.tracker.Started(c); err != nil {
		return err
	}
	if !c.Partial && c.CgroupPath != "" {
		t.funcs.starting(c, t.hierarchy.Path(c.CgroupPath))
	}
	return nil
}

// FunctionProbeTraps is how many times the function probes fired since the
// agent opened, in tracked cgroups or not: what they cost. Zero without
// function probes.
func (a *Agent) FunctionProbeTraps() (uint64, error) {
	if a.funcs == nil {
		return 0, nil
	}
	return a.funcs.probe.Traps()
}
