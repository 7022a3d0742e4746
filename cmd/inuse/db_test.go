package main

import (
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	v6 "github.com/anchore/grype/grype/db/v6"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/scanner/vulndbtest"
)

// testDB writes a one-advisory v6 database and returns its file.
func testDB(t *testing.T) string {
	t.Helper()
	path, err := vulndbtest.Write(filepath.Join(t.TempDir(), "build"), []vulndbtest.Advisory{{
		ID: "CVE-2099-0001", Severity: "critical", Package: "zlib", Ecosystem: "deb", VersionFormat: "deb",
		OS: &vulndbtest.Bookworm, Constraint: "< 1:1.2.13.dfsg-2", Fixed: "1:1.2.13.dfsg-2",
	}})
	require.NoError(t, err)
	return path
}

func TestDBImportStatus(t *testing.T) {
	cache := t.TempDir()
	_, err := runInuse(t, "db", "status", "--cache-dir", cache)
	require.Error(t, err, "no database yet")

	out, err := runInuse(t, "db", "import", "--cache-dir", cache, testDB(t))
	require.NoError(t, err)
	require.Contains(t, out, "vulnerability database imported")

	out, err = runInuse(t, "db", "status", "--cache-dir", cache)
	require.NoError(t, err)
	require.Contains(t, out, "status:  valid")
	require.Contains(t, out, "go symbols: no")
	require.Contains(t, out, filepath.Join(cache, "db", "6", "vulnerability.db"))

	out, err = runInuse(t, "db", "status", "--cache-dir", cache, "--format", "json")
	require.NoError(t, err)
	var st struct {
		Valid  bool      `json:"valid"`
		Schema string    `json:"schema_version"`
		Built  time.Time `json:"built"`
		From   string    `json:"from"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.True(t, st.Valid)
	require.Regexp(t, `^v6\.`, st.Schema)
	require.WithinDuration(t, time.Now(), st.Built, time.Hour)
	require.Equal(t, "manual import", st.From)

	// a database with Go vulnerability database records has Go symbols
	goDB, err := vulndbtest.Write(filepath.Join(t.TempDir(), "go"), []vulndbtest.Advisory{vulndbtest.Go(
		"GO-2022-1059", "high", "golang.org/x/text", "< 0.3.8", "0.3.8", []string{"CVE-2022-32149"},
		v6.GoImport{Path: "golang.org/x/text/language", Symbols: []string{"MatchStrings", "ParseAcceptLanguage"}})})
	require.NoError(t, err)
	goCache := t.TempDir()
	_, err = runInuse(t, "db", "import", "--cache-dir", goCache, goDB)
	require.NoError(t, err)
	out, err = runInuse(t, "db", "status", "--cache-dir", goCache)
	require.NoError(t, err)
	require.Contains(t, out, "go symbols: yes")

	// --db-dir wins over the cache directory
	dbDir := t.TempDir()
	_, err = runInuse(t, "db", "import", "--db-dir", dbDir, testDB(t))
	require.NoError(t, err)
	out, err = runInuse(t, "db", "status", "--db-dir", dbDir)
	require.NoError(t, err)
	require.Contains(t, out, filepath.Join(dbDir, "6", "vulnerability.db"))
}

// TestDBUpdateBounded: an update source that never answers fails within
// the timeout, with an error that says what to do offline.
func TestDBUpdateBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() { // accept and say nothing, as a black-holed proxy would
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start := time.Now()
	_, err = runInuse(t, "db", "update", "--cache-dir", t.TempDir(), "--timeout", "2s", "--url", "http://"+ln.Addr().String()+"/databases")
	require.Error(t, err)
	require.Less(t, time.Since(start), 15*time.Second)
	require.Contains(t, err.Error(), "inuse db import")
}
