// Package sensor loads and owns the kernel side of inuse: the programs that
// watch tracked cgroups, their maps and ring buffer. One Open, one Close.
package sensor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

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
	// multiple of the page size. Zero keeps the default (8 MiB).
	RingBufferBytes uint32
	// MaxTracked bounds the number of cgroups tracked at once. Zero keeps
	// the default (4096).
	MaxTracked uint32
	// PollInterval is how often syscall bitmaps and loss counters are read.
	// Zero means one second.
	PollInterval time.Duration
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

	mu    sync.Mutex
	slots map[uint64]*slotState // by tracked cgroup id
	free  []uint32
}

// slotState is what user space remembers of a tracked cgroup's slot, to
// report only what is new.
type slotState struct {
	slot     uint32
	syscalls sensorSyscallBits
	losses   uint64
}

// Open checks what the kernel offers, loads the programs and attaches them.
// Nothing is tracked until Track is called.
func Open(log *slog.Logger, cfg Config) (_ *Sensor, err error) {
	if err := checkKernel(); err != nil {
		return nil, err
	}
	s := &Sensor{
		log:   log.With(logfields.Component, "sensor"),
		slots: map[uint64]*slotState{},
		poll:  cfg.PollInterval,
	}
	if s.poll <= 0 {
		s.poll = time.Second
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()

	spec, err := loadSensor()
	if err != nil {
		return nil, fmt.Errorf("loading sensor spec: %w", err)
	}
	if cfg.RingBufferBytes != 0 {
		spec.Maps["inuse_events"].MaxEntries = cfg.RingBufferBytes
	}
	maxTracked := uint32(4096)
	if cfg.MaxTracked != 0 {
		maxTracked = cfg.MaxTracked
		for _, m := range []string{"inuse_tracked", "inuse_sysbits", "inuse_losses"} {
			spec.Maps[m].MaxEntries = maxTracked
		}
	}
	if cfg.CgroupV1Controller != "" {
		idx, err := v1SubsysIndex(cfg.CgroupV1Controller)
		if err != nil {
			return nil, err
		}
		if err := spec.Variables["cgroup_v1_subsys"].Set(idx); err != nil {
			return nil, fmt.Errorf("setting cgroup v1 controller: %w", err)
		}
	}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("loading sensor programs: %+w", err)
	}
	for slot := maxTracked; slot > 0; slot-- {
		s.free = append(s.free, slot-1)
	}

	for _, p := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"sys_exit", s.objs.InuseSysExit},
		{"sched_process_exec", s.objs.InuseExec},
		{"sched_process_exit", s.objs.InuseProcExit},
	} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.prog})
		if err != nil {
			return nil, fmt.Errorf("attaching %s: %w", p.name, err)
		}
		s.links = append(s.links, l)
	}
	if s.rd, err = ringbuf.NewReader(s.objs.InuseEvents); err != nil {
		return nil, fmt.Errorf("opening event ring buffer: %w", err)
	}
	return s, nil
}

// checkKernel names what the kernel lacks for the sensor to load.
func checkKernel() error {
	if _, err := btf.LoadKernelSpec(); err != nil {
		return fmt.Errorf("sensor needs kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF=y): %w", err)
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return fmt.Errorf("sensor needs BPF ring buffers (Linux 5.8 or later): %w", err)
	}
	if err := features.HaveProgramHelper(ebpf.Kprobe, asm.FnFindVma); err != nil {
		return fmt.Errorf("sensor needs bpf_find_vma (Linux 5.17 or later): %w", err)
	}
	return nil
}

// v1SubsysIndex finds the kernel's cgroup_subsys_id of a v1 controller.
func v1SubsysIndex(controller string) (int32, error) {
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return 0, fmt.Errorf("reading kernel BTF: %w", err)
	}
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
	return errors.Join(errs...)
}

// Track starts observing the cgroup with this id. Tracking an already
// tracked cgroup is a no-op.
func (s *Sensor) Track(cgroupID uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.slots[cgroupID]; ok {
		return nil
	}
	if len(s.free) == 0 {
		return ErrTrackedFull
	}
	slot := s.free[len(s.free)-1]
	// A reused slot starts clean before the cgroup can write to it.
	if err := s.objs.InuseSysbits.Put(slot, sensorSyscallBits{}); err != nil {
		return fmt.Errorf("clearing syscall bitmap: %w", err)
	}
	if err := s.objs.InuseLosses.Put(slot, uint64(0)); err != nil {
		return fmt.Errorf("clearing loss counter: %w", err)
	}
	if err := s.objs.InuseTracked.Put(cgroupID, slot); err != nil {
		return fmt.Errorf("tracking cgroup %d: %w", cgroupID, err)
	}
	s.free = s.free[:len(s.free)-1]
	s.slots[cgroupID] = &slotState{slot: slot}
	return nil
}

// Untrack stops observing a cgroup and forgets what it had seen, so that
// its dedup entries do not linger.
func (s *Sensor) Untrack(cgroupID uint64) error {
	s.mu.Lock()
	st, ok := s.slots[cgroupID]
	if ok {
		delete(s.slots, cgroupID)
	}
	s.mu.Unlock()
	if !ok {
		return nil
	}
	err := s.objs.InuseTracked.Delete(cgroupID)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		err = nil
	}
	errs := []error{err, s.forgetSeen(cgroupID)}
	s.mu.Lock()
	s.free = append(s.free, st.slot)
	s.mu.Unlock()
	return errors.Join(errs...)
}

// Tracked reports whether the cgroup is tracked.
func (s *Sensor) Tracked(cgroupID uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.slots[cgroupID]
	return ok
}

// forgetSeen deletes the dedup entries of one cgroup.
func (s *Sensor) forgetSeen(cgroupID uint64) error {
	var errs []error
	var fk sensorFileKey
	var fkeys []sensorFileKey
	var seen uint8
	it := s.objs.InuseFileSeen.Iterate()
	for it.Next(&fk, &seen) {
		if fk.CgroupId == cgroupID {
			fkeys = append(fkeys, fk)
		}
	}
	errs = append(errs, it.Err())
	for _, k := range fkeys {
		if err := s.objs.InuseFileSeen.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	var nk sensorNetKey
	var nkeys []sensorNetKey
	it = s.objs.InuseNetSeen.Iterate()
	for it.Next(&nk, &seen) {
		if nk.CgroupId == cgroupID {
			nkeys = append(nkeys, nk)
		}
	}
	errs = append(errs, it.Err())
	for _, k := range nkeys {
		if err := s.objs.InuseNetSeen.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("forgetting dedup entries of cgroup %d: %w", cgroupID, err)
	}
	return nil
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
	ids := make([]uint64, 0, len(s.slots))
	for id := range s.slots {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		st := s.slots[id]
		var cur sensorSyscallBits
		if err := s.objs.InuseSysbits.Lookup(st.slot, &cur); err != nil {
			s.log.Warn("reading syscall bitmap", logfields.CgroupID, id, logfields.Error, err)
		} else if ev, ok := newSyscalls(id, st.syscalls, cur); ok {
			st.syscalls = cur
			emit(ev)
		}
		var lost uint64
		if err := s.objs.InuseLosses.Lookup(st.slot, &lost); err != nil {
			s.log.Warn("reading loss counter", logfields.CgroupID, id, logfields.Error, err)
		} else if lost > st.losses {
			emit(LossEvent{CgroupID: id, Lost: lost - st.losses, Total: lost})
			st.losses = lost
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
