package scanner

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/store"
)

// What a Probed member vouches for: the current plan, from the binary's
// first run, no process of it read from /proc, a done profile.
func TestReachabilityVouching(t *testing.T) {
	const bin, id = "/usr/bin/app", "build-1"
	t0 := time.UnixMilli(1_800_000_000_000)
	entry := func(v string, at time.Time) store.Entry { return store.Entry{Value: v, FirstSeen: at} }
	for _, tc := range []struct {
		name    string
		probed  time.Time // zero: no Probed member
		since   time.Time
		buildID string
		seeded  bool
		state   store.State
		want    Reachability
	}{
		{name: "vouched", probed: t0, since: t0.Add(-time.Hour), buildID: id, state: store.Done, want: ReachFunctionNotObserved},
		{name: "probed at the first run", probed: t0, since: t0, buildID: id, state: store.Done, want: ReachFunctionNotObserved},
		{name: "not probed", since: t0.Add(-time.Hour), buildID: id, state: store.Done, want: ReachPackage},
		{name: "probed after the first run", probed: t0.Add(time.Second), since: t0.Add(-time.Hour), buildID: id, state: store.Done, want: ReachPackage},
		{name: "probed under an older plan", probed: t0, since: t0.Add(time.Millisecond), buildID: id, state: store.Done, want: ReachPackage},
		{name: "another build", probed: t0, since: t0.Add(-time.Hour), buildID: "build-2", state: store.Done, want: ReachPackage},
		{name: "a process ran before it was tracked", probed: t0, since: t0.Add(-time.Hour), buildID: id, seeded: true, state: store.Done, want: ReachPackage},
		{name: "still learning", probed: t0, since: t0.Add(-time.Hour), buildID: id, state: store.Learning, want: ReachPackage},
		{name: "events lost", probed: t0, since: t0.Add(-time.Hour), buildID: id, state: store.Incomplete, want: ReachPackage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &store.Profile{State: tc.state, Sections: map[store.Section][]store.Entry{
				store.Exec: {entry(bin, t0)},
			}}
			if !tc.probed.IsZero() {
				p.Sections[store.Probed] = []store.Entry{entry(store.ProbedMember(bin, id), tc.probed)}
			}
			if tc.seeded {
				p.Sections[store.Seeded] = []store.Entry{entry(store.SectionMember(store.Exec, bin), t0)}
			}
			vulns := []Vulnerability{{ID: "GO-1", PackageID: "m", Symbols: []string{"m/p.F"}, Verdict: InUse, Reachability: ReachPackage}}
			pkgs := map[string]PackageVerdict{"m": {Verdict: InUse, Evidence: []Evidence{{Path: bin, How: HowExec, FirstSeen: t0}}}}
			stored := map[string]store.GoPlan{bin: {BuildID: tc.buildID, Since: tc.since.UnixMilli()}}
			reachability(vulns, pkgs, map[string][]string{"m": {bin}}, stored, p)
			require.Equal(t, tc.want, vulns[0].Reachability)
			want := map[Reachability]Verdict{ReachFunctionNotObserved: NotObserved, ReachPackage: InUse}[tc.want]
			require.Equal(t, want, vulns[0].Verdict)

			// a hit is function_executed whatever vouches
			p.Sections[store.Functions] = []store.Entry{entry(store.FunctionMember(bin, "m/p.F"), t0.Add(time.Minute))}
			vulns[0].Reachability, vulns[0].Verdict = ReachPackage, InUse
			reachability(vulns, pkgs, map[string][]string{"m": {bin}}, stored, p)
			require.Equal(t, ReachFunctionExecuted, vulns[0].Reachability)
			require.Equal(t, InUse, vulns[0].Verdict)
		})
	}
}
