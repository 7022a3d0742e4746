package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/containerfs"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/logfields"
)

// seed reads from /proc what the processes of a container that ran
// before it was tracked have loaded, and hands it to the registry as
// events marked Seeded, so that the container's packages are in use at
// once instead of after its next restart: each process's executable
// (exec), its executable file mappings (mapped), its open regular files
// (read or written), and the sockets of its network namespace. Paths are
// the container's own. A process that exits meanwhile is skipped; one that
// could not be read otherwise is recorded as a loss in the image's
// profile, so that what it loaded is never claimed not observed.
// Everything is read through internal/containerfs: a process is opened
// once, checked to be in the container's cgroup, and its files in the
// container's root are only stat'ed, inside that root.
func (a *Agent) seed(c lifecycle.Container) {
	dir := a.hierarchy.Path(c.CgroupPath)
	s := &seeder{cgroupID: c.CgroupID, hierarchy: a.hierarchy, dir: dir, emit: a.registry.Observe, seen: map[string]bool{}, netns: map[string]bool{}}
	if host, err := os.Readlink("/proc/self/ns/net"); err == nil {
		s.netns[host] = true // the host's sockets are not the container's
	}
	lost := func(n int, err error) {
		a.log.Warn("seeding a running container: recorded as lost in its profile", logfields.ContainerID, c.ID, logfields.Count, n, logfields.Error, err)
		a.registry.Observe(sensor.LossEvent{CgroupID: c.CgroupID, Lost: uint64(n)})
	}
	if c.CgroupPath == "" {
		lost(1, errors.New("no cgroup path: its processes cannot be checked"))
		return
	}
	pids, err := cgroupPIDs(dir)
	if err != nil {
		lost(1, err)
		return
	}
	var errs []error
	refused := 0
	for _, pid := range pids {
		err := s.process(pid)
		if err == nil {
			continue
		}
		errs = append(errs, err)
		if errors.Is(err, fs.ErrPermission) {
			refused++
			a.metrics.refused(featureSeed)
			if refused == 1 {
				// Once per container: its other processes fail alike.
				a.log.Warn("seeding refused for lack of privilege: the kernel lets only a holder of CAP_SYS_PTRACE read another user's, or a more privileged, process's /proc files",
					logfields.ContainerID, c.ID, logfields.PID, pid, logfields.Error, err)
			}
		}
	}
	if len(errs) > 0 {
		lost(len(errs), errors.Join(errs...))
	}
	a.log.Debug("seeded a running container", logfields.ContainerID, c.ID, "processes", len(pids), "refused", refused, "members", len(s.seen))
}

// cgroupPIDs lists the processes of the cgroup at dir and its descendants.
func cgroupPIDs(dir string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != dir && errors.Is(err, fs.ErrNotExist) {
				return nil // a child cgroup removed meanwhile
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) {
				return nil
			}
			return fmt.Errorf("listing the processes of %s: %w", path, err)
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids, err
}

// seeder reads the processes of one container.
type seeder struct {
	cgroupID  uint64
	hierarchy cgroups.Hierarchy
	dir       string // the container's cgroup directory
	emit      func(sensor.Event)
	seen      map[string]bool // what was emitted: one event per file and use
	netns     map[string]bool // network namespaces read, the host's among them
}

// Caps on what is read from /proc for one process: more is an error.
const (
	maxProcTable = 64 << 20 // maps, mountinfo, net/tcp...
	maxFdinfo    = 64 << 10
	maxOpenFds   = 1 << 16
)

func (s *seeder) header(pid int) sensor.Header {
	return sensor.Header{CgroupID: s.cgroupID, PID: uint32(pid), Seeded: true}
}

// once reports whether key is new for this container.
func (s *seeder) once(key string) bool {
	if s.seen[key] {
		return false
	}
	s.seen[key] = true
	return true
}

// gone reports whether err says the process exited (or its pid is now
// another's): nothing it loaded is in use any more.
func gone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, containerfs.ErrOtherCgroup)
}

// process reads one process; a process that exited meanwhile is skipped,
// and what else it cannot read is returned as an error.
func (s *seeder) process(pid int) error {
	proc, err := containerfs.OpenProcess(s.hierarchy, pid, s.dir)
	if err != nil {
		if gone(err) {
			return nil
		}
		return err
	}
	defer proc.Close()
	err = s.read(proc)
	if gone(err) {
		return nil
	}
	return err
}

func (s *seeder) read(proc *containerfs.Process) error {
	pid := proc.PID()
	// The kernel names files relative to the reader's root: a process in
	// its own mount namespace shows the container's paths, and one
	// chrooted in ours shows them under its root, which is cut off.
	root, err := proc.Readlink("root")
	if err != nil {
		return err
	}
	if !runsContainerCode(proc) {
		return nil
	}
	path := func(p string) (string, bool) {
		if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, " (deleted)") {
			return "", false
		}
		if root != "/" {
			rel, ok := strings.CutPrefix(p, root)
			if !ok || !strings.HasPrefix(rel, "/") {
				return "", false
			}
			p = rel
		}
		return p, true
	}
	r, err := rootOf(proc)
	if err != nil {
		return err
	}
	defer r.Close()
	if exe, err := proc.Readlink("exe"); err == nil {
		if p, ok := path(exe); ok && s.once("exec "+p) {
			s.emit(sensor.ExecEvent{Header: s.header(pid), Role: sensor.RoleBinary, Path: p, Origin: r.origin(p)})
		}
	} else if !errors.Is(err, fs.ErrNotExist) { // a kernel thread has none
		return err
	}
	return errors.Join(s.mappings(proc, path, r.origin), s.openFiles(proc, path, r.origin), s.sockets(proc))
}

// processRoot is what decides the origin of a process's files from user
// space, as origin.h does in the kernel: the device of its root, and the
// upper (writable) directory when the root is an overlay.
type processRoot struct {
	root  *containerfs.Root
	dev   uint64
	upper *containerfs.Root // nil unless the root is an overlay
}

func rootOf(proc *containerfs.Process) (processRoot, error) {
	root, err := proc.Root()
	if err != nil {
		return processRoot{}, err
	}
	r := processRoot{root: root}
	if st, err := root.Stat("/", containerfs.Options{}); err == nil {
		r.dev = st.Dev
	}
	b, err := proc.ReadFile("mountinfo", maxProcTable)
	if err != nil {
		r.Close()
		return processRoot{}, err
	}
	for line := range strings.Lines(string(b)) {
		// id parent dev root mountpoint options... - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		mount, super := strings.Fields(pre), strings.Fields(post)
		if !ok || len(mount) < 5 || mount[4] != "/" || len(super) < 3 || super[0] != "overlay" {
			continue
		}
		for opt := range strings.SplitSeq(super[2], ",") {
			if v, ok := strings.CutPrefix(opt, "upperdir="); ok && strings.HasPrefix(v, "/") {
				if r.upper != nil {
					r.upper.Close()
				}
				// The upper directory's contents are the container's:
				// looked up inside it, never followed out of it.
				r.upper, _ = containerfs.OpenRoot(v)
			}
		}
	}
	return r, nil
}

// Close closes the roots.
func (r processRoot) Close() {
	if r.root != nil {
		r.root.Close()
	}
	if r.upper != nil {
		r.upper.Close()
	}
}

// origin of the file at p (a path in the process's root). On another
// device than the root it is a volume's. On an overlay whose layers share
// a filesystem (as the runtimes' snapshots do), a file that only the upper
// directory holds is the container's: overlayfs gives a file with a lower
// copy the lower copy's inode number, and a file of the upper layer alone
// the upper file's.
func (r processRoot) origin(p string) sensor.Origin {
	if r.dev == 0 {
		return sensor.OriginImage
	}
	st, err := r.root.Stat(p, containerfs.Options{})
	if err != nil {
		return sensor.OriginImage
	}
	if st.Dev != r.dev {
		return sensor.OriginVolume
	}
	if r.upper != nil {
		if up, err := r.upper.Stat(p, containerfs.Options{}); err == nil && up.Ino == st.Ino {
			return sensor.OriginContainer
		}
	}
	return sensor.OriginImage
}

// mappings reads the executable file mappings: shared libraries, the ELF
// loader, native extension modules.
func (s *seeder) mappings(proc *containerfs.Process, path func(string) (string, bool), origin func(string) sensor.Origin) error {
	b, err := proc.ReadFile("maps", maxProcTable)
	if err != nil {
		return err
	}
	for line := range strings.Lines(string(b)) {
		// address perms offset dev inode path (the path may hold spaces)
		fields := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 6)
		if len(fields) < 6 || len(fields[1]) < 3 || fields[1][2] != 'x' {
			continue
		}
		if p, ok := path(strings.TrimLeft(fields[5], " ")); ok && s.once("mapped "+p) {
			s.emit(sensor.FileEvent{Header: s.header(proc.PID()), Path: p, Access: sensor.AccessMapped, Origin: origin(p)})
		}
	}
	return nil
}

// openFiles reads the regular files the process holds open, e.g. a JVM's
// class-path jars.
func (s *seeder) openFiles(proc *containerfs.Process, path func(string) (string, bool), origin func(string) sensor.Origin) error {
	dir, err := proc.Open("fd")
	if err != nil {
		return err
	}
	defer dir.Close()
	fds, err := dir.Readdirnames(maxOpenFds)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("listing open files of process %d: %w", proc.PID(), err)
	}
	for _, fd := range fds {
		target, err := proc.Readlink("fd/" + fd)
		if err != nil {
			continue // closed meanwhile
		}
		p, ok := path(target)
		if !ok {
			continue
		}
		// stat, not open: the descriptor's own file, whatever it is.
		if st, err := proc.Fstatat("fd/" + fd); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		access := openAccess(proc, fd)
		if access != 0 && s.once(fmt.Sprintf("file %d %s", access, p)) {
			s.emit(sensor.FileEvent{Header: s.header(proc.PID()), Path: p, Access: access, Origin: origin(p)})
		}
	}
	return nil
}

// openAccess reads how a descriptor was opened from its fdinfo flags.
func openAccess(proc *containerfs.Process, fd string) sensor.Access {
	b, err := proc.ReadFile("fdinfo/"+fd, maxFdinfo)
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		v, ok := strings.CutPrefix(line, "flags:")
		if !ok {
			continue
		}
		flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
		if err != nil {
			return 0
		}
		switch flags & unix.O_ACCMODE {
		case unix.O_RDONLY:
			return sensor.AccessRead
		case unix.O_WRONLY:
			return sensor.AccessWrite
		default:
			return sensor.AccessRead | sensor.AccessWrite
		}
	}
	return 0
}

// TCP and UDP socket states in /proc/net/{tcp,udp}{,6}.
const (
	tcpEstablished = 0x01
	tcpSynSent     = 0x02
	tcpListen      = 0x0a
	udpConnected   = 0x01 // connect(2)ed
	udpUnconnected = 0x07 // bound only
)

// sockets reads the sockets of the process's network namespace, once per
// namespace: ports served (listening TCP, bound UDP) and reached
// (connected sockets whose local port is not one served).
func (s *seeder) sockets(proc *containerfs.Process) error {
	pid := proc.PID()
	ns, err := proc.Readlink("ns/net")
	if err != nil {
		return err
	}
	if s.netns[ns] {
		return nil
	}
	s.netns[ns] = true
	type sock struct {
		local, remote uint16
		state         uint64
		ipv6          bool
	}
	var errs []error
	read := func(name string) []sock {
		b, err := proc.ReadFile("net/"+name, maxProcTable)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) { // no IPv6
				errs = append(errs, err)
			}
			return nil
		}
		var out []sock
		for i, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if i == 0 || len(f) < 4 {
				continue // the header
			}
			local, remote := portOf(f[1]), portOf(f[2])
			state, err := strconv.ParseUint(f[3], 16, 8)
			if err != nil {
				continue
			}
			out = append(out, sock{local, remote, state, strings.HasSuffix(name, "6")})
		}
		return out
	}
	emit := func(proto sensor.Protocol, dir sensor.Direction, op sensor.NetOp, port uint16, ipv6 bool) {
		if port != 0 && s.once(fmt.Sprintf("net %v %v %d", proto, dir, port)) {
			s.emit(sensor.NetEvent{Header: s.header(pid), Protocol: proto, Direction: dir, Port: port, IPv6: ipv6, Op: op})
		}
	}
	tcp := append(read("tcp"), read("tcp6")...)
	served := map[uint16]bool{}
	for _, k := range tcp {
		if k.state == tcpListen {
			served[k.local] = true
			emit(sensor.TCP, sensor.Inbound, sensor.OpListen, k.local, k.ipv6)
		}
	}
	for _, k := range tcp {
		if (k.state == tcpEstablished || k.state == tcpSynSent) && !served[k.local] {
			emit(sensor.TCP, sensor.Outbound, sensor.OpConnect, k.remote, k.ipv6)
		}
	}
	for _, k := range append(read("udp"), read("udp6")...) {
		switch k.state {
		case udpUnconnected:
			emit(sensor.UDP, sensor.Inbound, sensor.OpBind, k.local, k.ipv6)
		case udpConnected:
			emit(sensor.UDP, sensor.Outbound, sensor.OpConnect, k.remote, k.ipv6)
		}
	}
	return errors.Join(errs...)
}

// portOf reads the port of an "ADDRESS:PORT" column (hexadecimal).
func portOf(addr string) uint16 {
	_, hex, ok := strings.Cut(addr, ":")
	if !ok {
		return 0
	}
	p, err := strconv.ParseUint(hex, 16, 16)
	if err != nil {
		return 0
	}
	return uint16(p)
}
