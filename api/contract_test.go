package api

import (
	"compress/gzip"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/store"
)

// The contract of runtimeimages is what Snyk's kubernetes-monitor
// (src/data-scraper, src/transmitter) does with Sysdig's answer; these
// facts come from reading it:
//   - it builds https://<host[:port]>/api/scanning/eveintegration/v2/runtimeimages
//     ?clusterName=<name>&limit=10, then &cursor=<page.next> pasted as is,
//     unencoded, until page.next is empty or missing; its connectivity
//     check asks for limit=1;
//   - it sends authorization: Bearer <token>, Accept-Encoding: gzip,
//     deflate, br and a JSON {} body even on GET, skips certificate
//     validation, and decodes the body as JSON after undoing the
//     Content-Encoding;
//   - it tries a request up to 3 times while the status is 429, 502, 503 or
//     504 (60 s after a 429, 2 s otherwise); any other non-2xx ends the scrape;
//   - it reads page.returned (number), page.next (string, optional), data
//     (array, optional) of imageID, namespace, workloadName, workloadKind,
//     container (strings) and packages: OS packages {purl, name, version,
//     installedViaPackageManager: boolean, osFamily, osVersion, arch},
//     application packages {purl, name, version, installedViaPackageManager,
//     type};
//   - it lower-cases workloadKind and keeps only deployment, replicaset,
//     statefulset, daemonset, job, cronjob, replicationcontroller,
//     deploymentconfig, pod and rollout, logging an error for any other;
//     a null workloadKind throws and stops the whole scrape.
const (
	runtimePath    = "/api/scanning/eveintegration/v2/runtimeimages"
	contractLimit  = 10
	contractTries  = 3
	contractAccept = "gzip, deflate, br"
)

var (
	contractRetry = []int{http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout}
	contractKinds = []string{"deployment", "replicaset", "statefulset", "daemonset", "job", "cronjob", "replicationcontroller", "deploymentconfig", "pod", "rollout"}
)

// scraper makes the requests of the kubernetes-monitor's data scraper.
type scraper struct {
	t       *testing.T
	client  *http.Client
	host    string // host:port, as the integration is configured: no scheme
	token   string
	cluster string
	pause   time.Duration // between tries; the client waits seconds
	retried []int         // the statuses it tried again after
}

func newScraper(t *testing.T, ts *httptest.Server, token, cluster string) *scraper {
	tr := &http.Transport{
		// The client skips certificate validation, as agreed with Sysdig.
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the client's own setting
		DisableCompression: true,                                  // it asks for gzip itself and undoes it itself
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &scraper{t: t, client: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		host: strings.TrimPrefix(ts.URL, "https://"), token: token, cluster: cluster, pause: 600 * time.Millisecond}
}

// url is the URL the client builds: the cursor pasted as is.
func (c *scraper) url(limit int, cursor string) string {
	u := fmt.Sprintf("https://%s%s?clusterName=%s&limit=%d", c.host, runtimePath, c.cluster, limit)
	if cursor != "" {
		u += "&cursor=" + cursor
	}
	return u
}

// get sends one request as the client does, trying it again on the
// statuses it retries, and returns the last answer with its body decoded
// from its Content-Encoding.
func (c *scraper) get(url string) (*http.Response, []byte) {
	c.t.Helper()
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequest("GET", url, strings.NewReader("{}"))
		require.NoError(c.t, err)
		req.Header.Set("Authorization", "Bearer "+c.token)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept-Encoding", contractAccept)
		resp, err := c.client.Do(req)
		require.NoError(c.t, err)
		body := decodeContent(c.t, resp)
		if !slices.Contains(contractRetry, resp.StatusCode) || attempt == contractTries {
			return resp, body
		}
		c.retried = append(c.retried, resp.StatusCode)
		time.Sleep(c.pause)
	}
}

func decodeContent(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	var r io.Reader = resp.Body
	switch enc := resp.Header.Get("Content-Encoding"); enc {
	case "gzip":
		gz, err := gzip.NewReader(resp.Body)
		require.NoError(t, err)
		r = gz
	case "":
	default:
		t.Fatalf("Content-Encoding %q: only gzip is expected", enc)
	}
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	return b
}

// contractEntry is the identity of one runtimeimages entry, which the
// client's types document as unique.
type contractEntry struct{ imageID, namespace, workloadName, workloadKind, container string }

// requirePage checks an answer field by field against the types the client
// declares, and returns its entries and page.next.
func requirePage(t *testing.T, body []byte, limit int) ([]contractEntry, string) {
	t.Helper()
	var doc map[string]any
	require.NoError(t, json.Unmarshal(body, &doc), "%s", body)
	page, ok := doc["page"].(map[string]any)
	require.True(t, ok, "page is an object: %s", body)
	returned, ok := page["returned"].(float64)
	require.True(t, ok, "page.returned is a number: %s", body)
	next := ""
	if v, present := page["next"]; present {
		next, ok = v.(string)
		require.True(t, ok, "page.next is a string: %s", body)
	}
	data, ok := doc["data"].([]any)
	require.True(t, ok, "data is an array: %s", body)
	require.Equal(t, len(data), int(returned), "page.returned counts data")
	require.LessOrEqual(t, len(data), limit)
	var out []contractEntry
	for _, d := range data {
		d, ok := d.(map[string]any)
		require.True(t, ok, "an entry is an object")
		str := func(k string) string {
			v, ok := d[k].(string)
			require.True(t, ok, "%s is a string (null stops the scrape): %v", k, d)
			return v
		}
		e := contractEntry{str("imageID"), str("namespace"), str("workloadName"), str("workloadKind"), str("container")}
		require.Contains(t, contractKinds, strings.ToLower(e.workloadKind), "a kind the client accepts: %v", d)
		pkgs, ok := d["packages"].([]any)
		require.True(t, ok, "packages is an array: %v", d)
		for _, p := range pkgs {
			p, ok := p.(map[string]any)
			require.True(t, ok, "a package is an object")
			viaPM, ok := p["installedViaPackageManager"].(bool)
			require.True(t, ok, "installedViaPackageManager is a boolean: %v", p)
			fields := []string{"purl", "name", "version", "type"}
			if viaPM {
				fields = []string{"purl", "name", "version", "osFamily", "osVersion", "arch"}
			}
			for _, k := range fields {
				v, ok := p[k].(string)
				require.True(t, ok && v != "", "%s is a string: %v", k, p)
			}
		}
		out = append(out, e)
	}
	return out, next
}

// seedContract writes the profiles of containers of the three fixture
// images, as the agents record them: Kubernetes workloads under the kinds
// and owner names the NRI plugin derives, and Docker, Compose and
// inuse-agent exec containers, which have no Kubernetes kind. It returns
// the Kubernetes entries, which runtimeimages must list, and the others.
func seedContract(t *testing.T, e *env) (kube, other []contractEntry) {
	workloads := map[string][]store.Workload{
		digestApp: {
			{Namespace: "prod", Kind: "ReplicaSet", Name: "legacy-web", Container: "app"},
			{Namespace: "prod", Kind: "Rollout", Name: "canary-web", Container: "app"},
			{Namespace: "prod", Kind: "DeploymentConfig", Name: "os-web", Container: "app"},
			{Namespace: "prod", Kind: "ReplicationController", Name: "rc-web", Container: "app"},
			{Namespace: "tools", Kind: "Pod", Name: "debug-shell", Container: "app"},
		},
		digestDB: {
			{Namespace: "monitoring", Kind: "DaemonSet", Name: "node-db-agent", Container: "db"},
		},
		digestJob: {
			{Namespace: "batch", Kind: "Job", Name: "backfill", Container: "report"},
		},
	}
	for i := range 7 {
		ns := fmt.Sprintf("team-%d", i)
		workloads[digestApp] = append(workloads[digestApp],
			store.Workload{Namespace: ns, Kind: "Deployment", Name: "web", Container: "app"},
			store.Workload{Namespace: ns, Kind: "Deployment", Name: "web", Container: "sidecar"})
		workloads[digestDB] = append(workloads[digestDB], store.Workload{Namespace: ns, Kind: "StatefulSet", Name: "pg", Container: "db"})
		workloads[digestJob] = append(workloads[digestJob], store.Workload{Namespace: ns, Kind: "CronJob", Name: "nightly-report", Container: "report"})
	}
	nonKube := map[string][]store.Workload{
		digestApp: {
			{Container: "shop-api-1"}, // docker run
			{Kind: "ComposeService", Name: "shop/api", Container: "shop-api-1"},
		},
		digestJob: {
			{Container: "inuse-exec-report"}, // inuse-agent exec
		},
	}
	now := time.Now()
	deltas := map[string]*store.Delta{}
	for digest, fx := range fixtures {
		d := store.NewDelta()
		d.AddTo(store.Names, fx.name)
		d.AddTo(store.Nodes, "node-a")
		for i, w := range append(slices.Clone(workloads[digest]), nonKube[digest]...) {
			d.AddTo(store.Containers, fmt.Sprintf("c-%s-%d", digest[7:11], i))
			d.AddTo(store.Workloads, w.Member())
		}
		// The first file of each package: every package is in use.
		for _, p := range fx.packages {
			d.Add(store.FilesRead, p.files[0], now.UnixMilli())
		}
		deltas[digest] = d
		for _, w := range workloads[digest] {
			kube = append(kube, contractEntry{digest, w.Namespace, w.Name, w.Kind, w.Container})
		}
		for _, w := range nonKube[digest] {
			other = append(other, contractEntry{digest, w.Namespace, w.Name, w.Kind, w.Container})
		}
	}
	_, err := e.st.Apply(t.Context(), deltas, now, store.DefaultLearning)
	require.NoError(t, err)
	e.waitReports(e.srv, digestApp, digestDB, digestJob)
	return kube, other
}

// scrape pages through runtimeimages as the client does and returns every
// entry, checking each page.
func (c *scraper) scrape() []contractEntry {
	c.t.Helper()
	var all []contractEntry
	cursor := ""
	for range 100 {
		resp, body := c.get(c.url(contractLimit, cursor))
		require.Equal(c.t, http.StatusOK, resp.StatusCode, "%s", body)
		require.Equal(c.t, "gzip", resp.Header.Get("Content-Encoding"), "the client accepts gzip")
		require.Contains(c.t, resp.Header.Values("Vary"), "Accept-Encoding")
		page, next := requirePage(c.t, body, contractLimit)
		all = append(all, page...)
		if next == "" {
			return all
		}
		require.Len(c.t, page, contractLimit, "a page before the last one is full")
		cursor = next
	}
	c.t.Fatal("page.next never empty")
	return nil
}

// TestRuntimeImagesContract replays the kubernetes-monitor's requests
// against inuse serve over TLS, with an integration token.
func TestRuntimeImagesContract(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ClusterName = "prod-eu" })
	kube, other := seedContract(t, e)
	require.Greater(t, len(kube), 2*contractLimit, "several pages")
	ts := httptest.NewTLSServer(e.srv.Handler())
	t.Cleanup(ts.Close)
	tok := e.createToken("snyk kubernetes-monitor", "3mo")
	c := newScraper(t, ts, tok.Secret, "prod-eu")

	t.Run("connectivity check", func(t *testing.T) {
		resp, body := c.get(c.url(1, ""))
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		entries, next := requirePage(t, body, 1)
		require.Len(t, entries, 1)
		require.NotEmpty(t, next)
	})

	t.Run("paging to the end", func(t *testing.T) {
		all := c.scrape()
		require.ElementsMatch(t, kube, all, "every Kubernetes entry once, nothing else")
		require.Empty(t, c.retried)
	})

	t.Run("docker, compose and exec only in /api/v1", func(t *testing.T) {
		for _, o := range other {
			var img ImageDetail
			e.getJSON("/api/v1/images/"+o.imageID, &img)
			require.Contains(t, img.Workloads, store.Workload{Namespace: o.namespace, Kind: o.workloadKind, Name: o.workloadName, Container: o.container})
		}
	})

	t.Run("unknown parameters ignored", func(t *testing.T) {
		resp, body := c.get(c.url(contractLimit, "") + "&newerClientOption=1&limit2=x")
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		entries, _ := requirePage(t, body, contractLimit)
		require.Len(t, entries, contractLimit)
		resp, body = c.get(c.url(0, ""))
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "a known parameter is still checked: %s", body)
	})

	t.Run("plain without Accept-Encoding", func(t *testing.T) {
		req, err := http.NewRequest("GET", c.url(1, ""), nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok.Secret)
		resp, err := c.client.Do(req)
		require.NoError(t, err)
		body := decodeContent(t, resp)
		require.Empty(t, resp.Header.Get("Content-Encoding"))
		require.Contains(t, resp.Header.Values("Vary"), "Accept-Encoding")
		requirePage(t, body, 1)
	})

	t.Run("another cluster is logged and counted", func(t *testing.T) {
		staging := *c
		staging.cluster = "staging"
		for range 3 {
			resp, body := staging.get(staging.url(contractLimit, ""))
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
			entries, next := requirePage(t, body, contractLimit)
			require.Empty(t, entries)
			require.Empty(t, next)
		}
		require.Equal(t, 1, strings.Count(e.logs.String(), `"cluster_name":"staging"`), "logged once a minute per name")
		_, metrics := e.get("/metrics", "")
		require.Contains(t, string(metrics), "inuse_api_runtimeimages_cluster_mismatch_total 3")
	})

	t.Run("wrong or deleted token", func(t *testing.T) {
		wrong := *c
		wrong.token = "inuse_" + strings.Repeat("x", 43)
		gone := e.createToken("deleted", "1mo")
		code, body, _ := do(t, e.ts.URL, "DELETE", "/api/v1/tokens/"+gone.ID, adminKey, nil)
		require.Less(t, code, 300, "%s", body)
		deleted := *c
		deleted.token = gone.Secret
		for _, s := range []*scraper{&wrong, &deleted} {
			resp, body := s.get(s.url(contractLimit, ""))
			requireJSONError(t, resp.StatusCode, body, http.StatusUnauthorized)
			require.True(t, strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer "), resp.Header.Get("WWW-Authenticate"))
		}
	})
}

// TestRuntimeImagesContractRetry checks that what inuse answers under load
// (429 past the rate limit) is a status the client retries, and that its
// retries page to the end all the same.
func TestRuntimeImagesContractRetry(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RateLimit, c.RateBurst = 2, 1 })
	kube, _ := seedContract(t, e)
	ts := httptest.NewTLSServer(e.srv.Handler())
	t.Cleanup(ts.Close)
	tok := e.createToken("snyk kubernetes-monitor", "3mo")
	c := newScraper(t, ts, tok.Secret, "")

	require.ElementsMatch(t, kube, c.scrape())
	require.NotEmpty(t, c.retried, "one request a page, two a second: some were refused")
	for _, code := range c.retried {
		require.Equal(t, http.StatusTooManyRequests, code)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"gzip, deflate, br": true, "GZIP": true, "br;q=1.0, gzip;q=0.5": true, "*": true, "x-gzip": true,
		"": false, "br": false, "deflate, br": false, "gzip;q=0": false, "gzip; q=0.0": false, "identity": false,
	} {
		h := http.Header{}
		if header != "" {
			h.Set("Accept-Encoding", header)
		}
		require.Equal(t, want, acceptsGzip(h), "Accept-Encoding: %q", header)
	}
}
