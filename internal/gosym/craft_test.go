package gosym

import (
	"bytes"
	"encoding/binary"
)

// A crafted Go binary: a little-endian ELF64 for x86-64 with the tables
// this package reads (a Go 1.20 pclntab, the runtime's module data, inline
// trees, a build id note) and nothing else, all in one loaded segment.
// What an image built to hurt could hold, in a few hundred bytes.

const craftBase = 0x400000

// craftFunc is one function of a crafted binary.
type craftFunc struct {
	name  string
	entry uint32 // offset in the text
	// tree is its inline tree: the names of the functions inlined into
	// it, each node's parent being the function itself (parentPC 0).
	tree []string
	// inl is its inline tree pcdata: runs of (node, length in bytes);
	// node -1 is the function's own code. Functions with the same
	// inlShared > 0 share one table (the first one's).
	inl       [][2]int32
	inlShared int
}

// craft describes a crafted binary; sizes replace the size field of the
// named sections' headers.
type craft struct {
	funcs   []craftFunc
	buildID string
	sizes   map[string]uint64
}

type section struct {
	name        string
	typ         uint32
	flags, addr uint64
	off, size   uint64
	link        uint32
}

func (c craft) bytes() []byte {
	le := binary.LittleEndian
	var file bytes.Buffer
	file.Write(make([]byte, 64+56)) // the ELF header and one program header
	align := func(n int) {
		for file.Len()%n != 0 {
			file.WriteByte(0)
		}
	}
	var secs []section
	add := func(name string, typ uint32, flags uint64, data []byte) section {
		align(16)
		s := section{name: name, typ: typ, flags: flags, addr: craftBase + uint64(file.Len()), off: uint64(file.Len()), size: uint64(len(data))}
		file.Write(data)
		secs = append(secs, s)
		return s
	}

	text := add(".text", 1, 0x6, make([]byte, 256)) // SHF_ALLOC|SHF_EXECINSTR

	// the inline trees (runtime.inlinedCall, 16 bytes a node) at gofunc
	var names bytes.Buffer
	names.WriteByte(0)
	nameOff := func(s string) uint32 {
		i := bytes.Index(names.Bytes(), append([]byte(s), 0))
		if i > 0 {
			return uint32(i)
		}
		off := names.Len()
		names.WriteString(s)
		names.WriteByte(0)
		return uint32(off)
	}
	var gofunc bytes.Buffer
	treeOff := make([]uint32, len(c.funcs))
	for i, f := range c.funcs {
		treeOff[i] = uint32(gofunc.Len())
		for _, n := range f.tree {
			var node [16]byte
			le.PutUint32(node[4:], nameOff(n))
			gofunc.Write(node[:])
		}
	}
	for _, f := range c.funcs {
		nameOff(f.name)
	}
	if gofunc.Len() == 0 {
		gofunc.WriteByte(0)
	}
	gofuncSec := add(".rodata", 1, 0x2, gofunc.Bytes())

	// pctab: a leading 0 (offset 0 is no table), then the inline tables
	pctab := []byte{0}
	inlOff := make([]uint32, len(c.funcs))
	shared := map[int]uint32{}
	for i, f := range c.funcs {
		if off, ok := shared[f.inlShared]; ok && f.inlShared > 0 {
			inlOff[i] = off
			continue
		}
		if len(f.inl) == 0 {
			continue
		}
		inlOff[i] = uint32(len(pctab))
		shared[f.inlShared] = inlOff[i]
		prev := int32(-1)
		for _, run := range f.inl {
			d := run[0] - prev
			pctab = binary.AppendUvarint(pctab, uint64(uint32(d<<1)^uint32(d>>31)))
			pctab = binary.AppendUvarint(pctab, uint64(run[1]))
			prev = run[0]
		}
		pctab = append(pctab, 0)
	}

	// functab: the index, then the _func records
	nfunc := len(c.funcs)
	functab := make([]byte, (nfunc+1)*8)
	for i, f := range c.funcs {
		le.PutUint32(functab[i*8:], f.entry)
		le.PutUint32(functab[i*8+4:], uint32(len(functab)))
		rec := make([]byte, 44+4*3+4*4)
		le.PutUint32(rec[0:], f.entry)
		le.PutUint32(rec[4:], nameOff(f.name))
		le.PutUint32(rec[28:], 3) // npcdata
		rec[43] = 4               // nfuncdata
		le.PutUint32(rec[44+4*2:], inlOff[i])
		for j := range 3 {
			le.PutUint32(rec[44+12+4*j:], ^uint32(0))
		}
		if len(f.tree) > 0 {
			le.PutUint32(rec[44+12+4*3:], treeOff[i])
		} else {
			le.PutUint32(rec[44+12+4*3:], ^uint32(0))
		}
		functab = append(functab, rec...)
	}
	le.PutUint32(functab[nfunc*8:], 256) // the end of the text

	hdr := make([]byte, 72)
	le.PutUint32(hdr, go120magic)
	hdr[6], hdr[7] = 1, 8 // minLC, ptrSize
	funcnameOff := uint64(len(hdr))
	pctabOff := funcnameOff + uint64(names.Len())
	pclnOff := pctabOff + uint64(len(pctab))
	for i, v := range []uint64{uint64(nfunc), 0, text.addr, funcnameOff, pctabOff, pctabOff, pctabOff, pclnOff} {
		le.PutUint64(hdr[8+8*i:], v)
	}
	pcln := add(".gopclntab", 1, 0x2, bytes.Join([][]byte{hdr, names.Bytes(), pctab, functab}, nil))

	md := make([]byte, mdWords*8)
	le.PutUint64(md[mdPCHeader*8:], pcln.addr)
	le.PutUint64(md[mdFuncnametab*8:], pcln.addr+funcnameOff)
	le.PutUint64(md[mdText*8:], text.addr)
	le.PutUint64(md[mdGofunc*8:], gofuncSec.addr)
	add(".noptrdata", 1, 0x3, md) // SHF_WRITE|SHF_ALLOC

	if c.buildID != "" {
		note := make([]byte, 16)
		le.PutUint32(note, 4)
		le.PutUint32(note[4:], uint32(len(c.buildID)))
		le.PutUint32(note[8:], 4)
		copy(note[12:], "Go\x00\x00")
		note = append(note, c.buildID...)
		for len(note)%4 != 0 {
			note = append(note, 0)
		}
		add(".note.go.buildid", 7, 0x2, note) // SHT_NOTE
	}

	var shstr bytes.Buffer
	shstr.WriteByte(0)
	nameAt := map[string]uint32{}
	for _, s := range secs {
		nameAt[s.name] = uint32(shstr.Len())
		shstr.WriteString(s.name)
		shstr.WriteByte(0)
	}
	nameAt[".shstrtab"] = uint32(shstr.Len())
	shstr.WriteString(".shstrtab\x00")
	strtab := add(".shstrtab", 3, 0, shstr.Bytes())
	secs[len(secs)-1].addr = 0
	_ = strtab

	align(8)
	shoff := file.Len()
	sh := make([]byte, 64) // the null section
	for _, s := range secs {
		b := make([]byte, 64)
		le.PutUint32(b[0:], nameAt[s.name])
		le.PutUint32(b[4:], s.typ)
		le.PutUint64(b[8:], s.flags)
		le.PutUint64(b[16:], s.addr)
		le.PutUint64(b[24:], s.off)
		size := s.size
		if v, ok := c.sizes[s.name]; ok {
			size = v
		}
		le.PutUint64(b[32:], size)
		le.PutUint32(b[40:], s.link)
		le.PutUint64(b[48:], 1)
		sh = append(sh, b...)
	}
	file.Write(sh)

	out := file.Bytes()
	copy(out, "\x7fELF")
	out[4], out[5], out[6] = 2, 1, 1 // ELFCLASS64, little-endian, EV_CURRENT
	le.PutUint16(out[16:], 2)        // ET_EXEC
	le.PutUint16(out[18:], 62)       // EM_X86_64
	le.PutUint32(out[20:], 1)
	le.PutUint64(out[24:], text.addr)
	le.PutUint64(out[32:], 64) // phoff
	le.PutUint64(out[40:], uint64(shoff))
	le.PutUint16(out[52:], 64)
	le.PutUint16(out[54:], 56)
	le.PutUint16(out[56:], 1)
	le.PutUint16(out[58:], 64)
	le.PutUint16(out[60:], uint16(len(secs)+1))
	le.PutUint16(out[62:], uint16(len(secs))) // .shstrtab is last
	ph := out[64:]
	le.PutUint32(ph[0:], 1)   // PT_LOAD
	le.PutUint32(ph[4:], 0x7) // R|W|X
	le.PutUint64(ph[8:], 0)
	le.PutUint64(ph[16:], craftBase)
	le.PutUint64(ph[24:], craftBase)
	le.PutUint64(ph[32:], uint64(shoff))
	le.PutUint64(ph[40:], uint64(shoff))
	le.PutUint64(ph[48:], 0x1000)
	return out
}

// inlinedRuns is an inline table of n runs of node 0, each one after a
// run of the function's own code: n inlined instances.
func inlinedRuns(n int) [][2]int32 {
	out := make([][2]int32, 0, 2*n)
	for range n {
		out = append(out, [2]int32{0, 1}, [2]int32{-1, 1})
	}
	return out
}

// smallCraft is a crafted binary with two functions, one inlined into the
// other twice.
func smallCraft() craft {
	return craft{
		buildID: "crafted/buildid",
		funcs: []craftFunc{
			{name: "main.main", entry: 0, tree: []string{"example.com/m/vuln.Small"}, inl: [][2]int32{{-1, 4}, {0, 8}, {-1, 4}, {0, 8}, {-1, 8}}},
			{name: "example.com/m/vuln.Small", entry: 64},
		},
	}
}
