package api

import (
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/inuse-dev/inuse/internal/logfields"
	"github.com/inuse-dev/inuse/internal/tlscert"
)

// TLSInfo describes the certificate the server presents, for clients that
// pin it (the tokens page shows it).
type TLSInfo struct {
	// SHA256 is the fingerprint of the certificate (DER), as
	// `openssl x509 -noout -fingerprint -sha256` prints it.
	SHA256   string    `json:"sha256"`
	NotAfter time.Time `json:"not_after"`
}

// Fingerprint is the SHA-256 of a certificate's DER bytes in colon-separated
// upper-case hex, the form openssl and browsers show.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// certFiles serves the certificate of a PEM certificate file and key file,
// reading them again when either one's modification time changes, so that
// a renewed certificate (cert-manager, a Secret update, a cron job) is
// presented to new connections without a restart.
type certFiles struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	mtimes  [2]time.Time
	current *tls.Certificate
	info    TLSInfo
}

// loadCertFiles reads the pair once: a pair that does not load is an error
// at start, not at the first handshake.
func loadCertFiles(certFile, keyFile string, log *slog.Logger) (*certFiles, error) {
	c := &certFiles{certFile: certFile, keyFile: keyFile, log: log}
	mtimes, err := c.stat()
	if err != nil {
		return nil, err
	}
	if err := c.load(mtimes); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *certFiles) stat() ([2]time.Time, error) {
	var mtimes [2]time.Time
	for i, f := range []string{c.certFile, c.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return mtimes, fmt.Errorf("reading TLS certificate: %w", err)
		}
		mtimes[i] = st.ModTime()
	}
	return mtimes, nil
}

// load reads the pair; c.mu is held or c is not shared yet.
func (c *certFiles) load(mtimes [2]time.Time) error {
	c.mtimes = mtimes
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("loading TLS certificate: %w", err)
	}
	c.current = &cert
	c.info = TLSInfo{SHA256: Fingerprint(cert.Leaf.Raw), NotAfter: cert.Leaf.NotAfter}
	c.log.Info("TLS certificate", "sha256", c.info.SHA256, "not_after", c.info.NotAfter, "cert_file", c.certFile)
	return nil
}

// getCertificate is tls.Config.GetCertificate. A pair that fails to load
// (e.g. the certificate replaced but not the key yet) is logged once and
// the previous certificate is kept until the files change again.
func (c *certFiles) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A file missing for a moment (a Secret volume swaps its symlink)
	// is not a change: the next handshake looks again.
	mtimes, err := c.stat()
	if err != nil || mtimes == c.mtimes {
		return c.current, nil
	}
	if err := c.load(mtimes); err != nil {
		c.log.Warn("keeping the previous TLS certificate", logfields.Error, err)
	}
	return c.current, nil
}

func (c *certFiles) tlsInfo() TLSInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

// Names of the self-signed pair in its directory.
const (
	SelfSignedCertFile = "tls.crt"
	SelfSignedKeyFile  = "tls.key"
)

// selfSignedValidity is long: clients pin the fingerprint, and a new
// certificate means re-pinning every integration.
const selfSignedValidity = 5 * 365 * 24 * time.Hour

// SelfSigned returns the self-signed certificate and key files kept in dir,
// generating them on first use: an ECDSA P-256 key and a certificate for
// hosts (names or IP addresses), localhost and 127.0.0.1. A pair already
// there is kept as it is, so a restart presents the same certificate; an
// expired one is replaced. Delete the files to get a new certificate.
func SelfSigned(dir string, hosts []string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, SelfSignedCertFile), filepath.Join(dir, SelfSignedKeyFile)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	switch {
	case err == nil && time.Now().Before(cert.Leaf.NotAfter):
		return certFile, keyFile, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", "", fmt.Errorf("reading the self-signed certificate in %s: %w", dir, err)
	}
	certPEM, keyPEM, err := tlscert.SelfSigned("inuse serve (self-signed)", hosts, selfSignedValidity)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("creating the data directory: %w", err)
	}
	// The key first: a crash between the two leaves a key without its
	// certificate, which the next start replaces, never a certificate
	// with someone else's key.
	if err := writeFileAtomic(keyFile, keyPEM); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(certFile, certPEM); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// writeFileAtomic writes b to path, readable by its owner only, through a
// temporary file renamed over it, so that no reader sees half a file.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // after a successful rename: already gone
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
