// Package version holds the version stamped into the binaries at build time.
package version

// Version is set with -ldflags "-X github.com/inuse-dev/inuse/internal/version.Version=...".
var Version = "dev"
