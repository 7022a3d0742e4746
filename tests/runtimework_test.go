package tests

import (
	"cmp"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
	"github.com/inuse-dev/inuse/tests/runtimes"
)

// runtimeOnlySyscalls are what an OCI runtime's init calls inside the
// container's cgroup to set it up, and /usr/bin/sleep never does.
var runtimeOnlySyscalls = []string{"pivot_root", "mount", "unshare", "setns", "seccomp", "sethostname"}

// What each OCI runtime does in the container's cgroup before it executes
// the entrypoint is not the image's: Debian's runc (linked against the
// host's libseccomp and libc, and re-executing itself from a memfd), crun
// (Debian's, linked the same way) and the upstream static runc, through
// dockerd, and Debian's runc through containerd's CRI. The profile of an
// image whose entrypoint is /usr/bin/sleep holds exactly what sleep loads:
// nothing of the runtime's libraries, files or set-up syscalls. (It sleeps
// past the agent's poll of the cgroup's syscalls.)
func TestRuntimeWorkIsNotTheImages(t *testing.T) {
	testutil.RequirePrivileged(t)
	root, loader := dynamicRoot(t)
	runtimes.CopyFile(t, "/usr/bin/sleep", filepath.Join(root, "usr/bin/sleep"))
	libc := "/usr/lib/x86_64-linux-gnu/libc.so.6"
	entrypoint := []string{"/usr/bin/sleep", "1.5"}
	want := map[store.Section][]string{
		store.Exec:      {"/usr/bin/sleep", loader},
		store.Mapped:    {libc},
		store.FilesRead: {libc},
	}
	crun, err := exec.LookPath("crun")
	require.NoError(t, err, "crun: scripts/runtimes.sh installs Debian's")
	staticRunc := runtimes.CacheBin(t, "static-runc/runc")
	h, err := cgroups.Unified()
	require.NoError(t, err)
	hybrid := h.Dir != "/sys/fs/cgroup"

	check := func(t *testing.T, st *store.Store, digest string) {
		t.Helper()
		p := waitProfile(t, st, digest, func(p *store.Profile) bool {
			return has(p, store.Exec, "/usr/bin/sleep") && has(p, store.Mapped, libc) && len(p.Sections[store.Syscalls]) > 0
		})
		for sec, members := range p.Sections {
			if sec == store.Syscalls || sec == store.Seeded {
				continue
			}
			var got []string
			for _, m := range members {
				got = append(got, m.Value)
			}
			require.ElementsMatch(t, want[sec], got, "section %s", sec)
		}
		var syscalls []string
		for _, m := range p.Sections[store.Syscalls] {
			syscalls = append(syscalls, m.Value)
		}
		require.Contains(t, syscalls, "execve", "the entrypoint's exec")
		for _, s := range runtimeOnlySyscalls {
			require.NotContains(t, syscalls, s, "the runtime's set-up")
		}
	}

	t.Run("docker", func(t *testing.T) {
		d := runtimes.StartDockerdWith(t, map[string]string{"crun": crun, "runc-static": staticRunc})
		srv := redistest.Start(t)
		st, err := store.Open(srv.URL())
		require.NoError(t, err)
		defer st.Close()
		a := runtimes.StartAgent(t, agentBinary, []string{"DOCKER_HOST=" + d.Host}, "--redis", srv.URL(), "--nri-socket", "", "--flush-interval", "200ms")
		for _, rt := range []string{"", "crun", "runc-static"} {
			name := cmp.Or(rt, "runc")
			t.Run(name, func(t *testing.T) {
				if rt == "crun" && hybrid {
					t.Skip("crun refuses hosts with cgroup v1 controllers beside cgroup2 (hybrid), as this one has")
				}
				ref := "inuse-test/true-" + name + ":1"
				digest := d.ImportImage(t, root, ref)
				_, wait := d.RunWith(t, runtimes.RunOptions{Runtime: rt}, ref, entrypoint...)
				wait()
				check(t, st, digest)
			})
		}
		a.Stop(t)
	})

	t.Run("containerd", func(t *testing.T) {
		st, c, a, digest := containerdWithAgent(t, root, "docker.io/inuse-test/sleep:1", entrypoint)
		c.RunToExit(t, c.RunPod(t, "sleep", "default", "uid-runtime-work"), "docker.io/inuse-test/sleep:1", "app", entrypoint...)
		check(t, st, digest)
		a.Stop(t)
	})
}

// What docker exec and CRI ExecSync (kubectl exec, exec probes) run in a
// running container is an exec session: recorded, with what only it
// loaded named in ExecSessions, apart from the workload. A workload that
// sleeps while a session runs cat on a file: cat and the file are the
// session's, sleep, the loader and libc (both load them) the workload's,
// and nothing of the runtime's helper (runc exec's init, linked against
// the host's libseccomp) is anyone's.
func TestExecSessionsUnderRuntimes(t *testing.T) {
	testutil.RequirePrivileged(t)
	root, loader := dynamicRoot(t)
	for _, bin := range []string{"/usr/bin/sleep", "/usr/bin/cat"} {
		runtimes.CopyFile(t, bin, filepath.Join(root, bin))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/session.txt"), []byte("debugging\n"), 0o644))
	libc := "/usr/lib/x86_64-linux-gnu/libc.so.6"
	entrypoint := []string{"/usr/bin/sleep", "30"}
	session := []string{"/usr/bin/cat", "/etc/session.txt"}

	check := func(t *testing.T, st *store.Store, digest string) {
		t.Helper()
		p := waitProfile(t, st, digest, func(p *store.Profile) bool {
			return has(p, store.Exec, "/usr/bin/sleep") && has(p, store.FilesRead, "/etc/session.txt")
		})
		var sessions []string
		for _, e := range p.Sections[store.ExecSessions] {
			sessions = append(sessions, e.Value)
		}
		require.ElementsMatch(t, []string{
			store.SectionMember(store.Exec, "/usr/bin/cat"),
			store.SectionMember(store.FilesRead, "/etc/session.txt"),
		}, sessions, "what only the session loaded")
		require.True(t, has(p, store.Exec, "/usr/bin/cat"), "a session's loads count by default")
		workload, err := st.ProfileSections(t.Context(), digest, time.Now(), store.DefaultLearning, store.Exec, store.Mapped, store.FilesRead)
		require.NoError(t, err)
		want := map[store.Section][]string{
			store.Exec:      {"/usr/bin/sleep", loader},
			store.Mapped:    {libc},
			store.FilesRead: {libc},
		}
		for sec, members := range want {
			var got []string
			for _, e := range workload.Sections[sec] {
				got = append(got, e.Value)
			}
			require.ElementsMatch(t, members, got, "the workload's %s", sec)
		}
	}

	t.Run("docker", func(t *testing.T) {
		d := runtimes.StartDockerd(t)
		srv := redistest.Start(t)
		st, err := store.Open(srv.URL())
		require.NoError(t, err)
		defer st.Close()
		a := runtimes.StartAgent(t, agentBinary, []string{"DOCKER_HOST=" + d.Host}, "--redis", srv.URL(), "--nri-socket", "", "--flush-interval", "200ms")
		digest := d.ImportImage(t, root, "inuse-test/exec-session:1")
		id, _ := d.Run(t, "inuse-test/exec-session:1", entrypoint...)
		waitProfile(t, st, digest, func(p *store.Profile) bool { return has(p, store.Exec, "/usr/bin/sleep") })
		d.Exec(t, id, session...)
		check(t, st, digest)
		a.Stop(t)
	})

	t.Run("containerd", func(t *testing.T) {
		st, c, a, digest := containerdWithAgent(t, root, "docker.io/inuse-test/exec-session:1", entrypoint)
		id := c.Run(t, c.RunPod(t, "exec-session", "default", "uid-exec-session"), "docker.io/inuse-test/exec-session:1", "app", entrypoint...)
		waitProfile(t, st, digest, func(p *store.Profile) bool { return has(p, store.Exec, "/usr/bin/sleep") })
		out, err := c.CRI.ExecSync(t.Context(), &cri.ExecSyncRequest{ContainerId: id, Cmd: session, Timeout: 20})
		require.NoError(t, err)
		require.Zero(t, out.ExitCode, "%s", out.Stderr)
		check(t, st, digest)
		a.Stop(t)
	})
}

// containerdWithAgent starts Redis, containerd with the image of root as
// ref (entrypoint cmd), and the agent connected over NRI.
func containerdWithAgent(t *testing.T, root, ref string, cmd []string) (*store.Store, *runtimes.Containerd, *runtimes.Agent, string) {
	t.Helper()
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	c := runtimes.StartContainerd(t, nil)
	c.ImportPause(t)
	digest := c.ImportImage(t, root, ref, cmd...)
	a := runtimes.StartAgent(t, agentBinary, nil, "--redis", srv.URL(), "--nri-socket", c.NRI, "--docker=false", "--flush-interval", "200ms")
	a.WaitLog(t, "connected to the runtime over NRI")
	return st, c, a, digest
}
