// Package funcprobe loads and owns the function probes: one entry uprobe
// program (funcprobe.bpf.c) that user space attaches at the planned
// instructions of Go binaries, each link numbered by its BPF cookie, and the
// ring buffer where the program reports the first call per probe and
// tracked cgroup. The program filters by the sensor's tracked cgroups: it
// shares the sensor's maps rather than keeping a set of its own.
//
// A cookie's high 32 bits name the probe's owner (Cookie). Once a cgroup
// the caller gave to that owner (Own) calls the probe, the probe is done:
// until the caller detaches it, its traps return before anything else.
package funcprobe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/bpf/sensor"
)

// Probe owns the program, its ring buffer and its counters. The links it
// attaches belong to the caller, who closes them.
type Probe struct {
	maps  funcprobeMaps
	vars  funcprobeVariables
	prog  *ebpf.Program
	multi bool // prog is for uprobe_multi links
	rd    *ringbuf.Reader
	// ring is the ring buffer's map on the runtime's netpoller: Run waits
	// there for hits, never in an epoll_wait of its own (ringbuf.Reader's),
	// which holds the goroutine's P until sysmon takes it back, up to 10 ms
	// later; each millisecond until the detach is hundreds of traps of a
	// hot function.
	ring *os.File
	// waiting is closed once Run first waits for hits.
	waiting     chan struct{}
	waitingOnce sync.Once
}

// haveUprobeMulti says whether the kernel has uprobe_multi links; the tests
// take it away to test the fallback.
var haveUprobeMulti = features.HaveBPFLinkUprobeMulti

// Only the program of the kernel's attach type is loaded: a kernel without
// uprobe_multi refuses to load the other.
type (
	multiObjects struct {
		funcprobeMaps
		funcprobeVariables
		Prog *ebpf.Program `ebpf:"inuse_func_multi"`
	}
	perfObjects struct {
		funcprobeMaps
		funcprobeVariables
		Prog *ebpf.Program `ebpf:"inuse_func_entry"`
	}
)

// Hit is the first call of a probed instruction in a tracked cgroup.
type Hit struct {
	CgroupID uint64
	// Cookie is the probe's number, as given to Attach.
	Cookie uint64
	PID    uint32
	// Monotonic is CLOCK_MONOTONIC in nanoseconds when the call trapped.
	Monotonic uint64
}

// ErrNoAttachCookie is returned by Open on kernels without BPF cookies
// (before Linux 5.15): Go functions are then not probed, and their
// packages keep package-level verdicts.
var ErrNoAttachCookie = errors.New("funcprobe: function probes need bpf_get_attach_cookie (Linux 5.15 or later)")

// Open loads the program, filtering by the cgroups the sensor tracks.
func Open(tracking sensor.Tracking) (_ *Probe, err error) {
	p := &Probe{waiting: make(chan struct{})}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Close())
		}
	}()
	// Each probe is told apart by its cookie: without cookies the hits
	// could not be named, so there are no function probes.
	if err := features.HaveProgramHelper(ebpf.Kprobe, asm.FnGetAttachCookie); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoAttachCookie, err)
	}
	load := loadFuncprobe
	if tracking.Variant.HashMapState() {
		load = loadFuncprobecompat // the sensor's cgroup2 state is a hash map
	}
	spec, err := load()
	if err != nil {
		return nil, fmt.Errorf("loading function probe spec: %w", err)
	}
	// The sensor sized its maps (the v1 table): replacements must match.
	for name, m := range tracking.Maps {
		ms, ok := spec.Maps[name]
		if !ok {
			return nil, fmt.Errorf("function probe has no map %s", name)
		}
		ms.MaxEntries = m.MaxEntries()
	}
	var specs funcprobeSpecs
	if err := spec.Assign(&specs); err != nil {
		return nil, fmt.Errorf("reading function probe spec: %w", err)
	}
	if err := specs.CgroupV1Subsys.Set(tracking.CgroupV1Subsys); err != nil {
		return nil, fmt.Errorf("setting cgroup v1 controller: %w", err)
	}
	opts := &ebpf.CollectionOptions{MapReplacements: tracking.Maps, Programs: ebpf.ProgramOptions{KernelTypes: tracking.KernelBTF}}
	p.multi = haveUprobeMulti() == nil
	if p.multi {
		var objs multiObjects
		err = spec.LoadAndAssign(&objs, opts)
		p.maps, p.vars, p.prog = objs.funcprobeMaps, objs.funcprobeVariables, objs.Prog
	} else {
		var objs perfObjects
		err = spec.LoadAndAssign(&objs, opts)
		p.maps, p.vars, p.prog = objs.funcprobeMaps, objs.funcprobeVariables, objs.Prog
	}
	if err != nil {
		return nil, fmt.Errorf("loading function probe program: %+w", err)
	}
	if p.rd, err = ringbuf.NewReader(p.maps.InuseFuncHits); err != nil {
		return nil, fmt.Errorf("opening function hit ring buffer: %w", err)
	}
	// A deadline in the past: ReadInto returns what the ring holds, then
	// os.ErrDeadlineExceeded, and never blocks.
	p.rd.SetDeadline(time.Unix(0, 1))
	fd, err := unix.FcntlInt(uintptr(p.maps.InuseFuncHits.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating the function hit ring buffer: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("polling the function hit ring buffer: %w", err)
	}
	p.ring = os.NewFile(uintptr(fd), "inuse_func_hits") // non-blocking: on the netpoller
	return p, nil
}

// AttachMode is how Attach puts probes: uprobe_multi links (Linux 6.6) or
// one perf event uprobe per instruction.
func (p *Probe) AttachMode() string {
	if p.multi {
		return "uprobe_multi"
	}
	return "perf_event"
}

// Close frees the program and its maps; links attached with Attach keep
// the program alive until they are closed.
func (p *Probe) Close() error {
	var err error
	if p.ring != nil {
		err = p.ring.Close()
	}
	if p.rd != nil {
		err = errors.Join(err, p.rd.Close())
	}
	if p.prog != nil {
		err = errors.Join(err, p.prog.Close())
	}
	return errors.Join(err, p.maps.Close())
}

// Cookie numbers probe n of owner. Owner 0 owns no cgroup; n starts at 1.
func Cookie(owner, n uint32) uint64 { return uint64(owner)<<32 | uint64(n) }

// Own gives the cgroup to owner: its first call of a probe of owner's
// marks the probe done. Past the map's capacity the cgroup's calls are
// still reported, and their probes stay armed until detached.
func (p *Probe) Own(cgroupID uint64, owner uint32) error {
	if err := p.maps.InuseFuncOwn.Put(cgroupID, owner); err != nil {
		return fmt.Errorf("setting the owner of cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// Disown forgets the owner of a cgroup that went.
func (p *Probe) Disown(cgroupID uint64) error {
	if err := p.maps.InuseFuncOwn.Delete(cgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("forgetting the owner of cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// ErrZeroCookie is returned by Attach for cookie 0, which the program
// reads as done from the start.
var ErrZeroCookie = errors.New("funcprobe: cookie 0")

// Attach puts entry uprobes at the file offsets of exe, numbered by
// cookies (one per offset, never 0): the places of one function, which go
// together and may share one cookie.
// Entry only: a uretprobe rewrites the return address, which Go's stack
// moves and tracebacks do not survive.
func (p *Probe) Attach(exe *link.Executable, offsets, cookies []uint64) ([]link.Link, error) {
	if slices.Contains(cookies, 0) {
		return nil, ErrZeroCookie
	}
	if p.multi {
		l, err := exe.UprobeMulti(nil, p.prog, &link.UprobeMultiOptions{Addresses: offsets, Cookies: cookies})
		if err != nil {
			return nil, fmt.Errorf("attaching uprobes at offsets %#x: %w", offsets, err)
		}
		return []link.Link{l}, nil
	}
	links := make([]link.Link, 0, len(offsets))
	for i, off := range offsets {
		l, err := exe.Uprobe("inuse_func", p.prog, &link.UprobeOptions{Address: off, Cookie: cookies[i]})
		if err != nil {
			for _, l := range links {
				err = errors.Join(err, l.Close())
			}
			return nil, fmt.Errorf("attaching uprobe at offset %#x: %w", off, err)
		}
		links = append(links, l)
	}
	return links, nil
}

// Traps returns how many times a probe fired since Open, in tracked
// cgroups or not.
func (p *Probe) Traps() (uint64, error) {
	var n uint64
	if err := p.vars.Traps.Get(&n); err != nil {
		return 0, fmt.Errorf("reading function probe traps: %w", err)
	}
	return n, nil
}

// Run reads hits until ctx is done and hands each to emit, from this
// goroutine only. When ctx ends, what the kernel already wrote is still
// read and emitted before Run returns.
func (p *Probe) Run(ctx context.Context, emit func(Hit)) error {
	ring, err := p.ring.SyscallConn()
	if err != nil {
		return fmt.Errorf("polling the function hit ring buffer: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = p.ring.SetReadDeadline(time.Now()) })
	defer stop()
	var rec ringbuf.Record
	for {
		if err := p.drain(&rec, emit); err != nil {
			return err
		}
		p.waitingOnce.Do(func() { close(p.waiting) })
		// The program wakes the poller on every hit (BPF_RB_FORCE_WAKEUP).
		err := ring.Read(func(uintptr) bool { return p.rd.AvailableBytes() > 0 })
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return errors.Join(p.drain(&rec, emit), ctx.Err())
		case errors.Is(err, os.ErrClosed):
			return ctx.Err()
		case err != nil:
			return fmt.Errorf("waiting for function hits: %w", err)
		}
	}
}

// Waiting is closed once Run waits for hits: a hit from then on is read
// as soon as the kernel wakes the poller, not once Run's goroutine first
// gets to run.
func (p *Probe) Waiting() <-chan struct{} { return p.waiting }

// drain emits the hits the ring buffer holds.
func (p *Probe) drain(rec *ringbuf.Record, emit func(Hit)) error {
	for {
		err := p.rd.ReadInto(rec)
		switch {
		case err == nil:
			var raw funcprobeFuncHit
			if len(rec.RawSample) < int(unsafe.Sizeof(raw)) {
				continue
			}
			if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &raw); err != nil {
				continue
			}
			emit(Hit{CgroupID: raw.CgroupId, Cookie: raw.Cookie, PID: raw.Pid, Monotonic: raw.Monotonic})
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil
		default:
			return fmt.Errorf("reading function hit ring buffer: %w", err)
		}
	}
}
