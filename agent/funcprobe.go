package agent

import (
	"cmp"
	"context"
	"errors"
	"io/fs"
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
	"github.com/inuse-dev/inuse/internal/registry"
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
	// maxHeldHits bounds the hits held for cgroups not known yet.
	maxHeldHits = 1024
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
	// hold is how long a stopped cgroup's hits are still attributed, and
	// an unknown cgroup's hits wait for its container.
	hold time.Duration
	// emit hands an event to the registry, like the sensor's.
	emit       func(sensor.Event)
	work       sync.WaitGroup // attaches and detaches in flight
	planFailed atomic.Int64   // unix ns of the last failed read of a plan
	// metrics counts the binaries the kernel refused to open (nil: none);
	// warned is set by the first refusal, which is logged as a warning.
	metrics *agentMetrics
	warned  atomic.Bool

	mu       sync.Mutex
	cgroups  map[uint64]*probedCgroup
	binaries map[binaryKey]*probedBinary
	// cookies number probe points for good, so that a hit read after its
	// probe went (its container stopped meanwhile) still names it.
	cookies map[probeKey]uint64
	points  map[uint64]probeKey
	// hit holds (image, binary, symbol) already reported: not probed again.
	hit map[functionKey]bool
	// gone are the images of stopped cgroups, for hits read late; held the
	// hits of cgroups not known yet (tracked by the kernel at creation,
	// named by their runtime later): the kernel reports a probe once per
	// cgroup, so neither may be dropped.
	gone  map[uint64]goneCgroup
	held  map[uint64]*heldHits
	nheld int
}

type heldHits struct {
	since time.Time
	hits  []funcprobe.Hit
}

// probedCgroup is a tracked container of an image with a plan.
type probedCgroup struct {
	digest   string
	plans    map[string]store.GoPlan // by path inside the image; nil until read
	binaries map[binaryKey]bool      // acquired, released when it stops
}

type goneCgroup struct {
	digest string
	at     time.Time
}

// binaryKey names a binary of an image by its build: the build id is what
// the plan's offsets are valid for.
type binaryKey struct{ digest, path, buildID string }

// probeKey is one probe point of a binary.
type probeKey struct {
	binaryKey
	offset uint64
	symbol string
}

// functionKey is one planned function of a binary of an image.
type functionKey struct{ digest, path, symbol string }

// probedBinary is the probes of one binary, shared by the containers of its
// image.
type probedBinary struct {
	refs int
	// ready is CLOCK_MONOTONIC (ns) when every probe of the plan was in
	// place; 0 when one failed. An exec after it ran nothing unprobed.
	ready  uint64
	probed bool                   // ProbedEvent emitted
	links  map[string][]link.Link // attached, by symbol
}

// openFuncProbes loads the function probe program on the sensor's tracked
// cgroups; plans reads an image's probe plan.
func openFuncProbes(log *slog.Logger, s *sensor.Sensor, plans func(context.Context, string) (map[string]store.GoPlan, error), hold time.Duration, m *agentMetrics) (*funcProbes, error) {
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
		hold:     cmp.Or(hold, time.Minute),
		metrics:  m,
		cgroups:  map[uint64]*probedCgroup{},
		binaries: map[binaryKey]*probedBinary{},
		cookies:  map[probeKey]uint64{},
		points:   map[uint64]probeKey{},
		hit:      map[functionKey]bool{},
		gone:     map[uint64]goneCgroup{},
		held:     map[uint64]*heldHits{},
	}, nil
}

// Close detaches every probe and frees the program.
func (f *funcProbes) Close() error {
	f.work.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, b := range f.binaries {
		for _, links := range b.links {
			for _, l := range links {
				errs = append(errs, l.Close())
			}
		}
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

// wait waits for the attaches and detaches in flight.
func (f *funcProbes) wait() {
	if f != nil {
		f.work.Wait()
	}
}

// started probes the binaries of a container's image plan, in the
// background: the container is running already, or about to. cgroupDir
// finds its root file system through its processes; without it, only its
// exec events do. It neither blocks nor emits: the registry calls it.
func (f *funcProbes) started(c lifecycle.Container, cgroupDir string) {
	if f == nil || c.CgroupID == 0 || c.Image.Digest == "" {
		return
	}
	f.work.Add(1)
	go func() {
		defer f.work.Done()
		if cg := f.track(c); cg != nil {
			f.load(c, cg, f.roots(c, cgroupDir), planTimeout)
		}
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
// hits are known to be its own, before its plan is read, and replays the
// hits its cgroup had before.
func (f *funcProbes) track(c lifecycle.Container) *probedCgroup {
	if f == nil || c.CgroupID == 0 || c.Image.Digest == "" {
		return nil
	}
	f.mu.Lock()
	cg, ok := f.cgroups[c.CgroupID]
	if !ok {
		cg = &probedCgroup{digest: c.Image.Digest, binaries: map[binaryKey]bool{}}
		f.cgroups[c.CgroupID] = cg
	}
	var held []funcprobe.Hit
	if hh := f.held[c.CgroupID]; hh != nil {
		held = hh.hits
		delete(f.held, c.CgroupID)
		f.nheld -= len(held)
	}
	f.mu.Unlock()
	for _, h := range held {
		f.onHit(h)
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
			_, err := os.Stat(file)
			if err == nil {
				f.acquire(cg, path, plan, file)
				break
			}
			if errors.Is(err, fs.ErrPermission) {
				f.refused(cg, path, err)
				break
			}
		}
	}
}

// stopped releases the probes of a container that went; its hits still
// read are attributed for the hold time.
func (f *funcProbes) stopped(c lifecycle.Container) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	for id, g := range f.gone {
		if now.Sub(g.at) > f.hold {
			delete(f.gone, id)
		}
	}
	cg, ok := f.cgroups[c.CgroupID]
	if !ok {
		return
	}
	delete(f.cgroups, c.CgroupID)
	f.gone[c.CgroupID] = goneCgroup{digest: cg.digest, at: now}
	for key := range cg.binaries {
		b := f.binaries[key]
		if b.refs--; b.refs > 0 {
			continue
		}
		delete(f.binaries, key)
		f.detach(b, "")
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
	if errors.Is(err, fs.ErrPermission) {
		f.refused(cg, path, err)
		return
	}
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
	b := &probedBinary{refs: 1, links: map[string][]link.Link{}}
	// The places of one function are attached, and detached, together.
	var symbols []string
	offsets, cookies := map[string][]uint64{}, map[string][]uint64{}
	for _, p := range plan.Probes {
		if f.hit[functionKey{key.digest, path, p.Symbol}] {
			continue // reported already
		}
		pk := probeKey{key, p.Offset, p.Symbol}
		cookie, ok := f.cookies[pk]
		if !ok {
			cookie = uint64(len(f.cookies) + 1)
			f.cookies[pk], f.points[cookie] = cookie, pk
		}
		if _, ok := offsets[p.Symbol]; !ok {
			symbols = append(symbols, p.Symbol)
		}
		offsets[p.Symbol] = append(offsets[p.Symbol], p.Offset)
		cookies[p.Symbol] = append(cookies[p.Symbol], cookie)
	}
	complete := true
	for _, sym := range symbols {
		links, err := f.probe.Attach(exe, offsets[sym], cookies[sym])
		if err != nil {
			f.log.Warn("probing a function", logfields.Path, path, "symbol", sym, logfields.Error, err)
			complete = false
			continue
		}
		b.links[sym] = links
	}
	if complete {
		b.ready = monotonicNow()
	}
	f.binaries[key] = b
	cg.binaries[key] = true
	f.log.Debug("probed a binary", logfields.Path, path, logfields.Image, cg.digest, logfields.Count, len(b.links), "complete", complete)
}

// refused counts a planned binary that the kernel would not let the agent
// open through a container process's root (/proc/PID/root, which needs
// ptrace_may_access): its functions go unprobed.
func (f *funcProbes) refused(cg *probedCgroup, path string, err error) {
	f.metrics.refused(featureFuncProbe)
	log := f.log.Debug
	if !f.warned.Swap(true) {
		log = f.log.Warn
	}
	log("probing refused for lack of privilege: the kernel lets only a holder of CAP_SYS_PTRACE open a file through another user's, or a more privileged, process's root",
		logfields.Path, path, logfields.Image, cg.digest, logfields.Error, err)
}

// onHit turns the first hit of a planned function in an image into a
// FunctionEvent and detaches that function's probes in the binary. It
// runs on the hit reader: what takes long (detaching) is done apart.
func (f *funcProbes) onHit(h funcprobe.Hit) {
	f.mu.Lock()
	pk, ok := f.points[h.Cookie]
	if !ok {
		f.mu.Unlock()
		return
	}
	digest := f.gone[h.CgroupID].digest
	if cg := f.cgroups[h.CgroupID]; cg != nil {
		digest = cg.digest
	}
	f.log.Debug("function probe hit", logfields.CgroupID, h.CgroupID, "symbol", pk.symbol, logfields.Image, digest)
	if digest == "" {
		f.holdHit(h)
		f.mu.Unlock()
		return
	}
	fk := functionKey{pk.digest, pk.path, pk.symbol}
	if digest != pk.digest || f.hit[fk] {
		// Another image's probe on a shared file, or reported already.
		f.mu.Unlock()
		return
	}
	f.hit[fk] = true
	if b := f.binaries[pk.binaryKey]; b != nil {
		f.detach(b, pk.symbol)
	}
	f.mu.Unlock()
	f.emit(funcprobe.FunctionEvent{
		Header: sensor.Header{CgroupID: h.CgroupID, PID: h.PID, Monotonic: h.Monotonic},
		Binary: pk.path, Symbol: pk.symbol,
	})
}

// holdHit keeps the hit of a cgroup not known yet, within bounds; f.mu is
// held.
func (f *funcProbes) holdHit(h funcprobe.Hit) {
	now := time.Now()
	if f.nheld >= maxHeldHits {
		// Cgroups that were never named within the hold time never will.
		for id, hh := range f.held {
			if now.Sub(hh.since) > f.hold {
				f.nheld -= len(hh.hits)
				delete(f.held, id)
			}
		}
		if f.nheld >= maxHeldHits {
			return
		}
	}
	hh := f.held[h.CgroupID]
	if hh == nil {
		hh = &heldHits{since: now}
		f.held[h.CgroupID] = hh
	}
	hh.hits = append(hh.hits, h)
	f.nheld++
}

// detach takes the probes of b for symbol, or all of them when symbol is
// empty, and closes them apart: closing a uprobe waits for the kernel's
// grace periods. f.mu is held.
func (f *funcProbes) detach(b *probedBinary, symbol string) {
	var links []link.Link
	for sym, ls := range b.links {
		if symbol != "" && sym != symbol {
			continue
		}
		links = append(links, ls...)
		delete(b.links, sym)
	}
	if len(links) == 0 {
		return
	}
	f.work.Add(1)
	go func() {
		defer f.work.Done()
		for _, l := range links {
			if err := l.Close(); err != nil {
				f.log.Warn("detaching a function probe", logfields.Error, err)
			}
		}
	}()
}

func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// funcSink follows the containers the registry knows: their cgroup ids
// resolved (a container that exited before its runtime described it is
// known by its cgroup path only), started before their events replay.
type funcSink struct {
	funcs     *funcProbes
	hierarchy cgroups.Hierarchy
}

var _ registry.Sink[sensor.Event] = funcSink{}

// ContainerStarted implements registry.Sink.
func (s funcSink) ContainerStarted(c lifecycle.Container) {
	var dir string
	if c.CgroupPath != "" {
		dir = s.hierarchy.Path(c.CgroupPath)
	}
	s.funcs.started(c, dir)
}

// Observe implements registry.Sink: exec events reach the probes earlier,
// from the sensor (Agent.observe).
func (funcSink) Observe(lifecycle.Container, sensor.Event) {}

// ContainerStopped implements registry.Sink.
func (s funcSink) ContainerStopped(c lifecycle.Container) { s.funcs.stopped(c) }

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
