package api

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"testing"

	"github.com/inuse-dev/inuse/scanner"
)

// FuzzDecodeReport decodes any stored report: whoever reaches Redis can
// write one. A report decoded is the report it encodes to again.
func FuzzDecodeReport(f *testing.F) {
	for _, rep := range []*scanner.Report{
		{Name: "demo/app:1"},
		{Name: "demo/app:1", Digest: digestApp, Packages: []scanner.Package{{ID: "p", Name: "openssl", Version: "3.0.11", Verdict: scanner.InUse,
			Evidence: []scanner.Evidence{{Path: "/usr/lib/libssl.so.3", How: scanner.HowMapped}}}},
			Vulnerabilities: []scanner.Vulnerability{{ID: "CVE-2024-0001", Severity: "High", PackageID: "p", Verdict: scanner.InUse, Symbols: []string{"a.B"}}}},
	} {
		data, err := encodeReport(rep)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	_, _ = zw.Write(append([]byte(`{"name":"`), bytes.Repeat([]byte{'a'}, 1<<16)...))
	_ = zw.Close()
	f.Add(bomb.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := decodeReport(data, 1<<15)
		if err != nil {
			return
		}
		again, err := encodeReport(rep)
		if err != nil {
			t.Fatalf("re-encoding a decoded report: %v", err)
		}
		rep2, err := decodeReport(again, 1<<20)
		if err != nil && !errors.Is(err, ErrReportTooLarge) {
			t.Fatalf("decoding a report encoded again: %v", err)
		}
		if err == nil {
			a, _ := json.Marshal(rep)
			b, _ := json.Marshal(rep2)
			if !bytes.Equal(a, b) {
				t.Fatalf("a decoded report changed on a round trip:\n%s\n%s", a, b)
			}
		}
	})
}
