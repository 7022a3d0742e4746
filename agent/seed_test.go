package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/registry"
	"github.com/inuse-dev/inuse/internal/testutil"
)

// eventSink keeps the events the registry attributed.
type eventSink struct {
	mu     sync.Mutex
	events []sensor.Event
}

func (e *eventSink) ContainerStarted(lifecycle.Container) {}
func (e *eventSink) ContainerStopped(lifecycle.Container) {}
func (e *eventSink) Observe(_ lifecycle.Container, ev sensor.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, ev)
}

// A container found running (partial) is seeded from /proc: its
// processes' executables, executable mappings, open files and the ports of
// its network namespace, all marked seeded; a process that is gone is
// skipped.
func TestSeedRunningContainer(t *testing.T) {
	testutil.RequirePrivileged(t)
	h, err := cgroups.Unified()
	require.NoError(t, err)
	path := fmt.Sprintf("/inuse-test/seed-%d", time.Now().UnixNano())
	dir, id, err := h.Create(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cgroups.Remove(dir) })
	data := filepath.Join(t.TempDir(), "held-open.txt")
	require.NoError(t, os.WriteFile(data, []byte("x"), 0o644))
	for _, cmd := range []*exec.Cmd{
		exec.Command("sh", "-c", "exec 3<"+data+"; exec sleep 30"),
		// its own network namespace, as a container has
		exec.Command("unshare", "-n", "busybox", "nc", "-l", "-p", "8765"),
	} {
		require.NoError(t, h.Start(cmd, dir))
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	sleepBin, err := filepath.EvalSymlinks("/usr/bin/sleep")
	require.NoError(t, err)

	a, _, _ := newTestAgent()
	warns := &warnings{}
	a.log = slog.New(warns)
	a.hierarchy = h
	sink := &eventSink{}
	a.registry = registry.New[sensor.Event](a.log, sink, a.tracker, registry.Config{})
	c := lifecycle.Container{ID: "running", CgroupID: id, CgroupPath: path, Image: testImage, Partial: true}
	want := func(ev sensor.Event) bool {
		switch e := ev.(type) {
		case sensor.ExecEvent:
			return e.Path == sleepBin
		case sensor.FileEvent:
			return e.Path == data && e.Access == sensor.AccessRead
		case sensor.NetEvent:
			return e.Protocol == sensor.TCP && e.Direction == sensor.Inbound && e.Port == 8765
		}
		return false
	}
	// Started under the agent's eyes, a container is not seeded: the
	// sensor sees everything it does.
	time.Sleep(200 * time.Millisecond)
	started := c
	started.Partial = false
	a.apply(lifecycle.Event{Kind: lifecycle.Started, Container: started})
	a.seeding.Wait()
	require.Empty(t, sink.events)

	// The processes set up (the redirect, the listen) a little after they start.
	require.Eventually(t, func() bool {
		a.registry = registry.New[sensor.Event](a.log, sink, a.tracker, registry.Config{})
		sink.events = nil
		a.apply(lifecycle.Event{Kind: lifecycle.Started, Container: c})
		a.seeding.Wait()
		found := 0
		for _, ev := range sink.events {
			if want(ev) {
				found++
			}
		}
		return found == 3
	}, 10*time.Second, 100*time.Millisecond, "exec, open file and port of the running processes")

	var libc bool
	for _, ev := range sink.events {
		require.True(t, sensor.Seeded(ev), "%+v is marked seeded", ev)
		require.Equal(t, id, ev.Cgroup())
		if f, ok := ev.(sensor.FileEvent); ok && f.Access == sensor.AccessMapped && filepath.Base(f.Path) == "libc.so.6" {
			libc = true
		}
	}
	require.True(t, libc, "libc mapped executable in %+v", sink.events)

	// Each file and use once, however many processes share it.
	keys := make([]string, 0, len(sink.events))
	for _, ev := range sink.events {
		keys = append(keys, fmt.Sprintf("%T %+v", ev, ev))
	}
	require.Len(t, slices.Compact(slices.Sorted(slices.Values(keys))), len(keys))

	require.Empty(t, warns.records, "seeding logged no warning")

	// A pid that is not there (any more) is skipped, without an error;
	// TestSeedProcessExitsDuringSeeding has processes exit mid-seeding.
	n := len(sink.events)
	require.NoError(t, (&seeder{cgroupID: id, hierarchy: h, dir: dir, emit: func(ev sensor.Event) { sink.Observe(c, ev) }, seen: map[string]bool{}, netns: map[string]bool{}}).process(1<<30))
	require.Len(t, sink.events, n)
	// A process of another cgroup (the test's own) is not read.
	require.NoError(t, (&seeder{cgroupID: id, hierarchy: h, dir: dir, emit: func(ev sensor.Event) { sink.Observe(c, ev) }, seen: map[string]bool{}, netns: map[string]bool{}}).process(os.Getpid()))
	require.Len(t, sink.events, n)
}

// Seeded files get the origin the kernel would give them: on an overlay
// root, a file only the upper layer holds is the container's, one with a
// lower copy the image's; a file on another mount is a volume's.
func TestSeedOrigins(t *testing.T) {
	testutil.RequirePrivileged(t)
	merged := testutil.OverlayRoot(t, testutil.BusyboxRoot(t))
	testutil.MountTmpfs(t, filepath.Join(merged, "vol"))

	cmd := exec.Command("/bin/sh", "-c", `echo x > /tmp/made; echo v > /vol/f; exec 3</tmp/made 4</etc/passwd 5</vol/f; exec /bin/busybox sleep 30`)
	cmd.SysProcAttr = &unix.SysProcAttr{Chroot: merged}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	h, err := cgroups.Unified()
	require.NoError(t, err)
	own, err := h.OfProcess(cmd.Process.Pid)
	require.NoError(t, err)
	want := map[string]sensor.Origin{"/tmp/made": sensor.OriginContainer, "/etc/passwd": sensor.OriginImage, "/vol/f": sensor.OriginVolume}
	var got map[string]sensor.Origin
	require.Eventually(t, func() bool {
		got = map[string]sensor.Origin{}
		s := &seeder{hierarchy: h, dir: h.Path(own), emit: func(ev sensor.Event) {
			if f, ok := ev.(sensor.FileEvent); ok && f.Access == sensor.AccessRead {
				got[f.Path] = f.Origin
			}
		}, seen: map[string]bool{}, netns: map[string]bool{}}
		require.NoError(t, s.process(cmd.Process.Pid))
		return len(got) == len(want)
	}, 10*time.Second, 50*time.Millisecond, "the three files held open: %v", got)
	require.Equal(t, want, got)
}

// A runtime's init that waits in the container's mount namespace to start
// it (runc init before the exec fifo opens) runs the host's binary: what
// it maps and holds open is not seeded. The same process without a
// namespace of its own is.
func TestSeedSkipsRuntimeInit(t *testing.T) {
	testutil.RequirePrivileged(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("the script calls unshare by its amd64 number")
	}
	for name, tc := range map[string]struct {
		unshare string
		seeded  bool
	}{
		"own mount namespace": {unshare: "syscall(272, 0x20000) == 0 or die $!;", seeded: false},
		"host's namespace":    {unshare: "", seeded: true},
	} {
		t.Run(name, func(t *testing.T) {
			ready := filepath.Join(t.TempDir(), "ready")
			cmd := exec.Command("perl", "-e", tc.unshare+`open(my $f, "<", "/etc/hostname") or die; open(my $r, ">", $ARGV[0]) or die; close($r); sleep 30`, ready)
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			require.Eventually(t, func() bool { _, err := os.Stat(ready); return err == nil }, 10*time.Second, 20*time.Millisecond)

			h, err := cgroups.Unified()
			require.NoError(t, err)
			own, err := h.OfProcess(cmd.Process.Pid)
			require.NoError(t, err)
			var events []sensor.Event
			require.NoError(t, (&seeder{hierarchy: h, dir: h.Path(own), emit: func(ev sensor.Event) { events = append(events, ev) }, seen: map[string]bool{}, netns: map[string]bool{}}).process(cmd.Process.Pid))
			held := slices.ContainsFunc(events, func(ev sensor.Event) bool {
				f, ok := ev.(sensor.FileEvent)
				return ok && f.Path == "/etc/hostname"
			})
			if tc.seeded {
				require.True(t, held, "the held file in %+v", events)
			} else {
				require.Empty(t, events)
			}
		})
	}
}

// warnings fails nothing itself: it keeps the records at WARN and above
// that a component logs, for the test to require none.
type warnings struct {
	mu      sync.Mutex
	records []string
}

func (w *warnings) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *warnings) WithGroup(string) slog.Handler            { return w }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	w.mu.Lock()
	defer w.mu.Unlock()
	w.records = append(w.records, b.String())
	return nil
}

// killingSink kills a process of the container the moment the seeder
// hands over a chosen event, so that the process exits while the
// container is being seeded: between the listing of the cgroup and the
// reading of its /proc entry, or in the middle of that reading.
type killingSink struct {
	eventSink
	when   func(ev sensor.Event) bool
	victim *exec.Cmd
	killed bool
}

func (k *killingSink) Observe(c lifecycle.Container, ev sensor.Event) {
	k.eventSink.Observe(c, ev)
	if !k.killed && k.when(ev) {
		k.killed = true
		_ = k.victim.Process.Kill()
		_ = k.victim.Wait() // reaped: its /proc entry is gone
	}
}

func pidOf(ev sensor.Event) int {
	switch e := ev.(type) {
	case sensor.ExecEvent:
		return int(e.PID)
	case sensor.FileEvent:
		return int(e.PID)
	case sensor.NetEvent:
		return int(e.PID)
	}
	return 0
}

// A process that exits while its container is seeded is left out from
// where it exited, without a warning, and the container's other process is
// seeded whole. The process really exits during seeding: killed (and
// reaped) from inside the seeder's own hand-over of an event.
func TestSeedProcessExitsDuringSeeding(t *testing.T) {
	testutil.RequirePrivileged(t)
	h, err := cgroups.Unified()
	require.NoError(t, err)
	sleepBin, err := filepath.EvalSymlinks("/usr/bin/sleep")
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		// when picks the event, given the pids of the process read first
		// and second, on which the victim (first or second) is killed
		when        func(ev sensor.Event, first, second int) bool
		killFirst   bool
		victimEvent bool // some of the victim's was handed over before it died
		victimFiles int  // of its two open files, read before it died
	}{
		{
			name: "exits after the cgroup is listed, before it is read",
			when: func(ev sensor.Event, first, _ int) bool { return pidOf(ev) == first },
		},
		{
			name: "exits after its executable is read",
			when: func(ev sensor.Event, first, _ int) bool {
				_, ok := ev.(sensor.ExecEvent)
				return ok && pidOf(ev) == first
			},
			killFirst:   true,
			victimEvent: true,
		},
		{
			name: "exits while its mappings are read",
			when: func(ev sensor.Event, first, _ int) bool {
				f, ok := ev.(sensor.FileEvent)
				return ok && f.Access == sensor.AccessMapped && pidOf(ev) == first
			},
			killFirst:   true,
			victimEvent: true,
		},
		{
			name: "exits while its open files are read",
			when: func(ev sensor.Event, _, second int) bool {
				f, ok := ev.(sensor.FileEvent)
				return ok && f.Access == sensor.AccessRead && pidOf(ev) == second
			},
			victimEvent: true,
			victimFiles: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := fmt.Sprintf("/inuse-test/seed-exit-%d", time.Now().UnixNano())
			dir, id, err := h.Create(path)
			require.NoError(t, err)
			t.Cleanup(func() { _ = cgroups.Remove(dir) })
			files := map[int][]string{}
			cmds := map[int]*exec.Cmd{}
			for i := range 2 {
				var held []string
				for j := range 2 {
					data := filepath.Join(t.TempDir(), fmt.Sprintf("open-%d-%d.txt", i, j))
					require.NoError(t, os.WriteFile(data, []byte("x"), 0o644))
					held = append(held, data)
				}
				cmd := exec.Command("sh", "-c", "exec 3<"+held[0]+" 4<"+held[1]+"; exec sleep 30")
				require.NoError(t, h.Start(cmd, dir))
				t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
				files[cmd.Process.Pid], cmds[cmd.Process.Pid] = held, cmd
			}
			// Both are sleep, holding their file, before seeding starts.
			require.Eventually(t, func() bool {
				for pid := range cmds {
					exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
					if err != nil || exe != sleepBin {
						return false
					}
				}
				return true
			}, 10*time.Second, 20*time.Millisecond)
			// The seeder reads the processes in the order the cgroup lists them.
			pids, err := cgroupPIDs(dir)
			require.NoError(t, err)
			require.Len(t, pids, 2)
			first, second := pids[0], pids[1]
			victim, survivor := second, first
			if tc.killFirst {
				victim, survivor = first, second
			}

			a, _, _ := newTestAgent()
			warns := &warnings{}
			a.log = slog.New(warns)
			a.hierarchy = h
			sink := &killingSink{when: func(ev sensor.Event) bool { return tc.when(ev, first, second) }, victim: cmds[victim]}
			a.registry = registry.New[sensor.Event](a.log, sink, a.tracker, registry.Config{})
			c := lifecycle.Container{ID: "exiting", CgroupID: id, CgroupPath: path, Image: testImage, Partial: true}
			a.apply(lifecycle.Event{Kind: lifecycle.Started, Container: c})
			a.seeding.Wait()

			require.True(t, sink.killed, "the victim was killed during seeding")
			require.Empty(t, warns.records, "seeding logged no warning")
			_, err = os.Stat(fmt.Sprintf("/proc/%d", victim))
			require.ErrorIs(t, err, os.ErrNotExist, "the victim is gone")

			// The survivor is seeded whole: sleep's exec (handed over once,
			// by whichever process came first) and both its open files.
			var exec bool
			var survivorFiles, victimFiles int
			for _, ev := range sink.events {
				switch e := ev.(type) {
				case sensor.ExecEvent:
					exec = exec || e.Path == sleepBin
				case sensor.FileEvent:
					if e.Access == sensor.AccessRead {
						survivorFiles += len(slices.DeleteFunc(slices.Clone(files[survivor]), func(p string) bool { return p != e.Path }))
						victimFiles += len(slices.DeleteFunc(slices.Clone(files[victim]), func(p string) bool { return p != e.Path }))
					}
				}
			}
			require.True(t, exec, "sleep's exec in %+v", sink.events)
			require.Equal(t, 2, survivorFiles, "the survivor's open files in %+v", sink.events)
			require.Equal(t, tc.victimFiles, victimFiles, "the victim's files read before it exited, none after: %+v", sink.events)
			if tc.victimEvent {
				require.True(t, slices.ContainsFunc(sink.events, func(ev sensor.Event) bool { return pidOf(ev) == victim }),
					"the victim's events before its exit are kept")
			} else {
				require.False(t, slices.ContainsFunc(sink.events, func(ev sensor.Event) bool { return pidOf(ev) == victim }),
					"the victim is left out whole")
			}
		})
	}
}
