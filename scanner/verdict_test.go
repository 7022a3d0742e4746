package scanner

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/anchore/syft/syft/pkg"
	"github.com/anchore/syft/syft/sbom"
	"github.com/anchore/syft/syft/source"
	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/store"
)

// TestVerdictStates: a loaded file makes its package in use in every
// state; what loaded nothing is not observed only once the profile is
// done, and unknown while it learns, when events were lost, without a
// profile, or when the package has no file mapping. Directory reads,
// writes, and plain reads of a binary whose modules only run when it is
// executed count for nothing.
func TestVerdictStates(t *testing.T) {
	o := &Owners{
		Packages: []OwnedPackage{
			{ID: "lib", Type: "deb", HasFiles: true},
			{ID: "npm", Type: "npm", HasFiles: true},
			{ID: "gomod", Type: "go-module", HasFiles: true},
			{ID: "logs", Type: "deb", HasFiles: true},
			{ID: "nomap", Type: "conan"},
		},
		Files:    map[string][]int{"/usr/lib/liba.so.1": {0}, "/var/log/app.log": {3}},
		Dirs:     map[string][]int{"/app/node_modules/b": {1}},
		Binaries: map[string][]int{"/usr/bin/g": {2}},
	}
	loads := []load{
		{store.Mapped, "/usr/lib/liba.so.1"},
		{store.DirsRead, "/app/node_modules/b"},
		{store.DirsWritten, "/app/node_modules/b/lib"},
		{store.FilesWritten, "/app/node_modules/b/cache.json"},
		{store.FilesWritten, "/var/log/app.log"},
		{store.FilesRead, "/usr/bin/g"}, // sha256sum of a binary runs none of it
	}
	libInUse := PackageVerdict{Verdict: InUse, Evidence: []Evidence{{Path: "/usr/lib/liba.so.1", How: HowMapped, FirstSeen: t0}}}
	unknown := PackageVerdict{Verdict: Unknown}
	notObserved := PackageVerdict{Verdict: NotObserved}
	cases := []struct {
		name    string
		profile *store.Profile
		want    map[string]PackageVerdict
	}{
		{
			name:    "no profile",
			profile: nil,
			want:    map[string]PackageVerdict{"lib": unknown, "npm": unknown, "gomod": unknown, "logs": unknown, "nomap": unknown},
		},
		{
			name:    "learning",
			profile: profile(store.Learning, loads...),
			want:    map[string]PackageVerdict{"lib": libInUse, "npm": unknown, "gomod": unknown, "logs": unknown, "nomap": unknown},
		},
		{
			name:    "incomplete",
			profile: profile(store.Incomplete, loads...),
			want:    map[string]PackageVerdict{"lib": libInUse, "npm": unknown, "gomod": unknown, "logs": unknown, "nomap": unknown},
		},
		{
			name:    "done",
			profile: profile(store.Done, loads...),
			want:    map[string]PackageVerdict{"lib": libInUse, "npm": notObserved, "gomod": notObserved, "logs": notObserved, "nomap": unknown},
		},
		{
			name:    "done, binary executed",
			profile: profile(store.Done, load{store.Exec, "/usr/bin/g"}, load{store.Mapped, "/usr/bin/g"}),
			want: map[string]PackageVerdict{
				"lib": notObserved, "npm": notObserved, "logs": notObserved, "nomap": unknown,
				"gomod": {Verdict: InUse, Evidence: []Evidence{{Path: "/usr/bin/g", How: HowExec, FirstSeen: t0}, {Path: "/usr/bin/g", How: HowMapped, FirstSeen: t0.Add(1e9)}}},
			},
		},
		{
			name:    "done, file under a package directory",
			profile: profile(store.Done, load{store.FilesRead, "/app/node_modules/b/lib/index.js"}),
			want: map[string]PackageVerdict{
				"lib": notObserved, "gomod": notObserved, "logs": notObserved, "nomap": unknown,
				"npm": {Verdict: InUse, Evidence: []Evidence{{Path: "/app/node_modules/b/lib/index.js", How: HowRead, FirstSeen: t0}}},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, o.Verdicts(tc.profile)); diff != "" {
				t.Errorf("verdicts (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOwnerLookups covers the lookups beyond an exact file: nested
// node_modules (the deepest package directory wins), compiled Python
// modules, and evidence folded per file and way of loading.
func TestOwnerLookups(t *testing.T) {
	o := &Owners{
		Packages: []OwnedPackage{{ID: "a", HasFiles: true}, {ID: "b", HasFiles: true}, {ID: "six", HasFiles: true}, {ID: "py2", HasFiles: true}},
		Files:    map[string][]int{"/site/six.py": {2}, "/opt/py2/mod.py": {3}},
		Dirs:     map[string][]int{"/app/node_modules/a": {0}, "/app/node_modules/a/node_modules/b": {1}},
	}
	cases := []struct {
		name string
		load load
		want []string // packages in use
	}{
		{"nested package", load{store.FilesRead, "/app/node_modules/a/node_modules/b/index.js"}, []string{"b"}},
		{"outer package", load{store.FilesRead, "/app/node_modules/a/lib/index.js"}, []string{"a"}},
		{"sibling of the package directory", load{store.FilesRead, "/app/node_modules/ab/index.js"}, nil},
		{"the directory path itself", load{store.FilesRead, "/app/node_modules/a"}, nil},
		{"pycache", load{store.FilesRead, "/site/__pycache__/six.cpython-311.pyc"}, []string{"six"}},
		{"optimised pycache", load{store.FilesRead, "/site/__pycache__/six.cpython-311.opt-1.pyc"}, []string{"six"}},
		{"python 2 pyc", load{store.FilesRead, "/opt/py2/mod.pyc"}, []string{"py2"}},
		{"unclean path", load{store.FilesRead, "/site//six.py"}, []string{"six"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for id, v := range o.Verdicts(profile(store.Done, tc.load)) {
				if v.Verdict == InUse {
					got = append(got, id)
				}
			}
			require.ElementsMatch(t, tc.want, got)
		})
	}
	t.Run("evidence folded", func(t *testing.T) {
		p := profile(store.Done,
			load{store.FilesRead, "/site/six.py"}, load{store.FilesRead, "/site/__pycache__/six.cpython-311.pyc"})
		p.Sections[store.FilesRead] = append(p.Sections[store.FilesRead], store.Entry{Value: "/site/six.py", FirstSeen: t0.Add(-1e9)})
		want := []Evidence{
			{Path: "/site/six.py", How: HowRead, FirstSeen: t0.Add(-1e9)},
			{Path: "/site/__pycache__/six.cpython-311.pyc", How: HowRead, FirstSeen: t0.Add(1e9)},
		}
		if diff := cmp.Diff(want, o.Verdicts(p)["six"].Evidence); diff != "" {
			t.Errorf("evidence (-want +got):\n%s", diff)
		}
	})
}

// TestCanonicalPaths: owned paths are resolved through the image's
// symlinks as the kernel resolves them at open: usr-merge directory links,
// chains of file links, relative and absolute targets. A package that
// lists only a symlink to another package's file (libz.so of zlib1g-dev)
// does not own that file; it does own a target nobody else lists.
func TestCanonicalPaths(t *testing.T) {
	root := t.TempDir()
	usrMerged(t, root)
	writeFiles(t, root, map[string]string{
		"usr/lib/x86_64-linux-gnu/libz.so.1.2.13": "elf",
		"usr/lib/x86_64-linux-gnu/libz.so.1":      "-> libz.so.1.2.13",
		"usr/lib/x86_64-linux-gnu/libz.so":        "-> /lib/x86_64-linux-gnu/libz.so.1",
		"usr/include/zlib.h":                      "/* zlib */",
		"etc/ssl/openssl.cnf":                     "[openssl]",
		"usr/lib/ssl/openssl.cnf":                 "-> /etc/ssl/openssl.cnf",
		"usr/bin/mawk":                            "elf",
		"etc/alternatives/awk":                    "-> /usr/bin/mawk",
		"usr/bin/awk":                             "-> /etc/alternatives/awk",
		"opt/loop/a":                              "-> b",
		"opt/loop/b":                              "-> a",
		"srv/data":                                "-> ../opt/real",
		"opt/real/app.py":                         "print()",
	})
	deb := func(name string, files ...string) pkg.Package {
		var recs []pkg.DpkgFileRecord
		for _, f := range files {
			recs = append(recs, pkg.DpkgFileRecord{Path: f})
		}
		p := pkg.Package{Name: name, Version: "1", Type: pkg.DebPkg, Metadata: pkg.DpkgDBEntry{Package: name, Files: recs}}
		p.SetID()
		return p
	}
	pkgs := map[string]pkg.Package{
		"zlib1g":     deb("zlib1g", "/lib/x86_64-linux-gnu/libz.so.1.2.13", "/lib/x86_64-linux-gnu/libz.so.1"),
		"zlib1g-dev": deb("zlib1g-dev", "/usr/lib/x86_64-linux-gnu/libz.so", "/usr/include/zlib.h"),
		"libssl":     deb("libssl", "/usr/lib/ssl/openssl.cnf"),
		"mawk":       deb("mawk", "/usr/bin/mawk"),
		"awk-link":   deb("awk-link", "/usr/bin/awk"),
		"loop":       deb("loop", "/opt/loop/a"),
		"app":        deb("app", "/srv/data/app.py"),
	}
	var all []pkg.Package
	for _, p := range pkgs {
		all = append(all, p)
	}
	s := &sbom.SBOM{Artifacts: sbom.Artifacts{Packages: pkg.NewCollection(all...)}}
	res, err := dirSource(t, root).FileResolver(source.SquashedScope)
	require.NoError(t, err)
	o, err := BuildOwners(s, res)
	require.NoError(t, err)

	owners := func(p string) []string {
		var names []string
		for _, i := range o.Files[p] {
			for name, pk := range pkgs {
				if string(pk.ID()) == o.Packages[i].ID {
					names = append(names, name)
				}
			}
		}
		return names
	}
	cases := []struct {
		path string
		want []string
	}{
		{"/usr/lib/x86_64-linux-gnu/libz.so.1.2.13", []string{"zlib1g"}},
		{"/lib/x86_64-linux-gnu/libz.so.1.2.13", nil}, // never reported by the kernel
		{"/usr/include/zlib.h", []string{"zlib1g-dev"}},
		{"/etc/ssl/openssl.cnf", []string{"libssl"}},
		{"/usr/bin/mawk", []string{"mawk"}},
		{"/opt/real/app.py", []string{"app"}},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			require.ElementsMatch(t, tc.want, owners(tc.path), "owners of %s in %v", tc.path, o.Files)
		})
	}

	t.Run("verdicts survive the JSON cache", func(t *testing.T) {
		b, err := json.Marshal(o)
		require.NoError(t, err)
		var back Owners
		require.NoError(t, json.Unmarshal(b, &back))
		p := profile(store.Done, load{store.Mapped, "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"})
		want := o.Verdicts(p)
		require.Equal(t, InUse, want[string(pkgs["zlib1g"].ID())].Verdict)
		require.Equal(t, NotObserved, want[string(pkgs["zlib1g-dev"].ID())].Verdict)
		if diff := cmp.Diff(want, back.Verdicts(p)); diff != "" {
			t.Errorf("verdicts after a JSON round trip (-before +after):\n%s", diff)
		}
	})
}

// BenchmarkVerdicts: 500 packages (400 dpkg of 60 files, 50 npm package
// directories, 50 Go binaries) against a profile of 20 000 files, half of
// them owned, plus executed and mapped files.
func BenchmarkVerdicts(b *testing.B) {
	o := &Owners{Files: map[string][]int{}, Dirs: map[string][]int{}, Binaries: map[string][]int{}}
	var loads []load
	for i := range 500 {
		o.Packages = append(o.Packages, OwnedPackage{ID: fmt.Sprintf("pkg-%d", i), HasFiles: true})
		switch {
		case i < 400:
			for f := range 60 {
				p := fmt.Sprintf("/usr/lib/x86_64-linux-gnu/pkg%d/sub%d/file%d.so", i, f%4, f)
				o.Files[p] = append(o.Files[p], i)
				if f%5 == 0 {
					loads = append(loads, load{store.FilesRead, p})
				}
			}
		case i < 450:
			d := fmt.Sprintf("/app/node_modules/pkg%d", i)
			o.Dirs[d] = []int{i}
			for f := range 40 {
				loads = append(loads, load{store.FilesRead, fmt.Sprintf("%s/lib/deep/er/file%d.js", d, f)})
			}
		default:
			p := fmt.Sprintf("/usr/local/bin/tool%d", i)
			o.Binaries[p] = []int{i}
			loads = append(loads, load{store.Exec, p}, load{store.Mapped, p})
		}
	}
	for i := 0; len(loads) < 20000; i++ {
		loads = append(loads, load{store.FilesRead, fmt.Sprintf("/etc/unowned/dir%d/sub/file%d.conf", i%100, i)})
	}
	p := profile(store.Done, loads...)
	b.ResetTimer()
	for b.Loop() {
		v := o.Verdicts(p)
		if len(v) != 500 {
			b.Fatalf("%d verdicts", len(v))
		}
	}
	b.ReportMetric(float64(len(loads)), "profile_files")
}

// A package only exec sessions loaded is in use, with evidence that says
// so, and has the verdict it would have without them; a report without
// exec sessions takes that verdict for it and its vulnerabilities.
func TestExecSessionEvidence(t *testing.T) {
	o := &Owners{
		Packages: []OwnedPackage{{ID: "bash", Type: "deb", HasFiles: true}, {ID: "libc", Type: "deb", HasFiles: true}},
		Files:    map[string][]int{"/usr/bin/bash": {0}, "/usr/lib/libc.so.6": {1}},
	}
	p := profile(store.Done,
		load{store.Exec, "/usr/bin/bash"},
		load{store.Mapped, "/usr/lib/libc.so.6"},
		load{store.FilesRead, "/usr/lib/libc.so.6"},
		load{store.ExecSessions, store.SectionMember(store.Exec, "/usr/bin/bash")},
		load{store.ExecSessions, store.SectionMember(store.FilesRead, "/usr/lib/libc.so.6")},
	)
	got := o.Verdicts(p)
	require.Equal(t, PackageVerdict{Verdict: InUse, WithoutExecSessions: NotObserved, Evidence: []Evidence{
		{Path: "/usr/bin/bash", How: HowExec, FirstSeen: t0, Source: SourceExecSession},
	}}, got["bash"])
	require.Equal(t, PackageVerdict{Verdict: InUse, Evidence: []Evidence{
		{Path: "/usr/lib/libc.so.6", How: HowMapped, FirstSeen: t0.Add(1e9)},
		{Path: "/usr/lib/libc.so.6", How: HowRead, FirstSeen: t0.Add(2e9), Source: SourceExecSession},
	}}, got["libc"], "the workload mapped it: in use either way")

	rep := &Report{
		Packages: []Package{
			{ID: "bash", Verdict: InUse, VerdictWithoutExecSessions: NotObserved, Evidence: got["bash"].Evidence},
			{ID: "libc", Verdict: InUse, Evidence: got["libc"].Evidence},
		},
		Vulnerabilities: []Vulnerability{
			{ID: "CVE-1", PackageID: "bash", Verdict: InUse, Reachability: ReachPackage, Severity: "High"},
			{ID: "CVE-2", PackageID: "libc", Verdict: InUse, Reachability: ReachPackage, Severity: "High"},
		},
	}
	rep.Summary = countVulnerabilities(rep.Vulnerabilities)
	without := rep.WithoutExecSessions()
	require.Equal(t, NotObserved, without.Packages[0].Verdict)
	require.Empty(t, without.Packages[0].Evidence)
	require.Equal(t, InUse, without.Packages[1].Verdict)
	require.Len(t, without.Packages[1].Evidence, 1)
	require.Equal(t, 1, without.Summary.InUse)
	require.Equal(t, 1, without.Summary.NotObserved)
	require.Equal(t, 2, rep.Summary.InUse, "the report itself is unchanged")
	require.Equal(t, NotObserved, without.Vulnerabilities[slices.IndexFunc(without.Vulnerabilities, func(v Vulnerability) bool { return v.ID == "CVE-1" })].Verdict)
}

// A file the agent read from /proc (a process that ran before its
// container was tracked) is evidence like any other, and says so; the same
// path seen live in another section does not.
func TestSeededEvidence(t *testing.T) {
	o := &Owners{
		Packages: []OwnedPackage{{ID: "ssl", Type: "deb", HasFiles: true}, {ID: "py", Type: "deb", HasFiles: true}},
		Files:    map[string][]int{"/usr/lib/libssl.so.3": {0}, "/usr/bin/python3.11": {1}},
	}
	p := profile(store.Learning,
		load{store.Mapped, "/usr/lib/libssl.so.3"},
		load{store.FilesRead, "/usr/lib/libssl.so.3"},
		load{store.Exec, "/usr/bin/python3.11"},
		load{store.Seeded, store.SectionMember(store.Mapped, "/usr/lib/libssl.so.3")},
	)
	got := o.Verdicts(p)
	require.Equal(t, PackageVerdict{Verdict: InUse, Evidence: []Evidence{
		{Path: "/usr/lib/libssl.so.3", How: HowMapped, FirstSeen: t0, Source: SourceProc},
		{Path: "/usr/lib/libssl.so.3", How: HowRead, FirstSeen: t0.Add(1e9)},
	}}, got["ssl"])
	require.Equal(t, PackageVerdict{Verdict: InUse, Evidence: []Evidence{
		{Path: "/usr/bin/python3.11", How: HowExec, FirstSeen: t0.Add(2e9)},
	}}, got["py"])
}
