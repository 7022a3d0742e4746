package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// fuzzEnv is one server for every input of a fuzz target, with reports
// ready and the scanner's own enrich parser behind POST enrich.
func fuzzEnv(t testing.TB) *env {
	e := newEnv(t, func(c *Config) { c.Formats.Enrich = scanner.Enrich })
	e.seedFixtures()
	e.waitReports(e.srv, digestApp, digestDB)
	return e
}

// serve runs one request through the handler in process and checks the
// contract every answer keeps: no 5xx, and errors are {"error": "..."}.
func (e *env) serve(t *testing.T, method, target, secret, body string) *httptest.ResponseRecorder {
	t.Helper()
	req, err := http.NewRequest(method, "http://inuse.test"+target, strings.NewReader(body))
	if err != nil {
		t.Skip("not a request a client can send")
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("%s %s %q: %d %s", method, target, body, rec.Code, rec.Body)
	}
	if rec.Code >= 400 && rec.Code != http.StatusMethodNotAllowed {
		var e map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e["error"] == "" {
			t.Fatalf("%s %s: error body is not {\"error\":...}: %s", method, target, rec.Body)
		}
	}
	return rec
}

func FuzzRuntimeImagesQuery(f *testing.F) {
	for _, s := range []string{"", "limit=1", "limit=500&clusterName=x", "limit=0", "limit=501", "cursor=djEKeA", "cursor=%zz", "limit=1&cursor=" + encodeCursor(digestApp+"\nprod|Deployment|web|app"), "clusterName=%00", "limit=-1", "limit=1e2"} {
		f.Add(s)
	}
	e := fuzzEnv(f)
	f.Fuzz(func(t *testing.T, q string) {
		rec := e.serve(t, "GET", "/api/scanning/eveintegration/v2/runtimeimages?"+q, adminKey, "")
		if rec.Code == http.StatusOK {
			var out RuntimeImages
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatalf("200 is not the runtimeimages shape: %v", err)
			}
			if out.Page.Returned != len(out.Data) || out.Page.Returned > runtimeMaxLimit {
				t.Fatalf("page says %d, data has %d", out.Page.Returned, len(out.Data))
			}
		}
	})
}

func FuzzCursor(f *testing.F) {
	for _, s := range []string{"", digestApp + "\nprod|Deployment|web|app", "\n", "x\ny", strings.Repeat("a", 3000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		c := encodeCursor(key)
		got, err := decodeCursor(c)
		switch {
		case key == "" || !strings.Contains(key, "\n"):
			if err == nil {
				t.Fatalf("a key without a workload decoded: %q", key)
			}
		case len(c) > maxCursorLen:
			if err == nil {
				t.Fatal("an over-long cursor decoded")
			}
		case err != nil || got != key:
			t.Fatalf("round trip %q -> %q, %v", key, got, err)
		}
		// Any string as a cursor: an error or a key, never a panic.
		_, _ = decodeCursor(key)
	})
}

func FuzzImageQueries(f *testing.F) {
	for _, s := range [][2]string{
		{"vulnerabilities", "in_use=true&severity=critical,high&sort=-severity"},
		{"vulnerabilities", "severity=,&limit=1&offset=99999999999"},
		{"packages", "verdict=in_use&type=deb"},
		{"packages", "in_use=maybe"},
		{"sections/files:read", "limit=1000&offset=1"},
		{"sections/%2e%2e", ""},
		{"", "limit=1"},
	} {
		f.Add(s[0], s[1])
	}
	e := fuzzEnv(f)
	f.Fuzz(func(t *testing.T, sub, q string) {
		target := "/api/v1/images/" + digestApp
		if sub != "" {
			target += "/" + sub
		}
		e.serve(t, "GET", target+"?"+q, adminKey, "")
		e.serve(t, "GET", "/api/v1/images?"+q, adminKey, "")
	})
}

func FuzzTokenBody(f *testing.F) {
	for _, s := range []string{`{"name":"a","expires":"1mo"}`, `{"name":"","expires":"1y"}`, `{"expires":"3mo"}`, `{`, `[]`, `null`, `{"name":"a","expires":"1mo","x":1}`, `{"name":"\u0000","expires":"6mo"}`} {
		f.Add(s)
	}
	e := fuzzEnv(f)
	f.Fuzz(func(t *testing.T, body string) {
		rec := e.serve(t, "POST", "/api/v1/tokens", adminKey, body)
		if rec.Code == http.StatusCreated {
			var tok CreatedToken
			if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil || !store.ValidTokenName(tok.Name) || !utf8.ValidString(tok.Name) {
				t.Fatalf("created a token from %q: %s", body, rec.Body)
			}
			e.serve(t, "DELETE", "/api/v1/tokens/"+tok.ID, adminKey, "")
		}
		e.serve(t, "POST", "/api/v1/tokens/0123456789abcdef/renew", adminKey, body)
	})
}

// FuzzEnrichBody posts documents to enrich, which runs the scanner's
// parsers (grype, Trivy, CycloneDX JSON).
func FuzzEnrichBody(f *testing.F) {
	for _, s := range []string{
		`{"matches":[{"vulnerability":{"id":"CVE-2023-45853"},"artifact":{"name":"zlib1g","version":"1:1.2.13.dfsg-1","purl":"pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1"}}]}`,
		`{"Results":[{"Vulnerabilities":[{"VulnerabilityID":"CVE-1","PkgName":"libc6","InstalledVersion":"2.36-9+deb12u7"}]}]}`,
		`{"bomFormat":"CycloneDX","components":[{"name":"requests","version":"2.31.0","purl":"pkg:pypi/requests@2.31.0"}]}`,
		`{}`, `[]`, `{"matches":null}`, `"x"`, ``,
	} {
		f.Add(s)
	}
	e := fuzzEnv(f)
	f.Fuzz(func(t *testing.T, body string) {
		rec := e.serve(t, "POST", "/api/v1/images/"+digestApp+"/enrich", adminKey, body)
		if rec.Code == http.StatusOK && !json.Valid(bytes.TrimSpace(rec.Body.Bytes())) {
			t.Fatalf("enrich answered invalid JSON for %q", body)
		}
	})
}
