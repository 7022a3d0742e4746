// Package gosym finds where the functions of a Go binary are, inlined
// copies included, from the binary's pclntab: the table the Go runtime
// itself reads for tracebacks, which stays in stripped binaries
// (-ldflags=-s -w). It reads the layout of Go 1.20 and later (ELF).
package gosym

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
)

// ErrNotGo is returned for a file that is not a Go binary this package
// reads (not ELF, no pclntab, or a Go release older than 1.20).
var ErrNotGo = errors.New("gosym: not a Go 1.20+ ELF binary")

// pclntab magic of Go 1.20 and later (runtime.pcHeader.magic).
const go120magic = 0xfffffff1

// Indexes of the runtime's per-function tables (internal/abi).
const (
	pcdataInlTreeIndex = 2
	funcdataInlTree    = 3
)

// Words of runtime.moduledata, in pointer sizes: the pointer to the
// pclntab header, funcnametab's data, and the text and gofunc addresses.
const (
	mdPCHeader    = 0
	mdFuncnametab = 1
	mdText        = 22
	mdGofunc      = 40
	mdWords       = 41
)

// Table is the function table of one Go binary.
type Table struct {
	// Limits bound the work of Instances (DefaultLimits when zero).
	Limits Limits

	f       *elf.File
	src     *budget // the file, through which f reads
	closer  io.Closer
	order   binary.ByteOrder
	ptrSize int
	minLC   uint64

	nfunc     int
	funcnames []byte // funcnametab
	pctab     []byte
	functab   []byte // pclntable: the func index, then the _func records
	text      uint64 // runtime text start: entryOff is relative to it
	gofunc    uint64 // base of funcdata offsets
	gofuncSeg []byte // the loaded segment holding gofunc
	gofuncAt  uint64 // its address
}

// Open reads the function table of the Go binary at path, which must be
// a regular file. Close it.
func Open(path string) (*Table, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotGo, err)
	}
	t, err := NewTable(file)
	if err != nil {
		_ = file.Close()
		return nil, err
	}
	t.closer = file
	return t, nil
}

// NewTable reads the function table of an ELF file that stays open while
// the table is used: an *os.File (a regular file), a *bytes.Reader or an
// *io.SectionReader, whose size bounds what is read.
func NewTable(r io.ReaderAt) (*Table, error) {
	size, err := sizeOf(r)
	if err != nil {
		return nil, err
	}
	f, src, err := openELF(r, size)
	if err != nil {
		return nil, err
	}
	return newTable(f, src)
}

// Close closes the file Open opened.
func (t *Table) Close() error {
	if t.closer == nil {
		return nil
	}
	return t.closer.Close()
}

func newTable(f *elf.File, src *budget) (*Table, error) {
	t := &Table{f: f, src: src, order: f.ByteOrder}
	sec := f.Section(".gopclntab")
	if sec == nil {
		return nil, fmt.Errorf("%w: no .gopclntab section", ErrNotGo)
	}
	data, err := t.sectionData(sec, maxSection)
	if err != nil {
		return nil, err
	}
	if len(data) < 8 || f.ByteOrder.Uint32(data) != go120magic || data[4] != 0 || data[5] != 0 {
		return nil, fmt.Errorf("%w: pclntab of an older or unknown layout", ErrNotGo)
	}
	t.ptrSize, t.minLC = int(data[7]), uint64(data[6])
	if t.ptrSize != 4 && t.ptrSize != 8 || t.minLC == 0 {
		return nil, fmt.Errorf("%w: bad pclntab header", ErrNotGo)
	}
	word := func(i int) uint64 {
		off := 8 + i*t.ptrSize
		if off+t.ptrSize > len(data) {
			return 0
		}
		return t.uint(data[off:])
	}
	nfunc := word(0)
	funcnameOff, pctabOff, pclnOff := word(3), word(6), word(7)
	if funcnameOff > pctabOff || pctabOff > pclnOff || pclnOff > uint64(len(data)) {
		return nil, fmt.Errorf("%w: bad pclntab offsets", ErrNotGo)
	}
	t.funcnames, t.pctab, t.functab = data[funcnameOff:], data[pctabOff:pclnOff], data[pclnOff:]
	if nfunc >= uint64(len(t.functab))/8 {
		return nil, fmt.Errorf("%w: truncated function index", ErrNotGo)
	}
	t.nfunc = int(nfunc)
	md, err := t.moduledata(sec.Addr, sec.Addr+funcnameOff)
	if err != nil {
		return nil, err
	}
	t.text, t.gofunc = md[mdText], md[mdGofunc]
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Vaddr <= t.gofunc && t.gofunc-p.Vaddr < p.Filesz {
			if t.gofuncSeg, err = t.readFile("the segment of the function data", p.Off, p.Filesz, maxSection); err != nil {
				return nil, err
			}
			t.gofuncAt = p.Vaddr
			break
		}
	}
	return t, nil
}

func (t *Table) uint(b []byte) uint64 {
	if t.ptrSize == 4 {
		return uint64(t.order.Uint32(b))
	}
	return t.order.Uint64(b)
}

// moduledata finds the runtime's module data, the only place that holds
// the text start and the base of the function data: by its symbol when
// the binary has one, else as the pointer-aligned word of a data section
// that points to the pclntab, followed by the pointer to its funcnametab.
func (t *Table) moduledata(pclntab, funcnametab uint64) ([]uint64, error) {
	read := func(b []byte) []uint64 {
		if len(b) < mdWords*t.ptrSize {
			return nil
		}
		md := make([]uint64, mdWords)
		for i := range md {
			md[i] = t.uint(b[i*t.ptrSize:])
		}
		if md[mdPCHeader] != pclntab || md[mdFuncnametab] != funcnametab {
			return nil
		}
		return md
	}
	if addr, ok := t.symbol("runtime.firstmoduledata"); ok {
		if b, err := t.readAddr(addr, mdWords*t.ptrSize); err == nil {
			if md := read(b); md != nil {
				return md, nil
			}
		}
	}
	for _, sec := range t.f.Sections {
		if sec.Type != elf.SHT_PROGBITS || sec.Flags&elf.SHF_WRITE == 0 {
			continue
		}
		b, err := t.sectionData(sec, maxSection)
		if err != nil {
			if errors.Is(err, ErrLimit) {
				return nil, err
			}
			continue
		}
		for off := 0; off+mdWords*t.ptrSize <= len(b); off += t.ptrSize {
			if t.uint(b[off:]) != pclntab {
				continue
			}
			if md := read(b[off:]); md != nil {
				return md, nil
			}
		}
	}
	// A position-independent binary leaves its pointers to the dynamic
	// loader: relative relocations hold their values.
	relocs, err := t.relativeRelocs()
	if err != nil {
		return nil, err
	}
	for _, r := range relocs {
		if r.value != pclntab {
			continue
		}
		b, err := t.readAddr(r.addr, mdWords*t.ptrSize)
		if err != nil {
			continue
		}
		for _, o := range relocs {
			if o.addr >= r.addr && o.addr-r.addr <= uint64(len(b)-t.ptrSize) && (o.addr-r.addr)%uint64(t.ptrSize) == 0 {
				t.order.PutUint64(b[o.addr-r.addr:], o.value)
			}
		}
		if md := read(b); md != nil {
			return md, nil
		}
	}
	return nil, fmt.Errorf("%w: no runtime module data found", ErrNotGo)
}

// symbol finds the value of a symbol in the binary's symbol table, if it
// has one, without reading the table into a list of symbols.
func (t *Table) symbol(name string) (uint64, bool) {
	symtab := t.f.SectionByType(elf.SHT_SYMTAB)
	if symtab == nil || int(symtab.Link) >= len(t.f.Sections) {
		return 0, false
	}
	syms, err := t.sectionData(symtab, maxSection)
	if err != nil {
		return 0, false
	}
	strs, err := t.sectionData(t.f.Sections[symtab.Link], maxSection)
	if err != nil {
		return 0, false
	}
	entry, value := 16, 4 // Elf32_Sym
	if t.f.Class == elf.ELFCLASS64 {
		entry, value = 24, 8
	}
	for ; len(syms) >= entry; syms = syms[entry:] {
		at := uint64(t.order.Uint32(syms))
		if at >= uint64(len(strs)) || !bytes.HasPrefix(strs[at:], []byte(name+"\x00")) {
			continue
		}
		if entry == 24 {
			return t.order.Uint64(syms[value:]), true
		}
		return uint64(t.order.Uint32(syms[value:])), true
	}
	return 0, false
}

// reloc is a relative relocation: the loader writes value at addr.
type reloc struct{ addr, value uint64 }

// relativeRelocs lists the relative relocations (with addend) of a
// 64-bit binary.
func (t *Table) relativeRelocs() ([]reloc, error) {
	var relative uint32
	switch t.f.Machine {
	case elf.EM_X86_64:
		relative = uint32(elf.R_X86_64_RELATIVE)
	case elf.EM_AARCH64:
		relative = uint32(elf.R_AARCH64_RELATIVE)
	default:
		return nil, nil
	}
	var out []reloc
	for _, sec := range t.f.Sections {
		if sec.Type != elf.SHT_RELA || t.ptrSize != 8 { //nolint:misspell // the ELF name
			continue
		}
		b, err := t.sectionData(sec, maxSection)
		if err != nil {
			if errors.Is(err, ErrLimit) {
				return nil, err
			}
			continue
		}
		for ; len(b) >= 24; b = b[24:] {
			if uint32(t.order.Uint64(b[8:])) == relative {
				out = append(out, reloc{t.order.Uint64(b), t.order.Uint64(b[16:])})
			}
		}
	}
	return out, nil
}

// readAddr reads n bytes at a virtual address of a loaded segment.
func (t *Table) readAddr(addr uint64, n int) ([]byte, error) {
	for _, p := range t.f.Progs {
		if p.Type == elf.PT_LOAD && p.Vaddr <= addr && addr+uint64(n) <= p.Vaddr+p.Filesz {
			b := make([]byte, n)
			if _, err := p.ReadAt(b, int64(addr-p.Vaddr)); err != nil {
				return nil, fmt.Errorf("reading at %#x: %w", addr, err)
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("address %#x is in no loaded segment", addr)
}

// FileOffset turns a virtual address into the offset of its byte in the
// file, as uprobes are placed, through the ELF program headers.
func (t *Table) FileOffset(addr uint64) (uint64, bool) {
	for _, p := range t.f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && p.Vaddr <= addr && addr < p.Vaddr+p.Filesz {
			return addr - p.Vaddr + p.Off, true
		}
	}
	return 0, false
}

// Func is one function of the table.
type Func struct {
	Name  string
	Entry uint64 // virtual address
	off   uint64 // of its _func record in functab
	end   uint64 // the next function's entry
}

// Funcs lists the functions of the table, in address order.
func (t *Table) Funcs() []Func {
	out := make([]Func, 0, t.nfunc)
	for i := range t.nfunc {
		entry := uint64(t.order.Uint32(t.functab[i*8:]))
		next := uint64(t.order.Uint32(t.functab[(i+1)*8:]))
		off := uint64(t.order.Uint32(t.functab[i*8+4:]))
		if off+44 > uint64(len(t.functab)) {
			continue
		}
		name := t.name(int32(t.order.Uint32(t.functab[off+4:])))
		out = append(out, Func{Name: name, Entry: t.text + entry, off: off, end: t.text + next})
	}
	return out
}

func (t *Table) name(off int32) string {
	if off < 0 || int(off) >= len(t.funcnames) {
		return ""
	}
	b := t.funcnames[off:]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// pcRange is a run of PCs with one value of a pcvalue table.
type pcRange struct {
	start, end uint64
	val        int32
}

// pcdata decodes table index i of f over its PCs; nil when f has none.
// Each entry decoded is a step of w; the ranges are appended to out[:0].
func (t *Table) pcdata(f Func, i uint32, w *work, out []pcRange) ([]pcRange, error) {
	out = out[:0]
	rec := t.functab[f.off:]
	npcdata := t.order.Uint32(rec[28:])
	if i >= npcdata || 44+4*int(i)+4 > len(rec) {
		return out, nil
	}
	off := t.order.Uint32(rec[44+4*i:])
	if off == 0 || int(off) >= len(t.pctab) {
		return out, nil
	}
	p := t.pctab[off:]
	pc, val := f.Entry, int32(-1)
	for first := true; len(p) > 0; first = false {
		uv, n := binary.Uvarint(p)
		if n <= 0 || uv == 0 && !first {
			break
		}
		p = p[n:]
		val += int32(-(uint32(uv) & 1) ^ (uint32(uv) >> 1))
		pcd, n := binary.Uvarint(p)
		if n <= 0 {
			break
		}
		p = p[n:]
		end := pc + pcd*t.minLC
		out = append(out, pcRange{pc, end, val})
		pc = end
		if err := w.step(f, 1); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// work counts the steps of Instances against its limits.
type work struct {
	lim   Limits
	steps int
}

func (w *work) step(f Func, n int) error {
	w.steps += n
	if w.steps > w.lim.Steps {
		return fmt.Errorf("%w: more than %d steps reading the inline trees (at %s)", ErrLimit, w.lim.Steps, f.Name)
	}
	return nil
}

// inlinedCall is one node of a function's inline tree
// (runtime.inlinedCall).
type inlinedCall struct {
	name     string
	parentPC uint64 // offset from the function's entry
}

// inlTree returns a reader of f's inline tree nodes, nil when f has no
// inline tree.
func (t *Table) inlTree(f Func) func(idx int32) (inlinedCall, bool) {
	rec := t.functab[f.off:]
	npcdata, nfuncdata := t.order.Uint32(rec[28:]), uint32(rec[43])
	at := 44 + 4*int(npcdata) + 4*funcdataInlTree
	if funcdataInlTree >= nfuncdata || at+4 > len(rec) {
		return nil
	}
	off := t.order.Uint32(rec[at:])
	if off == ^uint32(0) || t.gofuncSeg == nil {
		return nil
	}
	base := t.gofunc + uint64(off) - t.gofuncAt
	return func(idx int32) (inlinedCall, bool) {
		p := base + uint64(idx)*16
		if idx < 0 || p >= uint64(len(t.gofuncSeg)) || uint64(len(t.gofuncSeg))-p < 16 {
			return inlinedCall{}, false
		}
		b := t.gofuncSeg[p:]
		return inlinedCall{name: t.name(int32(t.order.Uint32(b[4:]))), parentPC: uint64(t.order.Uint32(b[8:]))}, true
	}
}

// Instance is one place where a function's code runs: its entry, or the
// start of a run of instructions inlined from it into another function.
type Instance struct {
	Name    string // the function's name as the pclntab spells it
	Addr    uint64
	Inlined bool
	Caller  string // for an inlined instance, the function it is inlined into
}

// Instances returns every entry and inlined instance of the functions
// want selects by name, in address order. An inlined instance starts at
// the first PC of each run of PCs whose inline stack holds the function,
// so that its body is never entered without passing one of them (code
// inlined into it included). A table that takes more work than t.Limits
// allow (a crafted one) is an error wrapping ErrLimit.
func (t *Table) Instances(want func(name string) bool) ([]Instance, error) {
	w := &work{lim: t.Limits.orDefault()}
	var out []Instance
	var ranges []pcRange // reused from one function to the next
	for _, f := range t.Funcs() {
		if want(f.Name) {
			out = append(out, Instance{Name: f.Name, Addr: f.Entry})
		}
		if len(out) > w.lim.Instances {
			return nil, fmt.Errorf("%w: more than %d instances", ErrLimit, w.lim.Instances)
		}
		tree := t.inlTree(f)
		if tree == nil {
			continue
		}
		var err error
		ranges, err = t.pcdata(f, pcdataInlTreeIndex, w, ranges)
		if err != nil {
			return nil, err
		}
		valueAt := func(pc uint64) int32 {
			i := sort.Search(len(ranges), func(i int) bool { return ranges[i].end > pc })
			if i < len(ranges) && ranges[i].start <= pc {
				return ranges[i].val
			}
			return -1
		}
		// stack lists the inline tree nodes at a PC whose function is
		// wanted, innermost first; memoised per node.
		stacks := map[int32][]int32{}
		var stack func(idx int32, depth int) []int32
		stack = func(idx int32, depth int) []int32 {
			if idx < 0 || depth > 1000 || w.steps > w.lim.Steps {
				return nil
			}
			if s, ok := stacks[idx]; ok {
				return s
			}
			stacks[idx] = nil // a cycle in a corrupt table ends here
			call, ok := tree(idx)
			if !ok {
				return nil
			}
			parent := stack(valueAt(f.Entry+call.parentPC), depth+1)
			s := parent
			if want(call.name) {
				s = append([]int32{idx}, parent...)
			}
			w.steps += 1 + len(s)
			stacks[idx] = s
			return s
		}
		open := map[int32]uint64{} // node -> end of its current run
		inlined := 0
		for _, r := range ranges {
			for _, idx := range stack(r.val, 0) {
				if end, ok := open[idx]; ok && end == r.start {
					open[idx] = r.end
					continue
				}
				open[idx] = r.end
				call, _ := tree(idx)
				out = append(out, Instance{Name: call.name, Addr: r.start, Inlined: true, Caller: f.Name})
				if inlined++; inlined > w.lim.PerFunc {
					return nil, fmt.Errorf("%w: more than %d inlined instances in %s", ErrLimit, w.lim.PerFunc, f.Name)
				}
			}
			if err := w.step(f, 1); err != nil {
				return nil, err
			}
		}
		if len(out) > w.lim.Instances {
			return nil, fmt.Errorf("%w: more than %d instances", ErrLimit, w.lim.Instances)
		}
	}
	slices.SortFunc(out, func(a, b Instance) int {
		if a.Addr != b.Addr {
			if a.Addr < b.Addr {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return slices.CompactFunc(out, func(a, b Instance) bool { return a.Addr == b.Addr && a.Name == b.Name }), nil
}
