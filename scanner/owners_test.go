package scanner

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/anchore/syft/syft/pkg"
	"github.com/anchore/syft/syft/sbom"
	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/testutil"
)

// t0 is when the hand-built profiles first saw their files.
var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// load is one file of a hand-built profile.
type load struct {
	section store.Section
	path    string
}

// profile builds a profile in state st that loaded files.
func profile(st store.State, loads ...load) *store.Profile {
	p := &store.Profile{Digest: "sha256:0123456789abcdef0123456789abcdef", State: st, Sections: map[store.Section][]store.Entry{}}
	for i, l := range loads {
		p.Sections[l.section] = append(p.Sections[l.section], store.Entry{Value: l.path, FirstSeen: t0.Add(time.Duration(i) * time.Second)})
	}
	return p
}

// pkgRef names packages of an SBOM by syft type and name; every package
// that matches must have the verdict.
type pkgRef struct {
	typ  pkg.Type
	name string
}

func (r pkgRef) String() string { return string(r.typ) + "/" + r.name }

// verdictsByRef checks that every package named in want exists and has its
// verdict; in_use ones must carry the loaded file as evidence.
func checkVerdicts(t *testing.T, s *sbom.SBOM, got map[string]PackageVerdict, want map[pkgRef]Verdict, also []pkgRef, evidence []load) {
	t.Helper()
	for ref, v := range want {
		var found int
		for p := range s.Artifacts.Packages.Enumerate(ref.typ) {
			if p.Name != ref.name {
				continue
			}
			found++
			pv, ok := got[string(p.ID())]
			require.True(t, ok, "%s (%s) has no verdict", ref, p.ID())
			if pv.Verdict != v {
				t.Errorf("%s %s at %v: verdict %s, want %s (evidence %v)", ref, p.Version, p.Locations.ToSlice(), pv.Verdict, v, pv.Evidence)
				continue
			}
			if v == InUse {
				var paths []string
				for _, e := range pv.Evidence {
					paths = append(paths, e.Path)
				}
				for _, l := range evidence {
					require.Contains(t, paths, filepath.Clean(l.path), "%s evidence", ref)
				}
			}
		}
		if found == 0 {
			t.Errorf("syft found no %s; it found:\n%s", ref, describe(s))
		}
	}
	require.Len(t, got, s.Artifacts.Packages.PackageCount(), "one verdict per package")
	// Exactly the packages named in use are in use, and each one of also
	// (which may name several packages, like every binary's stdlib).
	alsoSeen := map[pkgRef]bool{}
	for p := range s.Artifacts.Packages.Enumerate() {
		ref := pkgRef{p.Type, p.Name}
		if got[string(p.ID())].Verdict != InUse || want[ref] == InUse {
			continue
		}
		if slices.Contains(also, ref) {
			alsoSeen[ref] = true
			continue
		}
		t.Errorf("%s %s is in use too: %v", ref, p.Version, got[string(p.ID())].Evidence)
	}
	for _, ref := range also {
		if !alsoSeen[ref] {
			t.Errorf("no %s in use", ref)
		}
	}
}

// describe lists the packages of an SBOM, for failure messages.
func describe(s *sbom.SBOM) string {
	var lines []string
	for _, p := range s.Artifacts.Packages.Sorted() {
		var locs []string
		for _, l := range p.Locations.ToSlice() {
			locs = append(locs, l.RealPath)
		}
		lines = append(lines, fmt.Sprintf("  %s %s %s %T %v", p.Type, p.Name, p.Version, p.Metadata, locs))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestEcosystems: per ecosystem, one loaded file puts exactly its package
// in use, and its sibling in the same root is not observed (profile done).
// The roots hold the package managers' real artefacts where this machine's
// registries have them, faithful fixtures otherwise.
func TestEcosystems(t *testing.T) {
	cases := []struct {
		name string
		// privileged: needs apt, rpm or the npm registry (CI runs as root
		// with INUSE_PRIVILEGED_TESTS=1).
		privileged bool
		setup      func(t *testing.T, root string)
		loads      []load
		want       map[pkgRef]Verdict
		// also: in use as well, through the same file (the Debian
		// package owning a jar, the Go binary's own module and stdlib).
		also []pkgRef
		// check looks into the Owners built, when the verdicts alone
		// cannot tell which rule gave them.
		check func(t *testing.T, o *Owners)
	}{
		{
			name:       "dpkg usr-merged",
			privileged: true,
			setup: func(t *testing.T, root string) {
				usrMerged(t, root)
				installDebs(t, root, "zlib1g", "libzstd1")
			},
			// dpkg lists /lib/x86_64-linux-gnu/libz.so.1.2.13; the kernel
			// reports the path behind /lib -> usr/lib.
			loads: []load{{store.Mapped, "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"}},
			want: map[pkgRef]Verdict{
				{pkg.DebPkg, "zlib1g"}:   InUse,
				{pkg.DebPkg, "libzstd1"}: NotObserved,
			},
		},
		{
			// Debian ships egg-info without RECORD: top_level.txt names the
			// module, and CPython loads its __pycache__ .pyc.
			name:       "python top-level module, pyc",
			privileged: true,
			setup:      func(t *testing.T, root string) { installDebs(t, root, "python3-six", "python3-idna") },
			loads:      []load{{store.FilesRead, "/usr/lib/python3/dist-packages/__pycache__/six.cpython-311.pyc"}},
			want: map[pkgRef]Verdict{
				{pkg.PythonPkg, "six"}:  InUse,
				{pkg.PythonPkg, "idna"}: NotObserved,
				// dpkg lists six.py, whose compiled cache was loaded.
				{pkg.DebPkg, "python3-six"}:  InUse,
				{pkg.DebPkg, "python3-idna"}: NotObserved,
			},
		},
		{
			name:       "python top-level package directory",
			privileged: true,
			setup:      func(t *testing.T, root string) { installDebs(t, root, "python3-six", "python3-idna") },
			loads:      []load{{store.FilesRead, "/usr/lib/python3/dist-packages/idna/core.py"}},
			want: map[pkgRef]Verdict{
				{pkg.PythonPkg, "idna"}:      InUse,
				{pkg.DebPkg, "python3-idna"}: InUse,
				{pkg.PythonPkg, "six"}:       NotObserved,
			},
		},
		{
			name:       "java archive",
			privileged: true,
			setup:      func(t *testing.T, root string) { installDebs(t, root, "libcommons-lang3-java", "libcommons-io-java") },
			// The JVM opens the jar behind the classpath's symlink.
			loads: []load{{store.FilesRead, "/usr/share/java/commons-lang3.jar"}},
			want: map[pkgRef]Verdict{
				{pkg.JavaPkg, "commons-lang3"}: InUse,
				{pkg.JavaPkg, "commons-io"}:    NotObserved,
			},
			also: []pkgRef{{pkg.DebPkg, "libcommons-lang3-java"}},
		},
		{
			// Wheels unpacked as pip installs them: RECORD paths are
			// relative to site-packages.
			name:       "python RECORD",
			privileged: true,
			setup: func(t *testing.T, root string) {
				site := filepath.Join(root, "usr/local/lib/python3.11/site-packages")
				installWheel(t, site, "python3-wheel-whl")
				installWheel(t, site, "python3-setuptools-whl")
			},
			loads: []load{{store.FilesRead, "/usr/local/lib/python3.11/site-packages/wheel/__pycache__/wheelfile.cpython-311.pyc"}},
			want: map[pkgRef]Verdict{
				{pkg.PythonPkg, "wheel"}:      InUse,
				{pkg.PythonPkg, "setuptools"}: NotObserved,
			},
			check: func(t *testing.T, o *Owners) {
				// Owned file by file from RECORD, not by the top-level
				// directory fallback.
				site := "/usr/local/lib/python3.11/site-packages"
				require.Contains(t, o.Files, site+"/wheel/wheelfile.py")
				require.Contains(t, o.Files, site+"/setuptools/__init__.py")
				require.NotContains(t, o.Dirs, site+"/wheel")
			},
		},
		{
			// A fat jar: the JVM opens the outer archive, never the jar
			// nested in it.
			name:       "java nested archive",
			privileged: true,
			setup: func(t *testing.T, root string) {
				writeZip(t, filepath.Join(root, "app/app.jar"), map[string][]byte{
					"META-INF/MANIFEST.MF":        []byte("Manifest-Version: 1.0\r\nMain-Class: app.Main\r\n\r\n"),
					"BOOT-INF/lib/commons-io.jar": debFile(t, "libcommons-io-java", "usr/share/java/commons-io.jar"),
				})
				writeFiles(t, root, map[string]string{
					"opt/lib/commons-lang3.jar": string(debFile(t, "libcommons-lang3-java", "usr/share/java/commons-lang3.jar")),
				})
			},
			loads: []load{{store.FilesRead, "/app/app.jar"}},
			want: map[pkgRef]Verdict{
				{pkg.JavaPkg, "commons-io"}:    InUse,
				{pkg.JavaPkg, "commons-lang3"}: NotObserved,
			},
			also: []pkgRef{{pkg.JavaPkg, "app"}}, // the outer jar itself
		},
		{
			name:       "ruby gem directory",
			privileged: true,
			setup:      func(t *testing.T, root string) { installDebs(t, root, "ruby-rack", "ruby-mustermann") },
			loads:      []load{{store.FilesRead, "/usr/share/rubygems-integration/all/gems/rack-2.2.22/lib/rack/auth/basic.rb"}},
			want: map[pkgRef]Verdict{
				{pkg.GemPkg, "rack"}:       InUse,
				{pkg.GemPkg, "mustermann"}: NotObserved,
			},
			also: []pkgRef{{pkg.DebPkg, "ruby-rack"}},
		},
		{
			name:       "npm package directory",
			privileged: true,
			setup: func(t *testing.T, root string) {
				installNpm(t, filepath.Join(root, "app"), "is-number@7.0.0", "left-pad@1.3.0")
			},
			loads: []load{{store.FilesRead, "/app/node_modules/is-number/index.js"}},
			want: map[pkgRef]Verdict{
				{pkg.NpmPkg, "is-number"}: InUse,
				{pkg.NpmPkg, "left-pad"}:  NotObserved,
			},
		},
		{
			name:       "rpm",
			privileged: true,
			setup:      func(t *testing.T, root string) { installRpms(t, root, "inuse-alpha", "inuse-beta") },
			loads:      []load{{store.Mapped, "/usr/lib64/libinuse-alpha.so.1.0"}},
			want: map[pkgRef]Verdict{
				{pkg.RpmPkg, "inuse-alpha"}: InUse,
				{pkg.RpmPkg, "inuse-beta"}:  NotObserved,
			},
		},
		{
			name: "go binary",
			setup: func(t *testing.T, root string) {
				goBinary(t, filepath.Join(root, "usr/local/bin/alpha"), "github.com/google/go-cmp/cmp", "cmp.Diff(1, 2)")
				goBinary(t, filepath.Join(root, "usr/local/bin/beta"), "golang.org/x/sync/errgroup", "new(errgroup.Group).Wait()")
			},
			loads: []load{{store.Exec, "/usr/local/bin/alpha"}},
			want: map[pkgRef]Verdict{
				{pkg.GoModulePkg, "github.com/google/go-cmp"}: InUse,
				{pkg.GoModulePkg, "golang.org/x/sync"}:        NotObserved,
			},
			also: []pkgRef{{pkg.GoModulePkg, "example.com/alpha"}, {pkg.GoModulePkg, "stdlib"}},
		},
		{
			name: "rust binary (cargo auditable)",
			setup: func(t *testing.T, root string) {
				rustBinary(t, filepath.Join(root, "usr/local/bin/alpha"), "alpha", "itoa", "1.0.11")
				rustBinary(t, filepath.Join(root, "usr/local/bin/beta"), "beta", "ryu", "1.0.18")
			},
			loads: []load{{store.Exec, "/usr/local/bin/alpha"}},
			want: map[pkgRef]Verdict{
				{pkg.RustPkg, "itoa"}:  InUse,
				{pkg.RustPkg, "alpha"}: InUse,
				{pkg.RustPkg, "ryu"}:   NotObserved,
			},
		},
		{
			// lib/apk/db/installed as apk writes it; musl's
			// libc.musl-x86_64.so.1 is a symlink to the loader.
			name: "apk",
			setup: func(t *testing.T, root string) {
				mergeTree(t, "testdata/owners/apk", root)
				writeFiles(t, root, map[string]string{
					"lib/ld-musl-x86_64.so.1":   "elf",
					"lib/libc.musl-x86_64.so.1": "-> ld-musl-x86_64.so.1",
					"lib/libz.so.1.3.1":         "elf",
					"lib/libz.so.1":             "-> libz.so.1.3.1",
				})
			},
			loads: []load{{store.Mapped, "/lib/libz.so.1.3.1"}},
			want: map[pkgRef]Verdict{
				{pkg.ApkPkg, "zlib"}: InUse,
				{pkg.ApkPkg, "musl"}: NotObserved,
			},
		},
		{
			name: "composer",
			setup: func(t *testing.T, root string) {
				mergeTree(t, "testdata/owners/composer", root)
				writeFiles(t, root, map[string]string{
					"app/vendor/monolog/monolog/src/Monolog/Logger.php": "<?php\n",
					"app/vendor/psr/log/src/LoggerInterface.php":        "<?php\n",
				})
			},
			loads: []load{{store.FilesRead, "/app/vendor/monolog/monolog/src/Monolog/Logger.php"}},
			want: map[pkgRef]Verdict{
				{pkg.PhpComposerPkg, "monolog/monolog"}: InUse,
				{pkg.PhpComposerPkg, "psr/log"}:         NotObserved,
			},
		},
		{
			// A published application: the assemblies beside its deps.json.
			name: "dotnet deps.json",
			setup: func(t *testing.T, root string) {
				mergeTree(t, "testdata/owners/dotnet", root)
				writeFiles(t, root, map[string]string{
					"app/MyApp.dll":           "MZ",
					"app/Newtonsoft.Json.dll": "MZ",
					"app/Serilog.dll":         "MZ",
				})
			},
			loads: []load{{store.FilesRead, "/app/Serilog.dll"}},
			want: map[pkgRef]Verdict{
				{pkg.DotnetPkg, "Serilog"}:         InUse,
				{pkg.DotnetPkg, "Newtonsoft.Json"}: NotObserved,
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.privileged {
				testutil.RequirePrivileged(t)
			}
			root := t.TempDir()
			tc.setup(t, root)
			s, res := catalog(t, root)
			o, err := BuildOwners(s, res)
			require.NoError(t, err)
			got := o.Verdicts(profile(store.Done, tc.loads...))
			checkVerdicts(t, s, got, tc.want, tc.also, tc.loads)
			if tc.check != nil {
				tc.check(t, o)
			}
			if t.Failed() {
				t.Logf("packages:\n%s", describe(s))
			}
		})
	}
}

var _ = cmp.Diff

// TestOwnedPackageJSON: owners.json cached before has_files was named
// ("mapped") still gives its packages their files.
func TestOwnedPackageJSON(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"current", `{"id":"a","type":"deb","has_files":true}`},
		{"cached before has_files", `{"id":"a","type":"deb","mapped":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got OwnedPackage
			require.NoError(t, json.Unmarshal([]byte(tc.in), &got))
			require.Equal(t, OwnedPackage{ID: "a", Type: "deb", HasFiles: true}, got)
		})
	}
	b, err := json.Marshal(OwnedPackage{ID: "a", Type: "deb", HasFiles: true})
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"a","type":"deb","has_files":true}`, string(b))
}
