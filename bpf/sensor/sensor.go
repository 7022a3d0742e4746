// Package sensor loads and owns the kernel side of inuse: the programs that
// watch tracked cgroups, their maps and ring buffer. One Open, one Close.
package sensor

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/syscalls"
)

// Config tunes the sensor at load time.
type Config struct {
	// CgroupV1Controller keys cgroups by their id in this v1 controller
	// hierarchy (e.g. "memory") instead of their cgroup v2 id: for hosts
	// whose processes all sit in the cgroup2 root.
	CgroupV1Controller string
	// RingBufferBytes sizes the event ring buffer: a power of two and a
	// multiple of the page size. Zero keeps the size sensor.bpf.c gives
	// inuse_events.
	RingBufferBytes uint32
	// MaxTracked bounds the number of cgroups tracked at once on the v1
	// fallback. Zero keeps the default, MAX_TRACKED_V1 in cgroup.h.
	// cgroup2 has no bound.
	MaxTracked uint32
	// EarlyPrefixes are cgroup2 path prefixes ("/docker/") under which a
	// new cgroup is tracked the moment it is created: at most
	// EARLY_PREFIXES, each shorter than EARLY_PREFIX_LEN (cgroup.h). The
	// sensor then emits a CgroupEvent for it, and the caller attributes or
	// adopts it (Track), then attributes or untracks it. cgroup2 only.
	EarlyPrefixes []string
	// PollInterval is how often syscall bitmaps and loss counters are read.
	// Zero means one second.
	PollInterval time.Duration
	// HostMountNS is the inode number of the host's mount namespace
	// (HostMountNamespace): a task in it is an OCI runtime at work, never
	// a container (runtime.h). Zero tells no namespace apart, for
	// programs profiled in the host's namespace.
	HostMountNS uint32
	// ShareRate and ShareBurst bound what one cgroup writes to the ring
	// buffer: bytes a second on average, and at once (cgroup.h). A
	// container flooding it with new files loses its own events, not its
	// neighbours'. Zero: DefaultShareRate, and a quarter of the ring
	// buffer.
	ShareRate, ShareBurst uint64
	// KernelBTF, when set, gives the kernel types for the CO-RE relocations
	// (LoadBTF), in place of the running kernel's and its modules'. The
	// tracepoints are still found by the running kernel's own BTF.
	KernelBTF *btf.Spec
	// Variant forces a build of the programs instead of the best the
	// kernel supports: for benchmarks and tests of the fallbacks. Empty:
	// chosen at Open.
	Variant Variant
}

// DefaultShareRate is one cgroup's fair share of the ring buffer: far
// above what a starting container writes (tens of thousands of files in
// seconds, ~200 bytes each), far below what user space reads (hundreds of
// MiB/s).
const DefaultShareRate = 32 << 20

// HostMountNamespace reads the inode number of the host's mount namespace:
// that of pid 1 (the agent runs in the host's pid namespace), or, where
// pid 1 keeps it from us (a non-dumpable init), the agent's own, which is
// the host's unless the agent runs in a container of its own.
func HostMountNamespace() (uint32, error) {
	var st unix.Stat_t
	err := unix.Stat("/proc/1/ns/mnt", &st)
	if err != nil {
		err = errors.Join(err, unix.Stat("/proc/self/ns/mnt", &st))
		if st.Ino == 0 {
			return 0, fmt.Errorf("reading the host's mount namespace: %w", err)
		}
	}
	return uint32(st.Ino), nil
}

// ErrTrackedFull is returned by Track when MaxTracked cgroups are tracked.
var ErrTrackedFull = errors.New("sensor: tracked cgroup table is full")

// Sensor owns every kernel object of the sensor.
type Sensor struct {
	log   *slog.Logger
	objs  sensorObjects
	links []link.Link
	rd    *ringbuf.Reader
	poll  time.Duration
	// cgroup2 is the mount point of the cgroup2 hierarchy, or nil on the v1 fallback.
	cgroup2 *os.File
	// features is what the loaded variant runs with.
	features Features
	// kernelBTF is Config.KernelBTF, for the objects that share the maps.
	kernelBTF *btf.Spec

	mu      sync.Mutex
	tracked map[uint64]*trackedCgroup
	free    []uint32 // v1 fallback: free slots of inuse_v1_state
}

// trackedCgroup is what user space holds for a tracked cgroup: the handle
// of its kernel state, and what it last read of it, to report only news.
type trackedCgroup struct {
	fd       *os.File // cgroup2 with cgroup storage: the cgroup directory, key of inuse_cgstate
	slot     uint32   // v1 fallback: index into inuse_v1_state
	syscalls sensorSyscallBits
	losses   uint64
}

// Open checks what the kernel offers, loads the programs and attaches them.
// Nothing is tracked until Track is called.
func Open(log *slog.Logger, cfg Config) (_ *Sensor, err error) {
	kernel, err := kernelBTF()
	if err != nil {
		return nil, err
	}
	types := cmp.Or(cfg.KernelBTF, kernel)
	variant := cfg.Variant
	if variant == "" {
		if variant, err = chooseVariant(); err != nil {
			return nil, err
		}
	}
	s := &Sensor{
		log:       log.With(logfields.Component, "sensor"),
		tracked:   map[uint64]*trackedCgroup{},
		poll:      cfg.PollInterval,
		kernelBTF: cfg.KernelBTF,
	}
	if s.poll <= 0 {
		s.poll = time.Second
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()

	spec, err := loadVariant(variant)
	if err != nil {
		return nil, fmt.Errorf("loading sensor spec: %w", err)
	}
	var specs sensorSpecs
	if err := spec.Assign(&specs); err != nil {
		return nil, fmt.Errorf("reading sensor spec: %w", err)
	}
	if cfg.RingBufferBytes != 0 {
		specs.InuseEvents.MaxEntries = cfg.RingBufferBytes
	}
	maxTracked := uint32(1) // the v1 maps stay unused on cgroup2
	if cfg.CgroupV1Controller != "" {
		idx, err := v1SubsysIndex(types, cfg.CgroupV1Controller)
		if err != nil {
			return nil, err
		}
		if err := specs.CgroupV1Subsys.Set(idx); err != nil {
			return nil, fmt.Errorf("setting cgroup v1 controller: %w", err)
		}
		maxTracked = cmp.Or(cfg.MaxTracked, uint32(sensorCgroupLimitsMAX_TRACKED_V1))
	} else {
		h, err := cgroups.Unified()
		if err != nil {
			return nil, fmt.Errorf("sensor keys containers by cgroup2 id: %w", err)
		}
		if s.cgroup2, err = os.Open(h.Dir); err != nil {
			return nil, fmt.Errorf("opening cgroup2 root: %w", err)
		}
		if variant.HashMapState() {
			specs.InuseCgstate.MaxEntries = cmp.Or(cfg.MaxTracked, maxTrackedHash)
		}
	}
	s.features = featuresOf(variant, cfg.CgroupV1Controller != "")
	specs.InuseV1Tracked.MaxEntries = maxTracked
	specs.InuseV1State.MaxEntries = maxTracked
	if err := setEarlyPrefixes(&specs, cfg.EarlyPrefixes); err != nil {
		return nil, err
	}
	if err := specs.FmodeBacking.Set(uint32(fmodeBackingBits)); err != nil {
		return nil, fmt.Errorf("setting FMODE_BACKING: %w", err)
	}
	if err := specs.HostMntNs.Set(cfg.HostMountNS); err != nil {
		return nil, fmt.Errorf("setting the host's mount namespace: %w", err)
	}
	if err := specs.ShareRate.Set(cmp.Or(cfg.ShareRate, DefaultShareRate)); err != nil {
		return nil, fmt.Errorf("setting the fair share: %w", err)
	}
	if err := specs.ShareBurst.Set(cmp.Or(cfg.ShareBurst, uint64(specs.InuseEvents.MaxEntries/4))); err != nil {
		return nil, fmt.Errorf("setting the fair share: %w", err)
	}
	// Without KernelBTF, cilium/ebpf relocates against the running kernel
	// and its modules' BTF (the overlay module's types).
	opts := &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: cfg.KernelBTF}}
	if err := spec.LoadAndAssign(&s.objs, opts); err != nil {
		return nil, fmt.Errorf("loading sensor programs: %+w", err)
	}
	for slot := maxTracked; slot > 0; slot-- {
		s.free = append(s.free, slot-1)
	}

	progs := []struct {
		name string
		prog *ebpf.Program
	}{
		{"sys_exit", s.objs.InuseSysExit},
		{"sched_process_exec", s.objs.InuseExec},
		{"sched_process_fork", s.objs.InuseFork},
		{"sched_process_exit", s.objs.InuseProcExit},
		{"cgroup_mkdir", s.objs.InuseCgroupMkdir},
	}
	if s.hashState() {
		// The state of a removed cgroup goes with it, as cgroup storage would.
		progs = append(progs, struct {
			name string
			prog *ebpf.Program
		}{"cgroup_rmdir", s.objs.InuseCgroupRmdir})
	}
	for _, p := range progs {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.prog})
		if err != nil {
			return nil, fmt.Errorf("attaching %s: %w", p.name, err)
		}
		s.links = append(s.links, l)
	}
	if s.rd, err = ringbuf.NewReader(s.objs.InuseEvents); err != nil {
		return nil, fmt.Errorf("opening event ring buffer: %w", err)
	}
	f := s.features
	s.log.Info("sensor loaded", "variant", f.Variant, "cgroup_state", f.CgroupState, "path_walk", f.PathWalk,
		"loader", f.Loader, "file_reads", f.FileReads, "external_btf", cfg.KernelBTF != nil)
	return s, nil
}

// maxTrackedHash bounds the tracked cgroup2 cgroups where their state is in
// a hash map (kernels before cgroup storage), unless Config.MaxTracked says.
const maxTrackedHash = 16384

// Features is what the loaded sensor runs with.
func (s *Sensor) Features() Features { return s.features }

// hashState says whether cgroup2 state is in the hash map by cgroup id.
func (s *Sensor) hashState() bool { return s.cgroup2 != nil && s.features.Variant.HashMapState() }

// setEarlyPrefixes hands the early-tracking prefixes to the programs.
func setEarlyPrefixes(specs *sensorSpecs, prefixes []string) error {
	var (
		text [sensorCgroupLimitsEARLY_PREFIXES][sensorCgroupLimitsEARLY_PREFIX_LEN]byte
		lens [sensorCgroupLimitsEARLY_PREFIXES]uint32
	)
	if len(prefixes) > len(text) {
		return fmt.Errorf("at most %d early-tracking prefixes, got %d", len(text), len(prefixes))
	}
	for i, p := range prefixes {
		if p == "" || len(p) >= len(text[i]) {
			return fmt.Errorf("early-tracking prefix %q: want 1 to %d bytes", p, len(text[i])-1)
		}
		copy(text[i][:], p)
		lens[i] = uint32(len(p))
	}
	if err := specs.EarlyPrefix.Set(text); err != nil {
		return fmt.Errorf("setting early-tracking prefixes: %w", err)
	}
	if err := specs.EarlyPrefixLen.Set(lens); err != nil {
		return fmt.Errorf("setting early-tracking prefixes: %w", err)
	}
	return nil
}

// fmodeBackingBits are the bits FMODE_BACKING has had: 1<<25 from Linux 6.5,
// 1<<24 from 6.14 and in 6.12's stable updates, so the release does not say
// which one a kernel uses. The programs test both and keep a file's embedded
// user path only where it is a real one (user_path_of in origin.h).
const fmodeBackingBits = 1<<25 | 1<<24

// v1SubsysIndex finds the kernel's cgroup_subsys_id of a v1 controller.
func v1SubsysIndex(kernel *btf.Spec, controller string) (int32, error) {
	var ids *btf.Enum
	if err := kernel.TypeByName("cgroup_subsys_id", &ids); err != nil {
		return 0, fmt.Errorf("finding cgroup_subsys_id in kernel BTF: %w", err)
	}
	for _, v := range ids.Values {
		if v.Name == controller+"_cgrp_id" {
			return int32(v.Value), nil
		}
	}
	return 0, fmt.Errorf("kernel has no cgroup controller %q", controller)
}

// Close detaches the programs and frees every kernel object.
func (s *Sensor) Close() error {
	var errs []error
	if s.rd != nil {
		errs = append(errs, s.rd.Close())
	}
	for i := len(s.links) - 1; i >= 0; i-- {
		errs = append(errs, s.links[i].Close())
	}
	errs = append(errs, s.objs.Close())
	for _, t := range s.tracked {
		if t.fd != nil {
			errs = append(errs, t.fd.Close())
		}
	}
	if s.cgroup2 != nil {
		errs = append(errs, s.cgroup2.Close())
	}
	return errors.Join(errs...)
}

// Track starts observing the cgroup with this id, before its container's
// entrypoint runs. Tracking an already tracked cgroup is a no-op.
func (s *Sensor) Track(cgroupID uint64) error { return s.track(cgroupID, 0) }

// TrackRunning is Track for a container whose entrypoint may have run
// already: the first process to join it from outside afterwards is not
// taken for its entrypoint, but for an exec session (runtime.h).
func (s *Sensor) TrackRunning(cgroupID uint64) error {
	return s.track(cgroupID, uint32(sensorEntrypointStateENTRYPOINT_UNSEEN))
}

func (s *Sensor) track(cgroupID uint64, entrypoint uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tracked[cgroupID]; ok {
		return nil
	}
	state := sensorCgroupState{CgroupId: cgroupID, Entrypoint: entrypoint}
	if s.hashState() {
		// The state may exist already, as below.
		err := s.objs.InuseCgstate.Update(cgroupID, state, ebpf.UpdateNoExist)
		if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("tracking cgroup %d: %w", cgroupID, err)
		}
		s.tracked[cgroupID] = &trackedCgroup{}
		return nil
	}
	if s.cgroup2 != nil {
		fd, err := openCgroup(s.cgroup2, cgroupID)
		if err != nil {
			return err
		}
		// The state may exist already: created in the kernel when the
		// cgroup was made under an early prefix. Keep what it holds.
		err = s.objs.InuseCgstate.Update(int32(fd.Fd()), state, ebpf.UpdateNoExist)
		if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			fd.Close()
			return fmt.Errorf("tracking cgroup %d: %w", cgroupID, err)
		}
		s.tracked[cgroupID] = &trackedCgroup{fd: fd}
		return nil
	}
	if len(s.free) == 0 {
		return ErrTrackedFull
	}
	slot := s.free[len(s.free)-1]
	// The slot starts clean before the cgroup can write to it.
	if err := s.objs.InuseV1State.Put(slot, state); err != nil {
		return fmt.Errorf("clearing cgroup state: %w", err)
	}
	if err := s.objs.InuseV1Tracked.Put(cgroupID, slot); err != nil {
		return fmt.Errorf("tracking cgroup %d: %w", cgroupID, err)
	}
	s.free = s.free[:len(s.free)-1]
	s.tracked[cgroupID] = &trackedCgroup{slot: slot}
	return nil
}

// openCgroup opens a cgroup2 directory by its id: cgroup ids are kernfs
// file handles.
func openCgroup(root *os.File, id uint64) (*os.File, error) {
	const fileIDKernfs = 0xfe
	handle := unix.NewFileHandle(fileIDKernfs, binary.NativeEndian.AppendUint64(nil, id))
	fd, err := unix.OpenByHandleAt(int(root.Fd()), handle, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("opening cgroup %d: %w", id, err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("cgroup %d", id)), nil
}

// Untrack stops observing a cgroup and forgets what it had seen, so that
// its dedup entries do not linger.
func (s *Sensor) Untrack(cgroupID uint64) error {
	s.mu.Lock()
	t, ok := s.tracked[cgroupID]
	if ok {
		delete(s.tracked, cgroupID)
	}
	s.mu.Unlock()
	if !ok {
		return nil
	}
	var err error
	switch {
	case s.hashState():
		err = ignoreNotExist(s.objs.InuseCgstate.Delete(cgroupID))
	case t.fd != nil:
		// A cgroup that is gone took its state with it.
		err = s.objs.InuseCgstate.Delete(int32(t.fd.Fd()))
		err = errors.Join(ignoreNotExist(err), t.fd.Close())
	default:
		err = ignoreNotExist(s.objs.InuseV1Tracked.Delete(cgroupID))
		s.mu.Lock()
		s.free = append(s.free, t.slot)
		s.mu.Unlock()
	}
	return errors.Join(err, s.forgetSeen(cgroupID))
}

func ignoreNotExist(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// Tracked reports whether the cgroup is tracked.
func (s *Sensor) Tracked(cgroupID uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.tracked[cgroupID]
	return ok
}

// Tracking is the sensor's set of tracked cgroups as another BPF object
// built on cgroup.h takes it: the maps of cgroup.h by their names in C, for
// ebpf.CollectionOptions.MapReplacements, and the cgroup_v1_subsys they are
// keyed by (-1: cgroup2). The sensor still owns the maps.
type Tracking struct {
	Maps           map[string]*ebpf.Map
	CgroupV1Subsys int32
	// Variant is the sensor's: its maps are of that variant's types.
	Variant Variant
	// KernelBTF is the sensor's Config.KernelBTF: the kernel types for
	// CO-RE relocations, nil for the running kernel's.
	KernelBTF *btf.Spec
}

// Tracking returns the tracked cgroups for another BPF object to filter by.
func (s *Sensor) Tracking() (Tracking, error) {
	t := Tracking{Maps: map[string]*ebpf.Map{
		sensorMapInuseCgstate:   s.objs.InuseCgstate,
		sensorMapInuseV1Tracked: s.objs.InuseV1Tracked,
		sensorMapInuseV1State:   s.objs.InuseV1State,
	}, Variant: s.features.Variant, KernelBTF: s.kernelBTF}
	if err := s.objs.CgroupV1Subsys.Get(&t.CgroupV1Subsys); err != nil {
		return Tracking{}, fmt.Errorf("reading cgroup_v1_subsys: %w", err)
	}
	return t, nil
}

// forgetSeen deletes the dedup entries of one cgroup.
func (s *Sensor) forgetSeen(cgroupID uint64) error {
	err := errors.Join(
		deleteWhere(s.objs.InuseFileSeen, func(k sensorFileKey, _ uint8) bool { return k.CgroupId == cgroupID }),
		deleteWhere(s.objs.InuseNetSeen, func(k sensorNetKey, _ uint8) bool { return k.CgroupId == cgroupID }),
		// Sessions whose processes outlived the tracking.
		deleteWhere(s.objs.InuseExecSessions, func(_ uint32, id uint64) bool { return id == cgroupID }),
	)
	if err != nil {
		return fmt.Errorf("forgetting dedup entries of cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// deleteWhere deletes the entries of m that match. Keys are collected
// first: deleting while iterating restarts the iteration.
func deleteWhere[K, V any](m *ebpf.Map, match func(K, V) bool) error {
	var (
		key   K
		value V
		keys  []K
	)
	it := m.Iterate()
	for it.Next(&key, &value) {
		if match(key, value) {
			keys = append(keys, key)
		}
	}
	errs := []error{it.Err()}
	for _, k := range keys {
		errs = append(errs, ignoreNotExist(m.Delete(k)))
	}
	return errors.Join(errs...)
}

// Run reads events until ctx is done and hands each to emit, from this
// goroutine only. Every PollInterval it also reports new syscalls and
// losses of the tracked cgroups. When ctx ends, what the kernel already
// wrote is still read and emitted before Run returns.
func (s *Sensor) Run(ctx context.Context, emit func(Event)) error {
	stop := context.AfterFunc(ctx, func() { _ = s.rd.Flush() })
	defer stop()

	var rec ringbuf.Record
	next := time.Now().Add(s.poll)
	for {
		s.rd.SetDeadline(next)
		err := s.rd.ReadInto(&rec)
		switch {
		case err == nil:
			ev, derr := Decode(rec.RawSample)
			if derr != nil {
				s.log.Debug("dropping malformed record", logfields.Error, derr)
				continue
			}
			emit(ev)
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			next = time.Now().Add(s.poll)
			s.Poll(emit)
			continue
		case errors.Is(err, ringbuf.ErrFlushed):
			s.Poll(emit)
			return ctx.Err()
		case errors.Is(err, ringbuf.ErrClosed):
			return ctx.Err()
		default:
			return fmt.Errorf("reading event ring buffer: %w", err)
		}
	}
}

// Poll reads the syscall bitmaps and loss counters of the tracked cgroups
// and emits what is new since the previous read.
func (s *Sensor) Poll(emit func(Event)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]uint64, 0, len(s.tracked))
	for id := range s.tracked {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		t := s.tracked[id]
		var cur sensorCgroupState
		var err error
		switch {
		case s.hashState():
			err = s.objs.InuseCgstate.Lookup(id, &cur)
		case t.fd != nil:
			err = s.objs.InuseCgstate.Lookup(int32(t.fd.Fd()), &cur)
		default:
			err = s.objs.InuseV1State.Lookup(t.slot, &cur)
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			// The cgroup was removed and its storage with it; the
			// runtime's stop event untracks it.
			continue
		}
		if err != nil {
			s.log.Warn("reading cgroup state", logfields.CgroupID, id, logfields.Error, err)
			continue
		}
		if ev, ok := newSyscalls(id, t.syscalls, cur.Syscalls); ok {
			t.syscalls = cur.Syscalls
			emit(ev)
		}
		if cur.Losses > t.losses {
			emit(LossEvent{CgroupID: id, Lost: cur.Losses - t.losses, Total: cur.Losses})
			t.losses = cur.Losses
		}
	}
}

func newSyscalls(id uint64, prev, cur sensorSyscallBits) (SyscallEvent, bool) {
	ev := SyscallEvent{CgroupID: id}
	for w, word := range cur.Words {
		fresh := word &^ prev.Words[w]
		for fresh != 0 {
			b := bits.TrailingZeros64(fresh)
			fresh &^= 1 << b
			nr := w*64 + b
			ev.Numbers = append(ev.Numbers, nr)
			ev.Names = append(ev.Names, syscalls.Native(nr))
		}
	}
	return ev, len(ev.Numbers) > 0
}
