package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/tests/runtimes"
)

// hostileScript turns the planned binary of its container into what an
// attacker would put there: a symbolic link to a host copy of the same
// build (the old agent followed it onto the host file), a FIFO (the old
// agent's open blocked forever under the lock the event reader needs), a
// device node or a magic link. It holds %[3]s at the planned path for 4 s
// while the agent probes the starting container (dockerd names it late), then swaps every state in
// turn between executions of the real binary (which make the agent probe
// it again) for %[2]d rounds. %[1]s is the host copy.
const hostileScript = `B=/bin/busybox
$B cp /app/target /app/good
hostile() {
  $B rm -f /app/target
  case $1 in
  link) $B ln -s %[1]s /app/target ;;
  fifo) $B mkfifo /app/target ;;
  dev) $B mknod /app/target c 1 3 ;;
  magic) $B ln -s /proc/self/root%[1]s /app/target ;;
  esac
}
hostile %[3]s
$B sleep 4
i=0
while [ $i -lt %[2]d ]; do
  i=$((i+1))
  $B cp /app/good /app/t.new; $B mv /app/t.new /app/target; /app/target B >/dev/null 2>&1 &
  hostile link; hostile fifo; hostile dev; hostile magic
  $B cp /app/good /app/t.new; $B mv /app/t.new /app/target; /app/target B >/dev/null 2>&1
  wait
done
`

// A container that swaps its planned binary for a symbolic link to a host
// copy of it, a FIFO, a device node or a magic link, between the agent's
// checks and attaches, for ~30 s and over many restarts: no uprobe ever
// lands outside the container's own file, another image's loads keep
// reaching its profile within 2 s, the agent says why it refuses a FIFO, and
// SIGTERM stops it within its grace period.
func TestHostileContainerDocker(t *testing.T) {
	testutil.RequirePrivileged(t)
	ctx := context.Background()
	root, plan := goFuncImage(t)
	for _, a := range []string{"cp", "mv", "ln", "rm", "mkfifo", "mknod"} {
		require.NoError(t, os.Symlink("busybox", filepath.Join(root, "bin", a)))
	}
	// The host copy: the same build as the plan, which the old agent
	// probed through an absolute symbolic link.
	host := filepath.Join(t.TempDir(), "host-target")
	runtimes.CopyFile(t, filepath.Join(root, probedPath), host)
	quietRoot := testutil.BusyboxRoot(t)
	const quietFiles = 40
	for i := range quietFiles {
		require.NoError(t, os.WriteFile(filepath.Join(quietRoot, "etc", fmt.Sprintf("quiet-%d", i)), []byte("x"), 0o644))
	}

	d := runtimes.StartDockerd(t)
	const ref, quietRef = "inuse-test/hostile:1", "inuse-test/quiet:1"
	imageID := d.ImportImage(t, root, ref, `CMD ["/bin/sh"]`)
	quietID := d.ImportImage(t, quietRoot, quietRef, `CMD ["/bin/sh"]`)
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	require.NoError(t, st.WriteGoPlans(ctx, imageID, map[string]store.GoPlan{probedPath: plan}))

	a := runtimes.StartAgent(t, agentBinary, []string{"DOCKER_HOST=" + d.Host}, "--redis", srv.URL(), "--nri-socket", "",
		"--flush-interval", "200ms", "--node-name", "e2e")

	// Every uprobe link the kernel holds, polled all along: none may be
	// on the host copy or anything but the container's planned file.
	var (
		mu       sync.Mutex
		bad      []string
		attached int
	)
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			paths, err := testutil.UprobePaths()
			mu.Lock()
			if err != nil {
				bad = append(bad, "listing links: "+err.Error())
			}
			for _, p := range paths {
				attached++
				p = strings.TrimSuffix(p, " (deleted)") // replaced since, as the script does
				if p == host || !strings.HasSuffix(p, probedPath) {
					bad = append(bad, p)
				}
			}
			mu.Unlock()
		}
	}()

	// The attacker restarts its container for ~20 s, as a restart policy
	// would.
	attackDone := make(chan struct{})
	go func() {
		defer close(attackDone)
		kinds := []string{"link", "fifo", "dev", "magic"}
		for i, end := 0, time.Now().Add(30*time.Second); time.Now().Before(end); i++ {
			_, wait := d.Run(t, ref, "/bin/busybox", "sh", "-c", fmt.Sprintf(hostileScript, host, 3, kinds[i%len(kinds)]))
			wait()
		}
	}()

	// Meanwhile a quiet container of another image reads one new file at
	// a time: each reaches its profile within 2 s of the container's end.
	var worst time.Duration
	for i := 0; ; i++ {
		select {
		case <-attackDone:
		default:
			if i < quietFiles {
				file := fmt.Sprintf("/etc/quiet-%d", i)
				_, wait := d.Run(t, quietRef, "/bin/busybox", "cat", file)
				wait()
				ended := time.Now()
				for {
					p, err := st.Profile(ctx, quietID, time.Now(), store.DefaultLearning)
					if err == nil && has(p, store.FilesRead, file) {
						break
					}
					require.Less(t, time.Since(ended), 2*time.Second, "%s of the quiet image never reached its profile: the event reader stalled", file)
					time.Sleep(50 * time.Millisecond)
				}
				worst = max(worst, time.Since(ended))
				continue
			}
			<-attackDone
		}
		break
	}
	close(stop)
	<-polled
	t.Logf("quiet image: worst delay %v; uprobe links seen %d", worst, attached)
	mu.Lock()
	require.Empty(t, bad, "uprobes outside the container's own planned file")
	require.Positive(t, attached, "the container's own file was probed at times: the check saw links")
	mu.Unlock()

	// Which state the swapping containers were caught in is timing: the
	// reasons are only logged here. An image whose planned binary is a
	// FIFO from the start is refused for what it is, every time.
	refusals := func() []string {
		var reasons []string
		for _, l := range a.Lines() {
			var line struct{ Msg, Error string }
			if json.Unmarshal([]byte(l), &line) == nil && line.Msg == "refusing to probe a planned binary" {
				reasons = append(reasons, line.Error)
			}
		}
		return reasons
	}
	t.Logf("refusals while swapping: %q", refusals())
	require.NoError(t, os.Remove(filepath.Join(root, probedPath)))
	require.NoError(t, unix.Mkfifo(filepath.Join(root, probedPath), 0o755))
	const plantedRef = "inuse-test/planted:1"
	plantedID := d.ImportImage(t, root, plantedRef, `CMD ["/bin/sh"]`)
	require.NoError(t, st.WriteGoPlans(ctx, plantedID, map[string]store.GoPlan{probedPath: plan}))
	d.Run(t, plantedRef, "/bin/busybox", "sleep", "60")
	require.Eventually(t, func() bool {
		return strings.Contains(strings.Join(refusals(), "\n"), "not a regular file")
	}, 30*time.Second, 100*time.Millisecond, "the agent says why it refused a FIFO: %q", refusals())

	// A last hostile container left mid-swap, then SIGTERM.
	d.Run(t, ref, "/bin/busybox", "sh", "-c", fmt.Sprintf(hostileScript, host, 1000, "fifo"))
	time.Sleep(time.Second)
	start := time.Now()
	a.Stop(t)
	require.Less(t, time.Since(start), 10*time.Second, "SIGTERM stops the agent within its grace period")
	t.Logf("stopped in %v", time.Since(start))
}

// floodScript makes a directory ~3.8 KiB deep under /tmp and creates new
// files in it from four shells for %d s, as fast as they can: every file
// is a new event with a path near PATH_MAX.
const floodScript = `B=/bin/busybox
d=/tmp
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do d=$d/$($B printf '%%0250d' $i); done
$B mkdir -p $d
for p in 1 2 3 4; do
  $B timeout %d $B sh -c 'i=0; while :; do : > $0/f$1-$i; i=$((i+1)); done' $d $p &
done
wait
exit 0
`

// A flood: one container creates files with paths near 4 KiB as fast as
// it can (15 s here; INUSE_FLOOD_SECONDS=60 for the benchmark's figure)
// while a quiet container of another image loads libc once, as the flood
// runs: the agent's peak RSS stays under the chart's 512 MiB limit, the
// quiet image's profile is complete (no loss) and holds the library, and
// the flooding image is marked incomplete (it lost its own events).
func TestFloodLosesOnlyItsOwn(t *testing.T) {
	testutil.RequirePrivileged(t)
	seconds := 15
	if v := os.Getenv("INUSE_FLOOD_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		seconds = n
	}
	ctx := context.Background()
	floodRoot := testutil.BusyboxRoot(t)
	quietRoot, _ := dynamicRoot(t)
	d := runtimes.StartDockerd(t)
	floodID := d.ImportImage(t, floodRoot, "inuse-test/flood:1")
	quietID := d.ImportImage(t, quietRoot, "inuse-test/quiet-lib:1")
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	a := runtimes.StartAgent(t, agentBinary, []string{"DOCKER_HOST=" + d.Host}, "--redis", srv.URL(), "--nri-socket", "",
		"--flush-interval", "500ms", "--node-name", "flood")

	_, floodWait := d.RunWith(t, runtimes.RunOptions{Timeout: time.Duration(seconds+60) * time.Second}, "inuse-test/flood:1",
		"/bin/busybox", "sh", "-c", fmt.Sprintf(floodScript, seconds))
	time.Sleep(time.Duration(seconds) * time.Second / 2)
	_, quietWait := d.Run(t, "inuse-test/quiet-lib:1", "/usr/bin/true")
	quietWait()
	floodWait()

	libc := "/usr/lib/x86_64-linux-gnu/libc.so.6"
	waitProfile(t, st, quietID, func(p *store.Profile) bool { return has(p, store.Mapped, libc) })
	flood := waitProfile(t, st, floodID, func(p *store.Profile) bool { return p.Meta.Losses > 0 })
	time.Sleep(time.Second) // a last flush
	quiet, err := st.Profile(ctx, quietID, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	peak := a.PeakRSS(t)
	t.Logf("flood of %d s: agent peak RSS %d MiB; flooding image: %d events recorded, %d lost, runtime files %d; quiet image: %d lost",
		seconds, peak>>20, flood.Meta.Events, flood.Meta.Losses, len(flood.Sections[store.RuntimeFilesWritten]), quiet.Meta.Losses)
	require.Zero(t, quiet.Meta.Losses, "the quiet image is complete")
	require.True(t, has(quiet, store.Mapped, libc))
	require.Positive(t, flood.Meta.Losses, "the flooding image is marked incomplete")
	require.Less(t, peak, int64(512<<20), "the chart's memory limit")
	a.Stop(t)
}
