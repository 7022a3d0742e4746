package store_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
)

// runtimeStores opens a store on a standalone Redis and one on a
// three-master Cluster, where the index's shards spread over the masters.
func runtimeStores(t *testing.T) map[string]*store.Store {
	out := map[string]*store.Store{}
	for name, url := range map[string]string{"standalone": redistest.Start(t).URL(), "cluster": redistest.StartCluster(t, 3).URL()} {
		st, err := store.Open(url)
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		out[name] = st
	}
	return out
}

func workloads(n int) []store.Workload {
	var out []store.Workload
	for i := range n {
		out = append(out, store.Workload{Namespace: "ns", Kind: "Deployment", Name: fmt.Sprintf("app-%d", i), Container: "c"})
	}
	return out
}

// walk reads every page of the index, calling between(page) between two.
func walk(t *testing.T, st *store.Store, limit int, between func(int)) []store.RuntimeEntry {
	var all []store.RuntimeEntry
	after := ""
	for page := 0; ; page++ {
		entries, next, err := st.RuntimePage(t.Context(), after, limit)
		require.NoError(t, err)
		require.LessOrEqual(t, len(entries), limit)
		all = append(all, entries...)
		if next == "" {
			return all
		}
		require.Greater(t, next, after, "the cursor moves forward")
		after = next
		between(page)
	}
}

func TestRuntimeIndexWrites(t *testing.T) {
	for name, st := range runtimeStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			d := fmt.Sprintf("sha256:%064x", 1)
			wrote, err := st.SetRuntimeImage(ctx, d, "v1", workloads(3), []byte(`["a"]`))
			require.NoError(t, err)
			require.True(t, wrote)
			wrote, err = st.SetRuntimeImage(ctx, d, "v1", workloads(3), []byte(`["a"]`))
			require.NoError(t, err)
			require.False(t, wrote, "the same version is written once, whichever replica sends it")
			versions, err := st.RuntimeVersions(ctx, []string{d, fmt.Sprintf("sha256:%064x", 2)})
			require.NoError(t, err)
			require.Equal(t, map[string]string{d: "v1"}, versions)

			// A new version replaces the image's entries whole.
			_, err = st.SetRuntimeImage(ctx, d, "v2", workloads(1), []byte(`["b"]`))
			require.NoError(t, err)
			got := walk(t, st, 10, func(int) {})
			require.Equal(t, []store.RuntimeEntry{{Key: store.RuntimeKey(d, workloads(1)[0]), Digest: d, Workload: workloads(1)[0], Packages: []byte(`["b"]`)}}, got)

			require.NoError(t, st.RemoveRuntimeImage(ctx, d))
			require.Empty(t, walk(t, st, 10, func(int) {}))
			n, err := st.RuntimeCount(ctx)
			require.NoError(t, err)
			require.Zero(t, n)

			_, err = st.SetRuntimeImage(ctx, d, "", workloads(1), nil)
			require.Error(t, err, "no version")
		})
	}
}

// A cursor holds while images are added, removed and re-indexed between
// its pages: every entry present for the whole walk is returned exactly
// once, and no entry twice.
func TestRuntimeIndexCursorHolds(t *testing.T) {
	for name, st := range runtimeStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			rng := rand.New(rand.NewPCG(1, 2))
			digest := func() string { return fmt.Sprintf("sha256:%016x%048x", rng.Uint64(), 0) }
			stable := map[string]bool{}
			var stableDigests []string
			for range 150 {
				d := digest()
				ws := workloads(1 + rng.IntN(3))
				_, err := st.SetRuntimeImage(ctx, d, "v1", ws, []byte(`[]`))
				require.NoError(t, err)
				stableDigests = append(stableDigests, d)
				for _, w := range ws {
					stable[store.RuntimeKey(d, w)] = true
				}
			}
			var churn []string
			got := walk(t, st, 7, func(page int) {
				// Two new images, one of them before the cursor's position
				// and one after, most likely; one churned image removed;
				// one stable image indexed again (same entries, new version).
				for range 2 {
					d := digest()
					_, err := st.SetRuntimeImage(ctx, d, "v1", workloads(1+rng.IntN(3)), []byte(`[]`))
					require.NoError(t, err)
					churn = append(churn, d)
				}
				i := rng.IntN(len(churn))
				require.NoError(t, st.RemoveRuntimeImage(ctx, churn[i]))
				churn = slices.Delete(churn, i, i+1)
				d := stableDigests[page%len(stableDigests)]
				var ws []store.Workload
				for k := range stable {
					if w, ok := cutDigest(k, d); ok {
						ws = append(ws, w)
					}
				}
				_, err := st.SetRuntimeImage(ctx, d, fmt.Sprintf("v%d", page+2), ws, []byte(`[]`))
				require.NoError(t, err)
			})
			seen := map[string]int{}
			for _, e := range got {
				seen[e.Key]++
				require.Equal(t, 1, seen[e.Key], "%q returned twice", e.Key)
			}
			for k := range stable {
				require.Equal(t, 1, seen[k], "%q, present for the whole walk, returned once", k)
			}
			require.Greater(t, len(got), len(stable), "some churned images were met too")
			require.True(t, slices.IsSortedFunc(got, func(a, b store.RuntimeEntry) int { return strings.Compare(a.Key, b.Key) }))
		})
	}
}

func cutDigest(key, digest string) (store.Workload, bool) {
	if len(key) <= len(digest)+1 || key[:len(digest)+1] != digest+"\n" {
		return store.Workload{}, false
	}
	return store.ParseWorkload(key[len(digest)+1:]), true
}
