package gosym

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
)

// A binary comes from an image or a container, whatever it holds: every
// size and offset read from it is checked against the file's size and a
// cap before anything is allocated, and the total read from one file is
// bounded, so that a section header claiming 64 GiB (in a sparse file
// that really is that large) costs an error, not the memory.

// ErrLimit is returned for a binary that exceeds a limit of this package:
// a section, a header table or the work of Instances larger than allowed.
var ErrLimit = errors.New("gosym: binary exceeds a parsing limit")

const (
	// maxSection bounds one section or segment read whole (the pclntab,
	// the segment of the function data, a symbol table). inuse's own
	// 96 MB binary has a 37 MB pclntab.
	maxSection = 256 << 20
	// maxHeaders bounds the program and section header tables and the
	// section name table, which debug/elf reads before anything else
	// (a few KiB in any real binary).
	maxHeaders = 16 << 20
	// maxNote bounds the Go build id note (about 100 bytes).
	maxNote = 64 << 10
	// maxRead bounds everything read from one file through the table.
	maxRead = 1 << 30
)

// Limits bound the work of Instances. A zero field takes its default.
// Measured on Go's compiler (26 MB): 151,660 instances, at most 1,436
// inlined in one function (ssagen.simdIntrinsics), 609,000 steps.
type Limits struct {
	// Instances bounds the instances returned for one binary (inuse's
	// own binary has 405,000 of its functions' entries and copies).
	Instances int
	// PerFunc bounds the inlined instances found in one function.
	PerFunc int
	// Steps bounds the pcvalue entries decoded and inline tree nodes
	// visited, over the whole binary.
	Steps int
}

// DefaultLimits are the limits of a Table unless its Limits are set.
var DefaultLimits = Limits{Instances: 4 << 20, PerFunc: 20_000, Steps: 1 << 24}

func (l Limits) orDefault() Limits {
	if l.Instances <= 0 {
		l.Instances = DefaultLimits.Instances
	}
	if l.PerFunc <= 0 {
		l.PerFunc = DefaultLimits.PerFunc
	}
	if l.Steps <= 0 {
		l.Steps = DefaultLimits.Steps
	}
	return l
}

// sizeOf tells the size of what r reads: a *os.File (which must be a
// regular file), a bytes.Reader, an io.SectionReader.
func sizeOf(r io.ReaderAt) (int64, error) {
	switch v := r.(type) {
	case interface{ Size() int64 }:
		return v.Size(), nil
	case interface{ Stat() (fs.FileInfo, error) }:
		fi, err := v.Stat()
		if err != nil {
			return 0, fmt.Errorf("reading the file's size: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return 0, fmt.Errorf("%w: not a regular file (%s)", ErrNotGo, fi.Mode().Type())
		}
		return fi.Size(), nil
	}
	return 0, fmt.Errorf("gosym: cannot tell the size of a %T", r)
}

// budget is a ReaderAt that reads at most size bytes of r in all: what
// debug/elf reads on its own (headers, the section name table) is
// bounded too.
type budget struct {
	r    io.ReaderAt
	size int64 // of the file
	left int64
}

func (b *budget) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= b.size {
		return 0, io.EOF
	}
	short := int64(len(p)) > b.size-off
	if short {
		p = p[:b.size-off]
	}
	if int64(len(p)) > b.left {
		return 0, fmt.Errorf("%w: more than %d bytes read", ErrLimit, int64(maxRead))
	}
	b.left -= int64(len(p))
	n, err := b.r.ReadAt(p, off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

// openELF checks the header tables of the ELF file r (size bytes) and
// opens it through a read budget.
func openELF(r io.ReaderAt, size int64) (*elf.File, *budget, error) {
	if err := checkHeaders(r, size); err != nil {
		return nil, nil, err
	}
	b := &budget{r: r, size: size, left: maxRead}
	f, err := elf.NewFile(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrNotGo, err)
	}
	return f, b, nil
}

// checkHeaders reads the ELF header and checks what debug/elf would read
// whole on opening: the program and section header tables and the
// section name table must be in the file and below maxHeaders; that
// table must not be compressed (its real size is then the file's word).
func checkHeaders(r io.ReaderAt, size int64) error {
	var h [64]byte
	if size < 52 {
		return fmt.Errorf("%w: too short for ELF", ErrNotGo)
	}
	n, err := r.ReadAt(h[:min(int64(len(h)), size)], 0)
	if n < 52 {
		return fmt.Errorf("%w: reading the ELF header: %w", ErrNotGo, err)
	}
	if string(h[:4]) != elf.ELFMAG {
		return fmt.Errorf("%w: not ELF", ErrNotGo)
	}
	var bo binary.ByteOrder
	switch elf.Data(h[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		bo = binary.LittleEndian
	case elf.ELFDATA2MSB:
		bo = binary.BigEndian
	default:
		return fmt.Errorf("%w: unknown ELF data encoding", ErrNotGo)
	}
	var phoff, shoff uint64
	var phentsize, phnum, shentsize, shnum, shstrndx uint64
	is64 := elf.Class(h[elf.EI_CLASS]) == elf.ELFCLASS64
	switch {
	case is64 && n >= 64:
		phoff, shoff = bo.Uint64(h[32:]), bo.Uint64(h[40:])
		phentsize, phnum = uint64(bo.Uint16(h[54:])), uint64(bo.Uint16(h[56:]))
		shentsize, shnum, shstrndx = uint64(bo.Uint16(h[58:])), uint64(bo.Uint16(h[60:])), uint64(bo.Uint16(h[62:]))
	case elf.Class(h[elf.EI_CLASS]) == elf.ELFCLASS32:
		phoff, shoff = uint64(bo.Uint32(h[28:])), uint64(bo.Uint32(h[32:]))
		phentsize, phnum = uint64(bo.Uint16(h[42:])), uint64(bo.Uint16(h[44:]))
		shentsize, shnum, shstrndx = uint64(bo.Uint16(h[46:])), uint64(bo.Uint16(h[48:])), uint64(bo.Uint16(h[50:]))
	default:
		return fmt.Errorf("%w: unknown ELF class", ErrNotGo)
	}
	within := func(what string, off, n, limit uint64) error {
		if off > uint64(size) || n > uint64(size)-off {
			return fmt.Errorf("%w: %s beyond the end of the file", ErrNotGo, what)
		}
		if n > limit {
			return fmt.Errorf("%w: %s of %d bytes (at most %d)", ErrLimit, what, n, limit)
		}
		return nil
	}
	if phnum > 0 {
		if err := within("program header table", phoff, phnum*phentsize, maxHeaders); err != nil {
			return err
		}
	}
	if shoff == 0 {
		return nil
	}
	// one section header: its offset and size, link and flags
	header := func(i uint64) (typ uint32, flags, off, sz uint64, link uint32, err error) {
		var b [64]byte
		at := shoff + i*shentsize
		want := uint64(40)
		if is64 {
			want = 64
		}
		if shentsize < want || i*shentsize/shentsize != i {
			return 0, 0, 0, 0, 0, fmt.Errorf("%w: bad section header size", ErrNotGo)
		}
		if err := within("section header", at, want, want); err != nil {
			return 0, 0, 0, 0, 0, err
		}
		if _, err := r.ReadAt(b[:want], int64(at)); err != nil {
			return 0, 0, 0, 0, 0, fmt.Errorf("%w: reading a section header: %w", ErrNotGo, err)
		}
		if is64 {
			return bo.Uint32(b[4:]), bo.Uint64(b[8:]), bo.Uint64(b[24:]), bo.Uint64(b[32:]), bo.Uint32(b[40:]), nil
		}
		return bo.Uint32(b[4:]), uint64(bo.Uint32(b[8:])), uint64(bo.Uint32(b[16:])), uint64(bo.Uint32(b[20:])), bo.Uint32(b[24:]), nil
	}
	if shnum == 0 || shstrndx == uint64(elf.SHN_XINDEX) {
		// more than 0xff00 sections: the counts are in section 0
		_, _, _, sz, link, err := header(0)
		if err != nil {
			return err
		}
		if shnum == 0 {
			shnum = sz
		}
		if shstrndx == uint64(elf.SHN_XINDEX) {
			shstrndx = uint64(link)
		}
	}
	if shnum > maxHeaders || shentsize > maxHeaders {
		return fmt.Errorf("%w: %d sections", ErrLimit, shnum)
	}
	if err := within("section header table", shoff, shnum*shentsize, maxHeaders); err != nil {
		return err
	}
	if shstrndx == 0 || shstrndx >= shnum {
		return nil
	}
	typ, flags, off, sz, _, err := header(shstrndx)
	if err != nil {
		return err
	}
	if elf.SectionType(typ) == elf.SHT_NOBITS {
		return nil
	}
	if elf.SectionFlag(flags)&elf.SHF_COMPRESSED != 0 {
		return fmt.Errorf("%w: compressed section name table", ErrNotGo)
	}
	return within("section name table", off, sz, maxHeaders)
}

// sectionData reads a section whole, if it is in the file, uncompressed
// and at most limit bytes.
func (t *Table) sectionData(sec *elf.Section, limit uint64) ([]byte, error) {
	if sec.Type == elf.SHT_NOBITS {
		return nil, fmt.Errorf("%w: section %s has no data", ErrNotGo, sec.Name)
	}
	if sec.Flags&elf.SHF_COMPRESSED != 0 {
		return nil, fmt.Errorf("%w: section %s is compressed", ErrNotGo, sec.Name)
	}
	return t.readFile(sec.Name, sec.Offset, sec.FileSize, limit)
}

// readFile reads n bytes at off of the file, if they are in the file and
// n is at most limit.
func (t *Table) readFile(what string, off, n, limit uint64) ([]byte, error) {
	size := uint64(t.src.size)
	if off > size || n > size-off {
		return nil, fmt.Errorf("%w: %s beyond the end of the file", ErrNotGo, what)
	}
	if n > limit {
		return nil, fmt.Errorf("%w: %s of %d bytes (at most %d)", ErrLimit, what, n, limit)
	}
	b := make([]byte, n)
	if m, err := t.src.ReadAt(b, int64(off)); uint64(m) < n {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	return b, nil
}
