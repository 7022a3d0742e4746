package scanner

import (
	"archive/zip"
	"bytes"
	"compress/zlib"
	"context"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/cataloging"
	"github.com/anchore/syft/syft/cataloging/pkgcataloging"
	"github.com/anchore/syft/syft/file"
	"github.com/anchore/syft/syft/sbom"
	"github.com/anchore/syft/syft/source"
	"github.com/stretchr/testify/require"
)

// catalog runs syft on a root directory the way the scanner runs it on an
// image: the image catalogers (installed packages, not lock files) and the
// squashed resolver.
func catalog(t *testing.T, root string) (*sbom.SBOM, file.Resolver) {
	t.Helper()
	src := dirSource(t, root)
	cfg := syft.DefaultCreateSBOMConfig().
		WithCatalogerSelection(cataloging.NewSelectionRequest().WithDefaults(pkgcataloging.ImageTag))
	s, err := syft.CreateSBOM(context.Background(), src, cfg)
	require.NoError(t, err, "cataloging %s", root)
	res, err := src.FileResolver(source.SquashedScope)
	require.NoError(t, err, "resolver of %s", root)
	return s, res
}

// dirSource opens root as a syft directory source.
func dirSource(t *testing.T, root string) source.Source {
	t.Helper()
	src, err := syft.GetSource(context.Background(), root, syft.DefaultGetSourceConfig().WithSources("dir"))
	require.NoError(t, err, "opening %s as a syft source", root)
	t.Cleanup(func() { _ = src.Close() })
	return src
}

// cacheDir holds downloaded packages between runs, outside the repository.
func cacheDir(t *testing.T, sub string) string {
	t.Helper()
	home, err := os.UserHomeDir()
	require.NoError(t, err)
	dir := filepath.Join(home, ".cache", "inuse", "testdata", sub)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

var aptMu sync.Mutex

// fetchDeb returns the path of the .deb of a Debian package, downloading it
// into the cache with `apt-get download` the first time.
func fetchDeb(t *testing.T, name string) string {
	t.Helper()
	aptMu.Lock()
	defer aptMu.Unlock()
	dir := cacheDir(t, "debs")
	find := func() string {
		m, _ := filepath.Glob(filepath.Join(dir, name+"_*.deb"))
		if len(m) == 0 {
			return ""
		}
		return m[len(m)-1]
	}
	if deb := find(); deb != "" {
		return deb
	}
	run(t, dir, "apt-get", "download", name)
	deb := find()
	require.NotEmpty(t, deb, "apt-get download %s left no .deb in %s", name, dir)
	return deb
}

// installDebs installs Debian packages into root as dpkg would for
// syft: files unpacked (through root's usr-merge symlinks), a status entry
// and the md5sums file list per package.
func installDebs(t *testing.T, root string, names ...string) {
	t.Helper()
	var status strings.Builder
	info := filepath.Join(root, "var/lib/dpkg/info")
	require.NoError(t, os.MkdirAll(info, 0o755))
	for _, name := range names {
		deb := fetchDeb(t, name)
		stage := t.TempDir()
		run(t, "", "dpkg-deb", "-x", deb, filepath.Join(stage, "data"))
		run(t, "", "dpkg-deb", "-e", deb, filepath.Join(stage, "control"))
		mergeTree(t, filepath.Join(stage, "data"), root)
		control, err := os.ReadFile(filepath.Join(stage, "control", "control"))
		require.NoError(t, err)
		c := strings.TrimRight(string(control), "\n")
		// dpkg writes Status right after Package.
		first, rest, _ := strings.Cut(c, "\n")
		fmt.Fprintf(&status, "%s\nStatus: install ok installed\n%s\n\n", first, rest)
		if sums, err := os.ReadFile(filepath.Join(stage, "control", "md5sums")); err == nil {
			require.NoError(t, os.WriteFile(filepath.Join(info, name+".md5sums"), sums, 0o644))
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), []byte(status.String()), 0o644))
}

// usrMerged makes root a usr-merged Debian root: /bin, /lib, /lib64 and
// /sbin are symlinks into /usr.
func usrMerged(t *testing.T, root string) {
	t.Helper()
	for _, d := range []string{"bin", "lib", "lib64", "sbin"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, "usr", d), 0o755))
		require.NoError(t, os.Symlink("usr/"+d, filepath.Join(root, d)))
	}
}

// mergeTree copies src into dst following dst's directory symlinks, the way
// dpkg unpacks into a usr-merged root (tar would replace /lib by a
// directory instead).
func mergeTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		default:
			return copyFile(p, target)
		}
	})
	require.NoError(t, err, "copying %s into %s", src, dst)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// writeFiles creates files under root; a value "-> x" makes a symlink to x.
func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		if link, ok := strings.CutPrefix(content, "-> "); ok {
			require.NoError(t, os.Symlink(link, p))
			continue
		}
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
}

// run runs a command in dir and fails the test with its output on error.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	return runEnv(t, dir, nil, name, args...)
}

func runEnv(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

// installNpm unpacks npm packages (fetched once with `npm pack` into the
// cache) into dir/node_modules/<name>, as `npm install` lays them out.
func installNpm(t *testing.T, dir string, specs ...string) {
	t.Helper()
	cache := cacheDir(t, "npm")
	for _, spec := range specs {
		name, version, _ := strings.Cut(spec, "@")
		tgz := filepath.Join(cache, name+"-"+version+".tgz")
		if _, err := os.Stat(tgz); err != nil {
			run(t, cache, "npm", "pack", "--silent", spec)
		}
		dst := filepath.Join(dir, "node_modules", name)
		require.NoError(t, os.MkdirAll(dst, 0o755))
		run(t, "", "tar", "-xzf", tgz, "-C", dst, "--strip-components=1")
	}
}

// installRpms builds tiny noarch rpms (one shared library and its soname
// symlink each) with rpmbuild and installs them into root with rpm --root.
func installRpms(t *testing.T, root string, names ...string) {
	t.Helper()
	top := t.TempDir()
	var rpms []string
	for _, name := range names {
		spec := filepath.Join(top, name+".spec")
		require.NoError(t, os.WriteFile(spec, []byte(fmt.Sprintf(`Name: %[1]s
Version: 1.0
Release: 1
Summary: %[1]s, a test package of inuse
License: MIT
BuildArch: noarch

%%description
A test package of inuse.

%%install
mkdir -p %%{buildroot}/usr/lib64
echo %[1]s > %%{buildroot}/usr/lib64/lib%[1]s.so.1.0
ln -s lib%[1]s.so.1.0 %%{buildroot}/usr/lib64/lib%[1]s.so.1

%%files
/usr/lib64/lib%[1]s.so.1.0
/usr/lib64/lib%[1]s.so.1
`, name)), 0o644))
		run(t, top, "rpmbuild", "--define", "_topdir "+top, "-bb", spec)
		rpms = append(rpms, filepath.Join(top, "RPMS", "noarch", name+"-1.0-1.noarch.rpm"))
	}
	db := []string{"--root", root, "--dbpath", "/var/lib/rpm"}
	run(t, "", "rpm", append(db, "--initdb")...)
	run(t, "", "rpm", append(db, append([]string{"-i", "--nodeps", "--noscripts", "--nosignature", "--ignoreos"}, rpms...)...)...)
}

// goBinary builds a main that imports one package of a module our go.mod
// pins: building this module already put it in the module cache, and our
// go.sum has its hashes.
func goBinary(t *testing.T, out, importPath, call string) {
	t.Helper()
	dir := t.TempDir()
	sums, err := os.ReadFile("../go.sum")
	require.NoError(t, err)
	mod, version := "", ""
	for _, line := range strings.Split(string(sums), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && strings.HasPrefix(importPath, f[0]) && !strings.HasSuffix(f[1], "/go.mod") && len(f[0]) > len(mod) {
			mod, version = f[0], f[1]
		}
	}
	require.NotEmpty(t, mod, "no module of %s in go.sum", importPath)
	// The go directive of our go.mod, which every module it pins accepts.
	gomod, err := os.ReadFile("../go.mod")
	require.NoError(t, err)
	goLine := "go 1.26.0"
	for _, line := range strings.Split(string(gomod), "\n") {
		if strings.HasPrefix(line, "go ") {
			goLine = line
		}
	}
	var sum strings.Builder
	for _, line := range strings.Split(string(sums), "\n") {
		if strings.HasPrefix(line, mod+" "+version) {
			sum.WriteString(line + "\n")
		}
	}
	writeFiles(t, dir, map[string]string{
		"go.mod":  fmt.Sprintf("module example.com/%s\n\n%s\n\nrequire %s %s\n", filepath.Base(out), goLine, mod, version),
		"go.sum":  sum.String(),
		"main.go": fmt.Sprintf("package main\n\nimport %q\n\nfunc main() { _ = %s }\n", importPath, call),
	})
	require.NoError(t, os.MkdirAll(filepath.Dir(out), 0o755))
	runEnv(t, dir, []string{"GOWORK=off", "GOFLAGS=-mod=readonly", "CGO_ENABLED=0", "GOTOOLCHAIN=local"},
		"go", "build", "-trimpath", "-o", out, ".")
}

// rustBinary writes an ELF executable carrying cargo auditable's .dep-v0
// section (zlib-compressed JSON of the crates compiled in): the root crate
// and one dependency. cargo-auditable is not installed here, so the test
// writes the ELF itself; syft reads it through go-rustaudit like a real one.
func rustBinary(t *testing.T, out, name, dep, depVersion string) {
	t.Helper()
	deps := fmt.Sprintf(`{"packages":[{"name":%q,"version":"0.1.0","source":"local","kind":"runtime","dependencies":[1],"root":true},{"name":%q,"version":%q,"source":"crates.io","kind":"runtime"}]}`, name, dep, depVersion)
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	_, err := zw.Write([]byte(deps))
	require.NoError(t, err)
	require.NoError(t, zw.Close())

	const ehsize, shentsize = 64, 64
	shstrtab := []byte("\x00.dep-v0\x00.shstrtab\x00")
	depOff := uint64(ehsize)
	strOff := depOff + uint64(z.Len())
	shOff := (strOff + uint64(len(shstrtab)) + 7) &^ 7
	hdr := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: shOff, Ehsize: ehsize, Phentsize: 56, Shentsize: shentsize, Shnum: 3, Shstrndx: 2,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	var b bytes.Buffer
	require.NoError(t, binary.Write(&b, binary.LittleEndian, hdr))
	b.Write(z.Bytes())
	b.Write(shstrtab)
	b.Write(make([]byte, shOff-uint64(b.Len())))
	sections := []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Off: depOff, Size: uint64(z.Len()), Addralign: 1},
		{Name: 9, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstrtab)), Addralign: 1},
	}
	require.NoError(t, binary.Write(&b, binary.LittleEndian, sections))
	require.NoError(t, os.MkdirAll(filepath.Dir(out), 0o755))
	require.NoError(t, os.WriteFile(out, b.Bytes(), 0o755))
}

// debFile returns the content of one file of a Debian package.
func debFile(t *testing.T, name, file string) []byte {
	t.Helper()
	stage := t.TempDir()
	run(t, "", "dpkg-deb", "-x", fetchDeb(t, name), stage)
	b, err := os.ReadFile(filepath.Join(stage, file))
	require.NoError(t, err)
	return b
}

// writeZip writes a zip archive (a jar, a wheel) of the given entries.
func writeZip(t *testing.T, out string, entries map[string][]byte) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(out), 0o755))
	f, err := os.Create(out)
	require.NoError(t, err)
	zw := zip.NewWriter(f)
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w, err := zw.Create(n)
		require.NoError(t, err)
		_, err = w.Write(entries[n])
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	require.NoError(t, f.Close())
}

// installWheel installs a wheel the way pip does (unpacked into
// site-packages, RECORD paths relative to it): the wheel comes from a
// Debian *-whl package, since no Python index is reachable here.
func installWheel(t *testing.T, site, debName string) {
	t.Helper()
	stage := t.TempDir()
	run(t, "", "dpkg-deb", "-x", fetchDeb(t, debName), stage)
	wheels, err := filepath.Glob(filepath.Join(stage, "usr/share/python-wheels/*.whl"))
	require.NoError(t, err)
	require.Len(t, wheels, 1, "wheels of %s", debName)
	zr, err := zip.OpenReader(wheels[0])
	require.NoError(t, err)
	defer zr.Close()
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		dst := filepath.Join(site, filepath.FromSlash(f.Name))
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		r, err := f.Open()
		require.NoError(t, err)
		b, err := io.ReadAll(r)
		require.NoError(t, err)
		require.NoError(t, r.Close())
		require.NoError(t, os.WriteFile(dst, b, 0o644))
	}
}
