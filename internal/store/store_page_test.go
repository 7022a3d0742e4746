package store_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
)

func TestImagesPageAndStamps(t *testing.T) {
	srv := redistest.Start(t)
	st, err := store.Open(srv.URL())
	require.NoError(t, err)
	defer st.Close()
	base := time.Now().Add(-time.Hour)
	var digests []string
	for i := range 5 {
		d := fmt.Sprintf("sha256:%064x", i+1)
		digests = append(digests, d)
		delta := store.NewDelta()
		delta.AddTo(store.Names, fmt.Sprintf("demo/app:%d", i))
		delta.AddTo(store.Workloads, store.Workload{Namespace: "ns", Kind: "Deployment", Name: "app", Container: "c"}.Member())
		delta.Add(store.FilesRead, "/f", base.UnixMilli())
		// Later images are seen later, so they come first.
		_, err := st.Apply(t.Context(), map[string]*store.Delta{d: delta}, base.Add(time.Duration(i)*time.Minute), store.DefaultLearning)
		require.NoError(t, err)
	}

	tests := []struct {
		name          string
		offset, limit int64
		want          []string
	}{
		{"first page", 0, 2, []string{digests[4], digests[3]}},
		{"middle page", 2, 2, []string{digests[2], digests[1]}},
		{"last short page", 4, 2, []string{digests[0]}},
		{"past the end", 9, 2, nil},
		{"all", 0, -1, []string{digests[4], digests[3], digests[2], digests[1], digests[0]}},
		{"none", 0, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			page, total, err := st.ImagesPage(t.Context(), tc.offset, tc.limit, time.Now(), store.DefaultLearning)
			require.NoError(t, err)
			require.EqualValues(t, 5, total)
			var got []string
			for _, s := range page {
				got = append(got, s.Digest)
			}
			require.Equal(t, tc.want, got)
		})
	}

	all, err := st.Images(t.Context(), time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.Len(t, all, 5)

	stamps, err := st.Stamps(t.Context(), time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.Len(t, stamps, 5)
	require.Equal(t, digests[4], stamps[0].Digest)
	require.EqualValues(t, 1, stamps[0].Revision)
	require.EqualValues(t, 1, stamps[0].Workloads)
	require.Equal(t, store.Done, stamps[0].State, "seen an hour ago and stable since")

	// A new file bumps the revision; a file seen again does not.
	delta := store.NewDelta()
	delta.Add(store.FilesRead, "/f", base.UnixMilli())
	delta.Add(store.Exec, "/bin/x", time.Now().UnixMilli())
	_, err = st.Apply(t.Context(), map[string]*store.Delta{digests[0]: delta}, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	stamps, err = st.Stamps(t.Context(), time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.Equal(t, digests[0], stamps[0].Digest, "seen last, so first")
	require.EqualValues(t, 2, stamps[0].Revision)
}

// A server that lost its scripts (a restart) while several writers apply:
// a writer whose pipeline meets NOSCRIPT sends again only the images the
// server refused, so no image's counters are added twice even when
// another writer loads the script in the middle of the pipeline.
func TestApplyAfterScriptFlushCountsOnce(t *testing.T) {
	srv := redistest.Start(t)
	const writers, images, rounds = 4, 300, 5
	stores := make([]*store.Store, writers)
	for i := range stores {
		st, err := store.Open(srv.URL())
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		stores[i] = st
	}
	flusher := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(srv.URL(), "redis://")})
	t.Cleanup(func() { flusher.Close() })
	digest := func(i int) string { return fmt.Sprintf("sha256:%064x", i) }
	for range rounds {
		require.NoError(t, flusher.ScriptFlush(t.Context()).Err())
		var wg sync.WaitGroup
		for _, st := range stores {
			wg.Go(func() {
				deltas := map[string]*store.Delta{}
				for i := range images {
					d := store.NewDelta()
					d.Events = 1
					d.Add(store.FilesRead, "/etc/hosts", time.Now().UnixMilli())
					deltas[digest(i)] = d
				}
				_, err := st.Apply(t.Context(), deltas, time.Now(), store.DefaultLearning)
				assert.NoError(t, err)
			})
		}
		wg.Wait()
	}
	for i := range images {
		p, err := stores[0].Profile(t.Context(), digest(i), time.Now(), store.DefaultLearning)
		require.NoError(t, err)
		require.EqualValues(t, writers*rounds, p.Meta.Events, "events of image %d", i)
	}
}
