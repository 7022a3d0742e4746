// Command demodb writes the demo's vulnerability database: four made-up
// advisories (CVE-2099-*) on packages of Debian bookworm, in grype's v6
// schema, for machines that cannot download grype's real database.
//
//	go run ./scripts/demodb DIR   # prints the path of DIR/.../vulnerability.db
package main

import (
	"fmt"
	"os"

	"github.com/inuse-dev/inuse/scanner/vulndbtest"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: demodb DIR")
		os.Exit(2)
	}
	advisories := []vulndbtest.Advisory{
		{ID: "CVE-2099-0001", Severity: "critical", Package: "zlib", Constraint: "< 1:1.2.13.dfsg-2", Fixed: "1:1.2.13.dfsg-2"},
		{ID: "CVE-2099-0002", Severity: "high", Package: "glibc", Constraint: "< 2.36-9+deb12u99", Fixed: "2.36-9+deb12u99"},
		{ID: "CVE-2099-0003", Severity: "medium", Package: "bzip2", Constraint: "< 1.0.8-6"},
		{ID: "CVE-2099-0004", Severity: "low", Package: "xz-utils", Constraint: "< 5.4.1-2", Fixed: "5.4.1-2"},
	}
	for i := range advisories {
		advisories[i].Ecosystem, advisories[i].VersionFormat, advisories[i].OS = "deb", "deb", &vulndbtest.Bookworm
	}
	path, err := vulndbtest.Write(os.Args[1], advisories)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demodb:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}
