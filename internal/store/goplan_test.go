package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
)

func TestGoPlans(t *testing.T) {
	st, err := Open(redistest.Start(t).URL())
	require.NoError(t, err)
	defer st.Close()
	const digest = "sha256:0123456789abcdef0123456789abcdef"

	got, err := st.GoPlans(t.Context(), digest)
	require.NoError(t, err)
	require.Empty(t, got)

	first := map[string]GoPlan{
		"/usr/bin/app": {BuildID: "a/b/c/d", Probes: []GoProbe{
			{Offset: 0x1234, Symbol: "golang.org/x/text/language.ParseAcceptLanguage", Vulns: []string{"GO-2022-1059"}},
			{Offset: 0x2000, Symbol: "golang.org/x/text/language.ParseAcceptLanguage", Inlined: true, Vulns: []string{"GO-2022-1059"}},
		}},
		"/bin/other": {BuildID: "e/f/g/h", Probes: []GoProbe{{Offset: 1, Symbol: "net/http.(*conn).serve", Vulns: []string{"GO-2023-0001"}}}},
	}
	before := time.Now().UnixMilli()
	require.NoError(t, st.WriteGoPlans(t.Context(), digest, first))
	got, err = st.GoPlans(t.Context(), digest)
	require.NoError(t, err)
	since := got["/usr/bin/app"].Since
	require.GreaterOrEqual(t, since, before)
	for path, p := range got {
		p.Since = 0
		require.Equal(t, first[path], p)
	}

	// A new plan replaces the old one: a binary gone from the image goes;
	// an unchanged plan keeps its Since, a changed one gets a new one.
	time.Sleep(2 * time.Millisecond)
	app := first["/usr/bin/app"]
	app.Probes = app.Probes[:1]
	second := map[string]GoPlan{"/usr/bin/app": first["/usr/bin/app"]}
	require.NoError(t, st.WriteGoPlans(t.Context(), digest, second))
	got, err = st.GoPlans(t.Context(), digest)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, since, got["/usr/bin/app"].Since)
	require.NoError(t, st.WriteGoPlans(t.Context(), digest, map[string]GoPlan{"/usr/bin/app": app}))
	got, err = st.GoPlans(t.Context(), digest)
	require.NoError(t, err)
	require.Greater(t, got["/usr/bin/app"].Since, since)
	require.Len(t, got["/usr/bin/app"].Probes, 1)

	require.NoError(t, st.WriteGoPlans(t.Context(), digest, nil))
	got, err = st.GoPlans(t.Context(), digest)
	require.NoError(t, err)
	require.Empty(t, got)
}

// The agent's answers are sections like any other: merged by the update
// script, earliest first seen kept.
func TestGoSections(t *testing.T) {
	st, err := Open(redistest.Start(t).URL())
	require.NoError(t, err)
	defer st.Close()
	const digest = "sha256:0123456789abcdef0123456789abcdef"
	fn := FunctionMember("/usr/bin/app", "golang.org/x/text/language.ParseAcceptLanguage")
	probed := ProbedMember("/usr/bin/app", "a/b/c/d")
	now := time.UnixMilli(1_800_000_000_000)
	for _, ms := range []int64{2000, 1000} {
		d := NewDelta()
		d.Add(Functions, fn, now.UnixMilli()-ms)
		d.Add(Probed, probed, now.UnixMilli()-ms)
		_, err := st.Apply(t.Context(), map[string]*Delta{digest: d}, now, LearningConfig{})
		require.NoError(t, err)
	}
	for _, sec := range []Section{Functions, Probed} {
		entries, err := st.Entries(t.Context(), digest, sec)
		require.NoError(t, err)
		require.Len(t, entries, 1)
		require.Equal(t, now.UnixMilli()-2000, entries[0].FirstSeen.UnixMilli())
	}
	path, sym, ok := SplitMember(fn)
	require.True(t, ok)
	require.Equal(t, "/usr/bin/app", path)
	require.Equal(t, "golang.org/x/text/language.ParseAcceptLanguage", sym)
	path, id, ok := SplitMember(probed)
	require.True(t, ok)
	require.Equal(t, "/usr/bin/app", path)
	require.Equal(t, "a/b/c/d", id)
}
