package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/api"
	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
)

func TestTokenCommands(t *testing.T) {
	srv := redistest.Start(t)
	out, err := runInuse(t, "token", "create", "--redis", srv.URL(), "--name", "sysdig scraper", "--expires", "1mo")
	require.NoError(t, err)
	secret := regexp.MustCompile(`inuse_[A-Za-z0-9_-]{43}`).FindString(out)
	require.NotEmpty(t, secret, "the secret is printed: %s", out)
	id := regexp.MustCompile(`id\s+([0-9a-f]{16})`).FindStringSubmatch(out)[1]
	require.Contains(t, out, "not kept")

	out, err = runInuse(t, "token", "list", "--redis", srv.URL())
	require.NoError(t, err)
	require.Contains(t, out, id)
	require.Contains(t, out, "sysdig scraper")
	require.Contains(t, out, time.Now().AddDate(0, 1, 0).UTC().Format(time.DateOnly))
	require.Contains(t, out, "never")
	require.NotContains(t, out, secret)

	out, err = runInuse(t, "token", "renew", "--redis", srv.URL(), "--expires", "1y", id)
	require.NoError(t, err)
	require.Contains(t, out, time.Now().AddDate(1, 0, 0).UTC().Format(time.DateOnly))

	out, err = runInuse(t, "token", "list", "--redis", srv.URL(), "--format", "json")
	require.NoError(t, err)
	require.NotContains(t, out, secret)
	require.NotContains(t, out, "sha256", "not even the hash")
	var toks []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &toks))
	require.Len(t, toks, 1)
	require.Equal(t, id, toks[0]["id"])
	require.Equal(t, []string{"created", "expires", "id", "name"}, sortedKeys(toks[0]))

	_, err = runInuse(t, "token", "delete", "--redis", srv.URL(), id)
	require.NoError(t, err)
	out, err = runInuse(t, "token", "list", "--redis", srv.URL(), "--format", "json")
	require.NoError(t, err)
	require.JSONEq(t, "[]", out)

	tests := []struct {
		name string
		args []string
	}{
		{"bad expiry", []string{"token", "create", "--redis", srv.URL(), "--name", "x", "--expires", "2w"}},
		{"no name", []string{"token", "create", "--redis", srv.URL()}},
		{"renew unknown", []string{"token", "renew", "--redis", srv.URL(), "0123456789abcdef"}},
		{"delete unknown", []string{"token", "delete", "--redis", srv.URL(), id}},
		{"delete no id", []string{"token", "delete", "--redis", srv.URL()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runInuse(t, tc.args...)
			require.Error(t, err)
		})
	}
}

func sortedKeys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

// TestServeCommand runs `inuse serve` with the admin credential from a
// file, uses a token created with `inuse token`, and stops it.
func TestServeCommand(t *testing.T) {
	srv := redistest.Start(t)
	seed(t, srv.URL())
	out, err := runInuse(t, "token", "create", "--redis", srv.URL(), "--name", "ci")
	require.NoError(t, err)
	secret := regexp.MustCompile(`inuse_[A-Za-z0-9_-]{43}`).FindString(out)

	adminFile := filepath.Join(t.TempDir(), "admin")
	require.NoError(t, os.WriteFile(adminFile, []byte("a-long-enough-admin-secret\n"), 0o600))
	addr := testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := runInuseCtx(ctx, t, "serve", "--redis", srv.URL(), "--listen", addr, "--admin-token-file", adminFile,
			"--cache-dir", t.TempDir(), "--poll-interval", "100ms")
		done <- err
	}()
	base := "http://" + addr
	testutil.WaitHealthy(t, base+"/healthz", 10*time.Second)

	get := func(path, secret string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/api/v1/images", secret)
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, digest)
	code, _ = get("/api/v1/tokens", secret)
	require.Equal(t, http.StatusForbidden, code, "integration tokens cannot manage tokens")
	code, body = get("/api/v1/tokens", "a-long-enough-admin-secret")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"name":"ci"`)
	// The scanner has no SBOM of the image: the report says why.
	require.Eventually(t, func() bool {
		_, body := get("/api/v1/images/"+digest, secret)
		return strings.Contains(body, `"report_status":"failed"`) && strings.Contains(body, "not in the SBOM cache")
	}, 10*time.Second, 100*time.Millisecond)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestServeFlags(t *testing.T) {
	srv := redistest.Start(t)
	short := filepath.Join(t.TempDir(), "short")
	require.NoError(t, os.WriteFile(short, []byte("short"), 0o600))
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"short admin secret", []string{"--admin-token-file", short}, "at least 16"},
		{"missing admin file", []string{"--admin-token-file", "/nonexistent"}, "admin-token-file"},
		{"bad catalog source", []string{"--catalog-from", "registry"}, "catalog-from"},
		{"cert without key", []string{"--tls-cert", short}, "both a certificate and a key"},
		{"bad tls mode", []string{"--tls", "auto"}, "--tls (INUSE_TLS) must be off or self-signed"},
		{"unreadable data dir", []string{"--tls", "self-signed", "--data-dir", short}, "self-signed certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--redis", srv.URL(), "--listen", testutil.FreeAddr(t), "--cache-dir", t.TempDir()}, tc.args...)
			_, err := runInuse(t, args...)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// runInuseCtx is runInuse with its own context.
func runInuseCtx(ctx context.Context, t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := cliapp.New("inuse", "test", commands)
	var out strings.Builder
	app.Writer = &out
	err := app.RunContext(ctx, append([]string{"inuse", "--log-level", "warn"}, args...))
	return out.String(), err
}

// TestServeInUseLatency runs `inuse serve` with the real scanner over an
// image `inuse scan` cached (a debootstrapped Debian root), then writes
// the profile entry the agent writes when a container loads zlib, and
// measures how long the API takes to show zlib's vulnerability In Use.
func TestServeInUseLatency(t *testing.T) {
	root, cache, digest, srv, st := debianSetup(t)
	_, err := runInuse(t, "scan", "--rootfs", root, "--cache-dir", cache, "--format", "json")
	require.NoError(t, err)
	apply := func(d *store.Delta) {
		_, err := st.Apply(t.Context(), map[string]*store.Delta{digest: d}, time.Now(), store.DefaultLearning)
		require.NoError(t, err)
	}
	d := store.NewDelta()
	d.AddTo(store.Names, "bookworm-root")
	d.AddTo(store.Workloads, store.Workload{Namespace: "prod", Kind: "Deployment", Name: "web", Container: "app"}.Member())
	d.Add(store.FilesRead, "/etc/hosts", time.Now().UnixMilli())
	apply(d)

	const admin = "a-long-enough-admin-secret"
	t.Setenv("INUSE_ADMIN_TOKEN", admin)
	addr := testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := runInuseCtx(ctx, t, "serve", "--redis", srv.URL(), "--listen", addr, "--cache-dir", cache)
		done <- err
	}()
	defer func() { cancel(); <-done }()
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	vulns := "/api/v1/images/" + digest + "/vulnerabilities"
	require.Eventually(t, func() bool {
		code, body := get(vulns)
		return code == http.StatusOK && strings.Contains(body, "CVE-2099-0001")
	}, 60*time.Second, 100*time.Millisecond, "the first report")
	_, body := get(vulns + "?in_use=true")
	require.NotContains(t, body, "CVE-2099-0001", "zlib not loaded yet")

	d = store.NewDelta()
	d.Add(store.FilesRead, "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13", time.Now().UnixMilli())
	loaded := time.Now()
	apply(d)
	for {
		_, body := get(vulns + "?in_use=true")
		if strings.Contains(body, "CVE-2099-0001") {
			break
		}
		require.Less(t, time.Since(loaded), 10*time.Second, "zlib's vulnerability not In Use 10 s after the load")
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("real scanner: load -> In Use in the API after %s (poll interval 1 s)", time.Since(loaded).Round(time.Millisecond))
	// The runtime index is written by the poll that stored the report: a
	// moment after the report answers.
	var view string
	require.Eventually(t, func() bool {
		var code int
		code, view = get("/api/scanning/eveintegration/v2/runtimeimages")
		return code == http.StatusOK && strings.Contains(view, `"name":"zlib1g"`)
	}, 5*time.Second, 50*time.Millisecond, "zlib1g in the runtime view: %s", view)
	require.Contains(t, view, `"osFamily":"debian"`)
}

// TestServeSelfSigned starts the `inuse serve` binary with --tls
// self-signed and no certificate: HTTPS answers at once to a client that
// pins the fingerprint printed in the log, the tokens list shows it, and
// a restart presents the same certificate.
func TestServeSelfSigned(t *testing.T) {
	srv := redistest.Start(t)
	inuse, err := testutil.Build(t.TempDir(), "github.com/inuse-dev/inuse/cmd/inuse")
	require.NoError(t, err)
	const admin = "a-long-enough-admin-secret"
	dataDir := filepath.Join(t.TempDir(), "data")

	// start runs serve until the test ends or stop is called, and returns
	// the fingerprint its log printed.
	start := func() (addr, pin string, stop func()) {
		addr = testutil.FreeAddr(t)
		cmd := exec.Command(inuse, "--log-format", "json", "serve", "--redis", srv.URL(), "--listen", addr,
			"--tls", "self-signed", "--data-dir", dataDir, "--cache-dir", t.TempDir())
		cmd.Env = append(os.Environ(), "INUSE_ADMIN_TOKEN="+admin)
		stderr, err := cmd.StderrPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		stopped := false
		stop = func() {
			if !stopped {
				stopped = true
				require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
				require.NoError(t, cmd.Wait())
			}
		}
		t.Cleanup(stop)
		lines := bufio.NewScanner(stderr)
		for lines.Scan() {
			var line struct {
				Msg    string `json:"msg"`
				SHA256 string `json:"sha256"`
			}
			if json.Unmarshal(lines.Bytes(), &line) == nil && line.Msg == "TLS certificate" {
				pin = line.SHA256
				break
			}
		}
		require.Regexp(t, `^([0-9A-F]{2}:){31}[0-9A-F]{2}$`, pin, "the fingerprint is printed at start")
		go func() { _, _ = io.Copy(io.Discard, stderr) }()
		return addr, pin, stop
	}

	addr, pin, stop := start()
	client := pinnedClient(pin)
	testutil.WaitHealthyWith(t, client, "https://"+addr+"/healthz", 10*time.Second)
	req, err := http.NewRequest("GET", "https://"+addr+"/api/v1/tokens", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := client.Do(req)
	require.NoError(t, err)
	var list struct {
		TLS struct {
			SHA256 string `json:"sha256"`
		} `json:"tls"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	resp.Body.Close()
	require.Equal(t, pin, list.TLS.SHA256, "the tokens page shows the fingerprint")
	for _, f := range []string{"tls.crt", "tls.key"} {
		st, err := os.Stat(filepath.Join(dataDir, f))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}
	if plain, err := http.Get("http://" + addr + "/healthz"); err == nil {
		plain.Body.Close()
		require.NotEqual(t, http.StatusOK, plain.StatusCode, "no plain HTTP")
	}
	stop()

	addr, again, _ := start()
	require.Equal(t, pin, again, "a restart keeps the certificate")
	testutil.WaitHealthyWith(t, client, "https://"+addr+"/healthz", 10*time.Second)
}

// pinnedClient trusts only the certificate whose SHA-256 fingerprint is
// pin, as an integration that pinned a self-signed certificate does.
func pinnedClient(pin string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Pinning replaces the chain check: the fingerprint is the trust.
		InsecureSkipVerify: true, //nolint:gosec // verified by VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if got := api.Fingerprint(raw[0]); got != pin {
				return fmt.Errorf("certificate %s, pinned %s", got, pin)
			}
			return nil
		},
	}}}
}
