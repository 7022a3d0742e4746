package gosym

import (
	"bytes"
	"debug/elf"
	gosym "debug/gosym"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSymbol(t *testing.T) {
	for _, tc := range []struct{ name, pkg, sym string }{
		{"golang.org/x/text/language.ParseAcceptLanguage", "golang.org/x/text/language", "ParseAcceptLanguage"},
		{"net/http.(*conn).serve", "net/http", "conn.serve"},
		{"net/http.Header.Get", "net/http", "Header.Get"},
		{"example.com/m/pkg.Map[...]", "example.com/m/pkg", "Map"},
		{"example.com/m/pkg.Map[go.shape.int]", "example.com/m/pkg", "Map"},
		{"example.com/m/pkg.(*List[...]).Push", "example.com/m/pkg", "List.Push"},
		{"example.com/m/pkg.List[...].Len", "example.com/m/pkg", "List.Len"},
		{"gopkg.in/yaml%2ev3.Unmarshal", "gopkg.in/yaml.v3", "Unmarshal"},
		{"main.main", "main", "main"},
		{"fmt.Println.func1", "fmt", "Println.func1"},
		{"runtime", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkg, sym := Symbol(tc.name)
			require.Equal(t, tc.pkg, pkg)
			require.Equal(t, tc.sym, sym)
		})
	}
}

var (
	buildOnce sync.Once
	builds    map[string]string
	errBuild  error
)

// progs builds testdata/prog, a module of its own that uses
// golang.org/x/text v0.42.0 (from the module cache: inuse's own build
// needs that version), plain, stripped and position-independent, linked
// by Go's linker and by the C toolchain's.
func progs(t *testing.T) map[string]string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gosym-test-")
		if err != nil {
			errBuild = err
			return
		}
		builds = map[string]string{}
		for name, args := range map[string][]string{
			"plain":    nil,
			"stripped": {"-ldflags=-s -w"},
			"pie":      {"-buildmode=pie", "-ldflags=-s -w"},
			// linked by the C toolchain, as cgo programs are
			"external":     {"-ldflags=-linkmode=external -s -w"},
			"external-pie": {"-buildmode=pie", "-ldflags=-linkmode=external"},
		} {
			out := filepath.Join(dir, name)
			cmd := exec.Command("go", append(append([]string{"build", "-o", out}, args...), ".")...)
			cmd.Dir = "testdata/prog"
			cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "CGO_ENABLED=1")
			if b, err := cmd.CombinedOutput(); err != nil {
				errBuild = err
				builds = map[string]string{"error": string(b)}
				return
			}
			builds[name] = out
		}
	})
	require.NoError(t, errBuild, builds["error"])
	return builds
}

// wanted are the symbols the test asks for, as Symbol gives them.
var wanted = map[string]map[string]bool{
	"golang.org/x/text/language": {"ParseAcceptLanguage": true, "MatchStrings": true},
	"example.com/inusetest/vuln": {"Small": true, "Outer": true, "Counter.Add": true, "Counter.Get": true, "Map": true},
}

func want(name string) bool {
	pkg, sym := Symbol(name)
	return wanted[pkg][sym]
}

func TestInstances(t *testing.T) {
	for kind, path := range progs(t) {
		t.Run(kind, func(t *testing.T) {
			tb, err := Open(path)
			require.NoError(t, err)
			defer tb.Close()

			id, err := tb.BuildID()
			require.NoError(t, err)
			out, err := exec.Command("go", "tool", "buildid", path).Output()
			require.NoError(t, err)
			require.Equal(t, strings.TrimSpace(string(out)), id)

			got := map[string]int{}
			inlined := map[string][]Instance{}
			ins, err := tb.Instances(want)
			require.NoError(t, err)
			for _, in := range ins {
				pkg, sym := Symbol(in.Name)
				key := pkg + "." + sym
				if in.Inlined {
					inlined[key] = append(inlined[key], in)
					continue
				}
				got[key]++
			}
			require.Equal(t, map[string]int{
				"golang.org/x/text/language.ParseAcceptLanguage": 1,
				"example.com/inusetest/vuln.Counter.Add":         1,
				"example.com/inusetest/vuln.Counter.Get":         1,
				"example.com/inusetest/vuln.Map":                 2, // one body per shape: int, string
			}, got, "entries: Small and Outer are inlined everywhere, Safe and MatchStrings not wanted or not linked")
			require.NotEmpty(t, inlined["example.com/inusetest/vuln.Outer"])
			// Small inlined into main.main, and into Outer there
			require.GreaterOrEqual(t, len(inlined["example.com/inusetest/vuln.Small"]), 2, inlined)
			for _, in := range inlined["example.com/inusetest/vuln.Small"] {
				require.Equal(t, "main.main", in.Caller)
			}

			// Every offset is where the instruction is in the file.
			f, err := elf.Open(path)
			require.NoError(t, err)
			defer f.Close()
			text := f.Section(".text")
			code, err := text.Data()
			require.NoError(t, err)
			raw, err := os.ReadFile(path)
			require.NoError(t, err)
			for _, in := range ins {
				off, ok := tb.FileOffset(in.Addr)
				require.True(t, ok, in.Name)
				at := in.Addr - text.Addr
				require.Equal(t, code[at:at+8], raw[off:off+8], in.Name)
			}
		})
	}
}

// The inlined instances start on a line of the inlined function: the
// standard library's reader of the same table agrees (it reports the
// innermost inlined position of a PC).
func TestInlinedLines(t *testing.T) {
	path := progs(t)["plain"]
	f, err := elf.Open(path)
	require.NoError(t, err)
	defer f.Close()
	pcln, err := f.Section(".gopclntab").Data()
	require.NoError(t, err)
	lt := gosym.NewLineTable(pcln, f.Section(".text").Addr)
	std, err := gosym.NewTable(nil, lt)
	require.NoError(t, err)
	src, err := os.ReadFile("testdata/prog/vuln/vuln.go")
	require.NoError(t, err)
	lineOf := func(prefix string) int {
		for i, l := range bytes.Split(src, []byte("\n")) {
			if bytes.HasPrefix(l, []byte(prefix)) {
				return i + 1
			}
		}
		t.Fatalf("no line %q", prefix)
		return 0
	}
	tb, err := Open(path)
	require.NoError(t, err)
	defer tb.Close()
	lines := map[string]int{"example.com/inusetest/vuln.Small": lineOf("func Small"), "example.com/inusetest/vuln.Outer": lineOf("func Outer")}
	n := 0
	ins, err := tb.Instances(want)
	require.NoError(t, err)
	for _, in := range ins {
		if !in.Inlined {
			continue
		}
		file, line, _ := std.PCToLine(in.Addr)
		require.True(t, strings.HasSuffix(file, "vuln/vuln.go"), "%s at %#x: %s", in.Name, in.Addr, file)
		require.Equal(t, lines[in.Name], line, in.Name)
		n++
	}
	require.Positive(t, n)
}

// A damaged binary is an error or a smaller table, never a panic: the
// scanner reads whatever images hold.
func TestDamaged(t *testing.T) {
	raw, err := os.ReadFile(progs(t)["stripped"])
	require.NoError(t, err)
	f, err := elf.NewFile(bytes.NewReader(raw))
	require.NoError(t, err)
	pcln := f.Section(".gopclntab")
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 100 {
		b := bytes.Clone(raw)
		for range 1 + rnd.IntN(64) {
			// mostly the pclntab, sometimes anywhere
			at := pcln.Offset + rnd.Uint64N(pcln.Size)
			if rnd.IntN(4) == 0 {
				at = rnd.Uint64N(uint64(len(b)))
			}
			b[at] = byte(rnd.Uint32())
		}
		if rnd.IntN(8) == 0 {
			b = b[:rnd.IntN(len(b))]
		}
		tb, err := NewTable(bytes.NewReader(b))
		if err != nil {
			continue
		}
		_, _ = tb.Instances(func(string) bool { return true })
		_, _ = tb.BuildID()
	}
}

func TestNotGo(t *testing.T) {
	_, err := Open("/proc/self/exe")
	require.NoError(t, err, "the test binary is Go")
	_, err = Open("gosym_test.go")
	require.ErrorIs(t, err, ErrNotGo)
	_, err = ReadBuildID("gosym_test.go")
	require.Error(t, err)
}
