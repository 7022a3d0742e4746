package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/scanner"
)

// TestInUseLatency measures how long a package loaded in a container
// takes to show In Use in the API, with the production poll interval:
// the profile entry is written to Redis as the collector writes it
// (store.Apply), and the API is polled until the package's verdict flips.
func TestInUseLatency(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PollInterval = time.Second })
	e.seedFixtures()
	e.waitReports(e.srv, digestApp)

	inUse := func() bool {
		var pkgs page[scanner.Package]
		code, body := e.get("/api/v1/images/"+digestApp+"/packages?in_use=true", adminKey)
		require.Equal(t, http.StatusOK, code, "%s", body)
		e.decode(body, &pkgs)
		for _, p := range pkgs.Items {
			if p.Name == "zlib1g" {
				return true
			}
		}
		return false
	}
	const rounds = 5
	var worst time.Duration
	var total time.Duration
	libs := []string{"/usr/lib/x86_64-linux-gnu/libz.so.1.2.13", "/usr/lib/x86_64-linux-gnu/libssl.so.3"}
	for i := range rounds {
		// Each round loads zlib (or, to reset, nothing of it): start from
		// a profile where zlib is not loaded.
		if i > 0 {
			require.NoError(t, e.rdb.ZRem(t.Context(), store.Keys(digestApp).Section(store.FilesRead), libs[0]).Err())
			require.NoError(t, e.rdb.HIncrBy(t.Context(), store.Keys(digestApp).Meta(), store.FieldRevision, 1).Err())
			require.Eventually(t, func() bool { return !inUse() }, 15*time.Second, 20*time.Millisecond)
		}
		require.False(t, inUse())
		// Wait a random part of a poll interval, so that rounds sample
		// the whole cycle.
		time.Sleep(time.Duration(i) * time.Second / rounds)
		d := store.NewDelta()
		d.Add(store.FilesRead, libs[0], time.Now().UnixMilli())
		loaded := time.Now()
		_, err := e.st.Apply(t.Context(), map[string]*store.Delta{digestApp: d}, loaded, store.DefaultLearning)
		require.NoError(t, err)
		for !inUse() {
			require.Less(t, time.Since(loaded), 10*time.Second, "zlib not in use 10 s after it was loaded")
			time.Sleep(20 * time.Millisecond)
		}
		lat := time.Since(loaded)
		total += lat
		worst = max(worst, lat)
		t.Logf("round %d: load -> In Use in the API after %s", i, lat.Round(time.Millisecond))
	}
	t.Logf("load -> In Use: mean %s, worst %s over %d rounds (poll interval 1 s)", (total / rounds).Round(time.Millisecond), worst.Round(time.Millisecond), rounds)
	require.LessOrEqual(t, worst, 10*time.Second)
}

// BenchmarkReportRoutes measures the report routes of an image whose
// profile is large (as a long-running service's is): what a route costs
// beyond the report it answers from, which the background scanner keeps.
func BenchmarkReportRoutes(b *testing.B) {
	e := newEnv(b, nil)
	e.seedFixtures()
	d := store.NewDelta()
	now := time.Now().UnixMilli()
	for i := range 20000 {
		d.Add(store.FilesRead, fmt.Sprintf("/srv/app/static/%05d.js", i), now)
	}
	for i := range 2000 {
		d.Add(store.Mapped, fmt.Sprintf("/usr/lib/x86_64-linux-gnu/lib%04d.so", i), now)
	}
	_, err := e.st.Apply(b.Context(), map[string]*store.Delta{digestApp: d}, time.Now(), store.DefaultLearning)
	require.NoError(b, err)
	e.waitReports(e.srv, digestApp)
	for _, path := range []string{"packages", "vulnerabilities?in_use=false", "openvex", "cyclonedx"} {
		b.Run(strings.SplitN(path, "?", 2)[0], func(b *testing.B) {
			for b.Loop() {
				code, body := e.get("/api/v1/images/"+digestApp+"/"+path, adminKey)
				require.Equal(b, http.StatusOK, code, "%s", body)
			}
		})
	}
}
