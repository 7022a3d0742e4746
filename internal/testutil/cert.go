package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/tlscert"
)

// ServerCert writes a self-signed certificate for 127.0.0.1 and
// localhost, and its key, as PEM files in a temporary directory; the
// client trusts only that certificate.
func ServerCert(tb testing.TB) (certFile, keyFile string, client *http.Client) {
	tb.Helper()
	certPEM, keyPEM, err := tlscert.SelfSigned("inuse test", nil, 24*time.Hour)
	require.NoError(tb, err)
	dir := tb.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(tb, os.WriteFile(certFile, certPEM, 0o644))
	require.NoError(tb, os.WriteFile(keyFile, keyPEM, 0o600))
	pool := x509.NewCertPool()
	require.True(tb, pool.AppendCertsFromPEM(certPEM))
	client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}, Timeout: 30 * time.Second}
	return certFile, keyFile, client
}
