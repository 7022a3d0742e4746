package gosym

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Symbol splits a function name of the pclntab into its package's import
// path and the symbol as the Go vulnerability database names it: a method
// as Type.Method, whatever its receiver (value or pointer), and neither a
// function nor a type with its type parameters.
//
//	golang.org/x/text/language.ParseAcceptLanguage -> golang.org/x/text/language, ParseAcceptLanguage
//	net/http.(*conn).serve                         -> net/http, conn.serve
//	example.com/m/pkg.Map[...]                     -> example.com/m/pkg, Map
//	example.com/m/pkg.(*List[...]).Push            -> example.com/m/pkg, List.Push
//	gopkg.in/yaml%2ev3.Unmarshal                   -> gopkg.in/yaml.v3, Unmarshal
//
// Closures keep their suffix (F.func1): they run only once F has run.
func Symbol(name string) (pkg, sym string) {
	end := len(name)
	if i := strings.IndexByte(name, '['); i >= 0 {
		end = i
	}
	slash := strings.LastIndexByte(name[:end], '/')
	dot := strings.IndexByte(name[slash+1:], '.')
	if dot < 0 {
		return "", ""
	}
	dot += slash + 1
	pkg, rest := unescape(name[:dot]), name[dot+1:]
	var b strings.Builder
	depth := 0
	for _, r := range rest {
		switch {
		case r == '[':
			depth++
		case r == ']':
			depth--
		case depth > 0, r == '(', r == ')', r == '*':
		default:
			b.WriteRune(r)
		}
	}
	return pkg, b.String()
}

// unescape undoes the linker's escaping of a package path in symbol names
// (%2e for a dot in its last element, %xx for control and quote bytes).
func unescape(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			if v, err := strconv.ParseUint(p[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// ErrNoBuildID is returned for an ELF file without a Go build id note.
var ErrNoBuildID = errors.New("gosym: no Go build id")

// BuildID reads the Go build id of an ELF file, from its .note.go.buildid
// note (what `go tool buildid FILE` prints): a new build of the binary,
// even of the same sources with other flags, has another.
func BuildID(f *elf.File) (string, error) {
	sec := f.Section(".note.go.buildid")
	if sec == nil || sec.Type == elf.SHT_NOBITS {
		return "", ErrNoBuildID
	}
	if sec.Size > maxNote || sec.Flags&elf.SHF_COMPRESSED != 0 {
		return "", fmt.Errorf("%w: a Go build id note of %d bytes", ErrLimit, sec.Size)
	}
	b, err := sec.Data()
	if err != nil {
		return "", fmt.Errorf("reading .note.go.buildid: %w", err)
	}
	if len(b) < 16 {
		return "", ErrNoBuildID
	}
	namesz, descsz, typ := f.ByteOrder.Uint32(b), f.ByteOrder.Uint32(b[4:]), f.ByteOrder.Uint32(b[8:])
	desc := 12 + (uint64(namesz)+3)&^3
	if typ != 4 || namesz != 4 || string(b[12:15]) != "Go\x00" || desc+uint64(descsz) > uint64(len(b)) {
		return "", ErrNoBuildID
	}
	return string(b[desc : desc+uint64(descsz)]), nil
}

// BuildID is the Go build id of the table's binary.
func (t *Table) BuildID() (string, error) { return BuildID(t.f) }

// ReadBuildID reads the Go build id of the ELF file at path, which must
// be a regular file.
func ReadBuildID(path string) (string, error) {
	file, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading Go build id: %w", err)
	}
	defer file.Close()
	return ReadBuildIDAt(file)
}

// ReadBuildIDAt reads the Go build id of an ELF file: an *os.File (a
// regular file: its size bounds what is read), a *bytes.Reader or an
// *io.SectionReader. The ELF headers are checked before anything they
// size is read.
func ReadBuildIDAt(r io.ReaderAt) (string, error) {
	size, err := sizeOf(r)
	if err != nil {
		return "", fmt.Errorf("reading Go build id: %w", err)
	}
	f, _, err := openELF(r, size)
	if err != nil {
		return "", fmt.Errorf("reading Go build id: %w", err)
	}
	return BuildID(f)
}
