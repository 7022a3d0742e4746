// Command scan measures a full `inuse scan` (syft SBOM, file ownership
// index, grype matching, verdicts) against the real grype CLI (syft +
// grype alone) on the same OCI archive and database, in one run.
//
//	go build -o /tmp/inuse ./cmd/inuse
//	go run ./bench/scan -inuse /tmp/inuse -grype ~/.cache/inuse/bin/grype \
//	    -rootfs ~/.cache/inuse/testdata/bookworm-minbase-v1 -runs 3
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/inuse-dev/inuse/scanner/scannertest"
	"github.com/inuse-dev/inuse/scanner/vulndbtest"
)

func main() {
	inuse := flag.String("inuse", "inuse", "inuse binary")
	grype := flag.String("grype", "grype", "grype v0.120.0 binary")
	rootfs := flag.String("rootfs", "", "root filesystem to pack as an OCI archive")
	runs := flag.Int("runs", 3, "runs of each")
	flag.Parse()
	if *rootfs == "" {
		log.Fatal("-rootfs is required")
	}
	tmp, err := os.MkdirTemp("", "inuse-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	archive := filepath.Join(tmp, "image.oci.tar")
	if _, err := scannertest.OCIArchive(*rootfs, archive); err != nil {
		log.Fatalf("packing %s: %v", *rootfs, err)
	}
	dbFile, err := vulndbtest.Write(filepath.Join(tmp, "build-db"), []vulndbtest.Advisory{
		{ID: "CVE-2099-0001", Severity: "critical", Package: "zlib", Ecosystem: "deb", VersionFormat: "deb", OS: &vulndbtest.Bookworm, Constraint: "< 1:1.2.13.dfsg-2"},
		{ID: "CVE-2099-0002", Severity: "high", Package: "glibc", Ecosystem: "deb", VersionFormat: "deb", OS: &vulndbtest.Bookworm, Constraint: "< 2.36-9+deb12u99"},
	})
	if err != nil {
		log.Fatal(err)
	}
	dbRoot := filepath.Join(tmp, "db")
	run("import", exec.Command(*inuse, "--log-level", "warn", "db", "import", "--db-dir", dbRoot, dbFile))

	grypeEnv := append(os.Environ(), "GRYPE_DB_CACHE_DIR="+dbRoot, "GRYPE_DB_AUTO_UPDATE=false",
		"GRYPE_DB_VALIDATE_AGE=false", "GRYPE_CHECK_FOR_APP_UPDATE=false")
	var alone, cold, warm []time.Duration
	for i := range *runs {
		cmd := exec.Command(*grype, "oci-archive:"+archive, "-o", "json", "-q")
		cmd.Env = grypeEnv
		alone = append(alone, run("grype", cmd))
		cache := filepath.Join(tmp, fmt.Sprintf("cache-%d", i))
		scan := func() *exec.Cmd {
			return exec.Command(*inuse, "--log-level", "warn", "scan", "--oci-archive", archive,
				"--cache-dir", cache, "--db-dir", dbRoot, "--format", "json")
		}
		cold = append(cold, run("inuse cold", scan()))
		warm = append(warm, run("inuse warm", scan()))
	}
	a, c, w := median(alone), median(cold), median(warm)
	fmt.Printf("runs: %d (median)\n", *runs)
	fmt.Printf("grype oci-archive (syft+grype alone): %s\n", a.Round(time.Millisecond))
	fmt.Printf("inuse scan, cold cache:               %s (%.2fx)\n", c.Round(time.Millisecond), float64(c)/float64(a))
	fmt.Printf("inuse scan, cached SBOM and matches:  %s (%.2fx)\n", w.Round(time.Millisecond), float64(w)/float64(a))
}

func run(what string, cmd *exec.Cmd) time.Duration {
	start := time.Now()
	cmd.Stdout = nil
	if out, err := cmd.CombinedOutput(); err != nil {
		log.Fatalf("%s: %v: %s", what, err, out)
	}
	return time.Since(start)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
