package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/logfields"
)

// seed reads from /proc what the processes of a container that ran
// before it was tracked have loaded, and hands it to the registry as
// events marked Seeded, so that the container's packages are in use at
// once instead of after its next restart: each process's executable
// (exec), its executable file mappings (mapped), its open regular files
// (read or written), and the sockets of its network namespace. Paths are
// the container's own. A process that exits meanwhile is skipped.
func (a *Agent) seed(c lifecycle.Container) {
	s := &seeder{cgroupID: c.CgroupID, emit: a.registry.Observe, seen: map[string]bool{}, netns: map[string]bool{}}
	if host, err := os.Readlink("/proc/self/ns/net"); err == nil {
		s.netns[host] = true // the host's sockets are not the container's
	}
	pids, err := cgroupPIDs(a.hierarchy.Path(c.CgroupPath))
	if err != nil {
		a.log.Warn("seeding a running container", logfields.ContainerID, c.ID, logfields.Error, err)
		return
	}
	refused := 0
	for _, pid := range pids {
		if err := s.process(pid); err != nil {
			refused++
			a.metrics.refused(featureSeed)
			if refused == 1 {
				// Once per container: its other processes fail alike.
				a.log.Warn("seeding refused for lack of privilege: the kernel lets only a holder of CAP_SYS_PTRACE read another user's, or a more privileged, process's /proc files",
					logfields.ContainerID, c.ID, logfields.PID, pid, logfields.Error, err)
			}
		}
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
	cgroupID uint64
	emit     func(sensor.Event)
	seen     map[string]bool // what was emitted: one event per file and use
	netns    map[string]bool // network namespaces read, the host's among them
}

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

// process reads one process; whatever it cannot read (the process exited,
// a file went away) is left out. It returns an error only when the kernel
// refuses this process's /proc files to the agent (ptrace_may_access):
// then nothing of it was read.
func (s *seeder) process(pid int) error {
	proc := "/proc/" + strconv.Itoa(pid)
	// The kernel names files relative to the reader's root: a process in
	// its own mount namespace shows the container's paths, and one
	// chrooted in ours shows them under its root, which is cut off.
	root, err := os.Readlink(proc + "/root")
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return err
		}
		return nil
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
	origin := rootOf(proc).origin
	if exe, err := os.Readlink(proc + "/exe"); err == nil {
		if p, ok := path(exe); ok && s.once("exec "+p) {
			s.emit(sensor.ExecEvent{Header: s.header(pid), Role: sensor.RoleBinary, Path: p, Origin: origin(p)})
		}
	}
	s.mappings(pid, proc, path, origin)
	s.openFiles(pid, proc, path, origin)
	s.sockets(pid, proc)
	return nil
}

// processRoot is what decides the origin of a process's files from user
// space, as origin.h does in the kernel: the device of its root, and the
// upper (writable) directory when the root is an overlay.
type processRoot struct {
	proc  string
	dev   uint64
	upper string
}

func rootOf(proc string) processRoot {
	r := processRoot{proc: proc}
	var st unix.Stat_t
	if unix.Stat(proc+"/root/", &st) == nil {
		r.dev = st.Dev
	}
	b, err := os.ReadFile(proc + "/mountinfo")
	if err != nil {
		return r
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
				r.upper = v
			}
		}
	}
	return r
}

// origin of the file at p (a path in the process's root). On another
// device than the root it is a volume's. On an overlay whose layers share
// a filesystem (as the runtimes' snapshots do), a file that only the upper
// directory holds is the container's: overlayfs gives a file with a lower
// copy the lower copy's inode number, and a file of the upper layer alone
// the upper file's.
func (r processRoot) origin(p string) sensor.Origin {
	var st unix.Stat_t
	if r.dev == 0 || unix.Stat(r.proc+"/root"+p, &st) != nil {
		return sensor.OriginImage
	}
	if st.Dev != r.dev {
		return sensor.OriginVolume
	}
	var up unix.Stat_t
	if r.upper != "" && unix.Stat(r.upper+p, &up) == nil && up.Ino == st.Ino {
		return sensor.OriginContainer
	}
	return sensor.OriginImage
}

// mappings reads the executable file mappings: shared libraries, the ELF
// loader, native extension modules.
func (s *seeder) mappings(pid int, proc string, path func(string) (string, bool), origin func(string) sensor.Origin) {
	f, err := os.Open(proc + "/maps")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// address perms offset dev inode path (the path may hold spaces)
		fields := strings.SplitN(sc.Text(), " ", 6)
		if len(fields) < 6 || len(fields[1]) < 3 || fields[1][2] != 'x' {
			continue
		}
		if p, ok := path(strings.TrimLeft(fields[5], " ")); ok && s.once("mapped "+p) {
			s.emit(sensor.FileEvent{Header: s.header(pid), Path: p, Access: sensor.AccessMapped, Origin: origin(p)})
		}
	}
}

// openFiles reads the regular files the process holds open, e.g. a JVM's
// class-path jars.
func (s *seeder) openFiles(pid int, proc string, path func(string) (string, bool), origin func(string) sensor.Origin) {
	fds, err := os.ReadDir(proc + "/fd")
	if err != nil {
		return
	}
	for _, fd := range fds {
		link := proc + "/fd/" + fd.Name()
		target, err := os.Readlink(link)
		if err != nil {
			continue
		}
		p, ok := path(target)
		if !ok {
			continue
		}
		if st, err := os.Stat(link); err != nil || !st.Mode().IsRegular() {
			continue
		}
		access := openAccess(proc + "/fdinfo/" + fd.Name())
		if access != 0 && s.once(fmt.Sprintf("file %d %s", access, p)) {
			s.emit(sensor.FileEvent{Header: s.header(pid), Path: p, Access: access, Origin: origin(p)})
		}
	}
}

// openAccess reads how a descriptor was opened from its fdinfo flags.
func openAccess(fdinfo string) sensor.Access {
	b, err := os.ReadFile(fdinfo)
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
func (s *seeder) sockets(pid int, proc string) {
	ns, err := os.Readlink(proc + "/ns/net")
	if err != nil || s.netns[ns] {
		return
	}
	s.netns[ns] = true
	type sock struct {
		local, remote uint16
		state         uint64
		ipv6          bool
	}
	read := func(name string) []sock {
		b, err := os.ReadFile(proc + "/net/" + name)
		if err != nil {
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
