package containerfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/inuse-dev/inuse/internal/cgroups"
)

func requireOpenat2(t *testing.T) {
	t.Helper()
	if err := Supported(); errors.Is(err, ErrUnsupported) {
		t.Skipf("kernel lacks openat2: %v", err)
	}
}

// root makes a container-like root beside a host file that escapes must
// never reach.
func root(t *testing.T) (dir, secret string) {
	t.Helper()
	base := t.TempDir()
	secret = filepath.Join(base, "secret")
	require.NoError(t, os.WriteFile(secret, []byte("host"), 0o600))
	dir = filepath.Join(base, "root")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "app", "lib"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "app", "server"), []byte("container"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "secret"), []byte("in root"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "app", "big"), make([]byte, 4096), 0o644))
	require.NoError(t, os.Symlink(secret, filepath.Join(dir, "app", "abs")))                     // absolute: host path
	require.NoError(t, os.Symlink("../../../secret", filepath.Join(dir, "app", "rel")))          // climbs out
	require.NoError(t, os.Symlink("/app", filepath.Join(dir, "dirlink")))                        // a directory on the way
	require.NoError(t, os.Symlink("/proc/self/root"+secret, filepath.Join(dir, "app", "magic"))) // magic link
	require.NoError(t, unix.Mkfifo(filepath.Join(dir, "app", "fifo"), 0o644))
	return dir, secret
}

func TestOpen(t *testing.T) {
	requireOpenat2(t)
	dir, _ := root(t)
	r, err := OpenRoot(dir)
	require.NoError(t, err)
	defer r.Close()
	for _, tc := range []struct {
		name, path string
		opts       Options
		want       string // content read, or
		err        error  // the error
	}{
		{name: "regular file", path: "/app/server", want: "container"},
		{name: "directory symlink on the way resolves in the root", path: "/dirlink/server", want: "container"},
		{name: "absolute symlink as last component", path: "/app/abs", err: ErrNotRegular},
		{name: "dot-dot in the path", path: "/app/../../secret", err: ErrBadPath},
		{name: "relative path", path: "app/server", err: ErrBadPath},
		{name: "unclean path", path: "/app//server", err: ErrBadPath},
		{name: "fifo does not block", path: "/app/fifo", err: ErrNotRegular},
		{name: "directory", path: "/app", err: ErrNotRegular},
		{name: "oversize", path: "/app/big", opts: Options{MaxSize: 1024}, err: ErrTooLarge},
		{name: "within the cap", path: "/app/server", opts: Options{MaxSize: 1024}, want: "container"},
		{name: "missing", path: "/app/none", err: os.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := r.Open(tc.path, tc.opts)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			defer f.Close()
			b, err := io.ReadAll(f)
			require.NoError(t, err)
			require.Equal(t, tc.want, string(b))
		})
	}
}

// Symbolic links in the middle of a path never leave the root: a
// directory link to "/" is the root's "/", and ".." stops at the root.
func TestEscapesStayInRoot(t *testing.T) {
	requireOpenat2(t)
	dir, secret := root(t)
	require.NoError(t, os.Symlink(filepath.Dir(secret), filepath.Join(dir, "hostdir"))) // absolute, host dir
	require.NoError(t, os.Symlink("../../..", filepath.Join(dir, "app", "lib", "up")))  // climbs
	require.NoError(t, os.Symlink("/proc/self/root", filepath.Join(dir, "procroot")))   // magic link
	require.NoError(t, os.MkdirAll(filepath.Join(dir, filepath.Dir(secret)), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, secret), []byte("in root"), 0o644))
	r, err := OpenRoot(dir)
	require.NoError(t, err)
	defer r.Close()
	for _, p := range []string{"/hostdir/secret", "/app/lib/up/secret"} {
		f, err := r.Open(p, Options{})
		require.NoError(t, err, p)
		b, err := io.ReadAll(f)
		f.Close()
		require.NoError(t, err)
		require.Equal(t, "in root", string(b), "%s reached the host's file", p)
	}
	// The in-root /proc is absent here; a magic link must fail whatever it is.
	_, err = r.Open("/procroot"+secret, Options{})
	require.Error(t, err)
	_, err = r.Open("/app/magic", Options{})
	require.Error(t, err)

	// With a real /proc in the root, magic links are refused.
	host, err := OpenRoot("/")
	require.NoError(t, err)
	defer host.Close()
	f, err := os.Open(secret)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range []string{"/proc/self/root" + secret, ProcPath(f), "/proc/self/cwd/x"} {
		_, err := host.Open(p, Options{})
		require.ErrorIs(t, err, unix.ELOOP, p)
	}
}

func TestDevice(t *testing.T) {
	requireOpenat2(t)
	if os.Geteuid() != 0 {
		t.Skip("making a device node needs root")
	}
	dir, _ := root(t)
	require.NoError(t, unix.Mknod(filepath.Join(dir, "app", "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	r, err := OpenRoot(dir)
	require.NoError(t, err)
	defer r.Close()
	_, err = r.Open("/app/null", Options{})
	require.ErrorIs(t, err, ErrNotRegular)
}

func TestStat(t *testing.T) {
	requireOpenat2(t)
	dir, secret := root(t)
	r, err := OpenRoot(dir)
	require.NoError(t, err)
	defer r.Close()
	st, err := r.Stat("/app/abs", Options{})
	require.NoError(t, err)
	require.Equal(t, uint32(unix.S_IFLNK), st.Mode&unix.S_IFMT, "the link itself, not the host file")
	var host unix.Stat_t
	require.NoError(t, unix.Stat(secret, &host))
	require.NotEqual(t, host.Ino, st.Ino)
	_, err = r.Stat("/app/fifo", Options{})
	require.NoError(t, err, "stat of a FIFO does not open it")
}

func TestCheckPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/app/server", true},
		{"/", true},
		{"", false},
		{"app", false},
		{"/app/../../proc/self/exe", false},
		{"/..", false},
		{"/app/", false},
		{"/app/./x", false},
		{"/a\x00b", false},
	} {
		err := CheckPath(tc.path)
		require.Equal(t, tc.ok, err == nil, "%q: %v", tc.path, err)
		if err != nil {
			require.ErrorIs(t, err, ErrBadPath)
		}
	}
}

// A process is opened only while it is in the named cgroup.
func TestOpenProcess(t *testing.T) {
	requireOpenat2(t)
	h, err := cgroups.Detect()
	if err != nil {
		t.Skipf("no cgroup hierarchy: %v", err)
	}
	own, err := h.OfProcess(os.Getpid())
	require.NoError(t, err)
	p, err := OpenProcess(h, os.Getpid(), h.Path(own))
	require.NoError(t, err)
	defer p.Close()
	exe, err := p.Readlink("exe")
	require.NoError(t, err)
	self, err := os.Executable()
	require.NoError(t, err)
	require.Equal(t, self, exe)
	b, err := p.ReadFile("maps", 64<<20)
	require.NoError(t, err)
	require.NotEmpty(t, b)
	_, err = p.ReadFile("maps", 10)
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = p.Open("root/etc/passwd")
	require.Error(t, err, "no link is followed under /proc/PID")

	r, err := p.Root()
	require.NoError(t, err)
	defer r.Close()
	f, err := r.Open(self, Options{})
	require.NoError(t, err)
	f.Close()

	_, err = OpenProcess(h, os.Getpid(), h.Path(own)+"-other")
	require.ErrorIs(t, err, ErrOtherCgroup)
	_, err = OpenProcess(h, os.Getpid(), "")
	require.ErrorIs(t, err, ErrOtherCgroup)
}
