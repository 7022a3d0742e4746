package agent

import (
	"cmp"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/bpf/funcprobe"
	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/containerfs"
	"github.com/inuse-dev/inuse/internal/gosym"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/registry"
	"github.com/inuse-dev/inuse/internal/store"
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
	// maxHeldHits bounds the hits held for cgroups not known yet, and
	// the cgroups whose dropped hits are counted.
	maxHeldHits = 1024
	// probeDeadline bounds the probing of one container's binaries
	// (opens, build ids, attaches): a container cannot hold the agent.
	probeDeadline = 20 * time.Second
	// waitGrace bounds how long shutdown waits for probing in flight.
	waitGrace = 5 * time.Second
	// maxProbedBinary caps the size of a binary to probe.
	maxProbedBinary = 2 << 30
	// maxBuildIDNote caps the .note.go.buildid section read (a few dozen
	// bytes in every Go binary).
	maxBuildIDNote = 4 << 10
)

// imageFile is how a planned binary of a container is opened: a file of
// the image, on the root's own mount (never a volume's), within the cap.
var imageFile = containerfs.Options{MaxSize: maxProbedBinary, SameMount: true}

// Default caps on probe points (uprobes): per binary and per image.
const (
	DefaultProbesPerBinary = 1024
	DefaultProbesPerImage  = 4096
)

// ProbeLimits bound the uprobes the plans of one image put into the
// kernel: a plan is made by the scanner from a binary the image chose, and
// each point costs a breakpoint in every process that maps the file (and
// a file descriptor on kernels without uprobe_multi). A binary over a cap
// is not probed at all: a partly probed binary would claim the functions
// left out were not called.
type ProbeLimits struct {
	PerBinary int // zero: DefaultProbesPerBinary
	PerImage  int // zero: DefaultProbesPerImage
}

// allow reports whether a binary of points probe points may be probed in
// an image that has inImage in the kernel already.
func (l ProbeLimits) allow(points, inImage int) bool {
	return points <= l.PerBinary && inImage+points <= l.PerImage
}

// probeStats count the binaries not probed, for /metrics.
type probeStats struct {
	refusedFiles atomic.Uint64 // the planned path is no regular file of the container's own, or of another build
	refusedPaths atomic.Uint64 // a plan path that is not absolute and clean
	refusedCaps  atomic.Uint64 // over a cap on probe points
	deadlines    atomic.Uint64 // a container's probing ran out of time
	droppedHits  atomic.Uint64 // hits of unknown cgroups dropped over the cap
}

// funcProbes puts the Go probe plans of tracked images (store.GoPlan, made
// by the scanner) into the kernel as entry uprobes, and turns their first
// hit per image, binary and symbol into a FunctionEvent, detaching the
// probes of that symbol. Uprobes hang off a file's inode, for every process
// that maps it; the program reports only tracked cgroups, and the hit's
// cgroup names the image. The probes of a binary are shared by the
// containers of its image and go with the last of them. A nil *funcProbes
// (no Redis, or a kernel without uprobes or openat2) does nothing.
//
// A container controls its files: each planned binary is opened once,
// inside the container's root (internal/containerfs), and its build id is
// read and its probes attached through that one descriptor, so that what
// was checked is what is probed. Nothing that touches a container's files
// runs under f.mu, which the hit reader takes.
type funcProbes struct {
	log   *slog.Logger
	probe *funcprobe.Probe
	plans func(ctx context.Context, digest string) (map[string]store.GoPlan, error)
	// hierarchy finds a process's cgroup, to check that a pid is the
	// container's.
	hierarchy cgroups.Hierarchy
	limits    ProbeLimits
	// hold is how long a stopped cgroup's hits are still attributed, and
	// an unknown cgroup's hits wait for its container.
	hold time.Duration
	// emit hands an event to the registry, like the sensor's.
	emit       func(sensor.Event)
	work       sync.WaitGroup // attaches and detaches in flight
	planFailed atomic.Int64   // unix ns of the last failed read of a plan
	stats      probeStats

	mu       sync.Mutex
	closed   bool
	cgroups  map[uint64]*probedCgroup
	binaries map[binaryKey]*probedBinary
	// points counts the probe points each image has in the kernel.
	imagePoints map[string]int
	// cookies number the probed functions for good, so that a hit read
	// after its probe went (its container stopped meanwhile) still names
	// it. Their high bits are the image's owner number, which its cgroups
	// are given in the kernel: the first call in one of them marks the
	// function's probes done before user space reads the hit.
	cookies map[probeKey]uint64
	points  map[uint64]probeKey
	owners  map[string]uint32 // by image digest
	// hit holds (image, binary, symbol) already reported: not probed again.
	hit map[functionKey]bool
	// gone are the images of stopped cgroups, for hits read late; held the
	// hits of cgroups not known yet (tracked by the kernel at creation,
	// named by their runtime later): the kernel reports a probe once per
	// cgroup, so neither may be dropped without a loss in the profile.
	gone  map[uint64]goneCgroup
	held  map[uint64]*heldHits
	nheld int
}

type heldHits struct {
	since   time.Time
	hits    []funcprobe.Hit
	dropped uint64 // hits not held: a loss for the cgroup's image
}

// probedCgroup is a tracked container of an image with a plan.
type probedCgroup struct {
	id       uint64 // its cgroup id
	digest   string
	dir      string                  // its cgroup directory: its processes must be in it
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

// probeKey is one probed function of a binary: its places share a cookie.
type probeKey struct {
	binaryKey
	symbol string
}

// functionKey is one planned function of a binary of an image.
type functionKey struct{ digest, path, symbol string }

// probedBinary is the probes of one binary, shared by the containers of its
// image.
type probedBinary struct {
	refs   int
	points int // counted in imagePoints
	// ready is CLOCK_MONOTONIC (ns) when every probe of the plan was in
	// place; 0 when one failed or while attaching. An exec after it ran
	// nothing unprobed.
	ready  uint64
	probed bool                   // ProbedEvent emitted
	links  map[string][]link.Link // attached, by symbol
}

// openFuncProbes loads the function probe program on the sensor's tracked
// cgroups; plans reads an image's probe plan. Without openat2 the kernel
// cannot open container files safely: no function probes.
func openFuncProbes(log *slog.Logger, s *sensor.Sensor, h cgroups.Hierarchy, plans func(context.Context, string) (map[string]store.GoPlan, error), hold time.Duration, limits ProbeLimits) (*funcProbes, error) {
	if err := containerfs.Supported(); err != nil {
		return nil, err
	}
	tracking, err := s.Tracking()
	if err != nil {
		return nil, err
	}
	p, err := funcprobe.Open(tracking)
	if err != nil {
		return nil, err
	}
	if limits.PerBinary <= 0 {
		limits.PerBinary = DefaultProbesPerBinary
	}
	if limits.PerImage <= 0 {
		limits.PerImage = DefaultProbesPerImage
	}
	return &funcProbes{
		log:         log.With(logfields.Component, "funcprobe"),
		probe:       p,
		plans:       plans,
		hierarchy:   h,
		limits:      limits,
		hold:        cmp.Or(hold, time.Minute),
		cgroups:     map[uint64]*probedCgroup{},
		binaries:    map[binaryKey]*probedBinary{},
		imagePoints: map[string]int{},
		cookies:     map[probeKey]uint64{},
		points:      map[uint64]probeKey{},
		owners:      map[string]uint32{},
		hit:         map[functionKey]bool{},
		gone:        map[uint64]goneCgroup{},
		held:        map[uint64]*heldHits{},
	}, nil
}

// Close detaches every probe and frees the program. Probing still in
// flight after waitGrace (a kernel call that hangs) is left to close its
// own links.
func (f *funcProbes) Close() error {
	f.wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	var errs []error
	for _, b := range f.binaries {
		for _, links := range b.links {
			for _, l := range links {
				errs = append(errs, l.Close())
			}
		}
		b.links = map[string][]link.Link{}
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

// reading is closed once the hit reader waits for hits (at once without
// function probes).
func (f *funcProbes) reading() <-chan struct{} {
	if f == nil {
		return closedChan
	}
	return f.probe.Waiting()
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// wait waits for the attaches and detaches in flight, at most waitGrace:
// shutdown never waits on what a container did.
func (f *funcProbes) wait() {
	if f == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		f.work.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitGrace):
		f.log.Warn("not waiting longer for function probing in flight", "waited", waitGrace)
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
		if cg := f.track(c, cgroupDir); cg != nil {
			f.load(c, cg, f.roots(c, cgroupDir), planTimeout, imageFile)
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
	if cg := f.track(c, cgroupDir); cg != nil {
		f.load(c, cg, f.roots(c, cgroupDir), startTimeout, imageFile)
	}
}

// start probes the binaries of a container's image plan found under root
// (a directory the agent's caller chose, not a container's, whose planned
// binaries may be on any mount below it) before it returns: called before the container's first process runs, every probe
// is in place for its first instruction.
func (f *funcProbes) start(c lifecycle.Container, root, cgroupDir string) {
	if f == nil {
		return
	}
	if cg := f.track(c, cgroupDir); cg != nil {
		f.load(c, cg, func(yield func(*containerfs.Root) bool) {
			r, err := containerfs.OpenRoot(root)
			if err != nil {
				f.log.Warn("opening the root to probe", logfields.Path, root, logfields.Error, err)
				return
			}
			defer r.Close()
			yield(r)
		}, planTimeout, containerfs.Options{MaxSize: maxProbedBinary})
	}
}

// roots opens, one after the other, the root directories of the processes
// of cgroupDir; each is closed once the next is asked for. A process that
// is not in the cgroup (its pid reused) is skipped.
func (f *funcProbes) roots(c lifecycle.Container, cgroupDir string) iter.Seq[*containerfs.Root] {
	return func(yield func(*containerfs.Root) bool) {
		if cgroupDir == "" {
			return
		}
		pids, err := cgroupPIDs(cgroupDir)
		if err != nil {
			f.log.Debug("finding the root of a container", logfields.ContainerID, c.ID, logfields.Error, err)
		}
		for _, pid := range pids {
			r, err := f.processRoot(pid, cgroupDir)
			if err != nil {
				f.log.Debug("opening the root of a container's process", logfields.ContainerID, c.ID, "pid", pid, logfields.Error, err)
				continue
			}
			more := yield(r)
			r.Close()
			if !more {
				return
			}
		}
	}
}

// processRoot opens the root of process pid, which must be in cgroupDir.
func (f *funcProbes) processRoot(pid int, cgroupDir string) (*containerfs.Root, error) {
	p, err := containerfs.OpenProcess(f.hierarchy, pid, cgroupDir)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return p.Root()
}

// track registers a container of an image, so that its exec events and
// hits are known to be its own, before its plan is read, and replays the
// hits its cgroup had before (and the loss of those it could not hold).
func (f *funcProbes) track(c lifecycle.Container, cgroupDir string) *probedCgroup {
	if f == nil || c.CgroupID == 0 || c.Image.Digest == "" {
		return nil
	}
	f.mu.Lock()
	cg, ok := f.cgroups[c.CgroupID]
	if !ok {
		cg = &probedCgroup{id: c.CgroupID, digest: c.Image.Digest, binaries: map[binaryKey]bool{}}
		f.cgroups[c.CgroupID] = cg
		f.own(c.CgroupID, f.owner(c.Image.Digest))
	}
	if cg.dir == "" {
		cg.dir = cgroupDir
	}
	var held []funcprobe.Hit
	var dropped uint64
	if hh := f.held[c.CgroupID]; hh != nil {
		held, dropped = hh.hits, hh.dropped
		delete(f.held, c.CgroupID)
		f.nheld -= len(held)
	}
	f.mu.Unlock()
	for _, h := range held {
		f.onHit(h)
	}
	if dropped > 0 && f.emit != nil {
		f.emit(sensor.LossEvent{CgroupID: c.CgroupID, Lost: dropped})
	}
	return cg
}

// planned is one binary of a plan to probe.
type planned struct {
	path string
	plan store.GoPlan
}

// load reads the plan of cg's image once and probes each planned binary
// not probed yet for it that one of roots holds, within probeDeadline.
func (f *funcProbes) load(c lifecycle.Container, cg *probedCgroup, roots iter.Seq[*containerfs.Root], timeout time.Duration, opts containerfs.Options) {
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
		plans = f.checkPlans(cg.digest, plans)
	}
	todo := f.toProbe(c, cg, plans)
	if len(todo) == 0 {
		return
	}
	deadline := time.Now().Add(probeDeadline)
	for root := range roots {
		for i := 0; i < len(todo); {
			if time.Now().After(deadline) {
				f.stats.deadlines.Add(1)
				f.log.Warn("probing a container's binaries took too long: the rest is not probed",
					logfields.ContainerID, c.ID, logfields.Image, cg.digest, "deadline", probeDeadline, logfields.Count, len(todo))
				return
			}
			file, err := root.Open(todo[i].path, opts)
			if errors.Is(err, fs.ErrNotExist) {
				i++
				continue // another process's root may hold it
			}
			if err == nil {
				f.acquire(cg, todo[i].path, todo[i].plan, file)
				_ = file.Close()
			} else {
				f.refuse(c, cg, todo[i].path, err)
			}
			todo = append(todo[:i], todo[i+1:]...)
		}
		if len(todo) == 0 {
			return
		}
	}
}

// checkPlans drops the plan entries whose path is not absolute and clean:
// a plan is read from Redis, and "/app/../../proc/self/exe" must never
// name anything.
func (f *funcProbes) checkPlans(digest string, plans map[string]store.GoPlan) map[string]store.GoPlan {
	for path := range plans {
		if err := containerfs.CheckPath(path); err != nil {
			f.stats.refusedPaths.Add(1)
			f.log.Warn("refusing a probe plan path", logfields.Image, digest, logfields.Error, err)
			delete(plans, path)
		}
	}
	return plans
}

// toProbe records the plan of cg (when read now) and lists its binaries
// not acquired yet for cg, sharing those its image has probed already.
func (f *funcProbes) toProbe(c lifecycle.Container, cg *probedCgroup, plans map[string]store.GoPlan) []planned {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cgroups[c.CgroupID] != cg || f.closed {
		return nil // stopped meanwhile
	}
	if cg.plans == nil {
		cg.plans = plans
		if cg.plans == nil {
			cg.plans = map[string]store.GoPlan{}
		}
	}
	var todo []planned
	for path, plan := range cg.plans {
		key := binaryKey{cg.digest, path, plan.BuildID}
		if cg.binaries[key] {
			continue
		}
		if b, ok := f.binaries[key]; ok {
			b.refs++
			cg.binaries[key] = true
			continue
		}
		todo = append(todo, planned{path, plan})
	}
	return todo
}

// refuse says why a planned binary is not probed.
func (f *funcProbes) refuse(c lifecycle.Container, cg *probedCgroup, path string, err error) {
	f.stats.refusedFiles.Add(1)
	f.log.Warn("refusing to probe a planned binary", logfields.ContainerID, c.ID, logfields.Image, cg.digest,
		logfields.Path, path, logfields.Error, err)
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
	f.own(c.CgroupID, 0)
	f.gone[c.CgroupID] = goneCgroup{digest: cg.digest, at: now}
	for key := range cg.binaries {
		f.release(key)
	}
}

// release drops a reference to the probes of key, detaching them with the
// last; f.mu is held.
func (f *funcProbes) release(key binaryKey) {
	b := f.binaries[key]
	if b == nil {
		return
	}
	if b.refs--; b.refs > 0 {
		return
	}
	delete(f.binaries, key)
	if f.imagePoints[key.digest] -= b.points; f.imagePoints[key.digest] <= 0 {
		delete(f.imagePoints, key.digest)
	}
	f.detach(b, "")
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
		dir := cg.dir
		f.mu.Unlock()
		// Opening and attaching are slow next to the event path, and
		// touch the container's files: never on the sensor's reader.
		f.work.Add(1)
		go func() {
			defer f.work.Done()
			c := lifecycle.Container{CgroupID: ev.CgroupID}
			if f.share(cg, key) {
				return
			}
			root, err := f.processRoot(int(ev.PID), dir)
			if err != nil {
				f.log.Debug("opening the root of a process that executed a planned binary", "pid", ev.PID, logfields.Error, err)
				return
			}
			defer root.Close()
			file, err := root.Open(ev.Path, imageFile)
			if err != nil {
				f.refuse(c, cg, ev.Path, err)
				return
			}
			defer file.Close()
			f.acquire(cg, ev.Path, plan, file)
		}()
		return
	}
	b := f.binaries[key]
	probed := b != nil && b.ready != 0 && b.ready < ev.Monotonic && !b.probed
	if probed {
		b.probed = true
	}
	f.mu.Unlock()
	if probed {
		f.emit(funcprobe.ProbedEvent{Header: ev.Header, Binary: ev.Path, BuildID: plan.BuildID})
	}
}

// share takes a reference for cg to the probes its image has on key, and
// reports whether cg has them now (or is gone: nothing to do).
func (f *funcProbes) share(cg *probedCgroup, key binaryKey) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.cgroups[cg.id] != cg || cg.binaries[key] {
		return true
	}
	b, ok := f.binaries[key]
	if ok {
		b.refs++
		cg.binaries[key] = true
	}
	return ok
}

// buildID reads the Go build id of the open file, reading no more than
// the note's few bytes whatever the file's headers claim.
func buildID(file *os.File) (string, error) {
	ef, err := elf.NewFile(file)
	if err != nil {
		return "", fmt.Errorf("reading the ELF headers: %w", err)
	}
	sec := ef.Section(".note.go.buildid")
	if sec == nil {
		return "", gosym.ErrNoBuildID
	}
	if sec.Size > maxBuildIDNote || sec.Type == elf.SHT_NOBITS {
		return "", fmt.Errorf("a .note.go.buildid of %d bytes: %w", sec.Size, gosym.ErrNoBuildID)
	}
	return gosym.BuildID(ef)
}

// acquire probes the open binary file (the planned path inside cg's root)
// for cg, or shares the probes its image has on it. The build id is read
// and the probes attached through file itself (/proc/self/fd/N): what was
// checked is what is probed, whatever the container does at the path. A
// file of another build than the plan's is not probed: the offsets are
// not its own. f.mu is not held: it is taken only to update the maps.
func (f *funcProbes) acquire(cg *probedCgroup, path string, plan store.GoPlan, file *os.File) {
	key := binaryKey{cg.digest, path, plan.BuildID}
	id, err := buildID(file)
	if err != nil {
		f.stats.refusedFiles.Add(1)
		f.log.Info("not probing a planned binary without a readable Go build id", logfields.Path, path, logfields.Image, cg.digest, logfields.Error, err)
		return
	}
	if id != plan.BuildID {
		f.stats.refusedFiles.Add(1)
		f.log.Info("not probing a binary of another build than planned", logfields.Path, path, logfields.Image, cg.digest,
			"build_id", id, "planned", plan.BuildID)
		return
	}

	f.mu.Lock()
	if f.closed || f.cgroups[cg.id] != cg {
		f.mu.Unlock()
		return // stopped meanwhile
	}
	if b, ok := f.binaries[key]; ok {
		if !cg.binaries[key] {
			b.refs++
			cg.binaries[key] = true
		}
		f.mu.Unlock()
		return
	}
	// The places of one function are attached, and detached, together.
	var symbols []string
	offsets, cookies := map[string][]uint64{}, map[string][]uint64{}
	points := 0
	for _, p := range plan.Probes {
		if f.hit[functionKey{key.digest, path, p.Symbol}] {
			continue // reported already
		}
		if _, ok := offsets[p.Symbol]; !ok {
			symbols = append(symbols, p.Symbol)
		}
		offsets[p.Symbol] = append(offsets[p.Symbol], p.Offset)
		points++
	}
	if !f.limits.allow(points, f.imagePoints[key.digest]) {
		inImage := f.imagePoints[key.digest]
		f.mu.Unlock()
		f.stats.refusedCaps.Add(1)
		f.log.Warn("not probing a binary: too many probe points", logfields.Path, path, logfields.Image, cg.digest,
			"points", points, "image_points", inImage, "max_per_binary", f.limits.PerBinary, "max_per_image", f.limits.PerImage)
		return
	}
	for _, sym := range symbols {
		pk := probeKey{key, sym}
		cookie, ok := f.cookies[pk]
		if !ok {
			cookie = funcprobe.Cookie(f.owner(key.digest), uint32(len(f.cookies)+1))
			f.cookies[pk], f.points[cookie] = cookie, pk
		}
		for range offsets[sym] {
			cookies[sym] = append(cookies[sym], cookie)
		}
	}
	// In place before attaching, so that other containers of the image
	// share it and a stop while attaching releases it.
	b := &probedBinary{refs: 1, points: points, links: map[string][]link.Link{}}
	f.binaries[key] = b
	cg.binaries[key] = true
	f.imagePoints[key.digest] += points
	f.mu.Unlock()

	attached := map[string][]link.Link{}
	complete := true
	exe, err := link.OpenExecutable(containerfs.ProcPath(file))
	if err != nil {
		f.log.Warn("probing a binary", logfields.Path, path, logfields.Error, err)
		complete = false
	} else {
		for _, sym := range symbols {
			links, err := f.probe.Attach(exe, offsets[sym], cookies[sym])
			if err != nil {
				f.log.Warn("probing a function", logfields.Path, path, "symbol", sym, logfields.Error, err)
				complete = false
				continue
			}
			attached[sym] = links
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.binaries[key] != b {
		// Released (or the agent closing) while attaching: ours to close.
		f.detach(&probedBinary{links: attached}, "")
		return
	}
	for sym, links := range attached {
		b.links[sym] = links
		if f.hit[functionKey{key.digest, path, sym}] {
			f.detach(b, sym) // hit while attaching
		}
	}
	if complete {
		b.ready = monotonicNow()
	}
	f.log.Debug("probed a binary", logfields.Path, path, logfields.Image, cg.digest, logfields.Count, len(attached), "complete", complete)
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

// owner numbers an image for the kernel, for good; f.mu is held.
func (f *funcProbes) owner(digest string) uint32 {
	n, ok := f.owners[digest]
	if !ok {
		n = uint32(len(f.owners) + 1)
		f.owners[digest] = n
	}
	return n
}

// own gives a cgroup to an owner in the kernel, or takes it back (owner
// 0); f.mu is held, so that a cgroup that stopped is never given back.
// A cgroup the kernel has no room for is still reported: its probes only
// trap at full cost until detached.
func (f *funcProbes) own(cgroupID uint64, owner uint32) {
	if f.probe == nil {
		return // the tests' funcProbes, without a kernel program
	}
	var err error
	if owner == 0 {
		err = f.probe.Disown(cgroupID)
	} else {
		err = f.probe.Own(cgroupID, owner)
	}
	if err != nil {
		f.log.Debug("marking a cgroup's probes done", logfields.CgroupID, cgroupID, logfields.Error, err)
	}
}

// holdHit keeps the hit of a cgroup not known yet, within bounds; past
// them it counts the hit, so that the cgroup's image is marked as having
// lost it once the cgroup is named. f.mu is held.
func (f *funcProbes) holdHit(h funcprobe.Hit) {
	now := time.Now()
	hh := f.held[h.CgroupID]
	if f.nheld >= maxHeldHits || (hh == nil && len(f.held) >= maxHeldHits) {
		// Cgroups that were never named within the hold time never will.
		for id, old := range f.held {
			if now.Sub(old.since) > f.hold {
				f.nheld -= len(old.hits)
				delete(f.held, id)
			}
		}
		hh = f.held[h.CgroupID]
	}
	if hh == nil {
		if len(f.held) >= maxHeldHits {
			f.stats.droppedHits.Add(1)
			return // nowhere to count it: the cap on cgroups
		}
		hh = &heldHits{since: now}
		f.held[h.CgroupID] = hh
	}
	if f.nheld >= maxHeldHits {
		hh.dropped++
		f.stats.droppedHits.Add(1)
		return
	}
	hh.hits = append(hh.hits, h)
	f.nheld++
}

// detach takes the probes of b for symbol, or all of them when symbol is
// empty, and closes them apart, off f.mu: closing a uprobe waits for the
// kernel's grace periods (about 20 ms), though its breakpoints go first.
// The hit reader parks on the netpoller right after, so its P runs the
// close at once. f.mu is held.
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
