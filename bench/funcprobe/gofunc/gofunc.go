// Package gofunc builds the Go program that the function probe tests and
// bench/funcprobe run (./target), and its probe plan: the entries and the
// inlined instances of vulnlib.Parse and vulnlib.Count, found in the
// program's pclntab by the scanner's resolver (internal/gosym).
package gofunc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	"github.com/inuse-dev/inuse/internal/gosym"
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

// PrebuiltEnv names a target built beforehand (stripped, for the
// architecture it runs on), for machines without a Go toolchain: the test
// VMs of tests/kernels.
const PrebuiltEnv = "INUSE_GOFUNC_TARGET"

// Build builds the target into dir and returns its path and plan;
// stripped builds it with -ldflags=-s -w (no symbol table, no DWARF: the
// pclntab stays). With PrebuiltEnv set, a stripped target is that file.
func Build(dir string, stripped bool) (string, store.GoPlan, error) {
	if prebuilt := os.Getenv(PrebuiltEnv); prebuilt != "" && stripped {
		plan, err := Plan(prebuilt)
		return prebuilt, plan, err
	}
	bin := filepath.Join(dir, "target")
	args := []string{"build", "-o", bin}
	if stripped {
		args = append(args, "-ldflags=-s -w")
	}
	cmd := exec.Command("go", append(args, "github.com/inuse-dev/inuse/bench/funcprobe/gofunc/target")...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", store.GoPlan{}, fmt.Errorf("building the target: %w\n%s", err, b)
	}
	plan, err := Plan(bin)
	return bin, plan, err
}

// Plan is the probe plan of the target at bin, as the scanner makes one.
func Plan(bin string) (store.GoPlan, error) {
	tb, err := gosym.Open(bin)
	if err != nil {
		return store.GoPlan{}, err
	}
	defer tb.Close()
	id, err := tb.BuildID()
	if err != nil {
		return store.GoPlan{}, err
	}
	plan := store.GoPlan{BuildID: id}
	name := func(fn string) string {
		pkg, sym := gosym.Symbol(fn)
		return pkg + "." + sym
	}
	ins, err := tb.Instances(func(fn string) bool { return slices.Contains(Planned, name(fn)) })
	if err != nil {
		return store.GoPlan{}, err
	}
	for _, in := range ins {
		off, ok := tb.FileOffset(in.Addr)
		if !ok {
			return store.GoPlan{}, fmt.Errorf("%s: %s at %#x is in no executable segment", bin, in.Name, in.Addr)
		}
		plan.Probes = append(plan.Probes, store.GoProbe{Offset: off, Symbol: name(in.Name), Inlined: in.Inlined, Vulns: []string{Vuln}})
	}
	for _, sym := range Planned {
		if !slices.ContainsFunc(plan.Probes, func(p store.GoProbe) bool { return p.Symbol == sym }) {
			return store.GoPlan{}, fmt.Errorf("%s: no probe point for %s", bin, sym)
		}
	}
	return plan, nil
}
