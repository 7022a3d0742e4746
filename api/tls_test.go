package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pinnedClient trusts only the certificate whose fingerprint is pin, as an
// integration that pinned a self-signed certificate does; every request is
// a new connection.
func pinnedClient(pin string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			// Pinning replaces the chain check: the fingerprint is the trust.
			InsecureSkipVerify: true, //nolint:gosec // verified by VerifyPeerCertificate
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if got := Fingerprint(raw[0]); got != pin {
					return fmt.Errorf("certificate %s, pinned %s", got, pin)
				}
				return nil
			},
		},
	}}
}

func fileFingerprint(t *testing.T, certFile, keyFile string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	return Fingerprint(cert.Leaf.Raw)
}

func TestSelfSignedCertKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	certFile, keyFile, err := SelfSigned(dir, []string{"inuse.example", "10.0.0.7", "localhost"})
	require.NoError(t, err)
	for _, f := range []string{certFile, keyFile} {
		st, err := os.Stat(f)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	leaf := cert.Leaf
	require.Equal(t, x509.ECDSA, leaf.PublicKeyAlgorithm)
	require.Equal(t, []string{"inuse.example", "localhost"}, leaf.DNSNames)
	require.Len(t, leaf.IPAddresses, 2)
	require.True(t, leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.7")))
	require.True(t, leaf.IPAddresses[1].Equal(net.ParseIP("127.0.0.1")))
	require.NoError(t, leaf.VerifyHostname("inuse.example"))

	// A second start keeps the pair, whatever names it is given.
	again, againKey, err := SelfSigned(dir, []string{"other.example"})
	require.NoError(t, err)
	require.Equal(t, fileFingerprint(t, certFile, keyFile), fileFingerprint(t, again, againKey))

	// A pair that does not load is an error, not silently replaced.
	require.NoError(t, os.WriteFile(keyFile, []byte("garbage"), 0o600))
	_, _, err = SelfSigned(dir, nil)
	require.ErrorContains(t, err, "self-signed certificate")
}

// TestServeTLSReload replaces the certificate files under a running
// server: new connections get the new certificate, the tokens list shows
// its fingerprint, and a pair that does not match keeps the previous one.
func TestServeTLSReload(t *testing.T) {
	e := newEnv(t, nil)
	oldCert, oldKey, err := SelfSigned(t.TempDir(), nil)
	require.NoError(t, err)
	newCert, newKey, err := SelfSigned(t.TempDir(), nil)
	require.NoError(t, err)
	oldPin, newPin := fileFingerprint(t, oldCert, oldKey), fileFingerprint(t, newCert, newKey)

	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	// install copies a pair over the served files, with a later mtime than
	// the last one so that the change shows on any file system.
	mtime := time.Now()
	install := func(cert, key string) {
		mtime = mtime.Add(time.Second)
		for src, dst := range map[string]string{cert: certFile, key: keyFile} {
			b, err := os.ReadFile(src)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(dst, b, 0o600))
			require.NoError(t, os.Chtimes(dst, mtime, mtime))
		}
	}
	install(oldCert, oldKey)

	// Not serving TLS yet: the tokens list has no tls field.
	code, body := e.get("/api/v1/tokens", adminKey)
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, string(body), `"tls"`)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, ln, certFile, keyFile) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	base := "https://" + ln.Addr().String()
	// tokensTLS lists the tokens through a client pinning pin and returns
	// the certificate the answer describes.
	tokensTLS := func(pin string) TLSInfo {
		t.Helper()
		req, err := http.NewRequest("GET", base+"/api/v1/tokens", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+adminKey)
		resp, err := pinnedClient(pin).Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		var list struct {
			Items []json.RawMessage `json:"items"`
			TLS   *TLSInfo          `json:"tls"`
		}
		require.NoError(t, json.Unmarshal(body, &list))
		require.NotNil(t, list.TLS, "the tokens list names the certificate: %s", body)
		return *list.TLS
	}
	require.Equal(t, oldPin, tokensTLS(oldPin).SHA256)
	_, err = pinnedClient(newPin).Get(base + "/healthz")
	require.ErrorContains(t, err, "pinned", "the new certificate is not served yet")

	install(newCert, newKey)
	info := tokensTLS(newPin)
	require.Equal(t, newPin, info.SHA256)
	require.WithinDuration(t, time.Now().Add(selfSignedValidity), info.NotAfter, time.Hour)

	// The old certificate with the new key: it does not load, and the new
	// certificate stays.
	install(oldCert, newKey)
	require.Equal(t, newPin, tokensTLS(newPin).SHA256)

	require.Contains(t, e.logs.String(), "keeping the previous TLS certificate")
}
