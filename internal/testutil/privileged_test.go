package testutil

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// outcome records whether a gate skipped or failed the test it was given.
type outcome struct {
	testing.TB
	skipped, failed string
}

func (o *outcome) Helper() {}
func (o *outcome) Skipf(format string, args ...any) {
	o.skipped = fmt.Sprintf(format, args...)
	panic(o)
}
func (o *outcome) Fatalf(format string, args ...any) {
	o.failed = fmt.Sprintf(format, args...)
	panic(o)
}

// run calls gate as a test would, stopping where Skipf or Fatalf stop it.
func run(gate func(testing.TB)) (o *outcome) {
	o = &outcome{}
	defer func() {
		if r := recover(); r != nil && r != o {
			panic(r)
		}
	}()
	gate(o)
	return o
}

// With CI=true a privileged test that cannot run fails with the reason;
// outside CI it skips and says how to opt in.
func TestRequirePrivilegedInCI(t *testing.T) {
	for _, tc := range []struct {
		name, ci, opted string
		skip, fail      string
	}{
		{name: "not opted in", skip: "run `make test` as root"},
		{name: "not opted in, CI", ci: "true", fail: "CI=true but INUSE_PRIVILEGED_TESTS is not set"},
		{name: "CI=false is not CI", ci: "false", skip: "run `make test` as root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			t.Setenv(PrivilegedEnv, tc.opted)
			o := run(RequirePrivileged)
			require.Contains(t, o.skipped, tc.skip)
			require.Contains(t, o.failed, tc.fail)
			require.True(t, (tc.skip == "") == (o.skipped == "") && (tc.fail == "") == (o.failed == ""), "%+v", o)
		})
	}
}

func TestSkipOrFail(t *testing.T) {
	t.Setenv("CI", "")
	o := run(func(tb testing.TB) { SkipOrFail(tb, "no %s", "cgroups") })
	require.Equal(t, "no cgroups", o.skipped)
	require.Empty(t, o.failed)

	t.Setenv("CI", "true")
	o = run(func(tb testing.TB) { SkipOrFail(tb, "no %s", "cgroups") })
	require.Equal(t, "CI=true and this test cannot run: no cgroups", o.failed)
	require.Empty(t, o.skipped)
}
