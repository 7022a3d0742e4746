package gosym

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// measure runs f and returns the bytes it allocated and how long it took.
func measure(f func()) (uint64, time.Duration) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	f()
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, took
}

func TestCrafted(t *testing.T) {
	tb, err := NewTable(bytes.NewReader(smallCraft().bytes()))
	require.NoError(t, err)
	id, err := tb.BuildID()
	require.NoError(t, err)
	require.Equal(t, "crafted/buildid", id)
	ins, err := tb.Instances(func(string) bool { return true })
	require.NoError(t, err)
	require.Equal(t, []Instance{
		{Name: "main.main", Addr: craftBase + 0x80 + 0},
		{Name: "example.com/m/vuln.Small", Addr: craftBase + 0x80 + 4, Inlined: true, Caller: "main.main"},
		{Name: "example.com/m/vuln.Small", Addr: craftBase + 0x80 + 16, Inlined: true, Caller: "main.main"},
		{Name: "example.com/m/vuln.Small", Addr: craftBase + 0x80 + 64},
	}, ins)
}

// A section header may claim any size: beyond the end of the file it is
// an error, and within a (sparse) file of 64 GiB it meets a cap; either
// way nothing near that size is allocated or read.
func TestHugeSections(t *testing.T) {
	const huge = 64 << 30
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		section string
		sparse  bool // the file is truncated to 64 GiB
		buildID bool // read the build id only, as the agent does
		want    error
	}{
		{"pclntab beyond the file", ".gopclntab", false, false, ErrNotGo},
		{"pclntab in a sparse file", ".gopclntab", true, false, ErrLimit},
		{"section names in a sparse file", ".shstrtab", true, false, ErrLimit},
		{"section names beyond the file", ".shstrtab", false, true, ErrNotGo},
		{"module data in a sparse file", ".noptrdata", true, false, ErrLimit},
		{"build id note in a sparse file", ".note.go.buildid", true, true, ErrLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := smallCraft()
			b := c.bytes()
			sec := findSection(t, b, tc.section)
			size := uint64(huge)
			if tc.sparse {
				size = huge - sec.off - 4096
			}
			c.sizes = map[string]uint64{tc.section: size}
			path := filepath.Join(dir, "bin")
			require.NoError(t, os.WriteFile(path, c.bytes(), 0o644))
			if tc.sparse {
				require.NoError(t, os.Truncate(path, huge))
			}
			var err error
			alloc, took := measure(func() {
				if tc.buildID {
					_, err = ReadBuildID(path)
					return
				}
				var tb *Table
				if tb, err = Open(path); err == nil {
					_ = tb.Close()
				}
			})
			require.ErrorIs(t, err, tc.want)
			t.Logf("%v: %d bytes allocated in %v", err, alloc, took)
			require.Less(t, alloc, uint64(1<<20))
			require.Less(t, took, 2*time.Second)
		})
	}
}

// findSection reads the header of a section of a crafted binary.
func findSection(t *testing.T, b []byte, name string) section {
	t.Helper()
	tb, src, err := openELF(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	_ = src
	s := tb.Section(name)
	require.NotNil(t, s, name)
	return section{name: name, off: s.Offset, size: s.Size}
}

// A crafted function with 100,000 inlined instances, and functions that
// share one long table, meet the limits of Instances: an error after a
// bounded time and memory, while raised limits give them all (the craft
// is what it claims).
func TestInstancesLimits(t *testing.T) {
	many := smallCraft()
	many.funcs[0].inl = inlinedRuns(100_000)
	shared := smallCraft()
	shared.funcs = nil
	for i := range 200 {
		// none of the inlined function is wanted: the work is all steps
		shared.funcs = append(shared.funcs, craftFunc{
			name: "main.f", entry: uint32(i), tree: []string{"unwanted.F"}, inl: inlinedRuns(50_000), inlShared: 1,
		})
	}
	for _, tc := range []struct {
		name   string
		c      craft
		want   func(string) bool
		raised Limits
		count  int
	}{
		{"100,000 inlined instances", many, func(string) bool { return true }, Limits{PerFunc: 200_000}, 100_001},
		{"one table shared by 200 functions", shared, func(n string) bool { return n != "unwanted.F" }, Limits{Steps: 1 << 30}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.c.bytes()
			tb, err := NewTable(bytes.NewReader(raw))
			require.NoError(t, err)
			var ins []Instance
			alloc, took := measure(func() { ins, err = tb.Instances(tc.want) })
			require.ErrorIs(t, err, ErrLimit)
			require.Nil(t, ins)
			t.Logf("%v: %d bytes allocated in %v", err, alloc, took)
			require.Less(t, alloc, uint64(256<<20))
			require.Less(t, took, 30*time.Second)

			tb.Limits = tc.raised
			ins, err = tb.Instances(tc.want)
			require.NoError(t, err)
			require.Len(t, ins, tc.count)
		})
	}
}

// The crafted binaries are all the parser sees: a file that is not
// regular is refused before it is read.
func TestNotRegular(t *testing.T) {
	_, err := ReadBuildID("/dev/null")
	require.ErrorIs(t, err, ErrNotGo)
	_, err = Open(t.TempDir())
	require.Error(t, err)
}
