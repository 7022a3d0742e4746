package scanner

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

// A panic while scanning one image (reportHook stands for a parser that
// a crafted file makes panic) is that image's error, logged with its
// stack; the next image scans.
func TestReportPanic(t *testing.T) {
	var logs bytes.Buffer
	sc, err := New(Config{CacheDir: t.TempDir(), Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	require.NoError(t, err)
	defer sc.Close()
	const crafted = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	reportHook = func(digest string) {
		if digest == crafted {
			var b []byte
			_ = b[len(digest)] // a real runtime panic: index out of range
		}
	}
	t.Cleanup(func() { reportHook = nil })

	_, err = sc.Report(t.Context(), crafted, nil)
	require.ErrorIs(t, err, ErrPanic)
	require.ErrorContains(t, err, "index out of range")
	require.Contains(t, logs.String(), `"msg":"scan panicked"`)
	require.Contains(t, logs.String(), "panic_internal_test.go")

	_, err = sc.Report(t.Context(), "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd", nil)
	require.ErrorIs(t, err, ErrNotCached, "the next image scans as before")
}
