package scanner

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"

	"github.com/anchore/syft/syft/file"
	syftPkg "github.com/anchore/syft/syft/pkg"

	"github.com/inuse-dev/inuse/internal/gosym"
)

// GoBinary is where the functions of one Go binary of an image are, read
// from its pclntab when the image is catalogued (the image is not at hand
// when a vulnerability database comes later), cached gzipped as
// gobinaries.json.gz and read only when a vulnerability names symbols.
// A 96 MB binary (inuse itself: 88,000 functions, 405,000 probe points)
// took 2 to 3 s to index here, on a busy machine, and 2 MB gzipped.
type GoBinary struct {
	BuildID string `json:"build_id"`
	// Funcs maps "<import path>.<symbol>", the symbol as the Go
	// vulnerability database names it (gosym.Symbol), to its probe points.
	Funcs map[string]GoPoints `json:"funcs"`
}

// GoPoints are the probe points of one symbol, as file offsets: its
// entries (one per body: generic shapes have several) and the starts of
// its copies inlined into other functions.
type GoPoints struct {
	Entries []uint64 `json:"e,omitempty"`
	Inlined []uint64 `json:"i,omitempty"`
}

// maxGoBinary bounds the size of a binary indexed. Read in place when the
// image's file reader can (stereoscope's readers of layer tars and
// directories can), whole into memory only otherwise; either way gosym
// bounds each table it reads (its sections, its work) on its own.
const maxGoBinary = 512 << 20

// generated are the compiler's names for closures and wrappers: they run
// only once the function they are named after has, and the vulnerability
// database never names them.
var generated = regexp.MustCompile(`\.(func|gowrap|deferwrap)\d+(\.|$)`)

// indexGoBinaries reads the function tables of the binaries that Go
// modules were found compiled into. A binary that cannot be read (not
// Go 1.20+, damaged) is left out: its vulnerabilities keep package-level
// verdicts.
func indexGoBinaries(owners *Owners, resolver file.Resolver, log *slog.Logger) map[string]GoBinary {
	out := map[string]GoBinary{}
	for path, idx := range owners.Binaries {
		if !slices.ContainsFunc(idx, func(i int) bool { return owners.Packages[i].Type == string(syftPkg.GoModulePkg) }) {
			continue
		}
		bin, err := indexGoBinary(resolver, path)
		if err != nil {
			logf := log.Debug // not Go 1.20+, no pclntab: common
			if errors.Is(err, gosym.ErrLimit) || errors.Is(err, errParserPanic) {
				logf = log.Warn // crafted or damaged: say so
			}
			logf("no Go function table: package-level verdicts for its modules", "path", path, "error", err)
			continue
		}
		out[path] = bin
	}
	return out
}

func indexGoBinary(resolver file.Resolver, path string) (GoBinary, error) {
	locs, err := resolver.FilesByPath(path)
	if err != nil || len(locs) == 0 {
		return GoBinary{}, fmt.Errorf("finding %s in the image: %w", path, err)
	}
	rc, err := resolver.FileContentsByLocation(locs[0])
	if err != nil {
		return GoBinary{}, fmt.Errorf("opening %s: %w", path, err)
	}
	defer rc.Close()
	if ra, ok := rc.(interface {
		io.ReaderAt
		io.Seeker
	}); ok {
		size, err := ra.Seek(0, io.SeekEnd)
		if err != nil {
			return GoBinary{}, fmt.Errorf("reading %s: %w", path, err)
		}
		if size > maxGoBinary {
			return GoBinary{}, fmt.Errorf("%w: %s has %d bytes (at most %d)", gosym.ErrLimit, path, size, maxGoBinary)
		}
		return readGoBinary(io.NewSectionReader(ra, 0, size))
	}
	b, err := io.ReadAll(io.LimitReader(rc, maxGoBinary+1))
	if err != nil {
		return GoBinary{}, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > maxGoBinary {
		return GoBinary{}, fmt.Errorf("%w: %s has more than %d bytes", gosym.ErrLimit, path, maxGoBinary)
	}
	return readGoBinary(bytes.NewReader(b))
}

// errParserPanic marks a panic of the function table's reader.
var errParserPanic = errors.New("parser panic")

// readGoBinary reads the function table of one Go binary. The binary
// comes from an image, whatever it holds: a parser's panic on a damaged
// file (debug/elf has had some) is that binary's error, not the scanner's
// end.
func readGoBinary(r io.ReaderAt) (bin GoBinary, err error) {
	defer func() {
		if p := recover(); p != nil {
			bin, err = GoBinary{}, fmt.Errorf("%w: %w: reading the function table: %v", gosym.ErrNotGo, errParserPanic, p)
		}
	}()
	tb, err := gosym.NewTable(r)
	if err != nil {
		return GoBinary{}, err
	}
	id, err := tb.BuildID()
	if err != nil {
		return GoBinary{}, err
	}
	bin = GoBinary{BuildID: id, Funcs: map[string]GoPoints{}}
	keep := func(name string) bool {
		return !strings.HasPrefix(name, "type:") && !strings.HasPrefix(name, "go:") && !generated.MatchString(name)
	}
	ins, err := tb.Instances(keep)
	if err != nil {
		return GoBinary{}, err
	}
	for _, in := range ins {
		pkg, sym := gosym.Symbol(in.Name)
		off, ok := tb.FileOffset(in.Addr)
		if pkg == "" || !ok {
			continue
		}
		key := pkg + "." + sym
		pts := bin.Funcs[key]
		if in.Inlined {
			pts.Inlined = append(pts.Inlined, off)
		} else {
			pts.Entries = append(pts.Entries, off)
		}
		bin.Funcs[key] = pts
	}
	return bin, nil
}
