package scanner

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	v6 "github.com/anchore/grype/grype/db/v6"
	syftPkg "github.com/anchore/syft/syft/pkg"
)

// goStdlib is the name grype and syft give the Go standard library as a
// go-module package.
const goStdlib = "stdlib"

// goRecord is what one Go vulnerability database record (GO-…) says of
// one module: its id and aliases, and the vulnerable symbols as
// "<import path>.<symbol>". Whole is set when one of its packages is
// vulnerable as a whole (no symbols listed): no function can then be
// told apart.
type goRecord struct {
	id      string
	aliases []string
	symbols []string
	whole   bool
}

// goRecords reads the Go vulnerability database records of a module
// (golang.org/x/text, or stdlib) from grype's database: they hold the
// symbols in the GoImports qualifier of the affected package.
func goRecords(rdr v6.Reader, module string) ([]goRecord, error) {
	handles, err := rdr.GetAffectedPackages(&v6.PackageSpecifier{Name: module, Ecosystem: string(syftPkg.GoModulePkg)},
		&v6.GetPackageOptions{PreloadBlob: true, PreloadVulnerability: true})
	if err != nil {
		return nil, fmt.Errorf("reading the Go vulnerability records of %s: %w", module, err)
	}
	var out []goRecord
	for _, h := range handles {
		if h.Vulnerability == nil || !strings.HasPrefix(h.Vulnerability.Name, "GO-") || h.BlobValue == nil || h.BlobValue.Qualifiers == nil {
			continue
		}
		r := goRecord{id: h.Vulnerability.Name, aliases: h.BlobValue.CVEs}
		if b := h.Vulnerability.BlobValue; b != nil {
			r.aliases = append(r.aliases, b.Aliases...)
		}
		for _, imp := range h.BlobValue.Qualifiers.GoImports {
			if len(imp.Symbols) == 0 {
				r.whole = true
			}
			for _, s := range imp.Symbols {
				r.symbols = append(r.symbols, imp.Path+"."+s)
			}
		}
		if len(r.symbols) > 0 {
			out = append(out, r)
		}
	}
	return out, nil
}

// addGoSymbols gives each match on a Go module the vulnerable symbols of
// its Go vulnerability database record: the record itself (GO-…), or the
// records of the same module that name the match's id (a GHSA or a CVE)
// among their aliases.
func addGoSymbols(rdr v6.Reader, vs []Vulnerability) error {
	records := map[string][]goRecord{}
	for i, v := range vs {
		if v.PackageType != string(syftPkg.GoModulePkg) {
			continue
		}
		recs, ok := records[v.PackageName]
		if !ok {
			var err error
			if recs, err = goRecords(rdr, v.PackageName); err != nil {
				return err
			}
			records[v.PackageName] = recs
		}
		var syms []string
		whole := false
		for _, r := range recs {
			if r.id == v.ID || slices.Contains(r.aliases, v.ID) {
				syms = append(syms, r.symbols...)
				whole = whole || r.whole
			}
		}
		if whole {
			continue
		}
		slices.Sort(syms)
		vs[i].Symbols = slices.Compact(syms)
	}
	return nil
}

// goSymbols adds the Go symbols of the open database to vs.
func (d *DB) goSymbols(vs []Vulnerability) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rdr == nil {
		return errors.New("scanner: no vulnerability database open")
	}
	return addGoSymbols(d.rdr, vs)
}

// hasGoSymbols reports whether the database holds any Go vulnerability
// record with symbols: the standard library always has some in the
// published database; a database of one's own may have only modules.
func hasGoSymbols(rdr v6.Reader) (bool, error) {
	recs, err := goRecords(rdr, goStdlib)
	if err != nil || len(recs) > 0 {
		return len(recs) > 0, err
	}
	handles, err := rdr.GetAffectedPackages(&v6.PackageSpecifier{Ecosystem: string(syftPkg.GoModulePkg)}, &v6.GetPackageOptions{PreloadBlob: true, Limit: 5000})
	if err != nil && !errors.Is(err, v6.ErrLimitReached) {
		return false, fmt.Errorf("reading Go vulnerability records: %w", err)
	}
	for _, h := range handles {
		if h.BlobValue != nil && h.BlobValue.Qualifiers != nil && len(h.BlobValue.Qualifiers.GoImports) > 0 {
			return true, nil
		}
	}
	return false, nil
}
