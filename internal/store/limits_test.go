package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
)

func TestBoundedSectionsFold(t *testing.T) {
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL(), store.WithLimits(store.Limits{SectionCap: 10}))
	require.NoError(t, err)
	defer st.Close()
	digest := fmt.Sprintf("sha256:%064x", 1)
	ms := time.Now().UnixMilli()

	delta := func() *store.Delta {
		d := store.NewDelta()
		for i := range 25 {
			d.Add(store.RuntimeFilesWritten, fmt.Sprintf("/tmp/cache/%02d", i), ms)
		}
		for i := range 5 {
			d.Add(store.RuntimeFilesWritten, fmt.Sprintf("/var/spool/%d", i), ms)
		}
		for i := range 100 {
			d.Add(store.FilesRead, fmt.Sprintf("/usr/lib/f%d", i), ms)
		}
		for i := range 12 {
			d.Add(store.TCPOut, fmt.Sprint(1000+i), ms)
		}
		d.Add(store.Drift, store.DriftMember("exec", "container", "/tmp/tool"), ms)
		return d
	}
	for i := range 2 { // the second time, only what was counted is counted again
		_, err = st.Apply(t.Context(), map[string]*store.Delta{digest: delta()}, time.Now(), store.DefaultLearning)
		require.NoError(t, err)
		p, err := st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
		require.NoError(t, err)
		require.Len(t, p.Sections[store.FilesRead], 100, "image files are kept one by one")
		require.Len(t, p.Sections[store.RuntimeFilesWritten], 10)
		require.Len(t, p.Sections[store.TCPOut], 10)
		require.Len(t, p.Sections[store.Drift], 1)
		n := int64(i + 1)
		require.Equal(t, []store.FoldedPattern{
			{Section: store.RuntimeFilesWritten, Pattern: "/tmp/cache/*", Count: 15 * n},
			{Section: store.RuntimeFilesWritten, Pattern: "/var/spool/*", Count: 5 * n},
			{Section: store.TCPOut, Pattern: "*", Count: 2 * n},
		}, p.Folded)
		require.False(t, p.Meta.Truncated)
	}
}

func TestCeilingTruncates(t *testing.T) {
	srv := redistest.Start(t)
	const ceiling = 64 << 10
	st, err := store.Open(srv.URL(), store.WithLimits(store.Limits{MaxBytes: ceiling}))
	require.NoError(t, err)
	defer st.Close()
	digest := fmt.Sprintf("sha256:%064x", 2)
	long := time.Now().Add(-2 * time.Hour)

	d := store.NewDelta()
	for i := range 5000 {
		d.Add(store.FilesRead, fmt.Sprintf("/usr/share/doc/package-%04d/copyright", i), long.UnixMilli())
	}
	// In the same flush: what puts packages in use most surely is kept first.
	d.Add(store.Exec, "/usr/bin/python3.11", long.UnixMilli())
	d.Add(store.Mapped, "/usr/lib/x86_64-linux-gnu/libssl.so.3", long.UnixMilli())
	_, err = st.Apply(t.Context(), map[string]*store.Delta{digest: d}, long, store.DefaultLearning)
	require.NoError(t, err)
	p, err := st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	kept := len(p.Sections[store.FilesRead])
	require.Less(t, kept, 5000)
	require.Len(t, p.Sections[store.Exec], 1, "the executable of the flush is kept")
	require.Len(t, p.Sections[store.Mapped], 1, "the library of the flush is kept")
	require.True(t, p.Meta.Truncated)
	require.EqualValues(t, 5000-kept, p.Meta.Dropped, "each member past the ceiling is counted")

	// Reported again (another container), the kept members are not
	// counted, and nothing more is stored.
	_, err = st.Apply(t.Context(), map[string]*store.Delta{digest: d}, long, store.DefaultLearning)
	require.NoError(t, err)
	p, err = st.Profile(t.Context(), digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.Len(t, p.Sections[store.FilesRead], kept)
	require.EqualValues(t, 2*(5000-kept), p.Meta.Dropped)
	require.Equal(t, store.Incomplete, p.State, "a truncated profile cannot say what was not used")
	used := srv.MemoryUsage(t, "inuse:{"+digest+"}:*")
	t.Logf("kept %d members, estimated %d bytes, MEMORY USAGE %d", kept, p.Meta.Bytes, used)
	require.Less(t, used, int64(ceiling*5/4), "the ceiling bounds the memory")
}
