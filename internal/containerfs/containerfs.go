// Package containerfs is the one way the agent opens files of a
// container: a container controls every name in its root file system, so
// paths are never joined and followed as strings. A container's root is
// opened once, as a directory descriptor, through a process that is
// checked to belong to the container's cgroup; files are then opened
// below it with openat2(2) and RESOLVE_IN_ROOT, so that ".." and absolute
// symbolic links resolve inside the container's root and never reach the
// host's, RESOLVE_NO_MAGICLINKS (no /proc/self/root escape), O_NOFOLLOW
// on the last component and O_NONBLOCK (a FIFO or a device never blocks
// the open). What is opened is checked with fstat to be a regular file
// within a size cap, and the caller uses that same descriptor for
// everything it does with the file.
//
// Kernels without openat2 (before Linux 5.6) get ErrUnsupported: the
// features that read container files are refused there rather than done
// through path strings.
package containerfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/internal/cgroups"
)

// Errors a caller may tell apart with errors.Is.
var (
	// ErrUnsupported: the kernel has no openat2(2) (Linux 5.6).
	ErrUnsupported = errors.New("containerfs: openat2 not supported by this kernel (Linux 5.6 or later is needed)")
	// ErrNotRegular: the file is a directory, FIFO, device, socket or symbolic link.
	ErrNotRegular = errors.New("containerfs: not a regular file")
	// ErrTooLarge: the file is larger than the cap.
	ErrTooLarge = errors.New("containerfs: file larger than the cap")
	// ErrBadPath: the path is not absolute and clean, or climbs with "..".
	ErrBadPath = errors.New("containerfs: path not absolute and clean")
	// ErrOtherCgroup: the process is not (or no longer) in the container's cgroup.
	ErrOtherCgroup = errors.New("containerfs: process not in the container's cgroup")
)

var supported = sync.OnceValue(func() error {
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
			return ErrUnsupported
		}
		return fmt.Errorf("probing openat2: %w", err)
	}
	_ = unix.Close(fd)
	return nil
})

// Supported reports whether the kernel can open container files safely.
func Supported() error { return supported() }

// CheckPath validates a path named by something outside the agent (a
// probe plan in Redis): absolute, clean, no "..", no NUL, at most 4096
// bytes.
func CheckPath(p string) error {
	if len(p) == 0 || len(p) > unix.PathMax || p[0] != '/' || path.Clean(p) != p ||
		strings.ContainsRune(p, 0) || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
		return fmt.Errorf("%w: %q", ErrBadPath, p)
	}
	return nil
}

// Process is one process, opened as its /proc directory: what is read
// through it stays that process's even if its pid is reused (the kernel
// answers ESRCH for a process that exited).
type Process struct {
	dir *os.File
	pid int
}

// OpenProcess opens /proc/PID and checks that the process is in the cgroup
// at cgroupDir (in h) or below it, after opening: a pid reused by another
// process before the open fails the check, and one reused after it is no
// longer reachable through the descriptor.
func OpenProcess(h cgroups.Hierarchy, pid int, cgroupDir string) (*Process, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	if pid <= 0 {
		return nil, fmt.Errorf("opening process %d: %w", pid, unix.ESRCH)
	}
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening process %d: %w", pid, err)
	}
	p := &Process{dir: os.NewFile(uintptr(fd), "/proc/"+strconv.Itoa(pid)), pid: pid}
	b, err := p.ReadFile("cgroup", 64<<10)
	if err != nil {
		p.Close()
		return nil, err
	}
	cg, err := cgroupOf(h, b)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("reading the cgroup of process %d: %w", pid, err)
	}
	dir := h.Path(cg)
	if cgroupDir == "" || (dir != cgroupDir && !strings.HasPrefix(dir, strings.TrimSuffix(cgroupDir, "/")+"/")) {
		p.Close()
		return nil, fmt.Errorf("%w: process %d is in %s, not %s", ErrOtherCgroup, pid, dir, cgroupDir)
	}
	return p, nil
}

// PID is the process's id.
func (p *Process) PID() int { return p.pid }

// Close closes the process's directory.
func (p *Process) Close() error { return p.dir.Close() }

// openat opens name (a file the kernel makes, such as "maps") in the
// process's /proc directory, following no symbolic link.
func (p *Process) openat(name string, flags int) (*os.File, error) {
	fd, err := unix.Openat2(int(p.dir.Fd()), name, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, fmt.Errorf("opening %s/%s: %w", p.dir.Name(), name, err)
	}
	return os.NewFile(uintptr(fd), p.dir.Name()+"/"+name), nil
}

// Open opens a file of the process's /proc directory for reading.
func (p *Process) Open(name string) (*os.File, error) {
	return p.openat(name, unix.O_RDONLY)
}

// ReadFile reads a file of the process's /proc directory ("maps",
// "fdinfo/3"), at most max bytes: more is an error.
func (p *Process) ReadFile(name string, max int64) ([]byte, error) {
	f, err := p.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s over %d bytes", ErrTooLarge, f.Name(), max)
	}
	return b, nil
}

// Readlink reads a symbolic link of the process's /proc directory ("exe",
// "root", "fd/3") as text, without following it.
func (p *Process) Readlink(name string) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(int(p.dir.Fd()), name, buf)
	if err != nil {
		return "", fmt.Errorf("reading link %s/%s: %w", p.dir.Name(), name, err)
	}
	return string(buf[:n]), nil
}

// Fstatat stats a file of the process's /proc directory, following the
// link ("fd/3" is the open file itself): stat never blocks.
func (p *Process) Fstatat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(int(p.dir.Fd()), name, &st, 0); err != nil {
		return st, fmt.Errorf("stat %s/%s: %w", p.dir.Name(), name, err)
	}
	return st, nil
}

// Statx is Fstatat with statx(2)'s mask (STATX_MNT_ID: the mount of the
// process's executable, for "exe").
func (p *Process) Statx(name string, mask int) (unix.Statx_t, error) {
	var stx unix.Statx_t
	if err := unix.Statx(int(p.dir.Fd()), name, 0, mask, &stx); err != nil {
		return stx, fmt.Errorf("statx %s/%s: %w", p.dir.Name(), name, err)
	}
	return stx, nil
}

// Root opens the process's root directory: the container's root file
// system as the agent reaches it.
func (p *Process) Root() (*Root, error) {
	// The one magic link followed on purpose: into the container.
	fd, err := unix.Openat(int(p.dir.Fd()), "root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the root of process %d: %w", p.pid, err)
	}
	return &Root{dir: os.NewFile(uintptr(fd), p.dir.Name()+"/root")}, nil
}

// cgroupOf finds the process's cgroup path in h in a /proc/PID/cgroup file.
func cgroupOf(h cgroups.Hierarchy, b []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// hierarchy-id:controller-list:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if !h.V1() && parts[0] == "0" && parts[1] == "" {
			return parts[2], nil
		}
		if h.V1() && slicesContains(strings.Split(parts[1], ","), h.Controller) {
			return parts[2], nil
		}
	}
	return "", fmt.Errorf("%w: %s", cgroups.ErrNoHierarchy, h)
}

func slicesContains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Root is a directory that paths are resolved in as if it were "/".
type Root struct {
	dir *os.File
}

// OpenRoot opens dir (a path the agent trusts) as a root.
func OpenRoot(dir string) (*Root, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening root %s: %w", dir, err)
	}
	return &Root{dir: os.NewFile(uintptr(fd), dir)}, nil
}

// Close closes the root's directory.
func (r *Root) Close() error { return r.dir.Close() }

// Name is how the root was reached, for messages.
func (r *Root) Name() string { return r.dir.Name() }

// Options tune Open.
type Options struct {
	// MaxSize caps the file's size in bytes; 0: no cap.
	MaxSize int64
	// SameMount refuses a path that crosses a mount point of the root
	// (RESOLVE_NO_XDEV): a file of the image is on the root's own mount,
	// never on a volume.
	SameMount bool
}

func (r *Root) how(flags uint64, o Options) *unix.OpenHow {
	how := &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	if o.SameMount {
		how.Resolve |= unix.RESOLVE_NO_XDEV
	}
	return how
}

// Open opens the regular file at p (a path inside the root) for reading.
// Symbolic links on the way resolve inside the root; one as the last
// component, a FIFO, a device, a socket or a directory is refused with
// ErrNotRegular, and a file over o.MaxSize with ErrTooLarge. The open
// never blocks.
func (r *Root) Open(p string, o Options) (*os.File, error) {
	if err := CheckPath(p); err != nil {
		return nil, err
	}
	fd, err := openat2(r.dir, p, r.how(unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, o))
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("opening %s in %s: %w: a symbolic link last or a magic link: %w", p, r.dir.Name(), ErrNotRegular, err)
		}
		return nil, fmt.Errorf("opening %s in %s: %w", p, r.dir.Name(), err)
	}
	f := os.NewFile(uintptr(fd), p)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s in %s: %w", p, r.dir.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("opening %s in %s: %w (mode %#o)", p, r.dir.Name(), ErrNotRegular, st.Mode&unix.S_IFMT)
	}
	if o.MaxSize > 0 && st.Size > o.MaxSize {
		f.Close()
		return nil, fmt.Errorf("opening %s in %s: %w (%d > %d bytes)", p, r.dir.Name(), ErrTooLarge, st.Size, o.MaxSize)
	}
	return f, nil
}

// Stat stats what is at p inside the root, without following a symbolic
// link as the last component and without opening the file itself (a FIFO
// is not opened).
func (r *Root) Stat(p string, o Options) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := CheckPath(p); err != nil {
		return st, err
	}
	fd, err := openat2(r.dir, p, r.how(unix.O_PATH, o))
	if err != nil {
		return st, fmt.Errorf("stat %s in %s: %w", p, r.dir.Name(), err)
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &st); err != nil {
		return st, fmt.Errorf("stat %s in %s: %w", p, r.dir.Name(), err)
	}
	return st, nil
}

// openat2 retries on EAGAIN, which openat2 answers with RESOLVE_IN_ROOT
// when a rename raced the lookup.
func openat2(dir *os.File, p string, how *unix.OpenHow) (int, error) {
	var err error
	for range 32 {
		var fd int
		fd, err = unix.Openat2(int(dir.Fd()), p, how)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			return -1, err
		}
	}
	return -1, err
}

// ProcPath is the path through which the kernel reaches the open file f
// again ("/proc/self/fd/N"), for the interfaces that take a path (uprobe
// attach): it names f's own inode, whatever happens at f's path meanwhile.
// f must stay open while the path is used.
func ProcPath(f *os.File) string {
	return "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
}
