// Package tests runs inuse end to end against real runtimes (dockerd,
// containerd with NRI), a real redis-server and the real kernel. The tests
// are privileged: `make test` runs them as root, which CI is.
package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/store"
)

// agentBinary is built once by TestMain.
var agentBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "inuse-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBinary = filepath.Join(dir, "inuse-agent")
	if out, err := exec.Command("go", "build", "-o", agentBinary, "../cmd/inuse-agent").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building inuse-agent: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agent is a running `inuse-agent run`.
type agent struct {
	cmd  *exec.Cmd
	logs chan string
}

// startAgent runs the agent and waits until it says it runs.
func startAgent(t *testing.T, env []string, args ...string) *agent {
	t.Helper()
	cmd := exec.Command(agentBinary, append([]string{"--log-format", "json", "--log-level", "debug", "run"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	a := &agent{cmd: cmd, logs: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case a.logs <- sc.Text():
			default:
			}
		}
		close(a.logs)
	}()
	t.Cleanup(func() { a.kill() })
	a.waitLog(t, "agent running")
	return a
}

// waitLog waits for a log line whose message contains msg.
func (a *agent) waitLog(t *testing.T, msg string) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-a.logs:
			if !ok {
				t.Fatalf("agent exited before logging %q", msg)
			}
			var l struct{ Msg string }
			if json.Unmarshal([]byte(line), &l) == nil && strings.Contains(l.Msg, msg) {
				return
			}
		case <-deadline:
			t.Fatalf("agent never logged %q", msg)
		}
	}
}

// stop ends the agent as systemd or Kubernetes would, and waits.
func (a *agent) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, a.cmd.Wait())
}

// kill ends the agent without a chance to clean up, as a crash would.
func (a *agent) kill() {
	if a.cmd.ProcessState == nil {
		_ = a.cmd.Process.Kill()
		_ = a.cmd.Wait()
	}
}

// waitProfile polls the store until cond holds for the image's profile.
func waitProfile(t *testing.T, st *store.Store, digest string, cond func(*store.Profile) bool) *store.Profile {
	t.Helper()
	var last *store.Profile
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		p, err := st.Profile(context.Background(), digest, time.Now(), store.DefaultLearning)
		if err == nil {
			last = p
			if cond(p) {
				return p
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(last, "", " ")
	t.Fatalf("profile of %s never matched; last:\n%s", digest, b)
	return nil
}

func has(p *store.Profile, sec store.Section, value string) bool {
	for _, e := range p.Sections[sec] {
		if e.Value == value {
			return true
		}
	}
	return false
}

// dynamicRoot writes a root file system with /usr/bin/true, its ELF loader
// and libc copied from the host: the smallest image with shared libraries.
func dynamicRoot(t *testing.T) (dir string, loader string) {
	t.Helper()
	dir = t.TempDir()
	out, err := exec.Command("readelf", "-l", "/usr/bin/true").Output()
	require.NoError(t, err, "readelf (binutils)")
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, "[Requesting program interpreter: "); i >= 0 {
			loader = strings.TrimSuffix(l[i+len("[Requesting program interpreter: "):], "]")
		}
	}
	require.NotEmpty(t, loader)
	for _, f := range []string{"/usr/bin/true", loader, "/usr/lib/x86_64-linux-gnu/libc.so.6"} {
		real, err := filepath.EvalSymlinks(f)
		require.NoError(t, err)
		copyFile(t, real, filepath.Join(dir, f))
	}
	return dir, loader
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(to), 0o755))
	in, err := os.Open(from)
	require.NoError(t, err)
	defer in.Close()
	st, err := in.Stat()
	require.NoError(t, err)
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	require.NoError(t, err)
	defer out.Close()
	_, err = io.Copy(out, in)
	require.NoError(t, err)
}

// tarDir packs dir as a tar stream, as `docker import` takes it.
func tarDir(t *testing.T, dir string) io.Reader {
	t.Helper()
	out, err := exec.Command("tar", "-C", dir, "-cf", "-", ".").Output()
	require.NoError(t, err)
	return strings.NewReader(string(out))
}
