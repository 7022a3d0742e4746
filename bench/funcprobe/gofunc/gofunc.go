// Package gofunc builds the Go program that the function probe tests and
// bench/funcprobe run (./target), and its probe plan: the entries and the
// inlined instances of vulnlib.Parse and vulnlib.Count, found in the
// program's DWARF the way a scanner finds them in its pclntab.
package gofunc

import (
	"debug/dwarf"
	"debug/elf"
	"debug/gosym"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/inuse-dev/inuse/internal/store"
)

// Package is the import path of the planned package.
const Package = "github.com/inuse-dev/inuse/bench/funcprobe/gofunc/target/vulnlib"

// Planned are the functions of the plan: Parse runs at its own entry,
// Count only inlined into main.main.
var Planned = []string{Package + ".Parse", Package + ".Count"}

// Other is the function of the same package that the plan leaves out.
const Other = Package + ".Other"

// Vuln is the vulnerability id the plan gives its probes.
const Vuln = "GO-2099-0001"

// Build builds the target into dir and returns its path and plan. Stripped
// builds it with -ldflags=-s -w (no symbol table, no DWARF: the pclntab
// stays); its plan comes from a build with DWARF whose text is the same,
// which Build checks: the same functions at the same addresses.
func Build(dir string, stripped bool) (string, store.GoPlan, error) {
	full := filepath.Join(dir, "target")
	if err := build(full); err != nil {
		return "", store.GoPlan{}, err
	}
	probes, err := probes(full)
	if err != nil {
		return "", store.GoPlan{}, err
	}
	bin := full
	if stripped {
		bin = filepath.Join(dir, "target-stripped")
		if err := build(bin, "-ldflags=-s -w"); err != nil {
			return "", store.GoPlan{}, err
		}
		same, err := sameLayout(full, bin)
		if err != nil {
			return "", store.GoPlan{}, err
		}
		if !same {
			return "", store.GoPlan{}, errors.New("the stripped build lays out its functions unlike the one with DWARF")
		}
	}
	out, err := exec.Command("go", "tool", "buildid", bin).Output()
	if err != nil {
		return "", store.GoPlan{}, fmt.Errorf("reading the build id of %s: %w", bin, err)
	}
	return bin, store.GoPlan{BuildID: strings.TrimSpace(string(out)), Probes: probes}, nil
}

func build(out string, flags ...string) error {
	args := append(append([]string{"build", "-o", out}, flags...), "github.com/inuse-dev/inuse/bench/funcprobe/gofunc/target")
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the target: %w\n%s", err, b)
	}
	return nil
}

// probes finds the entries and inlined instances of the planned functions.
func probes(bin string) ([]store.GoProbe, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", bin, err)
	}
	defer f.Close()
	d, err := f.DWARF()
	if err != nil {
		return nil, fmt.Errorf("reading the DWARF of %s: %w", bin, err)
	}
	names := map[dwarf.Offset]string{} // abstract subprograms
	var out []store.GoProbe
	add := func(name string, pc uint64, inlined bool) error {
		if !slices.Contains(Planned, name) {
			return nil
		}
		off, err := fileOffset(f, pc)
		if err != nil {
			return err
		}
		out = append(out, store.GoProbe{Offset: off, Symbol: name, Inlined: inlined, Vulns: []string{Vuln}})
		return nil
	}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("reading the DWARF of %s: %w", bin, err)
		}
		if e == nil {
			break
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		if origin, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok {
			name = names[origin]
		}
		switch e.Tag {
		case dwarf.TagSubprogram:
			if pc, ok := e.Val(dwarf.AttrLowpc).(uint64); ok {
				if err := add(name, pc, false); err != nil {
					return nil, err
				}
			} else {
				names[e.Offset] = name
			}
		case dwarf.TagInlinedSubroutine:
			ranges, err := d.Ranges(e)
			if err != nil {
				return nil, fmt.Errorf("reading the ranges of an inlined %s: %w", name, err)
			}
			if len(ranges) == 0 {
				continue // inlined into nothing that remains
			}
			if err := add(name, ranges[0][0], true); err != nil {
				return nil, err
			}
		}
	}
	for _, sym := range Planned {
		if !slices.ContainsFunc(out, func(p store.GoProbe) bool { return p.Symbol == sym }) {
			return nil, fmt.Errorf("%s: no probe point for %s", bin, sym)
		}
	}
	return out, nil
}

// fileOffset turns a virtual address of the text into the file offset a
// uprobe takes.
func fileOffset(f *elf.File, pc uint64) (uint64, error) {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && pc >= p.Vaddr && pc < p.Vaddr+p.Filesz {
			return pc - p.Vaddr + p.Off, nil
		}
	}
	return 0, fmt.Errorf("address %#x is in no executable segment", pc)
}

// sameLayout reports whether two builds put every function at the same
// address, by their pclntabs (which stripping keeps).
func sameLayout(a, b string) (bool, error) {
	entries := func(bin string) ([]string, error) {
		f, err := elf.Open(bin)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", bin, err)
		}
		defer f.Close()
		pcln, text := f.Section(".gopclntab"), f.Section(".text")
		if pcln == nil || text == nil {
			return nil, fmt.Errorf("%s has no pclntab", bin)
		}
		data, err := pcln.Data()
		if err != nil {
			return nil, fmt.Errorf("reading the pclntab of %s: %w", bin, err)
		}
		t, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
		if err != nil {
			return nil, fmt.Errorf("reading the pclntab of %s: %w", bin, err)
		}
		out := make([]string, 0, len(t.Funcs))
		for _, fn := range t.Funcs {
			out = append(out, fmt.Sprintf("%s@%#x", fn.Name, fn.Entry))
		}
		return out, nil
	}
	ea, err := entries(a)
	if err != nil {
		return false, err
	}
	eb, err := entries(b)
	if err != nil {
		return false, err
	}
	return slices.Equal(ea, eb), nil
}
