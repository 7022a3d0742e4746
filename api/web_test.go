package api

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// browser starts Debian's chromium, headless, with a fresh profile. A
// missing chromium fails the test: the page is tested in CI, where
// `make deps` installs it.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is missing (run `make deps`, or apt-get install chromium): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.NoDefaultBrowserCheck,
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	require.NoError(t, chromedp.Do(ctx), "starting chromium")
	return ctx
}

// run runs one action that returns a value.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	require.NoError(t, err)
	return v
}

// screenshot saves the page when INUSE_SCREENSHOT_DIR is set, and checks
// that something was rendered either way.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := run(t, ctx, chromedp.FullScreenshot(100))
	require.Greater(t, len(png), 10000, "a rendered page, not a blank one")
	if dir := os.Getenv("INUSE_SCREENSHOT_DIR"); dir != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), png, 0o644))
	}
}

type css = chromedp.CSS

// TestWebPage drives the embedded page in headless Chromium: log in, see
// the images with their share in use, open one and see its In Use marks,
// filter and sort them, see its profile, then create a token, see it
// listed, and delete it.
func TestWebPage(t *testing.T) {
	e := newEnv(t, nil)
	e.seedFixtures()
	e.waitReports(e.srv, digestApp, digestDB)
	ctx := browser(t)
	appRow := css(`#images tr[data-digest="` + digestApp + `"]`)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(e.ts.URL+"/"),
		chromedp.WaitVisible(css("#login-secret")),
		chromedp.SendKeys(css("#login-secret"), adminKey),
		chromedp.Click(css(`#login-form button[type="submit"]`)),
		chromedp.WaitVisible(appRow),
	))
	require.Equal(t, "2", run(t, ctx, chromedp.Evaluate[string](`document.querySelectorAll("#images tbody tr").length + ""`)))
	require.Equal(t, "40.0 %", strings.TrimSpace(run(t, ctx, chromedp.Text(appRow+" td.share"))), "2 of 5 vulnerabilities in use")
	screenshot(t, ctx, "images.png")

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(appRow),
		chromedp.WaitVisible(css(`#vulns tr[data-vuln="GHSA-9wx4-h78v-vm56"]`)),
	))
	require.Equal(t, "In use", strings.TrimSpace(run(t, ctx, chromedp.Text(css(`#vulns tr[data-vuln="GHSA-9wx4-h78v-vm56"] td.inuse-col`)))))
	require.Equal(t, "CVE-2025-0001,GHSA-9wx4-h78v-vm56",
		run(t, ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('#vulns tr[data-verdict="in_use"]')].map(r => r.dataset.vuln).sort().join(",")`)),
		"libc6 and requests are loaded")
	first := run(t, ctx, chromedp.Text(css(`#vulns tbody tr:first-child`)))
	require.Contains(t, first, "CVE-2023-45853", "most severe first")
	require.Contains(t, first, "Critical")
	screenshot(t, ctx, "image.png")

	// Filters and sorting.
	visible := func() string {
		return run(t, ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#vulns tbody tr[data-vuln]")].map(r => r.dataset.vuln).join(",")`))
	}
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(css("#filter-inuse"))))
	require.Equal(t, "GHSA-9wx4-h78v-vm56,CVE-2025-0001", visible(), "in use only, most severe first")
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(css("#sort-severity"))))
	require.Equal(t, "CVE-2025-0001,GHSA-9wx4-h78v-vm56", visible(), "least severe first")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(css("#filter-inuse")),
		chromedp.SetValue(css("#filter-severity"), "high"),
	))
	run(t, ctx, chromedp.Evaluate[bool](`document.querySelector("#filter-severity").dispatchEvent(new Event("change"))`))
	require.Equal(t, "CVE-2024-5535", visible())

	// The profile sections.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.WaitVisible(css("#section-entries")),
		chromedp.Click(css(`#sections button[data-section="exec"]`)),
		chromedp.WaitVisible(css(`#section-entries th`)),
	))
	require.Eventually(t, func() bool {
		return strings.Contains(run(t, ctx, chromedp.Text(css("#section-entries"))), "/usr/bin/python3.11")
	}, 5*time.Second, 50*time.Millisecond)

	// Tokens: create, see the secret once and the token listed, delete.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(css("#nav-tokens")),
		chromedp.WaitVisible(css("#token-form")),
		chromedp.SendKeys(css("#token-name"), "grafana scraper"),
		chromedp.SetValue(css("#token-expires"), "6mo"),
		chromedp.Click(css(`#token-form button[type="submit"]`)),
		chromedp.WaitVisible(css("#token-secret")),
	))
	secret := run(t, ctx, chromedp.Text(css("#token-secret")))
	listed := run(t, ctx, chromedp.Text(css("#tokens tbody")))
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(css("#copy-secret"))))
	require.True(t, strings.HasPrefix(secret, "inuse_"), secret)
	require.Contains(t, listed, "grafana scraper")
	require.Contains(t, listed, time.Now().UTC().AddDate(0, 6, 0).Format(time.DateOnly))
	screenshot(t, ctx, "tokens.png")
	code, _, _ := do(t, e.ts.URL, "GET", "/api/scanning/eveintegration/v2/runtimeimages", secret, nil)
	require.Equal(t, http.StatusOK, code, "the secret the page showed works")

	toks, err := e.srv.tokens.List(t.Context())
	require.NoError(t, err)
	require.Len(t, toks, 1)
	id := toks[0].ID
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(e.ts.URL+"/#/images"),
		chromedp.WaitVisible(appRow),
		chromedp.Navigate(e.ts.URL+"/#/tokens"),
		chromedp.WaitVisible(css(fmt.Sprintf(`tr[data-token="%s"]`, id))),
	))
	require.Equal(t, "gone", run(t, ctx, chromedp.Evaluate[string](`document.querySelector("#token-secret") === null ? "gone" : "shown"`)), "the secret is shown once")
	// Renew for a year from now.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SetValue(css("#renew-"+id), "1y"),
		chromedp.Click(css(fmt.Sprintf(`button[data-renew="%s"]`, id))),
	))
	yearOn := time.Now().UTC().AddDate(1, 0, 0).Format(time.DateOnly)
	require.Eventually(t, func() bool {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector('tr[data-token="%s"] td.expires') || {}).textContent || ""`, id)))
		return err == nil && strings.Contains(v, yearOn)
	}, 10*time.Second, 50*time.Millisecond, "renewed expiry shown")
	toks, err = e.srv.tokens.List(t.Context())
	require.NoError(t, err)
	require.Equal(t, yearOn, toks[0].Expires.Format(time.DateOnly))
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(css(fmt.Sprintf(`button[data-delete="%s"]`, id))),
		chromedp.WaitVisible(css(fmt.Sprintf(`button[data-confirm-delete="%s"]`, id))),
	))
	screenshot(t, ctx, "delete.png")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(css(fmt.Sprintf(`button[data-confirm-delete="%s"]`, id))),
		chromedp.WaitNotPresent(css(fmt.Sprintf(`tr[data-token="%s"]`, id))),
	))
	code, _, _ = do(t, e.ts.URL, "GET", "/api/scanning/eveintegration/v2/runtimeimages", secret, nil)
	require.Equal(t, http.StatusUnauthorized, code, "deleted through the page")
}

// TestWebPageBadLogin checks that a wrong credential brings the login
// back with a message.
func TestWebPageBadLogin(t *testing.T) {
	e := newEnv(t, nil)
	ctx := browser(t)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(e.ts.URL+"/#/tokens"),
		chromedp.WaitVisible(css("#login-secret")),
		chromedp.SendKeys(css("#login-secret"), "wrong"),
		chromedp.Click(css(`#login-form button[type="submit"]`)),
		chromedp.WaitVisible(css("#login-error")),
	))
	require.Contains(t, run(t, ctx, chromedp.Text(css("#login-error"))), "refused")
}
