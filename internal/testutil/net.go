package testutil

import (
	"net"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// FreeAddr returns a loopback host:port that nobody listens on, for a
// server the test starts as another process.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// MetricValue returns the value of one series of a Prometheus text
// exposition (`name{labels}` exactly as exposed), or -1 when it is absent.
func MetricValue(body, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// WaitHealthy waits until GET url answers 200, as a server started by the
// test comes up.
func WaitHealthy(tb testing.TB, url string, timeout time.Duration) {
	tb.Helper()
	WaitHealthyWith(tb, http.DefaultClient, url, timeout)
}

// WaitHealthyWith is WaitHealthy through client (e.g. one that trusts a
// test certificate).
func WaitHealthyWith(tb testing.TB, client *http.Client, url string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s never answered 200 (last error: %v)", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
