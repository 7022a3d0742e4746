package api

import (
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
)

// createToken creates an integration token through the API.
func (e *env) createToken(name, expires string) CreatedToken {
	e.t.Helper()
	code, body, _ := do(e.t, e.ts.URL, "POST", "/api/v1/tokens", adminKey, strings.NewReader(fmt.Sprintf(`{"name":%q,"expires":%q}`, name, expires)))
	require.Equal(e.t, http.StatusCreated, code, "%s", body)
	var tok CreatedToken
	require.NoError(e.t, json.Unmarshal(body, &tok))
	return tok
}

func TestAuth(t *testing.T) {
	e := newEnv(t, nil)
	e.seedFixtures()
	tok := e.createToken("scraper", "1mo")
	require.True(t, strings.HasPrefix(tok.Secret, "inuse_"))

	expired := e.createToken("old", "1mo")
	js, err := e.rdb.HGet(t.Context(), store.TokensKey, expired.ID).Bytes()
	require.NoError(t, err)
	var rec map[string]any
	require.NoError(t, json.Unmarshal(js, &rec))
	rec["expires"] = time.Now().Add(-time.Second)
	js, _ = json.Marshal(rec)
	require.NoError(t, e.rdb.HSet(t.Context(), store.TokensKey, expired.ID, js).Err())

	const images = "/api/v1/images"
	const runtime = "/api/scanning/eveintegration/v2/runtimeimages"
	tests := []struct {
		name, method, path, auth string
		want                     int
	}{
		{"no credential", "GET", images, "", 401},
		{"basic auth", "GET", images, "Basic " + tok.Secret, 401},
		{"empty bearer", "GET", images, "Bearer ", 401},
		{"wrong secret", "GET", images, "Bearer inuse_" + strings.Repeat("A", 43), 401},
		{"not an inuse secret", "GET", images, "Bearer hello", 401},
		{"expired", "GET", runtime, "Bearer " + expired.Secret, 401},
		{"token reads images", "GET", images, "Bearer " + tok.Secret, 200},
		{"token reads runtimeimages", "GET", runtime, "bearer " + tok.Secret, 200},
		{"token cannot list tokens", "GET", "/api/v1/tokens", "Bearer " + tok.Secret, 403},
		{"token cannot create tokens", "POST", "/api/v1/tokens", "Bearer " + tok.Secret, 403},
		{"token cannot renew", "POST", "/api/v1/tokens/" + tok.ID + "/renew", "Bearer " + tok.Secret, 403},
		{"token cannot delete", "DELETE", "/api/v1/tokens/" + tok.ID, "Bearer " + tok.Secret, 403},
		{"admin lists tokens", "GET", "/api/v1/tokens", "Bearer " + adminKey, 200},
		{"admin reads runtimeimages", "GET", runtime, "Bearer " + adminKey, 200},
		{"admin with a suffix", "GET", images, "Bearer " + adminKey + "x", 401},
		{"spec is public", "GET", "/api/openapi.yaml", "", 200},
		{"page is public", "GET", "/", "", 200},
		{"health is public", "GET", "/healthz", "", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, e.ts.URL+tc.path, strings.NewReader(`{"expires":"1y"}`))
			require.NoError(t, err)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, tc.want, resp.StatusCode)
			if tc.want == 401 {
				require.Equal(t, `Bearer realm="inuse"`, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}

	// The token is still there: the 403s changed nothing.
	toks, err := e.srv.tokens.List(t.Context())
	require.NoError(t, err)
	require.Len(t, toks, 2)
	for _, got := range toks {
		// Only the valid token was ever accepted, so only its use is recorded.
		require.Equal(t, got.ID == tok.ID, !got.LastUsed.IsZero(), "last use of %s", got.Name)
	}
}

// TestNoCORS checks that no answer carries CORS headers, so that a page
// of another origin cannot read the API with a user's credential.
func TestNoCORS(t *testing.T) {
	e := newEnv(t, nil)
	for _, method := range []string{"OPTIONS", "GET"} {
		req, _ := http.NewRequest(method, e.ts.URL+"/api/v1/images", nil)
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Access-Control-Request-Method", "GET")
		req.Header.Set("Authorization", "Bearer "+adminKey)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		for h := range resp.Header {
			require.False(t, strings.HasPrefix(strings.ToLower(h), "access-control-"), "%s %s", method, h)
		}
		require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	}
}

// TestTokenDeletedOnEveryReplica runs two API servers on one Redis: a
// token deleted through one is refused by the other within a second.
func TestTokenDeletedOnEveryReplica(t *testing.T) {
	e := newEnv(t, nil)
	other := httptest.NewServer(e.startServer(nil).Handler())
	t.Cleanup(other.Close)
	tok := e.createToken("replicated", "1mo")
	for _, base := range []string{e.ts.URL, other.URL} {
		code, body, _ := do(t, base, "GET", "/api/v1/images", tok.Secret, nil)
		require.Equal(t, http.StatusOK, code, "%s", body)
	}
	code, body, _ := do(t, e.ts.URL, "DELETE", "/api/v1/tokens/"+tok.ID, adminKey, nil)
	require.Equal(t, http.StatusNoContent, code, "%s", body)
	deleted := time.Now()
	for {
		code, _, _ := do(t, other.URL, "GET", "/api/v1/images", tok.Secret, nil)
		if code == http.StatusUnauthorized {
			break
		}
		require.Less(t, time.Since(deleted), time.Second, "the other replica still accepts the deleted token")
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("deleted token refused by the other replica after %s", time.Since(deleted))
}

// TestNoSecretInLogs logs at debug level while tokens are created, used,
// renewed and deleted, and while requests fail, and finds no secret.
func TestNoSecretInLogs(t *testing.T) {
	e := newEnv(t, nil)
	e.seedFixtures()
	e.waitReports(e.srv, digestApp)
	tok := e.createToken("logged", "6mo")
	for _, path := range []string{"/api/v1/images", "/api/v1/images/" + digestApp + "/vulnerabilities", "/api/scanning/eveintegration/v2/runtimeimages", "/api/v1/tokens"} {
		do(t, e.ts.URL, "GET", path, tok.Secret, nil)
	}
	do(t, e.ts.URL, "GET", "/api/v1/images", tok.Secret+"x", nil)
	do(t, e.ts.URL, "POST", "/api/v1/tokens/"+tok.ID+"/renew", adminKey, strings.NewReader(`{"expires":"1y"}`))
	do(t, e.ts.URL, "DELETE", "/api/v1/tokens/"+tok.ID, adminKey, nil)
	do(t, e.ts.URL, "GET", "/api/v1/images", tok.Secret, nil)
	logs := e.logs.String()
	require.Contains(t, logs, "token created", "the log is captured")
	require.Contains(t, logs, tok.ID)
	require.Contains(t, logs, `"principal":"`+tok.ID+`"`)
	for _, secret := range []string{tok.Secret, strings.TrimPrefix(tok.Secret, "inuse_"), adminKey} {
		require.NotContains(t, logs, secret)
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RateLimit, c.RateBurst = 0.001, 3 })
	a := e.createToken("a", "1mo") // admin: 1 of 3
	b := e.createToken("b", "1mo") // admin: 2 of 3
	for range 3 {
		code, _, _ := do(t, e.ts.URL, "GET", "/api/v1/images", a.Secret, nil)
		require.Equal(t, http.StatusOK, code)
	}
	code, body, h := do(t, e.ts.URL, "GET", "/api/v1/images", a.Secret, nil)
	requireJSONError(t, code, body, http.StatusTooManyRequests)
	require.Equal(t, "1", h.Get("Retry-After"))
	code, _, _ = do(t, e.ts.URL, "GET", "/api/v1/images", b.Secret, nil)
	require.Equal(t, http.StatusOK, code, "another token has its own budget")

	// Wrong credentials from one address share one budget.
	for range 3 {
		code, _, _ := do(t, e.ts.URL, "GET", "/api/v1/images", "guess", nil)
		require.Equal(t, http.StatusUnauthorized, code)
	}
	code, body, _ = do(t, e.ts.URL, "GET", "/api/v1/images", "guess", nil)
	requireJSONError(t, code, body, http.StatusTooManyRequests)
	code, _, _ = do(t, e.ts.URL, "GET", "/api/v1/images", b.Secret, nil)
	require.Equal(t, http.StatusOK, code, "a valid token still passes")
}

// TestServeTLS serves HTTPS from a self-signed certificate made here.
func TestServeTLS(t *testing.T) {
	e := newEnv(t, nil)
	certFile, keyFile, client := testutil.ServerCert(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, ln, certFile, keyFile) }()

	resp, err := client.Get("https://" + ln.Addr().String() + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotNil(t, resp.TLS)

	// Plain HTTP to the TLS port is refused.
	plain, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err == nil {
		plain.Body.Close()
		require.NotEqual(t, http.StatusOK, plain.StatusCode)
	}
	cancel()
	require.NoError(t, <-done)
	_, err = client.Get("https://" + ln.Addr().String() + "/healthz")
	require.Error(t, err, "stopped")
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, nil)
	e.seedFixtures()
	e.waitReports(e.srv, digestApp, digestDB)
	e.get("/api/v1/images", adminKey)
	e.get("/api/v1/images", "")
	e.get("/nope", "")
	code, body := e.get("/metrics", "")
	require.Equal(t, http.StatusOK, code)
	for _, want := range []string{
		`inuse_api_requests_total{code="200",route="GET /api/v1/images"} 1`,
		`inuse_api_requests_total{code="401",route="GET /api/v1/images"} 1`,
		`inuse_api_requests_total{code="404",route="unmatched"} 1`,
		`inuse_api_request_duration_seconds_count{route="GET /api/v1/images"} 2`,
		`inuse_scan_duration_seconds_count{result="ok"}`,
		`inuse_images{report="ready"} 2`,
		`inuse_vulnerabilities{verdict="in_use"} 3`,
		`inuse_vulnerabilities{verdict="unknown"} 3`,
		`inuse_vulnerabilities{verdict="not_observed"} 0`,
	} {
		require.Contains(t, string(body), want)
	}
}

// malformed generates a request that no route should accept.
func malformed(r *mrand.Rand, secret, digest, tokenID string) (method, target string, body string, auth bool) {
	junk := func() string {
		alphabet := []string{"%", "%zz", "\x00", "../", "'", "\"", "{", "}", "[", "é", "\u202e", "-1", "99999999999999999999", "NaN", "true", ";", "=", "&", "+", " ", "a", "0", "\xff"}
		var b strings.Builder
		for range 1 + r.IntN(12) {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		return b.String()
	}
	q := func(k string) string { return k + "=" + url.QueryEscape(junk()) }
	switch r.IntN(14) {
	case 0:
		return "GET", "/api/v1/images?limit=" + url.QueryEscape(junk()) + "x", "", true
	case 1:
		return "GET", "/api/v1/images?" + q("offset") + "x", "", true
	case 2:
		return "GET", "/api/scanning/eveintegration/v2/runtimeimages?limit=" + []string{"0", "501", "-5", "1e3", "", "abc"}[r.IntN(6)], "", true
	case 3:
		return "GET", "/api/scanning/eveintegration/v2/runtimeimages?cursor=" + url.QueryEscape(junk()) + "!", "", true
	case 4:
		return "GET", "/api/v1/images/" + digest + "/vulnerabilities?" + q("severity") + "x", "", true
	case 5:
		return "GET", "/api/v1/images/" + digest + "/vulnerabilities?" + q("sort") + "x", "", true
	case 6:
		return "GET", "/api/v1/images/" + digest + "/packages?" + q("in_use") + "x", "", true
	case 7:
		return "GET", "/api/v1/images/" + url.PathEscape("nope"+junk()), "", true
	case 8:
		return "POST", "/api/v1/tokens", junk(), true
	case 9:
		return "POST", "/api/v1/tokens", `{"name":` + junk() + `,"expires":"1mo"}`, true
	case 10:
		return "POST", "/api/v1/tokens/" + tokenID + "/renew", `{"expires":"` + junk() + `x"}`, true
	case 11:
		return "GET", "/api/v1/images/" + digest + "/sections/" + url.PathEscape("x"+junk()), "", true
	case 12:
		return []string{"PUT", "PATCH", "DELETE"}[r.IntN(3)], "/api/v1/images", "", true
	}
	return "GET", "/api/v1/images?" + junk() + "=1", "", r.IntN(2) == 0
}

// TestMalformedRequests sends 10,000 generated malformed requests over
// loopback and wants only 4xx answers, then a healthy server.
func TestMalformedRequests(t *testing.T) {
	e := newEnv(t, nil)
	e.seedFixtures()
	e.waitReports(e.srv, digestApp)
	tok := e.createToken("fuzz", "1mo")
	const n = 10000
	var (
		wg       sync.WaitGroup
		sent     atomic.Int64
		refused  atomic.Int64
		mu       sync.Mutex
		bad      []string
		byStatus = map[int]int{}
	)
	start := time.Now()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 10 * time.Second}
	for w := range 8 {
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(uint64(w), 42))
			for sent.Load() < n {
				method, target, body, auth := malformed(r, tok.Secret, digestApp, tok.ID)
				secret := tok.Secret
				if strings.HasPrefix(target, "/api/v1/tokens") {
					secret = adminKey
				}
				req, err := http.NewRequest(method, e.ts.URL+target, strings.NewReader(body))
				if err != nil { // the client refuses it: draw another
					refused.Add(1)
					continue
				}
				if sent.Add(1) > n {
					return
				}
				if auth {
					req.Header.Set("Authorization", "Bearer "+secret)
				}
				resp, err := client.Do(req)
				if err != nil {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s %s: %v", method, target, err))
					mu.Unlock()
					continue
				}
				b := make([]byte, 512)
				nr, _ := resp.Body.Read(b)
				resp.Body.Close()
				mu.Lock()
				byStatus[resp.StatusCode]++
				if resp.StatusCode < 400 || resp.StatusCode > 499 {
					bad = append(bad, fmt.Sprintf("%s %s %q -> %d %s", method, target, body, resp.StatusCode, b[:nr]))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d malformed requests in %s (%d more refused by the client): %v", n, time.Since(start).Round(time.Millisecond), refused.Load(), byStatus)
	require.Empty(t, bad)
	total := 0
	for _, c := range byStatus {
		total += c
	}
	require.Equal(t, n, total)

	code, body := e.get("/healthz", "")
	require.Equal(t, http.StatusOK, code, "%s", body)
	var vulns page[json.RawMessage]
	e.getJSON("/api/v1/images/"+digestApp+"/vulnerabilities", &vulns)
	require.EqualValues(t, 5, vulns.Total, "still answers correctly")
}

// TestServeLimits checks the limits of the HTTP server itself: oversized
// headers and garbage request lines get a 4xx, and the server goes on.
func TestServeLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ReadHeaderTimeout, c.IdleTimeout = 300*time.Millisecond, 300*time.Millisecond })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, ln, "", "") }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	tests := []struct {
		name, raw string
		want      string
	}{
		{"oversized header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2*maxHeaderBytes) + "\r\n\r\n", "431"},
		{"garbage request line", "HELLO\r\n\r\n", "400"},
		{"bad protocol", "GET / HTTP/9.9\r\nHost: x\r\n\r\n", "505"},
		{"no host", "GET /healthz HTTP/1.1\r\n\r\n", "400"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			_, _ = c.Write([]byte(tc.raw))
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			require.True(t, strings.HasPrefix(string(buf[:n]), "HTTP/1.1 "+tc.want), "got %q", buf[:n])
		})
	}
	// A client that never finishes its headers is cut off.
	t.Run("slow headers", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		require.NoError(t, err)
		defer c.Close()
		start := time.Now()
		_, err = c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n"))
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		buf := make([]byte, 64)
		_, err = c.Read(buf)
		require.Error(t, err, "closed, not answered")
		require.Less(t, time.Since(start), 3*time.Second)
	})
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
