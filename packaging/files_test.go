package packaging

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/inuse-dev/inuse/internal/testutil"
)

// buildDir holds the binaries the package's tests build, each once.
var buildDir string

func TestMain(m *testing.M) {
	var err error
	if buildDir, err = os.MkdirTemp("", "inuse-packaging-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(buildDir)
	os.Exit(code)
}

// builds are the commands of cmd/ the tests run, built on first use.
var builds = map[string]*build{"inuse-agent": {}, "inuse": {}}

type build struct {
	once sync.Once
	path string
	err  error
}

// binary builds cmd/<name> once for the package's tests and returns its
// path. inuse links the scanner and takes longest: only the tests that
// run it build it.
func binary(t *testing.T, name string) string {
	t.Helper()
	b, ok := builds[name]
	require.True(t, ok, "no command %s in cmd/", name)
	b.once.Do(func() { b.path, b.err = testutil.Build(buildDir, "github.com/inuse-dev/inuse/cmd/"+name) })
	require.NoError(t, b.err)
	return b.path
}

// helpOf is what `<name> [args...] --help` prints.
func helpOf(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary(t, name), append(slices.Clip(args), "--help")...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(out)
}

// commandHelp is the help of a binary and of one of its commands: together
// they name every flag of the command, the global ones included, and their
// variables.
func commandHelp(t *testing.T, name, command string) string {
	t.Helper()
	return helpOf(t, name) + helpOf(t, name, command)
}

// unitDirectives returns the Key=Value lines of a systemd unit by key.
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, "%s: %q", path, line)
		out[k] = append(out[k], v)
	}
	require.NoError(t, sc.Err())
	return out
}

// systemd itself reads the units: systemd-analyze verify, in a root with
// the host's system units and the binaries where the units expect them,
// prints nothing for a unit it fully understands (unknown keys and bad
// values are only warnings, so any output fails the test).
func TestSystemdUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	require.NoError(t, err, "systemd-analyze (Debian's systemd package) checks the units")
	root := t.TempDir()
	var system string
	for _, dir := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			system = dir
			break
		}
	}
	require.NotEmpty(t, system, "no system unit directory to verify against")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755))
	require.NoError(t, exec.Command("cp", "-a", system, filepath.Join(root, "usr/lib/systemd/system")).Run())
	for _, dir := range []string{"usr/local/bin", "etc/systemd/system"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, dir), 0o755))
	}
	for _, bin := range []string{"inuse-agent", "inuse"} {
		require.NoError(t, os.WriteFile(filepath.Join(root, "usr/local/bin", bin), []byte("#!/bin/sh\n"), 0o755))
	}
	var units []string
	for _, u := range []string{"inuse-agent.service", "inuse-serve.service"} {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		require.NoError(t, err)
		dst := filepath.Join(root, "etc/systemd/system", u)
		require.NoError(t, os.WriteFile(dst, b, 0o644))
		units = append(units, dst)
	}
	out, err := exec.Command(analyze, append([]string{"verify", "--root=" + root}, units...)...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify has remarks")
}

// The agent's unit grants the chart's capabilities, no more; serve's none.
func TestSystemdUnitsCapabilities(t *testing.T) {
	agent := unitDirectives(t, "systemd/inuse-agent.service")
	var want []string
	for _, c := range documentedCapabilities(t) {
		want = append(want, "CAP_"+c)
	}
	require.Len(t, agent["CapabilityBoundingSet"], 1)
	require.Empty(t, cmp.Diff(want, strings.Fields(agent["CapabilityBoundingSet"][0])))
	require.Equal(t, []string{"root"}, agent["User"])
	require.NotContains(t, agent, "AmbientCapabilities", "root needs no ambient set")
	require.Equal(t, []string{"yes"}, agent["NoNewPrivileges"])

	serve := unitDirectives(t, "systemd/inuse-serve.service")
	require.Equal(t, []string{""}, serve["CapabilityBoundingSet"], "serve holds no capability")
	require.Equal(t, []string{"yes"}, serve["DynamicUser"], "serve runs as a transient non-root user")
	require.NotContains(t, serve, "User")
	require.Contains(t, serve["ExecStart"][0], "--admin-token-file %d/admin-token")
	require.Equal(t, []string{"admin-token:/etc/inuse/admin-token"}, serve["LoadCredential"])
}

// envVars returns the variables an env file sets or shows commented out.
func envVars(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^#?(INUSE_[A-Z0-9_]+)=`).FindAllStringSubmatch(string(b), -1) {
		out = append(out, m[1])
	}
	require.NotEmpty(t, out, path)
	return out
}

// Every variable of the agent's env file, and every key of the NRI plugin
// configuration, is a real setting of `inuse-agent run`: a typo there
// would be ignored silently by the agent.
func TestAgentSettingsExist(t *testing.T) {
	help := commandHelp(t, "inuse-agent", "run")
	for _, v := range envVars(t, "systemd/agent.env") {
		require.Contains(t, help, "$"+v, "agent.env sets %s, which `inuse-agent run` does not read", v)
	}
	b, err := os.ReadFile("nri/05-inuse.conf")
	require.NoError(t, err)
	conf := map[string]any{}
	require.NoError(t, yaml.Unmarshal(b, &conf))
	require.Contains(t, conf, "redis")
	// The commented-out examples are settings too.
	keys := slices.Collect(func(yield func(string) bool) {
		for k := range conf {
			yield(k)
		}
	})
	for _, m := range regexp.MustCompile(`(?m)^# ([a-z][a-z-]+):`).FindAllStringSubmatch(string(b), -1) {
		keys = append(keys, m[1])
	}
	for _, k := range keys {
		require.Contains(t, help, "--"+k+" ", "05-inuse.conf sets %s, which is no flag of `inuse-agent run`", k)
	}
}

// The serve env file names only the settings the unit and the brief of
// `inuse serve` use, each one that `inuse serve` really reads.
func TestServeEnvFile(t *testing.T) {
	got := envVars(t, "systemd/serve.env")
	require.Subset(t, []string{"INUSE_REDIS_URL", "INUSE_LISTEN", "INUSE_TLS_CERT", "INUSE_TLS_KEY", "INUSE_LOG_LEVEL"}, got)
	require.NotContains(t, got, "INUSE_ADMIN_TOKEN", "the admin credential is a systemd credential, not a variable")
	serve := commandHelp(t, "inuse", "serve")
	for _, v := range got {
		require.Contains(t, serve, "$"+v, "serve.env sets %s, which `inuse serve` does not read", v)
	}
}

// The containerd snippet enables NRI on the socket the agent dials.
func TestContainerdSnippet(t *testing.T) {
	b, err := os.ReadFile("containerd/nri.toml")
	require.NoError(t, err)
	s := string(b)
	require.Contains(t, s, `[plugins."io.containerd.nri.v1.nri"]`)
	require.Regexp(t, `(?m)^\s*disable = false$`, s)
	require.Regexp(t, `(?m)^\s*socket_path = "/var/run/nri/nri.sock"$`, s)
	require.Regexp(t, `(?m)^\s*plugin_path = "/opt/nri/plugins"$`, s)
	require.Regexp(t, `(?m)^\s*plugin_config_path = "/etc/nri/conf.d"$`, s)
	require.Contains(t, commandHelp(t, "inuse-agent", "run"), "/var/run/nri/nri.sock", "the agent's default NRI socket")
}

// dockerfile is the instructions of a Dockerfile, continuation lines
// joined, comments dropped.
type instruction struct{ cmd, args string }

func dockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	require.Zero(t, cur.Len(), "a continuation runs past the end")
	return out
}

// Without a container engine here the Dockerfile cannot be built; these
// are the properties that can be checked from its text: a golang:1.26
// builder making static binaries, final images without a shell or libc
// (distroless static), and serve as uid 65532.
func TestDockerfile(t *testing.T) {
	stages := map[string][]instruction{}
	var order []string
	current := ""
	for _, in := range dockerfile(t, "Dockerfile") {
		switch in.cmd {
		case "ARG":
			if current == "" {
				require.Equal(t, "GO_VERSION=1.26", in.args)
				continue
			}
		case "FROM":
			f := strings.Fields(in.args)
			require.Len(t, f, 3, "FROM image AS name: %q", in.args)
			require.Equal(t, "AS", strings.ToUpper(f[1]))
			current = f[2]
			order = append(order, current)
		}
		require.NotEmpty(t, current, "%s before the first FROM", in.cmd)
		stages[current] = append(stages[current], in)
	}
	require.Equal(t, []string{"build", "agent", "serve"}, order)
	known := []string{"ARG", "FROM", "WORKDIR", "COPY", "RUN", "USER", "ENV", "EXPOSE", "ENTRYPOINT", "CMD"}
	for name, ins := range stages {
		for _, in := range ins {
			require.Contains(t, known, in.cmd, "stage %s", name)
		}
	}
	find := func(stage, cmd string) []string {
		var out []string
		for _, in := range stages[stage] {
			if in.cmd == cmd {
				out = append(out, in.args)
			}
		}
		return out
	}
	require.Equal(t, []string{"docker.io/library/golang:${GO_VERSION}-bookworm AS build"}, find("build", "FROM"))
	builds := strings.Join(find("build", "RUN"), "\n")
	require.Contains(t, builds, "CGO_ENABLED=0 go build -trimpath")
	require.Contains(t, builds, "./cmd/inuse-agent ./cmd/inuse")
	for _, c := range find("build", "COPY") {
		for _, src := range strings.Fields(c)[:len(strings.Fields(c))-1] {
			if src != "." {
				_, err := os.Stat(filepath.Join("..", src))
				require.NoError(t, err, "COPY %s: not in the build context", src)
			}
		}
	}
	for stage, want := range map[string]struct{ from, user, bin string }{
		"agent": {"gcr.io/distroless/static-debian12:latest AS agent", "0:0", "/usr/local/bin/inuse-agent"},
		"serve": {"gcr.io/distroless/static-debian12:nonroot AS serve", "65532:65532", "/usr/local/bin/inuse"},
	} {
		require.Equal(t, []string{want.from}, find(stage, "FROM"), stage)
		require.Equal(t, []string{want.user}, find(stage, "USER"), stage)
		require.Equal(t, []string{`["` + want.bin + `"]`}, find(stage, "ENTRYPOINT"), stage)
		require.Contains(t, find(stage, "COPY")[0], "--from=build /out/"+filepath.Base(want.bin)+" "+want.bin)
	}
	// The build context leaves out what must never reach an image or a
	// registry: built binaries and the git history.
	ignore, err := os.ReadFile("Dockerfile.dockerignore")
	require.NoError(t, err)
	for _, p := range []string{".git", "bin/"} {
		require.Regexp(t, `(?m)^`+regexp.QuoteMeta(p)+`$`, string(ignore))
	}
}
