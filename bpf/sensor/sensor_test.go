package sensor

import (
	"bufio"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/testutil"
)

// The tests re-execute this binary as the observed process ("actor"), so
// that every action happens in a cgroup chosen by the test.
const actorEnv = "INUSE_SENSOR_ACTOR"

func TestMain(m *testing.M) {
	if scenario := os.Getenv(actorEnv); scenario != "" {
		if err := runActor(scenario, os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "actor:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// actorReport is what the actor tells the test about ports it chose.
type actorReport struct {
	ListenTCP4 int `json:"listen_tcp4"`
	ListenTCP6 int `json:"listen_tcp6"`
	BindUDP4   int `json:"bind_udp4"`
}

const manyOpens = 10000

// runActor performs one scenario. args[0] is the working directory.
func runActor(scenario string, args []string) error {
	dir := args[0]
	switch scenario {
	case "files":
		return actFiles(dir)
	case "all":
		if err := actFiles(dir); err != nil {
			return err
		}
		return actNet(args[1:])
	case "runtime":
		return actRuntime(dir, args[1])
	case "burst":
		for i := range 200 {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("burst-%03d", i)))
			if err != nil {
				return err
			}
			f.Close()
		}
		return nil
	}
	return fmt.Errorf("unknown scenario %q", scenario)
}

// actRuntime does what an OCI runtime's init does inside a container's
// cgroup: it enters a mount namespace of its own with the host's binary,
// opens and maps files there, then executes the workload (busybox cat).
func actRuntime(dir, busybox string) error {
	runtime.LockOSThread() // the namespace is this thread's, and so is the exec
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	if _, err := os.ReadFile(filepath.Join(dir, "read.txt")); err != nil {
		return err
	}
	lib, err := os.Open(filepath.Join(dir, "lib.so"))
	if err != nil {
		return err
	}
	mem, err := unix.Mmap(int(lib.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("mapping lib.so: %w", err)
	}
	_ = unix.Munmap(mem)
	return unix.Exec(busybox, []string{"cat", filepath.Join(dir, "target.txt")}, os.Environ())
}

func actFiles(dir string) error {
	readAll := func(p string) error {
		b, err := os.ReadFile(p)
		_ = b
		return err
	}
	if err := readAll(filepath.Join(dir, "read.txt")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "written.txt"), []byte("x"), 0o644); err != nil {
		return err
	}
	// relative to a directory fd
	dfd, err := unix.Open(filepath.Join(dir, "sub"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	fd, err := unix.Openat(dfd, "relative.txt", unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	unix.Close(fd)
	unix.Close(dfd)
	if err := readAll(filepath.Join(dir, "link.txt")); err != nil {
		return err
	}
	for range manyOpens {
		fd, err := unix.Open(filepath.Join(dir, "many.txt"), unix.O_RDONLY, 0)
		if err != nil {
			return err
		}
		unix.Close(fd)
	}
	// an executable mapping of an open fd, as dlopen does
	lib, err := os.Open(filepath.Join(dir, "lib.so"))
	if err != nil {
		return err
	}
	mem, err := unix.Mmap(int(lib.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("mapping lib.so: %w", err)
	}
	_ = unix.Munmap(mem)
	lib.Close()
	if _, err := unix.Open(filepath.Join(dir, "missing.txt"), unix.O_RDONLY, 0); err == nil {
		return fmt.Errorf("missing.txt exists")
	}
	// a known set of syscalls
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return err
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return err
	}
	if _, err := unix.Getcwd(make([]byte, 256)); err != nil {
		return err
	}
	if err := exec.Command("/bin/true").Run(); err != nil {
		return fmt.Errorf("running /bin/true: %w", err)
	}
	if err := exec.Command(filepath.Join(dir, "script.sh")).Run(); err != nil {
		return fmt.Errorf("running script: %w", err)
	}
	return nil
}

// actNet: args are the test's TCP4 and TCP6 listener ports and UDP4 port;
// fd 3 is a listening TCP socket the test created, on which it connects.
func actNet(args []string) error {
	var rep actorReport
	inherited, err := net.FileListener(os.NewFile(3, "inherited"))
	if err != nil {
		return fmt.Errorf("inherited listener: %w", err)
	}
	conn, err := inherited.Accept()
	if err != nil {
		return err
	}
	conn.Close()

	l4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l4.Close()
	rep.ListenTCP4 = l4.Addr().(*net.TCPAddr).Port
	l6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return err
	}
	defer l6.Close()
	rep.ListenTCP6 = l6.Addr().(*net.TCPAddr).Port

	for _, target := range []string{"127.0.0.1:" + args[0], "[::1]:" + args[1]} {
		c, err := net.Dial("tcp", target)
		if err != nil {
			return fmt.Errorf("connecting to %s: %w", target, err)
		}
		c.Close()
	}
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer u.Close()
	rep.BindUDP4 = u.LocalAddr().(*net.UDPAddr).Port
	dst, err := net.ResolveUDPAddr("udp4", "127.0.0.1:"+args[2])
	if err != nil {
		return err
	}
	if _, err := u.WriteToUDP([]byte("hello"), dst); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

// testCgroup creates a fresh cgroup for one test and removes it afterwards.
func testCgroup(t *testing.T, h cgroups.Hierarchy) (string, uint64) {
	t.Helper()
	name := fmt.Sprintf("inuse-test/%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
	dir, id, err := h.Create(name)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cgroups.Remove(dir) })
	return dir, id
}

func openSensor(t *testing.T, cfg Config) *Sensor {
	t.Helper()
	s, err := Open(slog.New(slog.DiscardHandler), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// tracked opens a sensor on cgroup2 and tracks a fresh cgroup with it.
func tracked(t *testing.T, cfg Config) (s *Sensor, h cgroups.Hierarchy, cgDir string, id uint64) {
	t.Helper()
	testutil.RequirePrivileged(t)
	h, err := cgroups.Unified()
	require.NoError(t, err)
	s = openSensor(t, cfg)
	cgDir, id = testCgroup(t, h)
	require.NoError(t, s.Track(id))
	return s, h, cgDir, id
}

// runIn runs cmd to its end inside the cgroup at cgDir.
func runIn(t *testing.T, h cgroups.Hierarchy, cgDir string, cmd *exec.Cmd) {
	t.Helper()
	require.NoError(t, h.Start(cmd, cgDir))
	require.NoError(t, cmd.Wait())
}

// collect runs the sensor until stop is called, then returns every event.
func collect(t *testing.T, s *Sensor) (stop func() []Event) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var (
		mu     sync.Mutex
		events []Event
		done   = make(chan error, 1)
	)
	go func() {
		done <- s.Run(ctx, func(e Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		})
	}()
	return func() []Event {
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(events)
	}
}

// fixture writes the files the actor uses.
func fixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	for _, f := range []string{"read.txt", "target.txt", "many.txt", "sub/relative.txt", "lib.so"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte("data\n"), 0o644))
	}
	require.NoError(t, os.Symlink("target.txt", filepath.Join(dir, "link.txt")))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "script.sh"), []byte("#!/bin/sh\nexit 0\n"), 0o755))
	return dir
}

func actor(t *testing.T, scenario string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), actorEnv+"="+scenario)
	cmd.Stderr = os.Stderr
	return cmd
}

func filesByPath(events []Event, cgroupID uint64) map[string][]FileEvent {
	out := map[string][]FileEvent{}
	for _, e := range events {
		if f, ok := e.(FileEvent); ok && f.CgroupID == cgroupID {
			out[f.Path] = append(out[f.Path], f)
		}
	}
	return out
}

func ofKind[T Event](events []Event, cgroupID uint64) []T {
	var out []T
	for _, e := range events {
		if v, ok := e.(T); ok && e.Cgroup() == cgroupID {
			out = append(out, v)
		}
	}
	return out
}

func realPath(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	require.NoError(t, err)
	return r
}

func elfInterpreter(t *testing.T, binary string) string {
	t.Helper()
	f, err := elf.Open(binary)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			require.NoError(t, err)
			return strings.TrimRight(string(b), "\x00")
		}
	}
	t.Fatalf("%s has no PT_INTERP", binary)
	return ""
}

func TestSensorTrackedCgroup(t *testing.T) {
	s, h, cgDir, id := tracked(t, Config{})
	dir := fixture(t)

	// Sockets of the test itself: the actor accepts on one it inherits and
	// reaches the others.
	inherited, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer inherited.Close()
	inheritedFile, err := inherited.(*net.TCPListener).File()
	require.NoError(t, err)
	defer inheritedFile.Close()
	peer4, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer peer4.Close()
	peer6, err := net.Listen("tcp6", "[::1]:0")
	require.NoError(t, err)
	defer peer6.Close()
	peerUDP, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer peerUDP.Close()
	port := func(a net.Addr) int {
		if u, ok := a.(*net.UDPAddr); ok {
			return u.Port
		}
		return a.(*net.TCPAddr).Port
	}

	stop := collect(t, s)
	cmd := actor(t, "all", dir, fmt.Sprint(port(peer4.Addr())), fmt.Sprint(port(peer6.Addr())), fmt.Sprint(port(peerUDP.LocalAddr())))
	cmd.ExtraFiles = []*os.File{inheritedFile}
	var out strings.Builder
	cmd.Stdout = &out
	require.NoError(t, h.Start(cmd, cgDir))
	go func() {
		c, err := net.Dial("tcp4", inherited.Addr().String())
		if err == nil {
			c.Close()
		}
	}()
	require.NoError(t, cmd.Wait())
	events := stop()
	var rep actorReport
	require.NoError(t, json.Unmarshal([]byte(out.String()), &rep))

	for _, e := range events {
		require.Equal(t, id, e.Cgroup(), "event of an untracked cgroup: %+v", e)
	}
	files := filesByPath(events, id)
	t.Run("files", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			path   string
			access Access
		}{
			{"read", "read.txt", AccessRead},
			{"write creates", "written.txt", AccessWrite | AccessCreate},
			{"relative to a directory fd", "sub/relative.txt", AccessRead},
			{"through a symlink", "target.txt", AccessRead},
			{"opened 10000 times", "many.txt", AccessRead},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := files[filepath.Join(dir, tc.path)]
				require.Len(t, got, 1, "events for %s", tc.path)
				require.Equal(t, tc.access, got[0].Access)
				require.False(t, got[0].Dir)
				require.NotZero(t, got[0].Ino)
				require.Positive(t, got[0].PID)
			})
		}
		lib := files[filepath.Join(dir, "lib.so")]
		require.Len(t, lib, 2, "an open and an executable mapping: %+v", lib)
		require.ElementsMatch(t, []Access{AccessRead, AccessMapped}, []Access{lib[0].Access, lib[1].Access})
		require.Empty(t, files[filepath.Join(dir, "link.txt")], "the symlink's own name is not the opened file")
		require.Empty(t, files[filepath.Join(dir, "missing.txt")], "failed opens are not events")
		sub := files[filepath.Join(dir, "sub")]
		require.Len(t, sub, 1)
		require.True(t, sub[0].Dir)
	})

	t.Run("exec", func(t *testing.T) {
		execs := ofKind[ExecEvent](events, id)
		find := func(role ExecRole, path string) *ExecEvent {
			for i := range execs {
				if execs[i].Role == role && execs[i].Path == path {
					return &execs[i]
				}
			}
			return nil
		}
		trueBin := realPath(t, "/bin/true")
		e := find(RoleBinary, trueBin)
		require.NotNil(t, e, "exec of %s in %+v", trueBin, execs)
		require.Equal(t, "/bin/true", e.Argv0)
		loader := realPath(t, elfInterpreter(t, "/bin/true"))
		require.NotNil(t, find(RoleLoader, loader), "PT_INTERP loader %s in %+v", loader, execs)
		require.NotNil(t, find(RoleScript, filepath.Join(dir, "script.sh")), "script in %+v", execs)
		require.NotNil(t, find(RoleBinary, realPath(t, "/bin/sh")), "script interpreter in %+v", execs)
	})

	t.Run("net", func(t *testing.T) {
		type portUse struct {
			Protocol  Protocol
			Direction Direction
			Port      int
			IPv6      bool
			Op        NetOp
		}
		var got []portUse
		for _, n := range ofKind[NetEvent](events, id) {
			got = append(got, portUse{n.Protocol, n.Direction, int(n.Port), n.IPv6, n.Op})
		}
		for _, want := range []portUse{
			{TCP, Inbound, port(inherited.Addr()), false, OpAccept},
			{TCP, Inbound, rep.ListenTCP4, false, OpListen},
			{TCP, Inbound, rep.ListenTCP6, true, OpListen},
			{TCP, Outbound, port(peer4.Addr()), false, OpConnect},
			{TCP, Outbound, port(peer6.Addr()), true, OpConnect},
			{UDP, Inbound, rep.BindUDP4, false, OpBind},
			{UDP, Outbound, port(peerUDP.LocalAddr()), false, OpSend},
		} {
			require.Contains(t, got, want)
		}
	})

	t.Run("syscalls", func(t *testing.T) {
		var names []string
		for _, e := range ofKind[SyscallEvent](events, id) {
			names = append(names, e.Names...)
		}
		for _, want := range []string{"openat", "close", "read", "write", "uname", "sysinfo", "getcwd", "execve", "listen", "accept4", "connect", "bind", "sendto", "exit_group"} {
			require.Contains(t, names, want)
		}
		require.Len(t, names, len(slices.Compact(slices.Sorted(slices.Values(names)))), "a syscall reported twice")
	})
}

// A runtime's init in the container's cgroup (runtime.h): what it opens,
// maps and calls with the host's binary in a mount namespace of its own
// is not the container's; from its exec of the workload on, everything is.
func TestSensorRuntimeWorkIsNotTheImages(t *testing.T) {
	s, h, cgDir, id := tracked(t, Config{})
	dir := fixture(t)
	busybox, err := exec.LookPath("busybox")
	require.NoError(t, err)
	busybox = realPath(t, busybox)

	stop := collect(t, s)
	runIn(t, h, cgDir, actor(t, "runtime", dir, busybox))
	events := stop()

	files := filesByPath(events, id)
	require.Contains(t, files, realPath(t, filepath.Join(dir, "target.txt")), "the workload's read")
	for _, f := range []string{"read.txt", "lib.so"} {
		require.NotContains(t, files, realPath(t, filepath.Join(dir, f)), "the runtime's %s", f)
	}
	var execs []string
	for _, e := range ofKind[ExecEvent](events, id) {
		execs = append(execs, e.Path)
	}
	require.Contains(t, execs, busybox)
	var names []string
	for _, e := range ofKind[SyscallEvent](events, id) {
		names = append(names, e.Names...)
	}
	require.Contains(t, names, "execve", "the workload's exec")
	for _, runtimeOnly := range []string{"unshare", "mount"} {
		require.NotContains(t, names, runtimeOnly)
	}
}

// Told the host's mount namespace, the sensor counts nothing a task does
// there: runc's init copies and re-executes its own binary in it before it
// unshares the container's (runtime.h).
func TestSensorHostNamespaceIsTheRuntimes(t *testing.T) {
	host, err := HostMountNamespace()
	require.NoError(t, err)
	s, h, cgDir, id := tracked(t, Config{HostMountNS: host})
	dir := fixture(t)
	stop := collect(t, s)
	runIn(t, h, cgDir, exec.Command("cat", filepath.Join(dir, "read.txt")))
	private := exec.Command("cat", filepath.Join(dir, "target.txt"))
	private.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWNS}
	runIn(t, h, cgDir, private)
	events := stop()

	files := filesByPath(events, id)
	require.NotContains(t, files, realPath(t, filepath.Join(dir, "read.txt")), "a read in the host's namespace")
	require.Contains(t, files, realPath(t, filepath.Join(dir, "target.txt")), "a read in a namespace of its own")
}

func TestSensorIgnoresUntrackedCgroups(t *testing.T) {
	s, h, _, _ := tracked(t, Config{})
	dir := fixture(t)
	untracked, _ := testCgroup(t, h)

	stop := collect(t, s)
	runIn(t, h, untracked, actor(t, "files", dir))
	require.Empty(t, stop(), "an untracked process produced events")
}

func TestSensorUntrackForgets(t *testing.T) {
	s, h, cgDir, id := tracked(t, Config{})
	dir := fixture(t)

	run := func() []Event {
		require.NoError(t, s.Track(id))
		stop := collect(t, s)
		runIn(t, h, cgDir, actor(t, "files", dir))
		return stop()
	}
	first := filesByPath(run(), id)
	require.Len(t, first[filepath.Join(dir, "read.txt")], 1)
	require.NoError(t, s.Untrack(id))
	require.False(t, s.Tracked(id))
	// Tracked again, the cgroup starts from nothing: its files are new again.
	second := filesByPath(run(), id)
	require.Len(t, second[filepath.Join(dir, "read.txt")], 1)
}

func TestSensorChrootPaths(t *testing.T) {
	testutil.RequirePrivileged(t)
	root := testutil.BusyboxRoot(t)
	h, err := cgroups.Unified()
	require.NoError(t, err)
	s := openSensor(t, Config{})
	cgDir, id := testCgroup(t, h)
	require.NoError(t, s.Track(id))
	stop := collect(t, s)
	cmd := exec.Command("/bin/sh", "-c", "cat /etc/passwd > /tmp/copy")
	cmd.SysProcAttr = &unix.SysProcAttr{Chroot: root}
	require.NoError(t, h.Start(cmd, cgDir))
	require.NoError(t, cmd.Wait())
	events := stop()

	files := filesByPath(events, id)
	require.Len(t, files["/etc/passwd"], 1, "files: %v", files)
	require.Equal(t, AccessRead, files["/etc/passwd"][0].Access)
	require.Len(t, files["/tmp/copy"], 1)
	require.Equal(t, AccessWrite|AccessCreate, files["/tmp/copy"][0].Access)
	execs := ofKind[ExecEvent](events, id)
	require.NotEmpty(t, execs)
	for _, e := range execs {
		require.Equal(t, "/bin/busybox", e.Path)
	}
	for p := range files {
		require.False(t, strings.HasPrefix(p, root), "host path %s leaked", p)
	}
}

func TestSensorCountsLosses(t *testing.T) {
	s, h, cgDir, id := tracked(t, Config{RingBufferBytes: uint32(os.Getpagesize())})
	dir := t.TempDir()

	// The ring buffer is not read while the burst runs, so it overflows.
	runIn(t, h, cgDir, actor(t, "burst", dir))
	stop := collect(t, s)
	events := stop()

	var lost uint64
	for _, l := range ofKind[LossEvent](events, id) {
		lost += l.Lost
	}
	received := 0
	for p := range filesByPath(events, id) {
		if strings.HasPrefix(filepath.Base(p), "burst-") {
			received++
		}
	}
	require.Positive(t, lost, "a full ring buffer must be counted")
	require.GreaterOrEqual(t, uint64(received)+lost, uint64(200), "received %d, lost %d", received, lost)
}

// Fair shares: a cgroup that writes more than its share of the ring
// buffer loses its own events, while the buffer is read as usual; a quiet
// cgroup beside it loses none and its file arrives.
func TestSensorFairShares(t *testing.T) {
	// 200 file events are ~17 KiB; a share of 4 KiB at 1 KiB/s holds a
	// few dozen of them however slowly (an emulated VM) they are made.
	s, h, floodDir, flood := tracked(t, Config{ShareRate: 1 << 10, ShareBurst: 4 << 10})
	quietDir, quiet := testCgroup(t, h)
	require.NoError(t, s.Track(quiet))
	dir := fixture(t)
	stop := collect(t, s)
	runIn(t, h, floodDir, actor(t, "burst", t.TempDir()))
	runIn(t, h, quietDir, exec.Command("cat", filepath.Join(dir, "read.txt")))
	time.Sleep(1500 * time.Millisecond) // past a poll of the loss counters
	events := stop()

	lost := map[uint64]uint64{}
	for _, id := range []uint64{flood, quiet} {
		for _, l := range ofKind[LossEvent](events, id) {
			lost[id] += l.Lost
		}
	}
	received := 0
	for p := range filesByPath(events, flood) {
		if strings.HasPrefix(filepath.Base(p), "burst-") {
			received++
		}
	}
	require.Positive(t, lost[flood], "the flooding cgroup loses its own events")
	require.Less(t, received, 200, "past its share")
	require.Positive(t, received, "within its burst")
	require.Zero(t, lost[quiet], "the quiet cgroup loses nothing")
	require.Contains(t, filesByPath(events, quiet), realPath(t, filepath.Join(dir, "read.txt")))
}

func TestSensorCgroupV1Fallback(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.RequireCgroupV1(t)
	h, err := cgroups.V1Controller("memory")
	require.NoError(t, err)
	s := openSensor(t, Config{CgroupV1Controller: "memory"})
	dir := fixture(t)
	cgDir, id := testCgroup(t, h)
	require.NoError(t, s.Track(id))

	stop := collect(t, s)
	runIn(t, h, cgDir, actor(t, "files", dir))
	events := stop()
	files := filesByPath(events, id)
	require.Len(t, files[filepath.Join(dir, "read.txt")], 1)
	require.NotEmpty(t, ofKind[SyscallEvent](events, id))
}

// In a container the root is an overlay: the ELF loader that the kernel
// maps is a lower-layer backing file, and must still be reported as the
// file the container sees.
func TestSensorOverlayRootPaths(t *testing.T) {
	s, h, cgDir, id := tracked(t, Config{})
	lower := t.TempDir()
	interp := elfInterpreter(t, "/usr/bin/true")
	libc := map[string]string{"amd64": "/usr/lib/x86_64-linux-gnu/libc.so.6", "arm64": "/usr/lib/aarch64-linux-gnu/libc.so.6"}[runtime.GOARCH]
	for _, f := range []struct{ from, to string }{
		{"/usr/bin/true", "/usr/bin/true"},
		{realPath(t, interp), interp},
		{realPath(t, libc), libc},
	} {
		b, err := os.ReadFile(f.from)
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(lower, filepath.Dir(f.to)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(lower, f.to), b, 0o755))
	}
	merged := testutil.OverlayRoot(t, lower)

	stop := collect(t, s)
	cmd := exec.Command("/usr/bin/true")
	cmd.SysProcAttr = &unix.SysProcAttr{Chroot: merged}
	runIn(t, h, cgDir, cmd)
	events := stop()

	roles := map[ExecRole]string{}
	devs := map[ExecRole]uint32{}
	for _, e := range ofKind[ExecEvent](events, id) {
		roles[e.Role] = e.Path
		devs[e.Role] = e.Dev
	}
	require.Equal(t, map[ExecRole]string{RoleBinary: "/usr/bin/true", RoleLoader: interp}, roles)
	// The same file as the container opens it: the overlay's device, not
	// the lower layer's, so that dedup and the profile see one file.
	require.Equal(t, devs[RoleBinary], devs[RoleLoader], "loader reported on the lower layer's device")
	files := filesByPath(events, id)
	require.Len(t, files[libc], 2, "open and executable mapping of libc: %v", files)
	for p := range files {
		require.False(t, strings.HasPrefix(p, lower) || strings.HasPrefix(p, merged), "host path %s leaked", p)
	}
}

// The origin of a file is decided from the file the kernel opened: on an
// overlay root, a file with a lower copy is the image's (even after an
// in-place write copied it up), a file only the upper layer holds is the
// container's, and a file on another mount is a volume's.
func TestSensorFileOrigins(t *testing.T) {
	s, h, cgDir, id := tracked(t, Config{})
	merged := testutil.OverlayRoot(t, testutil.BusyboxRoot(t))
	testutil.MountTmpfs(t, filepath.Join(merged, "vol"))

	stop := collect(t, s)
	cmd := exec.Command("/bin/sh", "-c", `cat /etc/passwd; echo x >> /etc/group; echo new > /tmp/new; cat /tmp/new;
		echo v > /vol/f; cat /vol/f; cat /bin/busybox > /tmp/busybox; /bin/busybox chmod +x /tmp/busybox; /tmp/busybox true`)
	cmd.SysProcAttr = &unix.SysProcAttr{Chroot: merged}
	runIn(t, h, cgDir, cmd)
	events := stop()

	origins := map[string]Origin{}
	for p, evs := range filesByPath(events, id) {
		for _, e := range evs {
			require.True(t, origins[p] == 0 || origins[p] == e.Origin, "%s reported as %s and %s", p, origins[p], e.Origin)
			origins[p] = e.Origin
		}
	}
	for path, want := range map[string]Origin{
		"/etc/passwd": OriginImage, "/etc/group": OriginImage,
		"/tmp/new": OriginContainer, "/tmp/busybox": OriginContainer, "/vol/f": OriginVolume,
	} {
		require.Equal(t, want, origins[path], "%s: %v", path, origins)
	}
	execs := map[string]Origin{}
	for _, e := range ofKind[ExecEvent](events, id) {
		execs[e.Path] = e.Origin
	}
	require.Equal(t, map[string]Origin{"/bin/busybox": OriginImage, "/tmp/busybox": OriginContainer}, execs)
}

// A cgroup created under an early prefix is tracked by the kernel at
// mkdir, before anyone calls Track: its first process is seen whole.
func TestSensorEarlyTracking(t *testing.T) {
	testutil.RequirePrivileged(t)
	h, err := cgroups.Unified()
	require.NoError(t, err)
	prefix := fmt.Sprintf("/inuse-test/early-%d-", time.Now().UnixNano())
	s := openSensor(t, Config{EarlyPrefixes: []string{"/nothing-here/", prefix}})
	dir := fixture(t)
	stop := collect(t, s)
	other, otherID := testCgroup(t, h)
	cg, id, err := h.Create(prefix + "c1")
	require.NoError(t, err)
	t.Cleanup(func() { _ = cgroups.Remove(cg) })
	runIn(t, h, cg, actor(t, "files", dir))
	runIn(t, h, other, actor(t, "files", dir)) // not under the prefix: untracked
	events := stop()

	var mkdirs []CgroupEvent
	for _, e := range events {
		require.NotEqual(t, otherID, e.Cgroup(), "a cgroup outside the prefixes was tracked")
		if m, ok := e.(CgroupEvent); ok {
			mkdirs = append(mkdirs, m)
		}
	}
	require.Equal(t, []string{prefix + "c1"}, []string{mkdirs[0].Path})
	require.Equal(t, id, mkdirs[0].CgroupID)
	require.Len(t, filesByPath(events, id)[filepath.Join(dir, "read.txt")], 1)
	// Adopting it, so that it is polled and untracked like any other, is
	// its owner's decision: the agent's tracker.
	require.False(t, s.Tracked(id))
	require.NoError(t, s.Track(id))
	require.True(t, s.Tracked(id))
	require.NoError(t, s.Untrack(id))
}

// An exec session (what docker exec, kubectl exec and nsenter start: a
// process that joins the running container from outside) is told from the
// workload, with what it starts: its events say ExecSession, the
// workload's do not, and a file the session read first is still reported
// for the workload when it reads it. The entrypoint is the workload
// whether the sensor saw it start or was told the container was running
// (TrackRunning), and the sessions' table is empty once they exit.
func TestSensorExecSessions(t *testing.T) {
	testutil.RequirePrivileged(t)
	busybox, err := exec.LookPath("busybox")
	require.NoError(t, err)
	busybox = realPath(t, busybox)
	h, err := cgroups.Unified()
	require.NoError(t, err)
	s := openSensor(t, Config{})

	for _, running := range []bool{false, true} {
		t.Run(fmt.Sprintf("running=%v", running), func(t *testing.T) {
			dir := fixture(t)
			file := func(name string) string { return realPath(t, filepath.Join(dir, name)) }
			for _, f := range []string{"session.txt", "forked.txt", "both.txt", "later.txt"} {
				require.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o644))
			}
			cgDir, id := testCgroup(t, h)
			if !running {
				require.NoError(t, s.Track(id))
			}
			stop := collect(t, s)

			// The entrypoint: the first process of a pid and mount
			// namespace of its own, as a runtime's init is.
			entry := exec.Command(busybox, "sh", "-c", `cat "$1/read.txt" >/dev/null; echo started; read x; cat "$1/both.txt"; exec cat "$1/later.txt"`, "sh", dir)
			entry.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID}
			stdin, err := entry.StdinPipe()
			require.NoError(t, err)
			stdout, err := entry.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, h.Start(entry, cgDir))
			// A session joins a container that runs: its entrypoint has
			// executed (a runtime's exec comes after its start).
			started, err := bufio.NewReader(stdout).ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "started\n", started)
			if running {
				// Tracked after its start: a Docker start event, a resync.
				require.NoError(t, s.TrackRunning(id))
			}
			// A session: nsenter joins the entrypoint's namespaces and
			// cgroup from outside and runs a shell, which forks.
			pid := strconv.Itoa(entry.Process.Pid)
			runIn(t, h, cgDir, exec.Command(busybox, "nsenter", "-t", pid, "-m", "-p", "--", busybox, "sh", "-c",
				`cat "$1/session.txt" "$1/both.txt"; cat "$1/forked.txt" >/dev/null`, "sh", dir))
			_, err = stdin.Write([]byte("go\n"))
			require.NoError(t, err)
			require.NoError(t, entry.Wait())
			events := stop()

			sources := map[string][]bool{}
			for p, fs := range filesByPath(events, id) {
				for _, f := range fs {
					sources[p] = append(sources[p], f.ExecSession)
				}
			}
			if !running {
				require.Equal(t, []bool{false}, sources[file("read.txt")], "the entrypoint's read")
			}
			require.Equal(t, []bool{true}, sources[file("session.txt")], "the session's read")
			require.Equal(t, []bool{true}, sources[file("forked.txt")], "a read of the session's fork")
			require.ElementsMatch(t, []bool{true, false}, sources[file("both.txt")], "read by both: reported for each")
			require.Equal(t, []bool{false}, sources[file("later.txt")], "the entrypoint's exec, after the session")
			var sessionExecs int
			for _, e := range ofKind[ExecEvent](events, id) {
				if e.ExecSession {
					sessionExecs++
				}
			}
			require.Positive(t, sessionExecs, "the session's execs say so")

			var tgid uint32
			var cgroupID uint64
			it := s.objs.InuseExecSessions.Iterate()
			for it.Next(&tgid, &cgroupID) {
				require.NotEqual(t, id, cgroupID, "process %d left in the sessions' table", tgid)
			}
			require.NoError(t, it.Err())
		})
	}
}
